"""`tunetext report` for multi-label and regression runs: the sections each task has, and that their
numbers agree with the run's metrics.json and with `Classifier` (the texts are scored again)."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from tunetext import load_config, train
from tunetext.predict import Classifier
from tunetext.report import report
from tunetext.report.page import _read_log
from tunetext.report.sections import TASK_SECTIONS, SplitScores, before_after, learning_curves
from tunetext.report.task_sections import MAX_CURVES, f1_curve, thresholds
from tunetext.runs import METRICS

IMG = r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]*)"'


def _train(model: Path, out: Path, source: Path, label_column: str, **extra) -> Path:
    overrides = {"data.source": str(source), "data.label_column": label_column, "model.name": str(model),
                 "model.max_length": 64, "train.epochs": 3, "train.batch_size": 8,
                 "train.learning_rate": 1e-3, "train.precision": "fp32",
                 "train.early_stopping_patience": None, **extra}
    train(load_config(overrides=overrides), out, progress=False)
    return out


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_bert, tiny_csv) -> Path:
    """The tiny data as tags: "spam" for spam, "number" for a text with a digit (some texts have none);
    early stopping on samples-F1, which is not a headline score."""
    folder = tmp_path_factory.mktemp("report-multi")
    source = folder / "tags.jsonl"
    with open(tiny_csv, newline="") as f, open(source, "w") as out:
        for row in csv.DictReader(f):
            tags = (["spam"] if row["label"] == "spam" else []) + (["number"] if re.search(r"\d", row["text"])
                                                                    else [])
            out.write(json.dumps({"text": row["text"], "tags": tags}) + "\n")
    return _train(tiny_bert, folder / "run", source, "tags", **{"train.metric": "samples_f1"})


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_bert, tiny_csv) -> Path:
    """The tiny data with a score: the text's length over 7, plus 4.5 for spam."""
    folder = tmp_path_factory.mktemp("report-regression")
    source = folder / "scores.csv"
    with open(tiny_csv, newline="") as f, open(source, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "score"])
        for row in csv.DictReader(f):
            writer.writerow([row["text"], len(row["text"]) / 7 + (4.5 if row["label"] == "spam" else 0)])
    return _train(tiny_bert, folder / "run", source, "score", **{"data.task": "regression"})


def _page(run: Path) -> tuple[Path, str]:
    path = report(run, progress=False)
    return path, path.read_text(encoding="utf-8")


def _section(text: str, sid: str) -> str:
    return text.split(f'<section id="{sid}">')[1].split("</section>")[0]


def _cells(row_html: str) -> list[str]:
    """The cells of a table row as text: tags removed, entities decoded."""
    return [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html)]


def test_multi_label_report_has_its_sections_and_agrees_with_the_metrics(multi_label_run):
    path, text = _page(multi_label_run)
    metrics = json.loads((multi_label_run / METRICS).read_text())
    test, task = metrics["test"], metrics["task"]
    for sid, title in TASK_SECTIONS["multi_label"]:
        assert f'<section id="{sid}"><h2>{title}</h2>' in text, sid
    assert 'id="confusion-matrix"' not in text and "temperature scaling" not in text
    assert sorted(p.stem for p in path.parent.glob("*.png")) == sorted(
        ["learning_curves", "thresholds", "calibration", "before_after", "data"])
    assert f'test micro-F1</div><div class="value">{test["micro_f1"]:.3f}<' in text
    assert f'macro-F1 at 0.5</div><div class="value">{test["at_0.5"]["macro_f1"]:.3f}<' in text
    # Headline scores at the tuned thresholds against 0.5
    heads = _section(text, "thresholds")
    assert _cells(heads.split("<tr>")[2])[1:3] == [f"{test['micro_f1']:.3f}", f"{test['macro_f1']:.3f}"]
    assert _cells(heads.split("<tr>")[3])[-1] == f"{test['at_0.5']['hamming_loss']:.3f}"
    # Every label's threshold, how it was chosen, and its scores at the threshold and at 0.5
    rows = {c[0]: c for c in map(_cells, _section(text, "per-label").split("<tr>")[2:])}
    assert set(rows) == set(test["label_names"])
    for name, cells in rows.items():
        at, base = test["per_label"][name], test["at_0.5"]["per_label"][name]
        assert cells[1:3] == [f"{task['thresholds'][name]:.3f}", task["how"][name]]
        assert cells[5] == f"{at['f1']:.3f}" and cells[8] == f"{base['f1']:.3f}"
        assert cells[9] == str(at["support"])
    assert f"Mean over the labels: {test['calibration']['ece_mean']:.3f}" in text
    # The re-scored test split gives the run's wrong decisions: Hamming loss of them all.
    wrong = round(test["hamming_loss"] * test["n"] * len(test["label_names"]))
    errors = _section(text, "label-errors")
    assert f"{wrong:,} of the {test['n'] * len(test['label_names']):,} (text, label) decisions" in errors
    assert errors.count('<td class="text">') == min(wrong, 10)
    # The data table counts the texts with no label.
    assert "<th>no label</th>" in _section(text, "data")


