"""Metrics of the multi-label and regression tasks, per-label decision thresholds, and the headline
numbers of any task's metrics dict.

The scores come from scikit-learn (and scipy for the rank and linear correlations); this module adds
what they leave to the caller: which labels a macro average counts, per-label calibration, thresholds
tuned on validation, warnings about a degenerate model, and the tables a terminal shows. The dict keys
are the issue 15 contract's (metrics.json, the report and the benchmarks read them).

scikit-learn and scipy are imported inside the two functions that compute scores: together they take
about 1.7 s to import, and loading a run to predict or serve needs neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# A threshold is never tuned below THRESHOLD_FLOOR: a lower one flags a label on texts the model gives
# less than a 1-in-20 chance, which on a small validation set means fitting a handful of positives the
# model scores as noise, and on new data floods the predictions with that label.
THRESHOLD_FLOOR = 0.05
# With fewer positives than this in validation, the F1-best threshold is just "below that one positive's
# score": noise, not a decision rule. Such a label keeps DEFAULT_THRESHOLD.
MIN_POSITIVES = 3
DEFAULT_THRESHOLD = 0.5
# F1 values this close count as a tie; ties go to the threshold closest to DEFAULT_THRESHOLD.
F1_TIE = 1e-12

ECE_BINS = 15

# Degenerate multi-label models (`multi_label_warnings`), with the single-label rule's shares
# (evaluate.COLLAPSE_SHARE, COLLAPSE_TRUE_SHARE): a model that predicts no label at all for at least
# COLLAPSE_SHARE of the rows, while fewer than COLLAPSE_TRUE_SHARE of them have no label, has collapsed to
# "nothing"; a label predicted for at least COLLAPSE_SHARE of the rows while fewer than COLLAPSE_TRUE_SHARE
# have it is a threshold or model stuck at "always".
COLLAPSE_SHARE = 0.95
COLLAPSE_TRUE_SHARE = 0.90
# Regression predictions whose standard deviation is below CONSTANT_PRED_RATIO times the targets' ignore
# the text: a weak model still spreads its answers more than 1% of the targets' spread.
CONSTANT_PRED_RATIO = 0.01
# How many label names one warning lists before "and N more".
NAMES_SHOWN = 5

HEADLINE_KEYS = {
    "single_label": ("accuracy", "macro_f1"),
    "multi_label": ("micro_f1", "macro_f1"),
    "regression": ("r2", "mae", "pearson"),
}


# ---------------------------------------------------------------------------------------------------
# Multi-label


def _check_multi_label(y_true: Any, probs: Any, label_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """`y_true` as a bool array and `probs` as floats, both (n, K) with K = len(label_names) and n > 0."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    if y.ndim != 2 or y.shape != p.shape or y.shape[1] != len(label_names):
        raise ValueError(f"y_true {y.shape} and probs {p.shape} must both be (n, {len(label_names)}), "
                         "one column per label name")
    if not len(y):
        raise ValueError("no rows to score")
    return y, p


