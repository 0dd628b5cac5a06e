"""Temperature scaling, calibration error and streaming evaluation."""

import importlib
import json

import numpy as np
import pytest

from tunetext import Classifier, inference

# `tunetext.evaluate` the attribute is the API function; the module is reached through the import system.
ev = importlib.import_module("tunetext.evaluate")


def _overconfident(n=3000, k=3, true_temperature=3.0, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 6
    p = np.exp(logits / true_temperature)
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p])
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return log_probs, labels


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    log_probs, labels = _overconfident(true_temperature=3.0)
    assert ev.fit_temperature(log_probs, labels) == pytest.approx(3.0, rel=0.1)


def test_temperature_scaling_lowers_calibration_error_and_keeps_predictions():
    log_probs, labels = _overconfident()
    acc = ev.MetricAccumulator(["a", "b", "c"], ev.fit_temperature(log_probs, labels))
    acc.update(log_probs, labels)
    result = acc.result()
    assert result["ece"] < result["ece_uncalibrated"] / 3
    assert result["accuracy"] == pytest.approx(np.mean(log_probs.argmax(1) == labels))


def test_ece_matches_a_direct_computation():
    log_probs, labels = _overconfident(n=500, seed=1)
    probs = np.exp(log_probs)
    conf, correct = probs.max(1), probs.argmax(1) == labels
    bins = np.minimum((conf * ev.ECE_BINS).astype(int), ev.ECE_BINS - 1)
    expected = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
                   for b in range(ev.ECE_BINS) if (bins == b).any())
    acc = ev.MetricAccumulator(["a", "b", "c"])
    acc.update(log_probs, labels)
    assert acc.result()["ece"] == pytest.approx(expected)


def test_streamed_evaluation_equals_one_pass(trained_run, monkeypatch):
    clf = Classifier.load(trained_run)
    texts = ["WINNER claim your prize now", "see you at 7pm", "free entry call now", "ok thanks"] * 5
    labels = [1, 0, 1, 0] * 5
    one_pass = ev.evaluate_split(clf.model, clf.tokenizer, texts, labels, clf.label_names, 64, 8)
    monkeypatch.setattr(inference, "CHUNK", 3)
    streamed = ev.evaluate_split(clf.model, clf.tokenizer, texts, labels, clf.label_names, 64, 8)
    assert streamed["confusion_matrix"] == one_pass["confusion_matrix"]
    assert streamed["log_loss"] == pytest.approx(one_pass["log_loss"], rel=1e-5)


def test_run_stores_a_temperature_and_predict_applies_it(trained_run):
    metrics = json.loads((trained_run / "metrics.json").read_text())
    temperature = metrics["calibration"]["temperature"]
    assert 0.05 <= temperature <= 20 and "ece" in metrics["test"]
    clf = Classifier.load(trained_run)
    # Folded into the head's weights (tests/test_standard_loaders.py): nothing is left to apply.
    assert metrics["calibration"]["folded"] is True
    assert (clf.temperature, clf.folded_temperature) == (1.0, temperature)
    texts = ["WINNER claim your prize now", "see you at 7pm"]
    calibrated = clf.predict_proba(texts)
    clf.temperature = 1 / temperature  # the model as trained: the folded logits times T
    raw = clf.predict_proba(texts)
    assert (calibrated.argmax(1) == raw.argmax(1)).all()
    expected = inference.softmax_with_temperature(np.log(raw), temperature)
    np.testing.assert_allclose(calibrated, expected, atol=1e-5)
