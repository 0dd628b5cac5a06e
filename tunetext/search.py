"""Hyperparameter search with Optuna: TPE sampling over the config's `search.space`, median pruning on
per-epoch validation scores, and the best config written out ready to train.

    result = search(load_config("configs/search_sms_spam.yaml"), "runs/search", trials=10)
    # runs/search/best_config.yaml, runs/search/search.json, runs/search/trials/trial-N/

Each trial is a normal `train()` run into `output_dir/trials/trial-N`, its config the base config with the
sampled values applied as overrides. The first trial of a study is the base config itself (the space's
keys at their configured values), so the best trial can never be worse than it on validation. The study
lives in an Optuna storage: a SQLite file in `output_dir` by default, or any database URL that several
machines share; the same storage and study name continue a study.
"""

from __future__ import annotations

import logging
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunetext import adaptive, runs
from tunetext.config import (
    SECTIONS,
    CategoricalParam,
    ConfigError,
    FloatParam,
    RunConfig,
    SearchConfig,
    dump_config,
    search_space_problems,
    with_overrides,
)
from tunetext.data import read_source
from tunetext.data.tasks import infer_task
from tunetext.train import train

log = logging.getLogger(__name__)

BEST_CONFIG = "best_config.yaml"
SUMMARY = "search.json"
TRIALS = "trials"
_DEFAULT_ATTR = "tunetext_default"  # marks the enqueued trial that trains the config as written
_CONFIG_ATTR = "tunetext_config"  # the base config a study was started with
_HEARTBEAT_S = 60


@dataclass
class SearchResult:
    """The outcome of a search: the best trial, the default trial beside it, and every trial."""

    best_value: float
    best_params: dict[str, Any]
    best_trial: int
    best_config_path: Path
    best_run_dir: Path
    default_value: float | None  # the config as written; None if that trial did not complete
    complete: int
    pruned: int
    failed: int
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)


def default_storage(output_dir: str | Path) -> str:
    """`sqlite:///<output_dir>/study.db`, with an absolute path so the URL works from any directory."""
    return f"sqlite:///{(Path(output_dir) / 'study.db').resolve()}"


def _public_url(storage: str) -> str:
    """The storage URL without its password, for files and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a database URL sqlalchemy parses; it holds no password it can find either
        return storage


def _base_config(config: RunConfig) -> RunConfig:
    """The config a trial starts from: the search section gone, so each trial is a plain training run."""
    return config.model_copy(update={"search": SearchConfig()})


def _default_params(config: RunConfig) -> dict[str, Any]:
    """The space's keys at their configured values: the first trial."""
    params: dict[str, Any] = {}
    for key, spec in config.search.space.items():
        if _applies(spec.when, params, config):
            section, name = key.split(".")
            params[key] = getattr(getattr(config, section), name)
    return params


def _applies(when: dict[str, Any] | None, params: dict[str, Any], config: RunConfig) -> bool:
    """Whether a `when` condition holds for values sampled so far, else the configured values."""
    for key, wanted in (when or {}).items():
        section, name = key.split(".")
        value = params[key] if key in params else getattr(getattr(config, section), name)
        if value != wanted:
            return False
    return True