def apply_thresholds(probs: Any, thresholds: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
    """The (n, K) bool array of predicted labels: a label is predicted when its probability is at least
    its threshold (`thresholds`: K floats; None: DEFAULT_THRESHOLD for every label)."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.full(p.shape[-1], DEFAULT_THRESHOLD) if thresholds is None else np.asarray(thresholds, float)
    if t.shape != (p.shape[-1],):
        raise ValueError(f"{t.size} thresholds for {p.shape[-1]} labels")
    return p >= t


def threshold_values(thresholds: Sequence[float] | Mapping[str, float] | None,
                     label_names: Sequence[str]) -> np.ndarray:
    """K thresholds in `label_names`' order from K floats in that order, a mapping name -> float (as
    `tune_thresholds` returns) or None (DEFAULT_THRESHOLD for every label)."""
    if thresholds is None:
        return np.full(len(label_names), DEFAULT_THRESHOLD)
    if isinstance(thresholds, Mapping):
        missing = [name for name in label_names if name not in thresholds]
        if missing:
            raise ValueError(f"no threshold for label(s) {_some_names(missing)}")
        return np.array([thresholds[name] for name in label_names], dtype=np.float64)
    values = np.asarray(thresholds, dtype=np.float64)
    if values.shape != (len(label_names),):
        raise ValueError(f"{values.size} thresholds for {len(label_names)} labels")
    return values


def multi_label_metrics(y_true: Any, probs: Any, label_names: Sequence[str],
                        thresholds: Sequence[float] | Mapping[str, float] | None = None) -> dict[str, Any]:
    """The contract's multi-label metrics of sigmoid `probs` (n, K) against 0/1 `y_true` (n, K), a label
    predicted when its probability is at least its threshold (`apply_thresholds`; `thresholds` as
    `threshold_values` reads them: K floats, a mapping name -> float, or None for 0.5 each).

    As `evaluate.metrics_from_confusion` does for classes, macro precision, recall and F1 average only
    the labels with a positive example in `y_true` (`macro_labels` of them; `labels_absent` names the
    others, which `per_label` still lists). Precision of a label never predicted is 0 (scikit-learn's
    `zero_division=0`). `samples_f1` scores a row with no true and no predicted label as 1: predicting
    nothing there is right. `calibration` is `per_label_ece` and its mean over all labels. Raises
    ValueError on mismatched shapes or no rows.
    """
    # here, not at the top: slow to import, and only scoring needs it (module docstring)
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    y, p = _check_multi_label(y_true, probs, label_names)
    names = list(label_names)
    used = threshold_values(thresholds, names)
    pred = apply_thresholds(p, used)
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    micro_p, micro_r, micro_f1, _ = precision_recall_fscore_support(y, pred, average="micro", zero_division=0)
    present = support > 0

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    ece = per_label_ece(y, p)
    return {
        "task": "multi_label",
        "n": len(y),
        "label_names": names,
        "thresholds": {name: float(t) for name, t in zip(names, used, strict=True)},
        "micro_f1": float(micro_f1),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "macro_f1": macro(f1),
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "weighted_f1": float(f1_score(y, pred, average="weighted", zero_division=0)),
        "samples_f1": float(f1_score(y, pred, average="samples", zero_division=1)),
        "subset_accuracy": float(accuracy_score(y, pred)),
        "hamming_loss": float(hamming_loss(y, pred)),
        "macro_labels": int(present.sum()),
        "labels_absent": [name for name, here in zip(names, present, strict=True) if not here],
        "per_label": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i]), "predicted": int(pred[:, i].sum())}
            for i, name in enumerate(names)
        },
        "empty_true": int((~y.any(axis=1)).sum()),
        "empty_predicted": int((~pred.any(axis=1)).sum()),
        "calibration": {"ece_per_label": {name: float(e) for name, e in zip(names, ece, strict=True)},
                        "ece_mean": float(ece.mean())},
        "warnings": multi_label_warnings(y, pred, names),
    }


def _some_names(names: list[str]) -> str:
    """Up to NAMES_SHOWN quoted names, then how many more."""
    shown = ", ".join(repr(n) for n in names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def multi_label_warnings(y_true: np.ndarray, pred: np.ndarray, label_names: list[str]) -> list[str]:
    """Warnings about a degenerate multi-label model from bool (n, K) truth and predictions: it predicts
    no label for (almost) every row, or it predicts some labels for (almost) every row, where the data
    does not (`COLLAPSE_SHARE`, `COLLAPSE_TRUE_SHARE`)."""
    n = len(y_true)
    found = []
    empty_pred, empty_true = (~pred.any(axis=1)).sum(), (~y_true.any(axis=1)).sum()
    if empty_pred >= COLLAPSE_SHARE * n and empty_true < COLLAPSE_TRUE_SHARE * n:
        found.append(
            f"the model predicts no label for {empty_pred / n:.0%} of the {n} examples, while only "
            f"{empty_true / n:.0%} of them have none: it has (almost) collapsed to predicting nothing; check "
            "the labels, the learning rate and the positive weights of rare labels")
    always = (pred.sum(axis=0) >= COLLAPSE_SHARE * n) & (y_true.sum(axis=0) < COLLAPSE_TRUE_SHARE * n)
    if always.any():
        stuck = [name for name, a in zip(label_names, always, strict=True) if a]
        found.append(
            f"the model predicts {_some_names(stuck)} for at least {COLLAPSE_SHARE:.0%} of the {n} examples, "
            f"while fewer than {COLLAPSE_TRUE_SHARE:.0%} of them have it: a threshold too low or a model "
            "stuck on that label")
    return found


def per_label_ece(y_true: Any, probs: Any, bins: int = ECE_BINS) -> np.ndarray:
    """Each label's expected calibration error as a binary reliability: its probabilities put in `bins`
    equal-width bins over [0, 1]; per bin, |share of rows that have the label - mean probability|,
    weighted by the bin's share of rows. Returns K floats (0 for no rows)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    n, k = p.shape
    if not n:
        return np.zeros(k)
    which = np.minimum((p * bins).astype(int), bins - 1) + bins * np.arange(k)  # one bin range per label
    # |sum of labels - sum of probabilities| in a bin is n_bin * |share - mean probability|: the bin's weight
    prob_sum = np.bincount(which.ravel(), weights=p.ravel(), minlength=k * bins).reshape(k, bins)
    true_sum = np.bincount(which.ravel(), weights=y.ravel(), minlength=k * bins).reshape(k, bins)
    return np.abs(true_sum - prob_sum).sum(axis=1) / n


