"""Multi-label and regression metrics, per-label thresholds and headlines (tunetext.task_metrics), against
small cases worked out by hand (the arithmetic is in the comments)."""

import json
import math
import time
import warnings

import numpy as np
import pytest

from tunetext import task_metrics as tm

# Four rows, three labels; label c has no positive example.
#        true     probs             predicted at 0.5
# r0     {a, b}   .9  .4  .1        {a}
# r1     {a}      .8  .6  .2        {a, b}
# r2     {b}      .3  .7  .6        {b, c}
# r3     {}       .2  .1  .05       {}
NAMES = ["a", "b", "c"]
Y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
P = np.array([[0.9, 0.4, 0.1], [0.8, 0.6, 0.2], [0.3, 0.7, 0.6], [0.2, 0.1, 0.05]])


def test_multi_label_metrics_at_one_half_by_hand():
    m = tm.multi_label_metrics(Y, P, NAMES)
    assert m["task"] == "multi_label" and m["n"] == 4 and m["label_names"] == NAMES
    assert m["thresholds"] == {"a": 0.5, "b": 0.5, "c": 0.5}
    # a: predicted r0 r1, true r0 r1: tp 2, fp 0, fn 0
    assert m["per_label"]["a"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "predicted": 2}
    # b: predicted r1 r2, true r0 r2: tp 1, fp 1, fn 1 -> P = R = F1 = 1/2
    assert m["per_label"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2, "predicted": 2}
    # c: predicted r2, never true: tp 0, fp 1 -> everything 0 (zero_division=0)
    assert m["per_label"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1}
    # micro: tp 2+1+0 = 3, fp 0+1+1 = 2, fn 0+1+0 = 1 -> P 3/5, R 3/4, F1 2*3 / (2*3 + 2 + 1) = 6/9
    assert m["micro_precision"] == pytest.approx(0.6)
    assert m["micro_recall"] == pytest.approx(0.75)
    assert m["micro_f1"] == pytest.approx(2 / 3)
    # macro over a and b only (c has no positive): P (1 + .5)/2, R (1 + .5)/2, F1 (1 + .5)/2
    assert m["macro_labels"] == 2 and m["labels_absent"] == ["c"]
    assert m["macro_precision"] == pytest.approx(0.75)
    assert m["macro_recall"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx(0.75)
    # weighted by support 2, 2, 0: (1*2 + .5*2 + 0*0) / 4
    assert m["weighted_f1"] == pytest.approx(0.75)
    # per row F1: r0 tp1 -> 2/(2+1); r1 2/(1+2); r2 2/(1+2); r3 nothing true, nothing predicted -> 1
    # (zero_division=0 would give it 0 and the mean 0.5): (2/3 * 3 + 1) / 4
    assert m["samples_f1"] == pytest.approx(0.75)
    # only r3 is exactly right
    assert m["subset_accuracy"] == pytest.approx(0.25)
    # wrong cells: r0 b, r1 b, r2 c -> 3 of 12
    assert m["hamming_loss"] == pytest.approx(0.25)
    assert m["empty_true"] == 1 and m["empty_predicted"] == 1
    assert m["warnings"] == []
    json.dumps(m, allow_nan=False)  # metrics.json can hold it


def test_multi_label_metrics_at_given_thresholds():
    # b at 0.65: predicted r2 only (.7); true r0 r2 -> tp 1, fp 0, fn 1: P 1, R 1/2, F1 2/3
    m = tm.multi_label_metrics(Y, P, NAMES, thresholds=[0.5, 0.65, 0.5])
    assert m["thresholds"]["b"] == 0.65
    b = m["per_label"]["b"]
    assert (b["precision"], b["recall"], b["predicted"]) == (1.0, 0.5, 1)
    assert b["f1"] == pytest.approx(2 / 3)
    # the same thresholds by name, as tune_thresholds returns them, in any order
    assert tm.multi_label_metrics(Y, P, NAMES, thresholds={"c": 0.5, "b": 0.65, "a": 0.5}) == m
    # macro F1 over a and b: (1 + 2/3) / 2
    assert m["macro_f1"] == pytest.approx(5 / 6)
    # micro: tp 2+1 = 3, fp 0+0+1 = 1, fn 0+1 = 1 -> 2*3 / (6 + 1 + 1)
    assert m["micro_f1"] == pytest.approx(0.75)


def test_a_probability_equal_to_its_threshold_is_predicted():
    assert tm.apply_thresholds([[0.5, 0.49]]).tolist() == [[True, False]]
    assert tm.apply_thresholds([[0.3, 0.3]], [0.3, 0.31]).tolist() == [[True, False]]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="one column per label"):
        tm.multi_label_metrics(Y, P[:, :2], NAMES)
    with pytest.raises(ValueError, match="2 thresholds for 3 labels"):
        tm.multi_label_metrics(Y, P, NAMES, thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match="no threshold for label"):
        tm.multi_label_metrics(Y, P, NAMES, thresholds={"a": 0.5, "b": 0.5})


