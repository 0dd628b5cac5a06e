"""Multi-label and regression end to end with the tiny BERT: task inference and its refusals, label sets
from lists, delimited strings and 0/1 columns, float targets and their errors, training (full, last_n with
the cache, lora; features, distill and prompt classification refuse), thresholds and target scale kept in
the run and applied by the Classifier and `tunetext predict`, long texts pooled as logits."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tunetext import train
from tunetext.cli import main
from tunetext.config import ConfigError, with_overrides
from tunetext.data import load_dataset
from tunetext.data.sources import DataError
from tunetext.errors import UsageError
from tunetext.evaluate import evaluate
from tunetext.inference import predict_log_probs
from tunetext.predict import Classifier
from tunetext.runs import read_json
from tunetext.search import _with_metric

SPAMMY = "Congratulations you won 1000 pounds, txt CLAIM to 85991"
PLAIN = "Ok see you at 8:30 then"
LONG = " ".join(["Thanks for coffee yesterday, it was lovely."] * 6 + [SPAMMY] * 6)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tags(row: dict[str, str]) -> list[str]:
    """Two labels the tiny model can learn: spam (the tiny data's class) and number (a digit in the text)."""
    digit = re.search(r"\d", row["text"])
    return (["spam"] if row["label"] == "spam" else []) + (["number"] if digit else [])


def _score(row: dict[str, str], offset: float = 1000.0) -> float:
    """A target around `offset` that varies with the text: its length, more for spam."""
    return round(offset + len(row["text"]) / 7 + (4.5 if row["label"] == "spam" else 0.0), 4)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_csv) -> dict[str, Path]:
    """The tiny texts with multi-label and regression labels, in the ways users bring them."""
    out = tmp_path_factory.mktemp("task-data")
    rows = _rows(tiny_csv)
    paths = {"ml_jsonl": out / "ml.jsonl", "reg_csv": out / "reg.csv"}
    paths["ml_jsonl"].write_text("".join(json.dumps({"text": r["text"], "tags": _tags(r)}) + "\n"
                                         for r in rows))
    _write_csv(paths["reg_csv"], ["text", "score"], [[r["text"], _score(r)] for r in rows])
    paths["ml_pipe"] = _write_csv(out / "pipe.csv", ["text", "tags"],
                                  [[r["text"], "|".join(_tags(r))] for r in rows])
    paths["ml_columns"] = _write_csv(
        out / "columns.csv", ["text", "spam", "number", "never"],
        [[r["text"], int("spam" in _tags(r)), int("number" in _tags(r)), 0] for r in rows])
    return paths


