"""Metrics against scikit-learn, the reference implementation, and their printed form."""

from __future__ import annotations

import numpy as np
import pytest

from tunetext.evaluate import compute_metrics, format_metrics


@pytest.fixture
def metrics_module():
    """scikit-learn's metrics, the reference; only the tests that compare with it skip without it."""
    return pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(5))
def test_compute_metrics_matches_scikit_learn(seed, metrics_module):
    rng = np.random.default_rng(seed)
    names = ["ham", "spam", "promo", "never_predicted"]
    labels = rng.integers(0, 4, size=97)
    preds = rng.integers(0, 3, size=97)  # class 3 is never predicted
    preds[:60] = np.where(rng.random(60) < 0.7, labels[:60] % 3, preds[:60])  # better than chance
    m = compute_metrics(labels.tolist(), preds.tolist(), names)
    ids = list(range(4))

    assert m["n"] == 97
    assert m["accuracy"] == pytest.approx(metrics_module.accuracy_score(labels, preds))
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics_module.precision_recall_fscore_support(
            labels, preds, labels=ids, average=average, zero_division=0)
        assert m[f"{average}_precision"] == pytest.approx(p)
        assert m[f"{average}_recall"] == pytest.approx(r)
        assert m[f"{average}_f1"] == pytest.approx(f)
    p, r, f, s = metrics_module.precision_recall_fscore_support(labels, preds, labels=ids, zero_division=0)
    for i, name in enumerate(names):
        c = m["per_class"][name]
        assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert c["support"] == s[i]
    assert m["per_class"]["never_predicted"]["precision"] == 0.0
    assert m["confusion_matrix"] == metrics_module.confusion_matrix(labels, preds, labels=ids).tolist()
    assert m["label_names"] == names


def test_class_absent_from_labels_and_predictions(metrics_module):
    # Macro scores average the classes present in the split (scikit-learn's default `labels`, those
    # found in the data), not every known class: an absent class has no recall to measure.
    m = compute_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b", "c"])
    p, r, f, _ = metrics_module.precision_recall_fscore_support(
        [0, 0, 1, 1], [0, 1, 1, 1], labels=[0, 1], average="macro", zero_division=0)
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx((p, r, f))
    assert m["macro_classes"] == 2 and m["classes_absent"] == ["c"]
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_pinned_small_case():
    # 3 ham right, 1 ham called spam, 2 spam right: accuracy 5/6; spam precision 2/3, recall 1.
    m = compute_metrics([0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1], ["ham", "spam"])
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["per_class"]["spam"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["ham"]["recall"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx((6 / 7 + 4 / 5) / 2)
    assert m["confusion_matrix"] == [[3, 1], [0, 2]]


def test_format_metrics_shows_scores_and_confusion_table():
    m = compute_metrics([0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 1, 0], ["ham", "spam", "a_long_label_name"])
    text = format_metrics(m, "test")
    lines = text.splitlines()
    assert lines[0] == "test"
    assert f"accuracy {m['accuracy']:.4f}" in text and f"macro-F1 {m['macro_f1']:.4f}" in text
    assert "(n=7)" in text
    header = lines.index("  confusion matrix (rows: true, columns: predicted)")
    table = lines[header + 1:]
    assert table[0].split() == ["ham", "spam", "a_long_la"]  # column heads, cut to fit
    assert table[1].split() == ["ham", "3", "1", "0"]
    assert table[2].split() == ["spam", "0", "2", "0"]
    assert table[3].split() == ["a_long_label_name", "1", "0", "0"]
    per_class = [line.split() for line in lines if line.split()[:1] == ["spam"]][0]
    assert per_class == ["spam", "0.6667", "1.0000", "0.8000", "2"]