def test_per_label_ece_by_hand():
    # a: probs .9 .8 .3 .2, truth 1 1 0 0, each in its own of 15 bins: (.1 + .2 + .3 + .2) / 4
    # b: probs .4 .6 .7 .1, truth 1 0 1 0, own bins: (.6 + .6 + .3 + .1) / 4
    # c: never true, so |0 - sum of probs| in any binning: (.1 + .2 + .6 + .05) / 4
    assert tm.per_label_ece(Y, P) == pytest.approx([0.2, 0.4, 0.2375])
    # two bins, b: [0, .5) holds .4 (true) and .1: |1 - .5|; [.5, 1] holds .6 and .7 (true): |1 - 1.3|
    assert tm.per_label_ece(Y, P, bins=2)[1] == pytest.approx((0.5 + 0.3) / 4)
    m = tm.multi_label_metrics(Y, P, NAMES)
    assert m["calibration"]["ece_per_label"] == pytest.approx({"a": 0.2, "b": 0.4, "c": 0.2375})
    assert m["calibration"]["ece_mean"] == pytest.approx((0.2 + 0.4 + 0.2375) / 3)


def test_a_model_that_predicts_nothing_is_warned_about():
    y = np.zeros((20, 2), dtype=int)
    y[:, 0] = 1  # every row has label a
    m = tm.multi_label_metrics(y, np.full((20, 2), 0.1), ["a", "b"])
    assert m["empty_predicted"] == 20 and m["empty_true"] == 0
    assert len(m["warnings"]) == 1 and "no label for 100%" in m["warnings"][0]


def test_predicting_nothing_where_the_data_has_nothing_is_no_warning():
    m = tm.multi_label_metrics(np.zeros((20, 2)), np.full((20, 2), 0.1), ["a", "b"])
    assert m["warnings"] == [] and m["macro_labels"] == 0 and m["macro_f1"] == 0.0
    assert m["samples_f1"] == 1.0  # every row rightly empty


def test_a_label_predicted_for_every_row_is_warned_about():
    y = np.zeros((20, 2), dtype=int)
    y[:5, 1] = 1  # b on 5 of 20 rows
    y[:, 0] = 1  # a on every row: predicting it always is right, no warning
    probs = np.column_stack([np.full(20, 0.9), np.full(20, 0.9)])
    warned = tm.multi_label_metrics(y, probs, ["a", "b"])["warnings"]
    assert len(warned) == 1 and "'b'" in warned[0] and "'a'" not in warned[0]


def test_tune_thresholds_by_hand():
    # x: probs .9 .8 .7 .6 .3 .2, truth 1 1 0 1 0 0 (3 positives). Candidates: midpoints .85 .75 .65 .45
    # .25 and the floor .05; F1 = 2 tp / (predicted + 3):
    #   .85: 1 predicted, tp 1 -> 2/4   .75: 2, 2 -> 4/5   .65: 3, 2 -> 4/6   .45: 4, 3 -> 6/7 (best)
    #   .25: 5, 3 -> 6/8                .05: 6, 3 -> 6/9
    # y: probs .9 .8 .7 .6 .55 .01, truth 1 0 0 0 1 1. F1 = 2 tp / (predicted + 3):
    #   .85: 1, 1 -> 2/4 = .5   .75 -> 2/5   .65 -> 2/6   .575 -> 2/7   .28: 5, 2 -> 4/8 = .5
    #   .05 (floor): .01 is under it, 5, 2 -> .5. Predicting all six would score 6/9, but needs a
    #   threshold under the floor. Tie at .5 between .85, .28 and .05: .28 is closest to 0.5.
    # z: two positives only -> 0.5
    y = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]])
    p = np.array([[0.9, 0.9, 0.9], [0.8, 0.8, 0.8], [0.7, 0.7, 0.7], [0.6, 0.6, 0.6], [0.3, 0.55, 0.3],
                  [0.2, 0.01, 0.2]])
    tuned = tm.tune_thresholds(y, p, ["x", "y", "z"])
    assert tuned["thresholds"] == pytest.approx({"x": 0.45, "y": 0.28, "z": 0.5})
    assert tuned["how"] == {"x": "tuned", "y": "tuned",
                            "z": "fallback: only 2 positive example(s) in validation"}
    assert tuned["floor"] == tm.THRESHOLD_FLOOR and tuned["min_positives"] == tm.MIN_POSITIVES


