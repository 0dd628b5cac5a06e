"""The real training loop on 2 CPU processes (gloo), launched the way users launch it: `accelerate launch`.

What is checked: each process trains on its own, disjoint share of every epoch; a step's global batch is
the per-process batch times the processes; the result matches one process with that global batch; only
the main process writes the run directory; early stopping and the frozen-prefix cache decide alike; an
interrupted run resumes. The tolerance on the match is stated in the test: dropout draws
differ between the two runs (each process seeds the same generator, one process draws once), so the runs
agree closely, not bit for bit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "distributed_worker.py"
PER_PROCESS_BATCH, PROCESSES, EPOCHS = 4, 2, 4
TRAIN_ROWS = 32  # a multiple of the global batch: neither run has a short last batch to treat differently
STEPS_PER_EPOCH = TRAIN_ROWS // (PER_PROCESS_BATCH * PROCESSES)  # one optimizer step per global batch


def _settings(batch_size: int) -> dict[str, object]:
    """The settings both runs share; only the batch size differs (per process, or the global one)."""
    return {"model.max_length": 64, "train.precision": "fp32",
            "train.early_stopping_patience": 1, "train.group_by_length": "false",
            # last_n: one process caches the frozen prefix, several run it at every step (prefix_cache.py)
            "train.strategy": "last_n", "train.learning_rate": 1e-3,
            "train.batch_size": batch_size, "train.eval_batch_size": 16}


def _launch(tmp_path: Path, model: Path, data: Path, out: Path, *extra: str,
            interrupt: str = "") -> subprocess.CompletedProcess:
    shares = tmp_path / "shares"
    shares.mkdir(exist_ok=True)
    env = {**os.environ, "TUNETEXT_TEST_SHARES": str(shares), "OMP_NUM_THREADS": "1",
           "TUNETEXT_TEST_INTERRUPT": interrupt,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    # `--cpu` alone starts one process (accelerate spreads CPU processes only through MPI); `--multi_gpu` on a
    # machine without GPUs starts them with torch.distributed, and accelerate joins them with gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", str(PROCESSES), "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", str(WORKER),
               "train", "--data", str(data), "--model", str(model), "--output", str(out),
               "--epochs", str(EPOCHS), "--max-train-samples", str(TRAIN_ROWS), "--quiet",
               *[f"{k}={v}" for k, v in _settings(PER_PROCESS_BATCH).items()], *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _shares(tmp_path: Path) -> list[list[list[int]]]:
    """Each process's collated batches, in order: token ids per text."""
    return [[json.loads(line) for line in (tmp_path / "shares" / f"rank{r}.jsonl").read_text().splitlines()]
            for r in range(PROCESSES)]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_bert, tiny_csv):
    """One 2-process run of the tiny BERT, shared by the checks that read it."""
    tmp = tmp_path_factory.mktemp("two-process")
    done = _launch(tmp, tiny_bert, tiny_csv, tmp / "run")
    assert done.returncode == 0, done.stderr[-4000:]
    return tmp


def test_each_process_sees_a_disjoint_share_of_every_epoch(two_process_run):
    shares = _shares(two_process_run)
    per_epoch = STEPS_PER_EPOCH  # batches a process collates in an epoch
    epochs = len([e for e in _log(two_process_run / "run") if e["event"] == "epoch"])
    for rank in range(PROCESSES):
        assert len(shares[rank]) == per_epoch * epochs
        assert all(len(batch) == PER_PROCESS_BATCH for batch in shares[rank])
    for epoch in range(epochs):
        epoch_batches = [shares[r][epoch * per_epoch:(epoch + 1) * per_epoch] for r in range(PROCESSES)]
        seen = [[tuple(text) for batch in batches for text in batch] for batches in epoch_batches]
        assert not set(seen[0]) & set(seen[1])
        assert len(set(seen[0]) | set(seen[1])) == TRAIN_ROWS  # together, the whole epoch, once


