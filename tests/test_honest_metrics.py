"""Honest metrics: macro scores over the classes present, degenerate-model warnings (in metrics, on the
command line and in the report), temperature scaling kept only when it helps, progress while scoring."""

from __future__ import annotations

import importlib
import io
import json
import shutil
import sys
from argparse import Namespace

import numpy as np
import pytest

from tunetext import Classifier
from tunetext.cli import commands, main
from tunetext.evaluate import compute_metrics, format_metrics, metrics_from_confusion
from tunetext.report import report
from tunetext.report.sections import warnings as warnings_section
from tunetext.train import Run

ev = importlib.import_module("tunetext.evaluate")  # the module; `tunetext.evaluate` is the function


# --- macro scores over the classes present ----------------------------------------------------------------

def test_a_class_absent_from_the_split_is_left_out_of_macro_scores():
    # a: 3 right, 1 called b (precision 1, recall 3/4, F1 6/7); b: 2 right (precision 2/3, recall 1,
    # F1 4/5); c has no example here and is never predicted.
    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    m = metrics_from_confusion(confusion, ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx((6 / 7 + 4 / 5) / 2)  # was (6/7 + 4/5) / 3 = 0.552
    assert m["macro_precision"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["macro_recall"] == pytest.approx((3 / 4 + 1) / 2)
    assert m["macro_classes"] == 2 and m["classes_absent"] == ["c"]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["weighted_f1"] == pytest.approx(4 / 6 * 6 / 7 + 2 / 6 * 4 / 5)  # absent: weight 0 anyway


def test_one_stray_prediction_of_an_absent_class_costs_only_that_prediction():
    # The case: 8 known classes, 7 in the test split; one text is given the 8th. The old average
    # counted the 8th as F1 0 and cost it a whole eighth of macro-F1.
    k, per = 8, 10
    confusion = np.zeros((k, k), dtype=np.int64)
    for i in range(k - 1):
        confusion[i, i] = per
    confusion[0, 0], confusion[0, k - 1] = per - 1, 1
    m = metrics_from_confusion(confusion, [f"c{i}" for i in range(k)])
    f1_first = 2 * 1 * 0.9 / 1.9  # precision 1, recall 9/10
    assert m["macro_f1"] == pytest.approx((f1_first + 6) / 7)
    assert m["macro_f1"] > 0.99 and m["macro_classes"] == 7 and m["classes_absent"] == ["c7"]
    assert m["per_class"]["c7"]["precision"] == 0.0 and m["per_class"]["c7"]["support"] == 0


def test_a_class_present_but_never_predicted_still_counts_with_f1_zero():
    m = compute_metrics([0, 0, 1], [0, 0, 0], ["a", "b"])
    assert m["per_class"]["b"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.8 + 0) / 2) and m["macro_classes"] == 2
    assert m["classes_absent"] == []


def test_format_metrics_says_over_how_many_classes_macro_averages():
    m = metrics_from_confusion(np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]]), ["a", "b", "c"])
    assert "  macro over 2 of 3 classes (absent from this split: c)" in format_metrics(m).splitlines()
    every = compute_metrics([0, 1, 2], [0, 1, 2], ["a", "b", "c"])
    assert "macro over" not in format_metrics(every)
    old = dict(every)  # a metrics.json written before these keys existed still prints
    del old["macro_classes"], old["classes_absent"]
    assert "macro over" not in format_metrics(old)


# --- degenerate-model warnings ----------------------------------------------------------------------------

def _confusion(true_a: int, true_b: int, pred_a_of_a: int, pred_a_of_b: int) -> np.ndarray:
    return np.array([[pred_a_of_a, true_a - pred_a_of_a], [pred_a_of_b, true_b - pred_a_of_b]])


def test_a_model_that_answers_one_class_for_everything_is_warned_about():
    m = metrics_from_confusion(_confusion(60, 40, 60, 40), ["ham", "spam"])  # everything "ham"
    assert len(m["warnings"]) == 2
    assert m["warnings"][0].startswith("the model answers 'ham' for 100% of the 100 examples, while only "
                                       "60% of them are 'ham'")
    assert m["warnings"][1] == ("accuracy 0.6000 is no better than always answering the most common class "
                                "'ham' (0.6000 of the 100 examples)")