def _config(tiny_config, tiny_bert, source: Path, label_column: str, epochs: int = 3, **overrides):
    return with_overrides(tiny_config(tiny_bert, epochs=epochs),
                          {"data.source": str(source), "data.label_column": label_column, **overrides})


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory, tiny_bert, tiny_config, files) -> Path:
    out = tmp_path_factory.mktemp("runs") / "ml"
    train(_config(tiny_config, tiny_bert, files["ml_jsonl"], "tags"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def reg_run(tmp_path_factory, tiny_bert, tiny_config, files) -> Path:
    out = tmp_path_factory.mktemp("runs") / "reg"
    train(_config(tiny_config, tiny_bert, files["reg_csv"], "score"), out, progress=False)
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ---- multi-label through train, evaluate, reload, predict ------------------------------------------------

def test_multi_label_run_records_its_task_thresholds_and_metric(ml_run):
    m = _metrics(ml_run)
    assert json.loads((ml_run / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert m["task"]["type"] == "multi_label"
    assert set(m["task"]["thresholds"]) == {"number", "spam"}
    assert all(0.0 < t < 1.0 for t in m["task"]["thresholds"].values())
    assert m["test"]["task"] == "multi_label" and "at_0.5" in m["test"]
    assert 0.0 <= m["test"]["micro_f1"] <= 1.0
    # train.metric auto is the task's headline score, and the best validation score is kept under its name
    assert "best_val_micro_f1" in m["training"] and m["training"]["task"] == "multi_label"


def test_multi_label_classifier_answers_label_sets_at_the_runs_thresholds(ml_run, tmp_path):
    clf = Classifier.load(ml_run)
    assert clf.task == "multi_label" and sorted(clf.label_names) == ["number", "spam"]
    assert clf.thresholds == _metrics(ml_run)["task"]["thresholds"]  # survive the reload
    preds = clf.predict([SPAMMY, PLAIN])
    for p in preds:
        assert set(p.probabilities) == {"number", "spam"} and p.value is None
        assert all(0.0 <= v <= 1.0 for v in p.probabilities.values())
        assert p.labels == sorted((n for n, v in p.probabilities.items() if v >= clf.thresholds[n]),
                                  key=lambda n: -p.probabilities[n])
        assert p.label == (p.labels[0] if p.labels else None)
    assert clf.scores([SPAMMY, PLAIN]).shape == (2, 2)

    # Editing the run's thresholds changes the answer: at 0.0 a label is always given, above 1 never.
    edited = tmp_path / "edited"
    shutil.copytree(ml_run, edited)
    m = _metrics(edited)
    m["task"]["thresholds"] = {"spam": 0.0, "number": 1.01}
    (edited / "metrics.json").write_text(json.dumps(m))
    clf = Classifier.load(edited)
    assert clf.thresholds == {"spam": 0.0, "number": 1.01}
    assert [p.labels for p in clf.predict([SPAMMY, PLAIN, "hello"])] == [["spam"]] * 3


def test_multi_label_evaluate_scores_the_test_split(ml_run):
    m = evaluate(ml_run, progress=False)
    assert m["task"] == "multi_label"
    assert set(m["per_label"]) == {"number", "spam"}
    saved = read_json(ml_run / "metrics.json")["test"]
    for key in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss"):
        assert m[key] == pytest.approx(saved[key])
    assert m["at_0.5"]["micro_f1"] == pytest.approx(saved["at_0.5"]["micro_f1"])


def test_predict_cli_writes_label_sets(ml_run, tmp_path, capsys):
    assert main(["predict", str(ml_run), SPAMMY, PLAIN, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = Classifier.load(ml_run).predict([SPAMMY, PLAIN])
    assert [r["labels"] for r in rows] == [p.labels for p in expected]
    assert all(set(r["probabilities"]) == {"number", "spam"} and "value" not in r for r in rows)
    out = tmp_path / "p.csv"
    assert main(["predict", str(ml_run), SPAMMY, PLAIN, "--output", str(out)]) == 0
    table = list(_rows(out))
    assert list(table[0]) == ["text", "labels", *(f"p_{n}" for n in Classifier.load(ml_run).label_names),
                              "truncated"]
    assert [r["labels"] for r in table] == [",".join(p.labels) for p in expected]


# ---- regression through train, evaluate, reload, predict -------------------------------------------------

def test_regression_run_predicts_on_the_targets_scale(reg_run, files):
    m = _metrics(reg_run)
    assert json.loads((reg_run / "config.json").read_text())["problem_type"] == "regression"
    assert m["task"]["type"] == "regression"
    targets = [float(r["score"]) for r in _rows(files["reg_csv"])]
    assert m["task"]["target_mean"] == pytest.approx(np.mean(targets), abs=3)
    assert "best_val_r2" in m["training"]
    for key in ("mae", "rmse", "r2", "pearson", "spearman"):
        assert key in m["test"]
    clf = Classifier.load(reg_run)
    assert clf.task == "regression" and clf.thresholds is None
    preds = clf.predict([SPAMMY, PLAIN])
    for p in preds:
        assert p.label is None and p.labels == [] and p.probabilities == {}
        # the value is on the targets' scale (around 1000), not the standardised one (around 0)
        assert abs(p.value - np.mean(targets)) < 4 * np.std(targets) and p.value > 900
    assert clf.scores([SPAMMY]).shape == (1, 1)
    # the model's raw output is a standardised target: times the training std plus the mean is the value
    ids = [e.ids for e in clf.encode([SPAMMY, PLAIN])]
    raw = predict_log_probs(clf.model, ids, clf.tokenizer.pad_token_id, 8)[:, 0]
    task = m["task"]
    expected = raw * task["target_std"] + task["target_mean"]
    assert [p.value for p in preds] == pytest.approx(expected.tolist(), rel=1e-6)
    assert task["target_std"] == pytest.approx(np.std(targets), rel=0.5)
    assert evaluate(reg_run, progress=False)["mae"] < 50  # on the original scale too


def test_predict_cli_writes_values(reg_run, tmp_path, capsys):
    assert main(["predict", str(reg_run), SPAMMY, "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["value"] == pytest.approx(Classifier.load(reg_run).predict(SPAMMY).value, rel=1e-5)
    assert "label" not in row and "probabilities" not in row
    out = tmp_path / "p.csv"
    assert main(["predict", str(reg_run), SPAMMY, "--output", str(out)]) == 0
    [row] = list(_rows(out))
    assert list(row) == ["text", "value", "truncated"] and float(row["value"]) > 900


# ---- data: inference, inputs, errors ---------------------------------------------------------------------

def _load(source: Path, label_column: str = "label", **data):
    from tunetext.config import load_config

    overrides = {"data.source": str(source), "data.label_column": label_column}
    overrides.update({f"data.{k}": v for k, v in data.items()})
    return load_dataset(load_config(overrides=overrides).data)


def test_list_labels_are_inferred_multi_label_and_reported(files):
    dataset = _load(files["ml_jsonl"], "tags")
    assert dataset.task == "multi_label"
    assert any("task multi_label" in line and "lists" in line for line in dataset.report)
    assert dataset.label_names == ["number", "spam"]
    assert all(isinstance(label, tuple) for label in dataset.train.labels)
    # rows with neither tag are kept with an empty set, and reported
    assert () in dataset.train.labels + dataset.val.labels + dataset.test.labels
    assert any("empty label set" in line for line in dataset.report)


def test_delimited_and_column_labels_give_the_same_sets(files):
    lists = _load(files["ml_jsonl"], "tags")
    piped = _load(files["ml_pipe"], "tags", task="multi_label", label_separator="|")
    assert piped.task == "multi_label" and piped.label_names == lists.label_names
    assert sorted(piped.train.labels) == sorted(lists.train.labels)
    columns = _load(files["ml_columns"], label_columns=["spam", "number", "never"])
    assert columns.task == "multi_label" and columns.label_names == ["spam", "number", "never"]
    # the label no training row has is a warning, not silence
    assert any("never positive in training" in line and "'never'" in line for line in columns.report)


def test_parquet_list_labels_are_multi_label(tmp_path, tiny_csv, files):
    import pandas as pd

    rows = _rows(tiny_csv)
    pd.DataFrame({"text": [r["text"] for r in rows], "tags": [_tags(r) for r in rows]}).to_parquet(
        tmp_path / "tags.parquet")
    dataset = _load(tmp_path / "tags.parquet", "tags")
    assert dataset.task == "multi_label" and dataset.label_names == ["number", "spam"]
    assert dataset.train.labels == _load(files["ml_jsonl"], "tags").train.labels  # the same rows, same sets


def test_a_bad_label_column_value_names_row_and_column(tmp_path, tiny_csv):
    rows = [[r["text"], int(r["label"] == "spam"), 0] for r in _rows(tiny_csv)]
    rows[4][2] = "maybe"
    path = _write_csv(tmp_path / "bad.csv", ["text", "spam", "other"], rows)
    with pytest.raises(DataError, match=r"(row|line) 6\b.*'other'.*'maybe'"):
        _load(path, label_columns=["spam", "other"])


def test_floats_with_many_values_are_regression(files):
    dataset = _load(files["reg_csv"], "score")
    assert dataset.task == "regression" and dataset.label_names == ["score"]
    assert all(isinstance(v, float) and v > 900 for v in dataset.train.labels)
    assert any("task regression" in line for line in dataset.report)


def test_a_stray_string_among_targets_names_its_row(tmp_path, tiny_csv):
    rows = [[r["text"], _score(r)] for r in _rows(tiny_csv)]
    rows[9][1] = "n/a?"
    path = _write_csv(tmp_path / "stray.csv", ["text", "score"], rows)
    with pytest.raises(DataError, match=r"(row|line) 11\b.*'n/a\?'.*not a finite number"):
        _load(path, "score", task="regression")


def test_a_stray_word_among_targets_left_at_auto_names_its_rows(tmp_path, tiny_csv):
    # Read as classes, every distinct number would become a class; auto stops and names the word's row
    rows = [[r["text"], _score(r)] for r in _rows(tiny_csv)]
    rows[9][1] = "n/a"
    path = _write_csv(tmp_path / "stray.csv", ["text", "score"], rows)
    with pytest.raises(DataError, match=r"51 labels are numbers and 1 are not: line 11 \('n/a'\)\. If the "
                       r"numbers are targets, set data\.task=regression"):
        _load(path, "score")
    # a few integer classes with a word among them are still classes
    rows = [[r["text"], "other" if i == 3 else str(i % 3)] for i, r in enumerate(_rows(tiny_csv))]
    assert _load(_write_csv(tmp_path / "classes.csv", ["text", "label"], rows)).task == "single_label"


def test_an_empty_label_column_cell_names_row_and_column(tmp_path, tiny_csv):
    rows = [[r["text"], int(r["label"] == "spam"), 0] for r in _rows(tiny_csv)]
    rows[4][2] = ""
    path = _write_csv(tmp_path / "empty.csv", ["text", "spam", "other"], rows)
    with pytest.raises(DataError, match=r"line 6: column 'other' holds no value"):
        _load(path, label_columns=["spam", "other"])
    with pytest.raises(ConfigError, match="'spam' more than once"):
        _load(path, label_columns=["spam", "spam"])


def test_a_multi_label_teacher_is_refused_for_distillation(tmp_path, tiny_bert, tiny_config, tiny_csv,
                                                           ml_run):
    from tunetext.models import ModelError

    config = _config(tiny_config, tiny_bert, tiny_csv, "label", **{"train.strategy": "distill",
                                                                   "train.distill_teacher": str(ml_run)})
    with pytest.raises(ModelError, match="is a multi_label run"):
        train(config, tmp_path / "student", progress=False)


def test_recurring_delimited_strings_ask_for_the_task(tmp_path, tiny_csv):
    rows = [[r["text"], ",".join(_tags(r)) or "none"] for r in _rows(tiny_csv)]
    path = _write_csv(tmp_path / "joined.csv", ["text", "label"], rows)
    with pytest.raises(DataError, match="data.task=multi_label"):
        _load(path)
    assert _load(path, task="multi_label").task == "multi_label"


def test_numbers_infer_a_task_only_when_unambiguous(tmp_path, tiny_csv):
    rows = _rows(tiny_csv)
    many = _write_csv(tmp_path / "ints.csv", ["text", "label"],
                      [[r["text"], i * 3] for i, r in enumerate(rows)])
    with pytest.raises(DataError, match="data.task=regression"):
        _load(many)
    assert _load(many, task="regression").task == "regression"
    few = _write_csv(tmp_path / "few.csv", ["text", "label"],
                     [[r["text"], int(r["label"] == "spam") + 1] for r in rows])
    assert _load(few).task == "single_label"  # a few integers are classes, as before


def test_data_show_prints_both_tasks(files, capsys):
    assert main(["data", "show", str(files["ml_jsonl"]), "--label-column", "tags"]) == 0
    out = capsys.readouterr().out
    assert "multi_label" in out and "spam" in out
    assert main(["data", "show", str(files["ml_columns"]), "--label-columns", "spam,number,never"]) == 0
    assert "multi_label" in capsys.readouterr().out
    assert main(["data", "show", str(files["ml_pipe"]), "--label-column", "tags", "--task", "multi_label",
                 "data.label_separator=|"]) == 0
    out = capsys.readouterr().out
    assert "multi_label, 2 labels: number, spam" in out and "[number, spam]" in out
    assert main(["data", "show", str(files["reg_csv"]), "--label-column", "score"]) == 0
    out = capsys.readouterr().out
    assert "regression" in out and "target" in out


def test_train_cli_takes_label_columns_and_task(tmp_path, tiny_bert, tiny_config, files, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(json.dumps(tiny_config(tiny_bert, epochs=1).model_dump(mode="json")))  # JSON is YAML
    assert main(["train", "--config", str(config), "--data", str(files["ml_columns"]), "--label-columns",
                 "spam,number,never", "--output", str(tmp_path / "ml"), "--quiet"]) == 0
    assert Classifier.load(tmp_path / "ml").label_names == ["spam", "number", "never"]
    assert "never positive in training: 'never'" in (tmp_path / "ml" / "data.json").read_text()  # data report
    assert _metrics(tmp_path / "ml")["test"]["labels_absent"] == ["never"]
    capsys.readouterr()
    # integers with many distinct values stop under auto; --task regression trains on them
    rows = [[r["text"], i * 3] for i, r in enumerate(_rows(files["reg_csv"]))]
    ints = _write_csv(tmp_path / "ints.csv", ["text", "label"], rows)
    argv = ["train", "--config", str(config), "--data", str(ints), "--quiet"]
    assert main([*argv, "--output", str(tmp_path / "stop")]) == 2
    assert "data.task=regression" in capsys.readouterr().err
    assert main([*argv, "--task", "regression", "--output", str(tmp_path / "reg")]) == 0
    assert Classifier.load(tmp_path / "reg").task == "regression"


# ---- strategies and settings -----------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", ["last_n", "lora"])
@pytest.mark.parametrize("task", ["ml", "reg"])
def test_last_n_with_the_cache_and_lora_train_both_tasks(strategy, task, tmp_path, tiny_bert, tiny_config,
                                                         files):
    source, column = (files["ml_jsonl"], "tags") if task == "ml" else (files["reg_csv"], "score")
    extra = {"train.last_n": 1, "train.cache_frozen": "on"} if strategy == "last_n" else {}
    run = train(_config(tiny_config, tiny_bert, source, column, epochs=1, **{"train.strategy": strategy},
                        **extra), tmp_path / "run", progress=False)
    assert run.metrics["task"]["type"] == ("multi_label" if task == "ml" else "regression")
    if strategy == "last_n":
        assert run.metrics["training"]["prefix_cached"]
    p = Classifier.load(tmp_path / "run").predict(SPAMMY)
    if task == "ml":
        assert set(p.probabilities) == {"number", "spam"}
    else:
        assert p.value is not None and p.value > 900


@pytest.mark.parametrize("strategy", ["features", "distill"])
@pytest.mark.parametrize("task", ["ml", "reg"])
def test_features_and_distill_refuse_other_tasks(strategy, task, tmp_path, tiny_bert, tiny_config, files,
                                                 trained_run):
    source, column = (files["ml_jsonl"], "tags") if task == "ml" else (files["reg_csv"], "score")
    extra = {"train.distill_teacher": str(trained_run)} if strategy == "distill" else {}
    config = _config(tiny_config, tiny_bert, source, column, **{"train.strategy": strategy}, **extra)
    with pytest.raises(ConfigError, match=f"strategy={strategy}"):
        train(config, tmp_path / "run", progress=False)


def test_prompt_classification_refuses_multi_label_data(files):
    from tunetext.config import DataConfig
    from tunetext.prompting import prompt_eval

    with pytest.raises(UsageError, match="multi_label"):
        prompt_eval("no-such-model", DataConfig(source=str(files["ml_jsonl"]), label_column="tags"), "{text}")


def test_metric_of_another_task_and_balanced_regression_are_config_errors(tmp_path, tiny_bert, tiny_config,
                                                                          files):
    with pytest.raises(ConfigError, match="r2 is not a multi_label"):
        train(_config(tiny_config, tiny_bert, files["ml_jsonl"], "tags", **{"train.metric": "r2"}),
              tmp_path / "a", progress=False)
    with pytest.raises(ConfigError, match="class_weights=balanced weights classes"):
        train(_config(tiny_config, tiny_bert, files["reg_csv"], "score",
                      **{"train.class_weights": "balanced"}), tmp_path / "b", progress=False)


def test_balanced_multi_label_weights_train(tmp_path, tiny_bert, tiny_config, files):
    overrides = {"data.label_columns": ["spam", "number", "never"], "train.class_weights": "balanced"}
    run = train(_config(tiny_config, tiny_bert, files["ml_columns"], "label", epochs=1, **overrides),
                tmp_path / "run", progress=False)
    assert run.config.train.class_weights == "balanced"
    assert set(run.metrics["task"]["thresholds"]) == {"spam", "number", "never"}


def test_long_multi_label_texts_pool_logits_into_independent_probabilities(tmp_path, tiny_bert, tiny_config,
                                                                          files):
    config = _config(tiny_config, tiny_bert, files["ml_jsonl"], "tags", epochs=1,
                     **{"data.long_text": "chunks", "data.max_chunks": 4, "model.max_length": 16})
    train(config, tmp_path / "run", progress=False)
    clf = Classifier.load(tmp_path / "run")
    p = clf.predict(LONG)
    assert p.chunks is not None and p.chunks > 1
    assert all(0.0 < v < 1.0 for v in p.probabilities.values())
    assert sum(p.probabilities.values()) != pytest.approx(1.0, abs=1e-3)
    # each label's probability is the sigmoid of its logit averaged over the windows (no log-softmax)
    [encoded] = clf.encode([LONG])
    logits = predict_log_probs(clf.model, encoded.windows, clf.tokenizer.pad_token_id, 8)
    assert len(logits) == p.chunks
    expected = 1 / (1 + np.exp(-logits.mean(axis=0)))
    assert [p.probabilities[n] for n in clf.label_names] == pytest.approx(expected.tolist(), abs=1e-5)


def test_search_resolves_metric_auto_to_the_tasks_metric(tiny_bert, tiny_config, files):
    assert _with_metric(_config(tiny_config, tiny_bert, files["reg_csv"], "score")).train.metric == "r2"
    assert _with_metric(_config(tiny_config, tiny_bert, files["ml_jsonl"], "tags")).train.metric == "micro_f1"
