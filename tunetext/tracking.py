"""Experiment tracking (`train.report_to`): TensorBoard and MLflow through accelerate's trackers.

`train()` holds a `Tracking` for the whole run: `start` once the config is resolved and the run folder
made, `log` for each training log line, `evaluations` around the validation callback, `finish` with the
final metrics once the run folder is complete. Only the main process tracks; the others hold an empty
`Tracking` whose calls do nothing. What is logged:

- parameters: the resolved config, flattened to dotted keys (`train.learning_rate`); TensorBoard's
  HParams, MLflow's params;
- `train/loss`, `train/lr`, `train/samples_per_s`, `train/epoch` at each log line's optimizer step;
- `val/<name>` (the task's headline scores and `train.metric`) and `val/epoch` at each validation;
- `final/<path>` for every number in `metrics.json` (`final/test/accuracy`), at the last step;
- MLflow: the finished run folder as the run's artifacts.

accelerate's `Accelerator(log_with=...)` is made before the run folder is known and its `end_training`
also destroys the process group (a search or `train_seeds` trains again in the same process), so the
trackers are accelerate's tracker classes held here, each started, logged and finished explicitly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from accelerate.tracking import GeneralTracker, MLflowTracker, TensorBoardTracker

from tunetext.config import ConfigError, RunConfig

TENSORBOARD = "tensorboard"  # RUN_DIR/tensorboard: the event files' default folder
MLFLOW_DB = "mlflow.db"  # the MLflow store beside the run folders when MLFLOW_TRACKING_URI is unset
MLFLOW_ARTIFACTS = "mlartifacts"
_PACKAGES = {"tensorboard": ("tensorboard",), "mlflow": ("mlflow",), "both": ("tensorboard", "mlflow")}
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow refuses in a key; TensorBoard takes these too


def flatten(tree: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """A nested dict as one level, its keys the paths joined by `sep`."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def config_params(config: RunConfig) -> dict[str, str | int | float | bool]:
    """The resolved config as tracking parameters: dotted keys; numbers, strings and booleans as they are,
    anything else (null, lists, empty sections) as its JSON text, which both trackers take."""
    return {key: value if isinstance(value, str | int | float | bool) else json.dumps(value)
            for key, value in flatten(config.model_dump(mode="json")).items()}


def numbers(tree: dict[str, Any], prefix: str) -> dict[str, float]:
    """Every number in a (nested) metrics dict, keyed `prefix/path/to/it`; booleans, strings, lists and
    nulls are not metrics and are left out. Characters MLflow refuses in a key (a label's name may have
    them) become `_`."""
    return {_UNSAFE.sub("_", key): float(value) for key, value in flatten(tree, prefix, "/").items()
            if isinstance(value, int | float) and not isinstance(value, bool)}