def test_collapse_threshold_is_95_percent_of_predictions():
    # 95 of 100 answered "ham", 80 are ham: collapsed (and accuracy 0.85 beats the majority's 0.80).
    at = metrics_from_confusion(_confusion(80, 20, 80, 15), ["ham", "spam"])
    assert [w for w in at["warnings"] if "collapsed" in w] and len(at["warnings"]) == 1
    below = metrics_from_confusion(_confusion(80, 20, 80, 14), ["ham", "spam"])  # 94 of 100
    assert below["warnings"] == []


def test_answering_the_majority_is_fine_when_the_data_is_that_skewed():
    # 95 of 100 are ham, the model answers ham 96 times and is right 98 times: a good model, no warning.
    m = metrics_from_confusion(_confusion(95, 5, 94, 2), ["ham", "spam"])
    assert m["accuracy"] == pytest.approx(0.97) and m["warnings"] == []


def test_no_better_than_the_majority_class_is_warned_about_without_collapse():
    # 70% ham; the model spreads its answers but is right only 70% of the time.
    m = metrics_from_confusion(_confusion(70, 30, 55, 15), ["ham", "spam"])
    assert m["accuracy"] == pytest.approx(0.70)
    assert m["warnings"] == ["accuracy 0.7000 is no better than always answering the most common class "
                             "'ham' (0.7000 of the 100 examples)"]
    better = metrics_from_confusion(_confusion(70, 30, 60, 8), ["ham", "spam"])  # 0.82
    assert better["warnings"] == []


def test_a_split_with_one_class_has_no_majority_warning():
    assert compute_metrics([0, 0, 0], [0, 0, 1], ["a", "b"])["warnings"] == []


def _collapsed_metrics() -> dict:
    return compute_metrics([0] * 6 + [1] * 4, [0] * 10, ["ham", "spam"])


def test_evaluate_command_prints_warnings_on_stderr(monkeypatch, capsys):
    metrics = {**_collapsed_metrics(), "split": "test", "report": []}
    monkeypatch.setattr(commands, "evaluate", lambda run_dir, **kw: metrics)
    args = Namespace(run_dir="r", data=None, split=None, text_column=None, label_column=None, json=False)
    assert commands.evaluate_command(args) == 0
    out, err = capsys.readouterr()
    assert "accuracy 0.6000" in out and "WARNING" not in out
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 2 and lines[0].startswith("WARNING: test: the model answers 'ham' for 100%")
    assert commands.evaluate_command(Namespace(**{**vars(args), "json": True})) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == metrics["warnings"]  # JSON on stdout stays clean
    assert err.count("WARNING: test:") == 2


def test_train_command_prints_the_validation_and_test_warnings_on_stderr(monkeypatch, capsys, tiny_csv):
    good = compute_metrics([0, 1, 0, 1], [0, 1, 0, 1], ["ham", "spam"])
    metrics = {"val": good, "test": _collapsed_metrics(), "before_finetune": {"test": good},
               "training": {"train_seconds": 1.0, "steps": 2, "trainable_parameters": 10}}
    monkeypatch.setattr(commands, "train", lambda config, output, **kw: Run(output, config, metrics,
                                                                            ["ham", "spam"], None))
    assert main(["train", "--data", str(tiny_csv), "--output", "out"]) == 0
    out, err = capsys.readouterr()
    assert "WARNING" not in out
    assert [line.split(":")[:2] for line in err.splitlines() if line.startswith("WARNING")] == \
        [["WARNING", " test"], ["WARNING", " test"]]


