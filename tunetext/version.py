"""The package version, in a module of its own: modules that record or show it (train, report, serve,
cli) import it from here rather than from the package root, whose `__init__` imports them."""

__version__ = "0.1.0"
