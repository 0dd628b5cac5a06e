"""A training run's checkpoint, what `tunetext train --resume` continues from, and the signal handling
that writes one when Ctrl-C or SIGTERM stops training.

One file, `RUN/checkpoint/state.pt`, holds the model, optimizer and schedule states, the best weights so
far, the random generators' states and where the loop was. It holds tensors, numbers and strings only and
is read with `torch.load(weights_only=True)`: a run folder may be shared, and loading a checkpoint must
never run code.
"""

from __future__ import annotations

import pickle
import random
import re
import signal
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunetext import runs


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM: after saving a resumable checkpoint, or while data and
    model loaded, before anything was written (`saved=False`)."""

    def __init__(self, run_dir: Path, saved: bool = True, resuming: bool = False):
        self.run_dir = run_dir
        if saved:
            message = (f"training interrupted; a checkpoint is saved in {run_dir / runs.CHECKPOINT}. "
                       f"Continue with: tunetext train --resume --output {run_dir}")
        elif resuming:
            message = (f"training interrupted before it resumed; the checkpoint in "
                       f"{run_dir / runs.CHECKPOINT} is as it was")
        else:
            message = f"training interrupted before it started; nothing was written to {run_dir}"
        super().__init__(message)


class StopFlag:
    """Turns the first Ctrl-C or SIGTERM into a request to checkpoint and stop; a second one kills.

    While `before_start` is set (data and model loading, which may take minutes), the first signal raises
    it at once instead: there is nothing to save yet."""

    def __init__(self):
        self.requested = False
        self.before_start: TrainingInterrupted | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.before_start is not None:
            raise self.before_start
        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        print("\ntunetext: stopping at the next safe point, saving a checkpoint if training has begun "
              "(again to kill now)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


KEYS = frozenset({"model", "optimizer", "scheduler", "best_weights", "rng", "step", "epoch", "batch",
                  "log_bytes"})


def rng_state() -> dict[str, Any]:
    """The random generators' states as tensors and plain numbers: what `torch.load(weights_only=True)`
    reads back without unpickling any other type."""
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # ("MT19937", keys, pos, ...)
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])


def save(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint beside the previous one and swap it in, so a failed write loses nothing."""
    path.mkdir(exist_ok=True)
    tmp = path / "state.pt.tmp"
    try:
        torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = "the previous one is kept: " if (path / "state.pt").is_file() else ""
        raise runs.RunError(f"could not write a checkpoint into {path} ({str(exc).splitlines()[0]}); "
                            f"{kept}{runs.after_a_failed_write(path.parent)}") from exc
    tmp.replace(path / "state.pt")


def load(path: Path) -> dict[str, Any]:
    """A checkpoint's state, read with `weights_only=True`: tensors, numbers, strings and containers of
    them, never an object that runs code while it is unpickled (a run folder may be shared)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports a refused type, a damaged zip and a short file differently
        if isinstance(exc, pickle.UnpicklingError):  # torch's own text advises loading it unsafely
            refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
            what = f"an object of type {refused.group(1)}" if refused else "an object"
            why = f"it holds {what} other than tensors and numbers, which could run code when loaded"
        else:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        raise runs.RunError(
            f"{path} cannot be read as a tunetext checkpoint ({why}). It is damaged, or was not written by "
            "this version of tunetext: tunetext loads checkpoints with weights_only=True and never runs "
            "code from them. Start the run again with --overwrite"
        ) from exc
    missing = KEYS - set(state) if isinstance(state, dict) else KEYS
    if missing:
        raise runs.RunError(f"{path} is not a tunetext checkpoint (it lacks {', '.join(sorted(missing))}); "
                            "start the run again with --overwrite")
    return state


def truncate_log(path: Path, size: int) -> None:
    """Cut the training log back to its length at the checkpoint: what a killed run logged after its last
    checkpoint is logged again when the resumed run repeats those steps."""
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


def restore(run_dir: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any,
            main: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Load the interrupted run's checkpoint into the model, optimizer, schedule and random generators;
    return the loop's state and the best weights so far."""
    state = load(run_dir / runs.CHECKPOINT / "state.pt")
    model.load_state_dict(state.pop("model"))
    optimizer.load_state_dict(state.pop("optimizer"))
    scheduler.load_state_dict(state.pop("scheduler"))
    best_weights = state.pop("best_weights")
    set_rng_state(state.pop("rng"))
    log_bytes = state.pop("log_bytes")
    if main:
        truncate_log(run_dir / runs.LOG, log_bytes)
    return state, best_weights