def test_the_largest_per_label_errors_are_the_classifiers(multi_label_run):
    _, text = _page(multi_label_run)
    clf = Classifier.load(multi_label_run)
    errors = _section(text, "label-errors")
    rows = [_cells(r) for r in errors.split("<tr>")[2:]]
    assert rows, "the tiny model makes mistakes"
    gaps = []
    for probability, threshold, label, kind, row_text in rows:
        p = clf.predict(row_text).probabilities[label]
        assert float(probability) == pytest.approx(p, abs=1e-3)
        assert float(threshold) == pytest.approx(clf.thresholds[label], abs=1e-3)
        assert (p >= clf.thresholds[label]) == (kind == "given, but not true")
        gaps.append(p if kind == "given, but not true" else 1 - p)
    assert gaps == sorted(gaps, reverse=True)


def test_regression_report_has_a_scatter_and_the_largest_errors(regression_run):
    path, text = _page(regression_run)
    metrics = json.loads((regression_run / METRICS).read_text())
    test = metrics["test"]
    for sid, title in TASK_SECTIONS["regression"]:
        assert f'<section id="{sid}"><h2>{title}</h2>' in text, sid
    assert sorted(p.stem for p in path.parent.glob("*.png")) == sorted(
        ["learning_curves", "predictions", "before_after"])
    assert re.findall(IMG, _section(text, "predictions")) == ["predicted vs true values and residuals"]
    for key in ("r2", "mae", "pearson"):
        assert re.search(rf'test [^<]+</div><div class="value">{test[key]:.3f}<', text), key
    scores = _cells(_section(text, "predictions").split("<tr>")[2])
    keys = ("mae", "rmse", "r2", "pearson", "spearman")
    assert scores == [f"{test[k]:.3f}" for k in keys] + [str(test["n"])]
    rows = [_cells(r) for r in _section(text, "errors").split("<tr>")[2:]]
    assert len(rows) == min(test["n"], 10)
    clf = Classifier.load(regression_run)
    errors = []
    for predicted, true, error, row_text in rows:
        assert float(predicted) == pytest.approx(clf.predict(row_text).value, abs=1e-3)
        assert float(error) == pytest.approx(float(predicted) - float(true), abs=2e-3)
        errors.append(abs(float(error)))
    assert errors == sorted(errors, reverse=True)
    if test["n"] <= 10:  # every test text is in the table: their mean error is the run's MAE
        assert np.mean(errors) == pytest.approx(test["mae"], abs=2e-3)
    # Before vs after in the task's scores; the data as the targets' spread.
    head = re.findall(r"<th>([^<]*)</th>", _section(text, "before-after"))
    assert head == ["", "R²", "MAE", "Pearson", "RMSE", "Spearman", "n"]
    assert "<th>target mean</th>" in _section(text, "data")