def test_global_batch_is_per_process_batch_times_processes(two_process_run):
    run = two_process_run / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["processes"] == PROCESSES
    # one optimizer step per global batch of 4 x 2 texts: 32 texts an epoch are 4 steps, not 8
    assert metrics["training"]["steps"] == metrics["training"]["epochs_completed"] * STEPS_PER_EPOCH
    assert [e["step"] for e in _log(run) if e["event"] == "epoch"] == [
        STEPS_PER_EPOCH * (i + 1) for i in range(metrics["training"]["epochs_completed"])]


def test_only_the_main_process_writes_the_run_directory(two_process_run):
    run = two_process_run / "run"
    log = _log(run)
    steps = [e["step"] for e in log if e["event"] == "train"]
    assert steps == sorted(set(steps)), "a log entry written twice: a second process wrote the run"
    assert [e["epoch"] for e in log if e["event"] == "epoch"] == [1, 2]
    assert not (run / "checkpoint").exists()


def test_two_processes_match_one_process_with_the_same_global_batch(two_process_run, tiny_bert, tiny_csv,
                                                                     tmp_path):
    from tunetext import load_config, train

    settings = {k: {"null": None, "false": False}.get(v, v) if isinstance(v, str) else v
                for k, v in _settings(PER_PROCESS_BATCH * PROCESSES).items()}
    config = load_config(overrides={"data.source": str(tiny_csv), "model.name": str(tiny_bert),
                                    "train.epochs": EPOCHS, "data.max_train_samples": TRAIN_ROWS, **settings})
    single = train(config, tmp_path / "single", progress=False)
    two = json.loads((two_process_run / "run" / "metrics.json").read_text())
    losses = [e["loss"] for e in _log(two_process_run / "run") if e["event"] == "train"]
    single_losses = [e["loss"] for e in _log(tmp_path / "single") if e["event"] == "train"]
    assert single.metrics["training"]["steps"] == two["training"]["steps"]
    # early stopping: validation is flat after epoch 1, patience 1 stops both runs after epoch 2 of 4
    assert two["training"]["stopped_early"] and single.metrics["training"]["stopped_early"]
    assert two["training"]["epochs_completed"] == single.metrics["training"]["epochs_completed"] == 2
    # the frozen-prefix cache: one process trains the top from it, two run the prefix at every step
    assert single.metrics["training"]["prefix_cached"] and not two["training"]["prefix_cached"]

    # Stated tolerance: each logged loss within 0.01 (measured here: within 0.001; dropout draws differ).
    assert losses == pytest.approx(single_losses, abs=0.01)
    assert two["test"]["accuracy"] == pytest.approx(single.metrics["test"]["accuracy"], abs=0.1)


def test_an_interrupted_two_process_run_resumes(two_process_run, tiny_bert, tiny_csv, tmp_path):
    # Ctrl-C reaches the second process alone, in the middle of the first epoch: both must stop after
    # the same step (or the first waits forever in the next all-reduce), the main one saving the checkpoint.
    out = tmp_path / "run"
    stopped = _launch(tmp_path, tiny_bert, tiny_csv, out, interrupt="1:3")
    assert stopped.returncode != 0
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "metrics.json").exists()
    assert [(e["epoch"], e["batches"], e["complete"]) for e in _log(out) if e["event"] == "epoch"] == [
        (1, 3, False)]  # stopped after the step of its 3rd batch, the 1st epoch's 4 batches not done
    resumed = _launch(tmp_path, tiny_bert, tiny_csv, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    whole = _log(two_process_run / "run")
    again = _log(out)
    assert [e["step"] for e in again if e["event"] == "train"] == [
        e["step"] for e in whole if e["event"] == "train"]
    # the same data order and weights; rank 1's dropout generator restarts from the main process's state
    assert [e["loss"] for e in again if e["event"] == "train"] == pytest.approx(
        [e["loss"] for e in whole if e["event"] == "train"], abs=0.01)
    assert json.loads((out / "metrics.json").read_text())["training"]["steps"] == 2 * STEPS_PER_EPOCH