def _best_threshold(y: np.ndarray, p: np.ndarray) -> float | None:
    """The threshold maximising F1 for one label (bool `y`, probabilities `p`), among the midpoints
    between consecutive distinct probabilities and THRESHOLD_FLOOR, never below the floor; ties go to
    the one closest to DEFAULT_THRESHOLD. None when no candidate predicts a single positive right."""
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    positives_below = np.concatenate(([0], np.cumsum(y[order])))  # positives among the i lowest
    distinct = np.unique(p_sorted)
    candidates = np.append((distinct[1:] + distinct[:-1]) / 2, THRESHOLD_FLOOR)
    candidates = candidates[candidates >= THRESHOLD_FLOOR]
    below = np.searchsorted(p_sorted, candidates, side="left")  # rows with p < candidate
    predicted = len(p) - below
    tp = positives_below[-1] - positives_below[below]
    f1 = 2 * tp / (predicted + positives_below[-1])
    if f1.max() <= 0:
        return None
    tied = candidates[f1 >= f1.max() - F1_TIE]
    return float(tied[np.argmin(np.abs(tied - DEFAULT_THRESHOLD))])


def tune_thresholds(y_true: Any, probs: Any, label_names: Sequence[str]) -> dict[str, Any]:
    """Per label, the decision threshold maximising that label's F1 on these (validation) scores
    (`_best_threshold`): never below THRESHOLD_FLOOR, and DEFAULT_THRESHOLD where validation has fewer
    than MIN_POSITIVES positives of the label or no threshold finds one. Returns `thresholds`
    (name -> float), `how` (name -> "tuned" or "fallback: <reason>"), `floor` and `min_positives`."""
    y, p = _check_multi_label(y_true, probs, label_names)
    thresholds: dict[str, float] = {}
    how: dict[str, str] = {}
    for k, name in enumerate(label_names):
        positives = int(y[:, k].sum())
        best = _best_threshold(y[:, k], p[:, k]) if positives >= MIN_POSITIVES else None
        thresholds[name] = DEFAULT_THRESHOLD if best is None else best
        if positives < MIN_POSITIVES:
            how[name] = f"fallback: only {positives} positive example(s) in validation"
        elif best is None:
            how[name] = f"fallback: no threshold at or above {THRESHOLD_FLOOR} finds a positive example"
        else:
            how[name] = "tuned"
    return {"thresholds": thresholds, "how": how, "floor": THRESHOLD_FLOOR, "min_positives": MIN_POSITIVES}


# ---------------------------------------------------------------------------------------------------
# Regression


def _correlations(t: np.ndarray, p: np.ndarray) -> tuple[float, float] | None:
    """Pearson and Spearman correlation of `t` and `p`, or None where they are undefined (fewer than 2
    values, or either side constant)."""
    from scipy.stats import pearsonr, spearmanr  # here, not at the top: see the module docstring

    if len(t) < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return None
    return float(pearsonr(t, p)[0]), float(spearmanr(t, p)[0])


def regression_metrics(y_true: Any, y_pred: Any) -> dict[str, Any]:
    """The contract's regression metrics of predictions `y_pred` against targets `y_true` (1-d, original
    scale): MAE, RMSE, R² (scikit-learn), Pearson and Spearman (scipy), `neg_mae`/`neg_rmse` (higher is
    better, for `train.metric`), the means and standard deviations (ddof 0) of both, and `warnings`.

    Every value is a finite float (metrics.json holds no NaN). Where a score is undefined it is 0.0 and
    a warning says so: Pearson and Spearman with fewer than 2 examples or constant targets or
    predictions, R² with fewer than 2 examples. R² with constant targets is scikit-learn's: 1.0 for exact
    predictions, else 0.0. Raises ValueError on mismatched lengths or no examples.
    """
    from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error  # see module docstring

    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape or not len(t):
        raise ValueError(f"y_true ({t.size} values) and y_pred ({p.size}) must be as long, and not empty")
    mae, rmse = float(mean_absolute_error(t, p)), float(root_mean_squared_error(t, p))
    r2 = float(r2_score(t, p)) if len(t) >= 2 else 0.0
    correlations = _correlations(t, p)
    pearson, spearman = correlations or (0.0, 0.0)
    out = {"task": "regression", "n": len(t), "mae": mae, "rmse": rmse, "r2": r2,
           "pearson": pearson, "spearman": spearman, "neg_mae": -mae, "neg_rmse": -rmse,
           "mean_true": float(t.mean()), "std_true": float(t.std()),
           "mean_pred": float(p.mean()), "std_pred": float(p.std())}
    out["warnings"] = regression_warnings(out, correlations is None)
    return out