def _sample(trial: Any, config: RunConfig) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, spec in config.search.space.items():
        if not _applies(spec.when, params, config):
            continue
        if isinstance(spec, CategoricalParam):
            params[key] = trial.suggest_categorical(key, spec.choices)
        elif isinstance(spec, FloatParam):
            params[key] = trial.suggest_float(key, spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            params[key] = trial.suggest_int(key, spec.low, spec.high, step=spec.step, log=spec.log)
    return params


def _config_differences(stored_yaml: str, config: RunConfig) -> list[str]:
    """How `config` differs from a study's stored config, compared as configs (a field's spelling in YAML
    may change between tunetext versions), not as text."""
    try:
        stored = RunConfig.model_validate(yaml.safe_load(stored_yaml))
    except (ValidationError, yaml.YAMLError) as exc:
        return [f"the study's config no longer loads ({str(exc).splitlines()[0]})"]
    return [f"{section}.{key}: study {getattr(getattr(stored, section), key)!r}, now "
            f"{getattr(getattr(config, section), key)!r}"
            for section in SECTIONS for key in type(getattr(config, section)).model_fields
            if getattr(getattr(stored, section), key) != getattr(getattr(config, section), key)]


def _pruner(sc: SearchConfig) -> Any:
    import optuna

    if sc.pruner == "none":
        return optuna.pruners.NopPruner()
    # Intermediate values are reported at step = epoch (1, 2, ...); epochs up to the warmup are never pruned.
    return optuna.pruners.MedianPruner(n_startup_trials=sc.pruner_startup_trials,
                                       n_warmup_steps=sc.pruner_warmup_epochs + 1)


def _counted(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _trial_rows(study: Any, output_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                     "duration_s": duration, "default": bool(t.user_attrs.get(_DEFAULT_ATTR)),
                     "val_by_epoch": {str(k): v for k, v in sorted(t.intermediate_values.items())},
                     "run_dir": str(output_dir / TRIALS / f"trial-{t.number}")})
    return rows


def search(config: RunConfig, output_dir: str | Path, trials: int | None = None,
           timeout: float | None = None, storage: str | None = None) -> SearchResult:
    """Search `config.search.space` with Optuna and write the best config to `output_dir`.

    `trials` (default `search.trials`) is the number of finished trials wanted in the study in all:
    complete and pruned trials already in it count, so rerunning a finished search does nothing and an
    interrupted one runs only the missing trials. `timeout` (default `search.timeout`) stops starting new
    trials after that many seconds. `storage` (default `search.storage`, else a SQLite file in
    `output_dir`) is any Optuna storage URL; workers on several machines that share one database and
    study name split the trials between them.

    Writes `best_config.yaml` (the complete config of the best trial, ready for `tunetext train`),
    `search.json` (every trial) and one run directory per trial under `trials/`.
    """
    import optuna

    sc = config.search
    problems = search_space_problems(sc.space, config)
    if not sc.space:
        problems.append("search.space: empty; declare the hyperparameters to search, e.g. "
                        "train.learning_rate: {type: float, low: 1.0e-5, high: 3.0e-4, log: true}")
    if problems:
        raise ConfigError(problems)
    trials = sc.trials if trials is None else trials
    timeout = sc.timeout if timeout is None else timeout
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or sc.storage or default_storage(out)
    config = _with_metric(config)
    metric = config.train.metric
    base = _base_config(config)

    # Heartbeats let a later session see that a killed worker's trial is dead (FAIL), not RUNNING forever.
    with warnings.catch_warnings():  # heartbeats are still flagged experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=_HEARTBEAT_S,
                                         grace_period=5 * _HEARTBEAT_S)
    study = optuna.create_study(storage=rdb, study_name=sc.study_name, direction="maximize",
                                load_if_exists=True, pruner=_pruner(sc))
    # The seed moves on with the study: a resumed session, or a second worker joining, would otherwise
    # replay the first session's random draws and train the same trials again.
    study.sampler = optuna.samplers.TPESampler(seed=sc.sampler_seed + len(study.trials),
                                               n_startup_trials=sc.startup_trials)
    # A study is only meaningful for one base config: refuse to mix trials of another into it.
    identity = config.model_copy(update={"search": sc.model_copy(update={
        "trials": 1, "timeout": None, "storage": None, "sampler_seed": 0})})  # these may differ per session
    started_with = study.user_attrs.get(_CONFIG_ATTR)
    if started_with is None:
        study.set_user_attr(_CONFIG_ATTR, dump_config(identity))
    elif differences := _config_differences(started_with, identity):
        raise ConfigError([f"study {sc.study_name!r} in {_public_url(storage)} was started with another "
                           f"config ({'; '.join(differences)}); use the same config (a key=value override "
                           "pins a default that changed since) to continue it, or a new search.study_name "
                           "or --storage for a new study"])
    if not study.trials:
        study.enqueue_trial(_default_params(config), user_attrs={_DEFAULT_ATTR: True}, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        params = _sample(trial, config)
        trial_config = with_overrides(base, params)
        tc = trial_config.train
        if tc.report_to != "none" and tc.experiment_name is None:  # tracked: a study's trials, one experiment
            trial_config = with_overrides(trial_config, {"train.experiment_name": sc.study_name})
        default = bool(trial.user_attrs.get(_DEFAULT_ATTR))
        run_dir = out / TRIALS / f"trial-{trial.number}"
        described = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                              for k, v in params.items())
        log.info("trial %d%s: %s", trial.number, " (the config as written)" if default else "", described)

        reported: set[int] = set()

        def report(entry: dict[str, Any]) -> None:
            # Epochs compare across batch sizes where optimizer steps do not; with train.eval_every, the
            # first validation of each epoch is the one reported (Optuna keeps one value per step).
            if entry["epoch"] in reported:
                return
            reported.add(entry["epoch"])
            trial.report(entry[f"val_{metric}"], step=entry["epoch"])
            # The default trial always completes, and a trial in its last epoch has cost all it will:
            # pruning it then would only throw its result away.
            last_epoch = entry["epoch"] >= entry.get("epochs", trial_config.train.epochs or 0)
            if not default and not last_epoch and trial.should_prune():
                raise optuna.TrialPruned(f"val {metric} {entry[f'val_{metric}']:.4f} at epoch "
                                         f"{entry['epoch']} is below the median of earlier trials")

        try:
            run = train(trial_config, run_dir, overwrite=True, progress=False, on_evaluate=report)
        except optuna.TrialPruned as pruned:
            shutil.rmtree(run_dir / runs.CHECKPOINT, ignore_errors=True)  # it will never be resumed
            log.info("trial %d pruned: %s", trial.number, pruned)
            raise
        value = float(run.metrics["training"][f"best_val_{metric}"])
        log.info("trial %d: best val %s %.4f", trial.number, metric, value)
        return value

    missing = max(0, trials - _counted(study))
    log.info("study %r in %s: %d finished trials, %d wanted, running %d", sc.study_name,
             _public_url(storage), _counted(study), trials, missing)
    started = time.perf_counter()
    if missing:
        # n_trials bounds this worker; the callback stops every worker sharing the study at the total.
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        study.optimize(objective, n_trials=missing, timeout=timeout, gc_after_trial=True,
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=finished)])
    return _write_results(study, config, out, storage, time.perf_counter() - started)