def test_warnings_land_in_metrics_json_and_top_of_the_report(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report"))
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("val", "test"):  # every new run records its warnings, an empty list when none
        assert isinstance(metrics[split]["warnings"], list)
    metrics["test"]["warnings"] = ["the model answers 'ham' for <everything>"]
    metrics["val"]["warnings"] = []
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = report(run, progress=False).read_text()
    box = text.index('<section id="warnings" class="alert">')
    assert text.index("</header>") < box < text.index('<section id="learning-curves">')
    assert "<li><b>test:</b> the model answers &#x27;ham&#x27; for &lt;everything&gt;</li>" in text
    metrics["test"]["warnings"] = []
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert 'id="warnings"' not in report(run, progress=False).read_text()


def test_the_warning_box_lists_both_splits():
    html = warnings_section({"val": {"warnings": ["v1"]}, "test": {"warnings": ["t1", "t2"]}})
    assert html.count("<li>") == 3 and "<b>validation:</b> v1" in html
    assert warnings_section({"val": {}, "test": {"warnings": []}}) == ""


# --- temperature kept only when it lowers validation ECE --------------------------------------------------

def _binary(confidences_and_correct: list[tuple[float, bool]]) -> tuple[np.ndarray, list[int]]:
    """Log-probabilities of a two-class model answering class 0 with each confidence; the label is 0 when
    the answer is correct."""
    log_probs = np.array([[np.log(c), np.log(1 - c)] for c, _ in confidences_and_correct])
    return log_probs, [0 if ok else 1 for _, ok in confidences_and_correct]


def test_a_temperature_that_would_raise_validation_ece_is_not_kept():
    # 30 answers at confidence 0.9, 27 right (calibrated), and 2 confident mistakes at 0.999. The
    # likelihood wants T > 1 to soften the two mistakes, which makes the other 30 underconfident.
    log_probs, labels = _binary([(0.9, i < 27) for i in range(30)] + [(0.999, False)] * 2)
    result = ev.choose_temperature(log_probs, labels, ["a", "b"])
    assert result["fitted_temperature"] > 2
    assert result["val_ece_uncalibrated"] == pytest.approx(2 * 0.999 / 32)
    assert result["val_ece_fitted"] > result["val_ece_uncalibrated"]
    assert result["kept"] is False and result["temperature"] == 1.0


def test_a_temperature_that_lowers_validation_ece_is_kept():
    log_probs, labels = _binary([(0.99, i < 70) for i in range(100)])  # 99% sure, 70% right
    result = ev.choose_temperature(log_probs, labels, ["a", "b"])
    assert result["val_ece_uncalibrated"] == pytest.approx(0.29)
    assert result["val_ece_fitted"] < 0.01
    assert result["kept"] is True and result["temperature"] == result["fitted_temperature"] > 1


def test_a_run_records_the_calibration_choice_and_applies_only_a_kept_temperature(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert set(cal) == {"temperature", "fitted_temperature", "kept", "val_ece_fitted", "val_ece_uncalibrated",
                        "folded"}
    assert cal["kept"] == (cal["val_ece_fitted"] < cal["val_ece_uncalibrated"])
    assert cal["temperature"] == (cal["fitted_temperature"] if cal["kept"] else 1.0)
    # applied by being folded into the head's weights (tests/test_standard_loaders.py)
    assert cal["folded"] is True
    clf = Classifier.load(trained_run)
    assert metrics["val"]["temperature"] == cal["temperature"] == clf.folded_temperature
    assert metrics["val"]["ece"] == pytest.approx(min(cal["val_ece_fitted"], cal["val_ece_uncalibrated"]))


def test_the_report_says_when_a_fitted_temperature_was_not_kept(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("report"))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["calibration"] = {"temperature": 1.0, "fitted_temperature": 1.7, "kept": False,
                              "val_ece_fitted": 0.089, "val_ece_uncalibrated": 0.035}
    (run / "metrics.json").write_text(json.dumps(metrics))
    text = report(run, progress=False).read_text()
    assert ("A temperature of 1.70 was fitted on validation but not kept: it would have raised the "
            "validation ECE from 0.035 to 0.089") in text


# --- progress while scoring -------------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _chunks():
    yield 0, np.zeros((3, 2))
    yield 3, np.zeros((2, 2))


@pytest.mark.parametrize(("terminal", "progress", "shown"),
                         [(True, True, True), (True, False, False), (False, True, False)])
def test_with_progress_counts_texts_on_a_terminal_only(monkeypatch, terminal, progress, shown):
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    chunks = list(ev.with_progress(_chunks(), 5, "scoring", progress))
    assert [start for start, _ in chunks] == [0, 3]  # passed through unchanged
    # tqdm draws at most every 0.1 s and clears the bar at the end (leave=False): the total shows
    assert ("scoring" in err.getvalue() and "/5 [" in err.getvalue()) == shown
    assert bool(err.getvalue()) == shown


def test_evaluate_shows_progress_on_a_terminal(trained_run, monkeypatch):
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    metrics = ev.evaluate(trained_run)
    assert f"scoring:   0%|          | 0/{metrics['n']} [" in err.getvalue()
    quiet = _Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    ev.evaluate(trained_run, progress=False)
    assert quiet.getvalue() == ""
