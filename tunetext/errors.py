"""The one base of every error tunetext raises for its users.

A `TunetextError` means the input was wrong (a setting, a file, a model folder, a run directory, a
request) and its message says what was found, where, and what to do. `tunetext.cli` prints it as one
line; any other exception is a bug and keeps its traceback. Each subclass also keeps the builtin base
it had before this one existed (`ValueError`, `RuntimeError`), so code that caught those still works.
"""

from __future__ import annotations


class TunetextError(Exception):
    """Input tunetext cannot use as given; the message says what and how to fix it."""


class UsageError(TunetextError, ValueError):
    """An argument to a tunetext function or command that cannot be used (a split name, a text, a flag)."""
