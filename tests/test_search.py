"""Hyperparameter search: the space is validated, a search writes a best config that trains, the first
trial is the config as written, pruned trials are recorded as such, and a study resumes."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest

from tunetext import adaptive, runs
from tunetext.cli import main
from tunetext.config import ConfigError, SearchConfig, load_config, with_overrides
from tunetext.search import _pruner, _public_url, _sample, search

SPACE = {
    "train.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    "train.batch_size": {"type": "categorical", "choices": [4, 8]},
    "train.strategy": {"type": "categorical", "choices": ["full", "last_n"]},
    "train.last_n": {"type": "int", "low": 1, "high": 2, "when": {"train.strategy": "last_n"}},
}


@pytest.fixture(scope="module")
def search_config(tiny_config):
    """`search_config(model, **search)`: the tiny run config with a search section: 2 epochs a trial;
    pruning only where a test forces it."""

    def config(model, **search):
        overrides = {"search.space": SPACE, "search.pruner": "none", "search.startup_trials": 2}
        overrides.update({f"search.{k}": v for k, v in search.items()})
        return with_overrides(tiny_config(model, epochs=2), overrides)

    return config


def always_prune(monkeypatch):
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)


def test_space_problems_are_reported_together(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text(
        "train:\n  epochz: 2\n"
        "search:\n  space:\n"
        "    train.learning_rate: {type: float, low: 1.0e-3, high: 1.0e-5, log: true}\n"  # low > high
        "    train.weight_decay: {type: real, low: 0, high: 0.1}\n"  # bad type
        "    train.warmup: {type: float, low: 0, high: 0.2}\n"  # no such field
        "    data.max_train_samples: {type: int, low: 100, high: 200}\n"  # trials must share the data
        "    train.batch_size: {type: categorical, choices: [0, 16]}\n"  # 0 is no batch size; 32 missing
        "    train.epochs: {type: float, low: 1, high: 3}\n"  # an int field
        "    train.last_n: {type: int, low: 1, high: 4, stp: 2}\n"  # misspelt spec key
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    expected = {
        "train.epochz": ["unknown", "train.epochs"],
        "search.space.train.learning_rate": ["above high", "swap"],
        "search.space.train.weight_decay": ["'real'", "'float', 'int', 'categorical'"],
        "search.space.train.warmup": ["unknown key", "did you mean train.warmup_ratio"],
        "search.space.data.max_train_samples": ["cannot be searched", "same data"],
        "search.space.train.epochs": ["integer", "type: int"],
        "search.space.train.last_n.stp": ["unknown key", "step"],
    }
    for where, needles in expected.items():
        matching = [p for p in problems if p.startswith(where + ":")]
        assert matching, (where, problems)
        for needle in needles:
            assert any(needle in p for p in matching), (needle, matching)
    batch = [p for p in problems if p.startswith("search.space.train.batch_size:")]
    assert any("0 is not a valid train.batch_size" in p for p in batch), batch
    assert len(problems) == len(expected) + 1, problems


def test_configured_values_must_lie_in_the_space():
    """The first trial trains the config as written, so its values must be ones the space can hold."""
    space = {**SPACE, "train.batch_size": {"type": "categorical", "choices": [4, 16]},
             "train.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2}}
    with pytest.raises(ConfigError) as info:
        load_config(overrides={"search.space": space, "train.learning_rate": 1e-4})
    problems = sorted(info.value.problems)
    assert len(problems) == 2, problems
    assert problems[0].startswith("search.space.train.batch_size:") and "32 is outside" in problems[0]
    assert problems[1].startswith("search.space.train.learning_rate:") and "0.0001 is outside" in problems[1]
    # train.last_n is outside its range too, but only sampled under strategy last_n: not a problem here.
    last_n = {"type": "int", "low": 3, "high": 4, "when": {"train.strategy": "last_n"}}
    load_config(overrides={"search.space": {**SPACE, "train.last_n": last_n}, "train.batch_size": 8})


def test_search_section_is_optional_and_left_out_of_training_configs():
    from tunetext.config import dump_config

    assert "search" not in dump_config(load_config())
    config = load_config(overrides={"search.space": SPACE, "search.trials": 3, "train.batch_size": 8})
    again = dump_config(config)
    assert "search:" in again and "train.last_n" in again


def test_conditional_parameter_is_sampled_only_when_its_condition_holds(tiny_bert, search_config):
    config = search_config(tiny_bert)
    full = _sample(optuna.trial.FixedTrial({"train.learning_rate": 1e-3, "train.batch_size": 4,
                                            "train.strategy": "full"}), config)
    assert "train.last_n" not in full
    last = _sample(optuna.trial.FixedTrial({"train.learning_rate": 1e-3, "train.batch_size": 4,
                                            "train.strategy": "last_n", "train.last_n": 2}), config)
    assert last["train.last_n"] == 2


def test_storage_password_is_never_written():
    assert "s3cret" not in _public_url("postgresql://tune:s3cret@db.example:5432/studies")
    assert _public_url("sqlite:////tmp/study.db") == "sqlite:////tmp/study.db"


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, tiny_bert, search_config):
    out = tmp_path_factory.mktemp("search") / "out"
    result = search(search_config(tiny_bert), out, trials=3)
    return out, result


def test_search_writes_best_config_and_every_trial(finished_search, tiny_bert, tiny_config):
    out, result = finished_search
    summary = json.loads((out / "search.json").read_text())
    trials = summary["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2]
    assert {t["state"] for t in trials} == {"COMPLETE"}
    assert all(list(t["val_by_epoch"]) == ["1", "2"] for t in trials)  # each epoch reported
    assert summary["complete"] == result.complete == 3 and summary["pruned"] == 0

    # The first trial is the config as written.
    first = trials[0]
    assert first["default"] and not any(t["default"] for t in trials[1:])
    assert first["params"] == {"train.learning_rate": 1e-3, "train.batch_size": 8, "train.strategy": "full"}
    assert adaptive.same_run(load_config(out / "trials" / "trial-0" / runs.CONFIG),
                             tiny_config(tiny_bert, epochs=2))
    assert result.default_value == first["value"]

    # Each trial's value is its run's best validation score; the best is the maximum, never below default.
    for t in trials:
        metrics = json.loads((out / "trials" / f"trial-{t['number']}" / runs.METRICS).read_text())
        assert t["value"] == pytest.approx(metrics["training"]["best_val_macro_f1"])
    assert result.best_value == max(t["value"] for t in trials) >= result.default_value
    assert summary["best"]["number"] == result.best_trial

    # best_config.yaml is the best trial's full config, loadable, without a search section.
    text = result.best_config_path.read_text()
    assert f"# Launch: tunetext train --config {result.best_config_path}" in text
    assert "search:" not in text
    best = load_config(result.best_config_path)
    assert adaptive.same_run(load_config(out / "trials" / f"trial-{result.best_trial}" / runs.CONFIG), best)
    for key, value in result.best_params.items():
        section, name = key.split(".")
        assert getattr(getattr(best, section), name) == value


def test_resume_continues_the_study_and_pruned_trials_are_recorded(finished_search, tiny_bert, tmp_path,
                                                                   monkeypatch, search_config):
    out = tmp_path / "out"
    shutil.copytree(finished_search[0], out)
    config = search_config(tiny_bert)

    # Every finished trial counts toward --trials: asking for 3 again runs nothing.
    assert search(config, out, trials=3).complete == 3

    always_prune(monkeypatch)
    result = search(config, out, trials=4)
    trials = json.loads((out / "search.json").read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2, 3]  # continued, not restarted
    before = finished_search[1].trials
    assert [{**t, "run_dir": None} for t in trials[:3]] == [{**t, "run_dir": None} for t in before]
    assert trials[3]["state"] == "PRUNED"
    assert (result.complete, result.pruned) == (3, 1)
    for t in trials[3:]:
        assert list(t["val_by_epoch"]) == ["1"]
        run_dir = out / "trials" / f"trial-{t['number']}"
        assert not runs.is_finished(run_dir) and not runs.has_checkpoint(run_dir)


def test_the_default_trial_is_never_pruned(tiny_bert, tmp_path, monkeypatch, search_config):
    always_prune(monkeypatch)
    result = search(search_config(tiny_bert), tmp_path / "out", trials=1)
    (trial,) = result.trials
    assert trial["default"] and trial["state"] == "COMPLETE" and list(trial["val_by_epoch"]) == ["1", "2"]
    assert result.best_value == result.default_value == trial["value"]


def test_median_pruner_spares_warmup_epochs_and_prunes_below_the_median():
    """Steps are epochs; `pruner_warmup_epochs` epochs are never pruned, later ones below the median are."""
    sc = SearchConfig(pruner="median", pruner_startup_trials=1, pruner_warmup_epochs=1)
    study = optuna.create_study(direction="maximize", pruner=_pruner(sc))
    done = study.ask()
    for epoch in (1, 2, 3):
        done.report(0.9, step=epoch)
    study.tell(done, 0.9)
    trial = study.ask()
    trial.report(0.1, step=1)
    assert not trial.should_prune()  # epoch 1 is warmup
    trial.report(0.1, step=2)
    assert trial.should_prune()
    good = study.ask()
    good.report(0.95, step=1)
    good.report(0.95, step=2)
    assert not good.should_prune()
    assert not optuna.create_study(pruner=_pruner(SearchConfig(pruner="none"))).ask().should_prune()


def test_a_study_refuses_trials_of_another_config(finished_search, tiny_bert, tmp_path, search_config):
    out = tmp_path / "out"
    shutil.copytree(finished_search[0], out)
    other = with_overrides(search_config(tiny_bert), {"train.weight_decay": 0.5})
    with pytest.raises(ConfigError, match="started with another config") as info:
        search(other, out, trials=4)
    assert "train.weight_decay: study 0.01, now 0.5" in str(info.value)
    # What may differ per session or worker is not part of a study's config.
    same = search_config(tiny_bert, sampler_seed=7, timeout=60, storage=None, trials=9)
    assert search(same, out, trials=3).complete == 3


def test_cli_prints_the_trials_and_the_best_config(finished_search, tiny_bert, tmp_path, capsys,
                                                   search_config):
    from tunetext.config import dump_config

    out = tmp_path / "out"
    shutil.copytree(finished_search[0], out)
    config_path = tmp_path / "search.yaml"
    config_path.write_text(dump_config(search_config(tiny_bert)))
    assert main(["search", "--config", str(config_path), "--output", str(out), "--trials", "3"]) == 0
    printed = capsys.readouterr().out
    best = finished_search[1]
    assert "3 complete, 0 pruned" in printed
    assert f"best: trial {best.best_trial}, val macro_f1 {best.best_value:.4f}" in printed
    assert "(config as written)" in printed
    assert f"tunetext train --config {out / 'best_config.yaml'}" in printed


def test_empty_space_is_an_error(tiny_bert, tmp_path, tiny_config):
    with pytest.raises(ConfigError, match="search.space: empty"):
        search(tiny_config(tiny_bert), tmp_path / "out")


def test_a_resumed_session_draws_new_trials_not_the_first_sessions_again(tiny_bert, tmp_path, monkeypatch,
                                                                         search_config):
    """Training is faked here (a score from the learning rate): only the sampling is under test."""
    import importlib

    from tunetext.train import Run

    search_module = importlib.import_module("tunetext.search")

    def fake_train(config, output_dir, overwrite=False, progress=True, on_evaluate=None):
        score = 1 - abs(config.train.learning_rate - 1e-3)
        on_evaluate({"step": 1, "epoch": 1, "val_macro_f1": score})
        return Run(output_dir, config, {"training": {"best_val_macro_f1": score}}, ["ham", "spam"])

    monkeypatch.setattr(search_module, "train", fake_train)
    config = search_config(tiny_bert, startup_trials=10)  # every trial a random draw of the seeded sampler
    search(config, tmp_path / "out", trials=3)
    result = search(config, tmp_path / "out", trials=5)
    drawn = [t["params"]["train.learning_rate"] for t in result.trials[1:]]
    assert len(set(drawn)) == 4, drawn  # with the seed reused, trials 3 and 4 would repeat 1 and 2
    assert result.best_value == max(1 - abs(lr - 1e-3) for lr in [1e-3, *drawn])
