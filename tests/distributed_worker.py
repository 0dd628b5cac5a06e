"""Run by `accelerate launch` in tests/test_distributed.py: `tunetext train` as the CLI runs it, with one
observation added. Each process writes the token ids of every training batch it collates to
`$TUNETEXT_TEST_SHARES/rank<N>.jsonl`, so that the test can check the processes' shares of an epoch; with
`TUNETEXT_TEST_INTERRUPT=RANK:BATCH`, that process alone gets a SIGINT (Ctrl-C) while it collates that
training batch. The hook wraps `collate` only; the loop itself is the production one."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import tunetext.train  # noqa: F401  (the module; the package's `train` attribute is the function)
from tunetext.cli import main

_module = sys.modules["tunetext.train"]
_collate = _module.collate
_calls: list[int] = []


def _recording_collate(ids, pad_id, *args, **kwargs):
    rank = os.environ.get("RANK", "0")
    with open(Path(os.environ["TUNETEXT_TEST_SHARES"]) / f"rank{rank}.jsonl", "a") as f:
        f.write(json.dumps(ids) + "\n")
    _calls.append(1)
    if os.environ.get("TUNETEXT_TEST_INTERRUPT") == f"{rank}:{len(_calls)}":
        os.kill(os.getpid(), signal.SIGINT)
    return _collate(ids, pad_id, *args, **kwargs)


_module.collate = _recording_collate

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