def test_the_floor_itself_can_be_the_best_threshold():
    # probs .9 .7 .4 .1, truth 1 0 1 1: .8 -> 2/4, .55 -> 2/5, .25 -> 4/6, floor .05 -> all four, 6/7
    tuned = tm.tune_thresholds([[1], [0], [1], [1]], [[0.9], [0.7], [0.4], [0.1]], ["x"])
    assert tuned["thresholds"]["x"] == tm.THRESHOLD_FLOOR and tuned["how"]["x"] == "tuned"


def test_a_label_no_threshold_finds_falls_back_to_one_half():
    # every probability under the floor: no allowed threshold predicts a positive
    tuned = tm.tune_thresholds([[1], [1], [1], [0]], [[0.01], [0.02], [0.01], [0.03]], ["x"])
    assert tuned["thresholds"]["x"] == 0.5 and tuned["how"]["x"].startswith("fallback: no threshold")


def test_tuned_thresholds_beat_every_other_allowed_threshold():
    rng = np.random.default_rng(0)
    y = rng.random((200, 4)) < [0.1, 0.3, 0.5, 0.02]
    p = np.clip(0.3 * y + rng.random((200, 4)) * 0.7, 0, 1)
    tuned = tm.tune_thresholds(y, p, list("abcd"))
    grid = np.linspace(tm.THRESHOLD_FLOOR, 1, 200)
    for k, name in enumerate("abcd"):
        if tuned["how"][name] != "tuned":
            continue
        f1 = tm.multi_label_metrics(y, p, list("abcd"), list(tuned["thresholds"].values()))
        best = f1["per_label"][name]["f1"]
        for t in grid:
            pred = p[:, k] >= t
            tp = (pred & y[:, k]).sum()
            assert best >= 2 * tp / (pred.sum() + y[:, k].sum()) - 1e-12
        assert tuned["thresholds"][name] >= tm.THRESHOLD_FLOOR


def test_tune_thresholds_is_fast_on_a_large_validation_set():
    rng = np.random.default_rng(1)
    y = rng.random((10_000, 100)) < 0.05
    p = rng.random((10_000, 100))
    start = time.perf_counter()
    tuned = tm.tune_thresholds(y, p, [f"l{i}" for i in range(100)])
    assert time.perf_counter() - start < 3.0  # about 0.3 s here
    assert set(tuned["how"].values()) == {"tuned"}


def test_regression_metrics_by_hand():
    # errors 1 0 0 1: MAE 2/4, MSE 2/4 -> RMSE sqrt(.5)
    # mean true 2.5, SS_tot 2.25 + .25 + .25 + 2.25 = 5, SS_res 2 -> R² 1 - 2/5
    # Pearson: deviations t -1.5 -.5 .5 1.5, p (mean 3) -1 -1 0 2: 5 / sqrt(5 * 6)
    # Spearman: ranks t 1 2 3 4, p 1.5 1.5 3 4 (tie): deviations -1 -1 .5 1.5: 4.5 / sqrt(5 * 4.5)
    m = tm.regression_metrics([1, 2, 3, 4], [2, 2, 3, 5])
    assert m["task"] == "regression" and m["n"] == 4
    assert m["mae"] == pytest.approx(0.5) and m["neg_mae"] == pytest.approx(-0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5)) and m["neg_rmse"] == pytest.approx(-math.sqrt(0.5))
    assert m["r2"] == pytest.approx(0.6)
    assert m["pearson"] == pytest.approx(5 / math.sqrt(30))
    assert m["spearman"] == pytest.approx(4.5 / math.sqrt(22.5))
    # population standard deviations: sqrt(5/4), sqrt(6/4)
    assert (m["mean_true"], m["mean_pred"]) == (2.5, 3.0)
    assert m["std_true"] == pytest.approx(math.sqrt(1.25)) and m["std_pred"] == pytest.approx(math.sqrt(1.5))
    assert m["warnings"] == []


