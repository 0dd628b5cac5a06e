"""Experiment tracking (train.report_to): what TensorBoard and MLflow hold after a tiny run is read back and
compared with the run's own train log, resolved config and metrics.json; `none` writes nothing; a search
tracks one run per trial; a run that raises is closed, not left active."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tunetext import runs, tracking, train
from tunetext.config import ConfigError, load_config, with_overrides
from tunetext.search import search


def _log(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / runs.LOG).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == event]


def _resolved_params(run_dir: Path) -> dict:
    return tracking.config_params(load_config(run_dir / runs.CONFIG))


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A local file-based MLflow store for this test, named by MLFLOW_TRACKING_URI (MLflow 3 refuses file
    stores without MLFLOW_ALLOW_FILE_STORE; a file store opens faster than a new SQLite one)."""
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri


def _mlflow_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, [e.name for e in client.search_experiments()]
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


def test_tensorboard_holds_the_logged_steps_validations_config_and_final_metrics(tmp_path, tiny_bert,
                                                                                 tiny_config):
    run_dir = tmp_path / "runs" / "tb"
    train(tiny_config(tiny_bert, report_to="tensorboard", log_every=2), run_dir, progress=False)
    events = EventAccumulator(str(run_dir / tracking.TENSORBOARD), size_guidance={"scalars": 0})
    events.Reload()

    def series(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    logged = _log(run_dir, "train")
    assert len(logged) >= 3
    for key in ("loss", "lr", "samples_per_s"):
        assert series(f"train/{key}") == [(e["step"], pytest.approx(e[key], rel=1e-6)) for e in logged], key
    evals = _log(run_dir, "eval")
    assert [e["epoch"] for e in evals] == [1, 2, 3]
    assert series("val/macro_f1") == [(e["step"], pytest.approx(e["val_macro_f1"], rel=1e-6)) for e in evals]
    assert series("val/epoch") == [(e["step"], e["epoch"]) for e in evals]
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    steps = metrics["training"]["steps"]
    assert series("final/test/accuracy") == [(steps, pytest.approx(metrics["test"]["accuracy"], rel=1e-6))]
    assert series("final/val/macro_f1") == [(steps, pytest.approx(metrics["val"]["macro_f1"], rel=1e-6))]

    # The resolved config, as the HParams plugin reads it from the same event file
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    params = _resolved_params(run_dir)
    assert set(hparams) == set(params)
    assert hparams["train.learning_rate"].number_value == pytest.approx(1e-3)
    assert hparams["train.epochs"].number_value == 3
    assert hparams["train.report_to"].string_value == "tensorboard"
    assert hparams["model.name"].string_value == str(tiny_bert)
    # tunetext's own folder: the run can be replaced with --overwrite
    assert runs.foreign_entries(run_dir) == []
    assert not (run_dir.parent / tracking.MLFLOW_DB).exists()


def test_mlflow_holds_the_config_steps_final_metrics_and_run_files(tmp_path, tiny_bert, tiny_config,
                                                                    mlflow_uri):
    run_dir = tmp_path / "runs" / "ml"
    train(tiny_config(tiny_bert, report_to="mlflow", log_every=2), run_dir, progress=False)
    (run,) = _mlflow_runs(mlflow_uri, "runs")  # the experiment: the run folder's parent's name
    assert run.info.run_name == "ml"
    assert run.info.status == "FINISHED"
    assert run.data.params == {k: str(v) for k, v in _resolved_params(run_dir).items()}
    assert run.data.params["train.epochs"] == "3"

    client = MlflowClient(mlflow_uri)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    logged = _log(run_dir, "train")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(e["step"], pytest.approx(e["loss"], rel=1e-9)) for e in logged]
    evals = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert sorted((m.step, m.value) for m in evals) == \
        [(e["step"], pytest.approx(e["val_accuracy"])) for e in _log(run_dir, "eval")]
    metrics = json.loads((run_dir / runs.METRICS).read_text())
    final = {k: v for k, v in run.data.metrics.items() if k.startswith("final/")}
    assert final == pytest.approx(tracking.numbers(metrics, "final"))
    assert final["final/test/macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {runs.MARKER, runs.CONFIG, runs.METRICS, runs.LOG, runs.DATA, "model.safetensors",
            "README.md"} <= artifacts
    assert not (run_dir / tracking.TENSORBOARD).exists()