def regression_warnings(metrics: dict[str, Any], undefined_correlation: bool) -> list[str]:
    """Warnings about regression scores: near-constant predictions (`CONSTANT_PRED_RATIO`), R² at or
    below 0, and correlations (or R²) undefined here and so reported as 0.0."""
    n, std_true, std_pred = metrics["n"], metrics["std_true"], metrics["std_pred"]
    found = []
    if std_true > 0 and std_pred < CONSTANT_PRED_RATIO * std_true:
        found.append(
            f"the predictions are (almost) constant: their standard deviation {std_pred:.4g} is under "
            f"{CONSTANT_PRED_RATIO:.0%} of the targets' {std_true:.4g}; the model ignores the text (check "
            "the learning rate and the number of epochs)")
    if n >= 2 and std_true > 0 and metrics["r2"] <= 0:
        found.append(
            f"R² {metrics['r2']:.4f} is no better than always predicting the mean of the targets "
            f"({metrics['mean_true']:.4g})")
    if undefined_correlation:
        found.append(f"with {n} example(s){' and constant targets or predictions' if n >= 2 else ''}, "
                     f"Pearson and Spearman{'' if n >= 2 else ' and R²'} are undefined: reported as 0.0")
    return found


# ---------------------------------------------------------------------------------------------------
# Tables and headlines


def format_multi_label(metrics: dict[str, Any], title: str = "") -> str:
    """A human-readable table of `multi_label_metrics`: headline scores, micro/macro F1 at 0.5 against
    these thresholds when the dict has `at_0.5`, and per label its threshold, precision, recall, F1,
    support and how often it was predicted."""
    names = metrics["label_names"]
    width = max(9, *(len(n) for n in names)) + 1
    lines = [title] if title else []
    lines.append(f"  micro-F1 {metrics['micro_f1']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
                 f"samples-F1 {metrics['samples_f1']:.4f}   weighted-F1 {metrics['weighted_f1']:.4f}   "
                 f"(n={metrics['n']}, {len(names)} labels)")
    lines.append(f"  subset accuracy {metrics['subset_accuracy']:.4f}   Hamming loss "
                 f"{metrics['hamming_loss']:.4f}   rows with no label: {metrics['empty_true']} true, "
                 f"{metrics['empty_predicted']} predicted")
    if "at_0.5" in metrics:
        base = metrics["at_0.5"]
        lines.append(f"  at 0.5 for every label: micro-F1 {base['micro_f1']:.4f}   macro-F1 "
                     f"{base['macro_f1']:.4f}   (tuned thresholds above)")
    if metrics["labels_absent"]:
        lines.append(f"  macro over {metrics['macro_labels']} of {len(names)} labels (no positive example "
                     f"here: {', '.join(metrics['labels_absent'])})")
    lines.append(f"  calibration error (ECE, mean over labels) {metrics['calibration']['ece_mean']:.4f}")
    lines.append(f"  {'label':<{width}}{'threshold':>10}{'precision':>10}{'recall':>10}{'f1':>10}"
                 f"{'support':>10}{'predicted':>10}")
    for name in names:
        c = metrics["per_label"][name]
        lines.append(f"  {name:<{width}}{metrics['thresholds'][name]:>10.3f}{c['precision']:>10.4f}"
                     f"{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10d}{c['predicted']:>10d}")
    return "\n".join(lines)


def format_regression(metrics: dict[str, Any], title: str = "") -> str:
    """A human-readable summary of `regression_metrics`: the scores, then the targets' and predictions'
    means and standard deviations."""
    lines = [title] if title else []
    lines.append(f"  R² {metrics['r2']:.4f}   MAE {metrics['mae']:.4g}   RMSE {metrics['rmse']:.4g}   "
                 f"Pearson {metrics['pearson']:.4f}   Spearman {metrics['spearman']:.4f}   "
                 f"(n={metrics['n']})")
    lines.append(f"  targets: mean {metrics['mean_true']:.4g}, std {metrics['std_true']:.4g}   "
                 f"predictions: mean {metrics['mean_pred']:.4g}, std {metrics['std_pred']:.4g}")
    return "\n".join(lines)


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The few numbers of a metrics dict worth a one-line log (`HEADLINE_KEYS` by its `task`):
    single_label accuracy and macro_f1; multi_label micro_f1 and macro_f1; regression r2, mae and
    pearson. A dict without `task` (runs from before multi-label) is single_label; keys it lacks are
    left out."""
    keys = HEADLINE_KEYS.get(metrics.get("task", "single_label"))
    if keys is None:
        raise ValueError(f"unknown task {metrics['task']!r}; expected one of {', '.join(HEADLINE_KEYS)}")
    return {k: float(metrics[k]) for k in keys if k in metrics}