def test_regression_worse_than_the_mean_is_warned_about():
    # reversed: SS_res 4 + 0 + 4 = 8, SS_tot 2 -> R² 1 - 8/2 = -3; Pearson -1
    m = tm.regression_metrics([1, 2, 3], [3, 2, 1])
    assert m["r2"] == pytest.approx(-3.0) and m["pearson"] == pytest.approx(-1.0)
    assert len(m["warnings"]) == 1 and "no better than always predicting the mean" in m["warnings"][0]


def test_constant_predictions_are_warned_about_and_stay_finite():
    # SS_res 1 + 0 + 1 = SS_tot -> R² 0; correlation with a constant is undefined -> 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor does scipy or scikit-learn warn
        m = tm.regression_metrics([1, 2, 3], [2, 2, 2])
    assert (m["r2"], m["pearson"], m["spearman"]) == (0.0, 0.0, 0.0)
    assert len(m["warnings"]) == 3
    assert "constant" in m["warnings"][0] and "no better" in m["warnings"][1]
    assert "reported as 0.0" in m["warnings"][2]
    json.dumps(m, allow_nan=False)


def test_constant_targets_and_a_single_example_do_not_crash():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = tm.regression_metrics([2, 2, 2], [1, 2, 3])
        one = tm.regression_metrics([3.0], [2.5])
    # constant targets: R² is scikit-learn's 0.0 for inexact predictions
    assert (flat["r2"], flat["pearson"], flat["spearman"]) == (0.0, 0.0, 0.0)
    assert flat["mae"] == pytest.approx(2 / 3)
    assert (one["mae"], one["rmse"], one["r2"], one["pearson"]) == (0.5, 0.5, 0.0, 0.0)
    assert "R²" in one["warnings"][-1]
    json.dumps([flat, one], allow_nan=False)
    with pytest.raises(ValueError):
        tm.regression_metrics([1, 2], [1])


def test_format_multi_label_shows_thresholds_and_the_comparison_with_one_half():
    tuned = tm.multi_label_metrics(Y, P, NAMES, thresholds=[0.5, 0.65, 0.5])
    tuned["at_0.5"] = tm.multi_label_metrics(Y, P, NAMES)
    text = tm.format_multi_label(tuned, title="test")
    lines = text.splitlines()
    assert lines[0] == "test"
    assert "micro-F1 0.7500" in lines[1] and "macro-F1 0.8333" in lines[1]
    assert "at 0.5 for every label: micro-F1 0.6667   macro-F1 0.7500" in text
    assert "no positive example here: c" in text
    row_b = next(line for line in lines if line.split()[:1] == ["b"])
    assert row_b.split() == ["b", "0.650", "1.0000", "0.5000", "0.6667", "2", "1"]
    assert "at 0.5" not in tm.format_multi_label(tm.multi_label_metrics(Y, P, NAMES))


def test_format_regression():
    text = tm.format_regression(tm.regression_metrics([1, 2, 3, 4], [2, 2, 3, 5]))
    assert "R² 0.6000   MAE 0.5   RMSE 0.7071   Pearson 0.9129   Spearman 0.9487   (n=4)" in text


def test_headline_per_task():
    assert tm.headline({"accuracy": 0.9, "macro_f1": 0.8, "weighted_f1": 0.85}) == \
        {"accuracy": 0.9, "macro_f1": 0.8}  # single-label dict from before tasks existed
    multi = tm.multi_label_metrics(Y, P, NAMES)
    assert tm.headline(multi) == pytest.approx({"micro_f1": 2 / 3, "macro_f1": 0.75})
    reg = tm.regression_metrics([1, 2, 3, 4], [2, 2, 3, 5])
    assert tm.headline(reg) == pytest.approx({"r2": 0.6, "mae": 0.5, "pearson": 5 / math.sqrt(30)})
    with pytest.raises(ValueError, match="unknown task"):
        tm.headline({"task": "ranking"})