def require_packages(report_to: str) -> None:
    """A ConfigError naming the missing package and the extra that installs it, before training starts."""
    missing = [name for name in _PACKAGES.get(report_to, ()) if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError([f"train.report_to={report_to} needs {' and '.join(missing)}, which is not "
                           "installed: pip install 'tunetext[tracking]' (or set train.report_to=none)"])


def mlflow_store(base: Path) -> tuple[str, str | None]:
    """(tracking URI, artifact location) for a run: MLFLOW_TRACKING_URI when the user set it (its
    experiments keep their own artifact location), else a SQLite store in `base`, as MLflow 3 defaults to
    `sqlite:///mlflow.db` in the working folder, with artifacts in `base/mlartifacts`."""
    artifacts = (base / MLFLOW_ARTIFACTS).resolve().as_uri()
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return (uri, None) if uri else (f"sqlite:///{(base / MLFLOW_DB).resolve()}", artifacts)


class Tracking:
    """The run's trackers, a context manager around training: a run that raises is closed as failed
    (MLflow `FAILED`, or `KILLED` when interrupted or pruned) so the next run in the process starts clean."""

    def __init__(self) -> None:
        self.trackers: list[GeneralTracker] = []

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close(None if kind is None else _status(kind))

    def start(self, config: RunConfig, run_dir: Path, main: bool) -> None:
        """Start `config.train.report_to`'s trackers for the run in `run_dir` (on the main process; every
        process checks that the packages are there, so none waits for one that stopped) and log the config."""
        tc = config.train
        require_packages(tc.report_to)
        if tc.report_to == "none" or not main:
            return
        base = Path(tc.tracking_dir) if tc.tracking_dir is not None else run_dir.resolve().parent
        if tc.report_to in ("tensorboard", "both"):
            # logging_dir/run_name: RUN_DIR/tensorboard by default, tracking_dir/RUN_NAME when set
            self.trackers.append(TensorBoardTracker(run_dir.name, tc.tracking_dir) if tc.tracking_dir
                                 else TensorBoardTracker(TENSORBOARD, run_dir))
        if tc.report_to in ("mlflow", "both"):
            import mlflow  # optional and slow to import: only runs that report to it pay for it

            uri, artifacts = mlflow_store(base)
            mlflow.set_tracking_uri(uri)
            experiment = tc.experiment_name or run_dir.resolve().parent.name
            self.trackers.append(MLflowTracker(experiment, artifacts, run_name=run_dir.name))
        params = config_params(config)
        for tracker in self.trackers:
            tracker.start()
            if isinstance(tracker, TensorBoardTracker):
                _tensorboard_hparams(tracker, params)
            else:
                tracker.store_init_configuration(params)

    def log(self, entry: dict[str, Any], prefix: str = "train") -> None:
        """One log entry's numbers (not its `event` and `step`) as `prefix/<key>` at its `step`."""
        if self.trackers:
            values = numbers({k: v for k, v in entry.items() if k not in ("event", "step")}, prefix)
            for tracker in self.trackers:
                tracker.log(values, step=entry["step"])

    def evaluations(self, then: Callable[[dict[str, Any]], None] | None
                    ) -> Callable[[dict[str, Any]], None] | None:
        """`train`'s `on_evaluate` with each validation result logged first (`val/<name>`, `val/epoch`)."""
        if not self.trackers:
            return then

        def logged(entry: dict[str, Any]) -> None:
            self.log({("epoch" if k == "epoch" else k.removeprefix("val_")): v for k, v in entry.items()
                      if k == "step" or k == "epoch" or k.startswith("val_")}, prefix="val")
            if then is not None:
                then(entry)

        return logged

    def finish(self, metrics: dict[str, Any], run_dir: Path) -> None:
        """The final metrics (`final/...`, at the last step), the finished run folder as MLflow artifacts,
        and the trackers closed."""
        step = int(metrics.get("training", {}).get("steps", 0))
        for tracker in self.trackers:
            tracker.log(numbers(metrics, "final"), step=step)
            if isinstance(tracker, MLflowTracker):
                tracker.log_artifacts(str(run_dir))
        self.close(None)

    def close(self, status: str | None) -> None:
        """Close every tracker; `status` is the MLflow run's end state when it did not finish."""
        for tracker in self.trackers:
            if status is not None and isinstance(tracker, MLflowTracker):
                import mlflow  # already imported by start

                mlflow.end_run(status=status)
            else:
                tracker.finish()
        self.trackers = []


def _status(kind: type[BaseException]) -> str:
    """MLflow's end state for a run that raised `kind`: stopped on purpose (Ctrl-C, a signal, an Optuna
    pruning, named so as not to import optuna here) or failed."""
    stopped = issubclass(kind, KeyboardInterrupt) or kind.__name__ == "TrialPruned"
    return "KILLED" if stopped else "FAILED"


def _tensorboard_hparams(tracker: TensorBoardTracker, params: dict[str, Any]) -> None:
    """The config into the run's own event file. accelerate's `store_init_configuration` calls
    `add_hparams`, which writes a second, time-named run folder (and an hparams.yml) beside the scalars;
    in the same file, TensorBoard's HParams view links the config to this run's curves, and the run
    folder's `tensorboard/` stays one flat folder of event files (`runs.OWN_FOLDERS`)."""
    from torch.utils.tensorboard.summary import hparams  # torch's own; imports tensorboard

    writer = tracker.writer
    for summary in hparams(params, {}):
        writer.file_writer.add_summary(summary)
    writer.flush()