def test_both_track_the_same_losses(tmp_path, tiny_bert, tiny_config, mlflow_uri):
    run_dir = tmp_path / "runs" / "both"
    train(tiny_config(tiny_bert, report_to="both", epochs=1, experiment_name="tiny"), run_dir,
          progress=False)
    events = EventAccumulator(str(run_dir / tracking.TENSORBOARD))
    events.Reload()
    (run,) = _mlflow_runs(mlflow_uri, "tiny")
    history = MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "train/loss")
    assert [(e.step, pytest.approx(e.value, rel=1e-6)) for e in events.Scalars("train/loss")] == \
        sorted((m.step, m.value) for m in history)
    assert len(history) == len(_log(run_dir, "train"))


def test_none_writes_nothing_beside_the_run(trained_run):
    """The default: no tensorboard folder, no MLflow store beside the run folder."""
    assert load_config(trained_run / runs.CONFIG).train.report_to == "none"
    assert not (trained_run / tracking.TENSORBOARD).exists()
    assert [p.name for p in trained_run.parent.iterdir()] == [trained_run.name]
    assert not Path("mlflow.db").exists() and not Path("mlruns").exists()


def test_a_search_tracks_each_trial_as_a_run(tmp_path, tiny_bert, tiny_config, mlflow_uri):
    config = with_overrides(tiny_config(tiny_bert, epochs=1, report_to="mlflow"), {
        "search.space": {"train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        "search.pruner": "none", "search.startup_trials": 1, "search.study_name": "tiny-study"})
    result = search(config, tmp_path / "search", trials=2)
    tracked = _mlflow_runs(mlflow_uri, "tiny-study")
    assert [r.info.run_name for r in tracked] == ["trial-0", "trial-1"]
    for run, trial in zip(tracked, result.trials, strict=True):
        assert float(run.data.params["train.learning_rate"]) == pytest.approx(
            trial["params"]["train.learning_rate"])
        assert run.data.metrics["final/training/best_val_macro_f1"] == pytest.approx(trial["value"])
    assert tracked[0].data.params["train.learning_rate"] != tracked[1].data.params["train.learning_rate"]


def test_a_run_that_raises_is_closed_and_the_next_one_tracks(tmp_path, tiny_bert, tiny_config, mlflow_uri):
    config = tiny_config(tiny_bert, report_to="mlflow", epochs=1)

    def fail(entry):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        train(config, tmp_path / "runs" / "failed", progress=False, on_evaluate=fail)
    train(config, tmp_path / "runs" / "next", progress=False)
    tracked = _mlflow_runs(mlflow_uri, "runs")
    assert [(r.info.run_name, r.info.status) for r in tracked] == [("failed", "FAILED"), ("next", "FINISHED")]


def test_a_missing_package_says_how_to_install_it(monkeypatch):
    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs mlflow.*pip install 'tunetext\[tracking\]'"):
        tracking.require_packages("both")
    tracking.require_packages("tensorboard")
    tracking.require_packages("none")


def test_mlflow_store_defaults_beside_the_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.mlflow_store(tmp_path) == (f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}",
                                               (tmp_path / "mlartifacts").resolve().as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking.mlflow_store(tmp_path) == ("http://tracking:5000", None)


def test_two_processes_track_once_from_the_main_process(tmp_path, tiny_bert, tiny_csv, mlflow_uri):
    """Under `accelerate launch` with 2 CPU processes (gloo), one MLflow run and one event file hold the
    main process's log, the same as its train_log.jsonl."""
    run_dir = tmp_path / "runs" / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m",
               "tunetext.cli", "train", "--data", str(tiny_csv), "--model", str(tiny_bert), "--output",
               str(run_dir), "--epochs", "1", "--max-train-samples", "16", "--quiet", "model.max_length=64",
               "train.precision=fp32", "train.batch_size=4", "train.log_every=1", "train.report_to=both"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((run_dir / tracking.TENSORBOARD).glob("events.out.tfevents.*"))) == 1
    (run,) = _mlflow_runs(mlflow_uri, "runs")
    history = MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == \
        [(e["step"], pytest.approx(e["loss"], rel=1e-9)) for e in _log(run_dir, "train")]
    assert run.data.params["train.report_to"] == "both"
