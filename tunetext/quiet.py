"""Keeping the libraries' own progress bars out of tunetext's output.

transformers draws a bar while it loads a model's weights ("Loading weights") and another while it writes
them ("Writing model shards"): four bars around every `tunetext.train` call from Python, none of them
about anything the user asked for. tunetext hides them around its own loads and saves and puts the
setting back after, so a user who wants transformers' bars elsewhere keeps them. The CLI turns them off
for the whole process (`cli.quiet_libraries`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transformers.utils import logging as transformers_logging


@contextmanager
def library_bars_hidden() -> Iterator[None]:
    """transformers' progress bars off inside, as they were before outside."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()