def _with_metric(config: RunConfig) -> RunConfig:
    """`config` with train.metric=auto made the data's task's metric (`adaptive.METRICS`), so that every
    trial reports and is compared on the same score."""
    if config.train.metric != "auto":
        return config
    dc = config.data
    task: str = dc.task
    if task == "auto":
        raw = read_source(dc.source, dc.text_column, dc.label_columns or dc.label_column)
        task, _ = infer_task(raw["train"], dc)
    train = config.train.model_copy(update={"metric": adaptive.METRICS[task][0]})
    return config.model_copy(update={"train": train})


def _write_results(study: Any, config: RunConfig, out: Path, storage: str, seconds: float) -> SearchResult:
    from optuna.trial import TrialState

    metric = config.train.metric
    rows = _trial_rows(study, out)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise runs.RunError(f"no trial of study {config.search.study_name!r} completed, so there is no best "
                            f"config; see {out / TRIALS} and run the search again to add trials")
    best = study.best_trial
    default = next((r for r in rows if r["default"]), None)
    default_value = default["value"] if default and default["state"] == "COMPLETE" else None
    best_config = with_overrides(_base_config(config), best.params)
    best_path = out / BEST_CONFIG
    versus = (f" (the config as written, trial {default['number']}: {default_value:.4f})"
              if default is not None and default_value is not None else "")
    header = (f"# Best of {len(complete)} complete trials of study {config.search.study_name!r}: trial "
              f"{best.number}, val {metric} {best.value:.4f}{versus}.\n"
              f"# Searched: {', '.join(config.search.space)}. Found by: tunetext search (see search.json).\n"
              f"# Launch: tunetext train --config {best_path} --output {out / 'best'}\n")
    tmp = best_path.with_name(f".{BEST_CONFIG}.tmp")
    tmp.write_text(header + dump_config(best_config))
    tmp.replace(best_path)
    counts = {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    runs.write_json(out / SUMMARY, {
        "study_name": config.search.study_name, "storage": _public_url(storage),
        "objective": f"maximise best val_{metric} of each trial",
        "best": {"number": best.number, "value": best.value, "params": best.params,
                 "run_dir": str(out / TRIALS / f"trial-{best.number}"), "config": str(best_path)},
        "default": ({"number": default["number"], "value": default_value, "params": default["params"]}
                    if default else None),
        "complete": counts["COMPLETE"], "pruned": counts["PRUNED"], "failed": counts["FAIL"],
        "seconds_this_session": seconds, "trials": rows})
    log.info("best: trial %d, val %s %.4f; config written to %s", best.number, metric, best.value, best_path)
    return SearchResult(best_value=best.value, best_params=best.params, best_trial=best.number,
                        best_config_path=best_path, best_run_dir=out / TRIALS / f"trial-{best.number}",
                        default_value=default_value, complete=counts["COMPLETE"], pruned=counts["PRUNED"],
                        failed=counts["FAIL"], metric=metric, trials=rows)