def test_unreadable_data_still_gives_a_multi_label_report(multi_label_run, tmp_path):
    run = tmp_path / "moved"
    shutil.copytree(multi_label_run, run, ignore=shutil.ignore_patterns("report"))
    config = (run / "tunetext.yaml").read_text()
    (run / "tunetext.yaml").write_text(re.sub(r"source: .*", "source: /nonexistent/tags.jsonl", config))
    text = report(run, tmp_path / "r.html", progress=False).read_text()
    assert all(f'id="{sid}"' in text for sid, _ in TASK_SECTIONS["multi_label"])
    assert text.count("The run&#x27;s data could not be read again") == 2  # curves and errors
    assert 'alt="F1 against the threshold per label"' not in text
    assert "<td>tuned thresholds</td>" in text  # the tables come from metrics.json


def test_learning_curves_plot_the_runs_metric_from_the_log(multi_label_run):
    config = load_config(multi_label_run / "tunetext.yaml")
    metrics = json.loads((multi_label_run / METRICS).read_text())
    entries = _read_log(multi_label_run / "train_log.jsonl")
    drawn = []
    learning_curves(lambda fig, name, alt: drawn.append(fig) or "", entries, metrics, config)
    ax_val = drawn[0].axes[1]
    lines = {line.get_label(): list(line.get_ydata()) for line in ax_val.get_lines()}
    evals = [e for e in entries if e.get("event") == "eval"]
    before = metrics["before_finetune"]["val"]
    assert lines["samples-F1"] == [before["samples_f1"], *(e["val_samples_f1"] for e in evals)]
    assert lines["micro-F1"] == [before["micro_f1"], *(e["val_micro_f1"] for e in evals)]


def test_before_after_uses_the_tasks_headline_scores(multi_label_run):
    metrics = json.loads((multi_label_run / METRICS).read_text())
    drawn = []
    table = before_after(lambda fig, name, alt: drawn.append(fig) or "", metrics)
    assert re.findall(r"<th>([^<]*)</th>", table) == ["", "micro-F1", "macro-F1", "samples-F1",
                                                       "subset accuracy", "n"]
    legend = [t.get_text() for t in drawn[0].axes[0].get_legend().get_texts()]
    assert legend == ["micro-F1", "macro-F1"]


def test_f1_curve_by_hand():
    truth = np.array([1, 1, 0, 0])
    probs = np.array([0.9, 0.4, 0.6, 0.1])
    # 0.05: all four predicted, 2 right: 2*2/(4+2); 0.5: 0.9 and 0.6, 1 right: 2/(2+2); 0.95: none.
    assert f1_curve(truth, probs, np.array([0.05, 0.5, 0.95])) == pytest.approx([4 / 6, 0.5, 0.0])
    assert f1_curve(truth, probs, np.array([0.4]))[0] == pytest.approx(2 * 2 / (3 + 2))  # at the threshold


def test_many_labels_draw_the_most_frequent_and_say_so(tmp_path):
    k, n = MAX_CURVES + 3, 40
    names = [f"label{i}" for i in range(k)]
    rng = np.random.default_rng(0)
    truth = np.zeros((n, k), dtype=np.int8)
    for i in range(k):
        truth[: i + 1, i] = 1  # label i has i + 1 positives: the first 3 are the least frequent
    probs = rng.random((n, k))
    per = {m: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 0} for m in names}
    scores = {"micro_f1": 0.1, "macro_f1": 0.2, "samples_f1": 0.3, "subset_accuracy": 0.4,
              "hamming_loss": 0.5}
    metrics = {"task": {"type": "multi_label", "thresholds": dict.fromkeys(names, 0.3)},
               "test": {"label_names": names, "per_label": per, **scores}}
    split = SplitScores(["t"] * n, truth, np.zeros((n, k)), 1.0, True, probs)
    drawn = []
    out = thresholds(lambda fig, name, alt: drawn.append(fig) or "<img>", metrics, split, None, None)
    titles = [ax.get_title() for ax in drawn[0].axes if ax.get_visible()]
    assert titles == [f"label{i} (n={i + 1})" for i in range(3, k)]
    assert f"The {MAX_CURVES} labels with the most validation examples of {k}" in out
