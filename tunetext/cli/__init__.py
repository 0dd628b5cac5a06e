"""The `tunetext` command: a thin table over the Python API.

    tunetext train --data sms_spam --model minilm-l6 --output runs/spam
    tunetext evaluate runs/spam
    tunetext predict runs/spam "WINNER! claim your prize" "see you at 8?"
    tunetext data show sms_spam
    tunetext data audit sms_spam
    tunetext prompt-eval --model smollm2-135m --data sms_spam --template "SMS: {text}" --shots 4
    tunetext report runs/spam
    tunetext serve runs/spam --port 8000
    tunetext search --config configs/search_sms_spam.yaml --output runs/search --trials 10
"""

from __future__ import annotations

import errno
import logging
import sys

import transformers

from tunetext.checkpoints import TrainingInterrupted
from tunetext.cli.parser import build_parser
from tunetext.errors import TunetextError


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the libraries' load reports and per-file progress bars out of tunetext's output."""
    for noisy in ("transformers", "accelerate", "datasets", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    transformers.logging.set_verbosity_warning() if verbose else transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """`tunetext ARGS...`: the exit status. A `TunetextError` (the input was wrong) is one line and 2, an
    `OSError` (a full disk, a path) one line and 1, Ctrl-C one line and 130; anything else is a bug and
    keeps its traceback."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
                            if not args.verbose else "%(levelname)s %(name)s: %(message)s")
        quiet_libraries(args.verbose)
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print("\ninterrupted", file=sys.stderr)
        return 130
    except TunetextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder without write permission, a path through a file
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


OS_ERROR_FIXES = {
    errno.EACCES: "check the permissions of the path, or choose one you can write to",
    errno.EPERM: "check the permissions of the path, or choose one you can write to",
    errno.EROFS: "the file system is read-only; choose a path on a writable one",
    errno.ENOSPC: "free some disk space, or point --output or TUNETEXT_CACHE at a disk with room, and run "
                  "again (an interrupted training run continues with --resume)",
    errno.EDQUOT: "your disk quota is used up; free some space and run again",
    errno.ENOTDIR: "a part of the path is a file, not a folder; correct the path",
    errno.EISDIR: "a folder was found where a file was expected; correct the path",
    errno.ENOENT: "check that the path exists",
}


def describe_os_error(exc: OSError) -> str:
    """An `OSError` as one line for a user: what failed, on which path, and what to do."""
    where = f": {exc.filename}" if exc.filename is not None else ""
    fix = OS_ERROR_FIXES.get(exc.errno or 0, "check the path and try again")
    return f"{exc.strerror or exc}{where}; {fix}"
