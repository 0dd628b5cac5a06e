"""Suspected label errors: out-of-sample probabilities from a linear head on the frozen features, then
confident learning (cleanlab).

Training texts are cross-fitted: the training split is cut into `audit.folds` folds (stratified by class),
and each fold is scored by a head fitted on the others, so no text is scored by a head that saw its
label. Validation texts are scored by a head fitted on every training text, which never saw them. The
head is a logistic regression (one per label, one-vs-rest, for multi-label data) on standardised
features; its inverse L2 strength is chosen from `audit.inverse_l2` by cross-validated log-loss inside
the texts it is fitted on, never on the texts it then scores. The test split takes no part: its labels are
not even given to this module.

`cleanlab.filter.find_label_issues` then flags the texts whose given label the probabilities doubt more
than the estimated noise rates between classes explain, ranked by cleanlab's label quality score (lowest,
most likely wrong, first).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunetext.audit.findings import LabelIssue, Row
from tunetext.config import AuditConfig


@dataclass
class HeldOutScores:
    """Out-of-sample probabilities (`[n, K]`: a distribution per row for single-label data, each label's
    own probability for multi-label) and how they were made."""

    probabilities: np.ndarray
    folds: int
    inverse_l2: list[float]  # the strength chosen for each head fitted (per fold; per label for multi-label)


def as_matrix(labels: list[Any], num_labels: int, task: str) -> np.ndarray:
    """Labels as one array: class indices `[n]` (single-label) or a 0/1 matrix `[n, K]` (multi-label)."""
    if task == "multi_label":
        out = np.zeros((len(labels), num_labels), dtype=np.int64)
        for i, label in enumerate(labels):
            out[i, list(label)] = 1
        return out
    return np.asarray(labels, dtype=np.int64)


def cross_fitted(x: np.ndarray, y: np.ndarray, num_labels: int, task: str, config: AuditConfig,
                 seed: int) -> HeldOutScores:
    """Out-of-sample probabilities for every row of `x` by K-fold cross-fitting (K = `config.folds`, fewer
    when the rarest class has fewer rows, at least 2)."""
    folds, splitter = _outer_folds(y, task, config.folds, seed)
    probs = np.zeros((len(x), num_labels))
    chosen: list[float] = []
    for fit_idx, score_idx in splitter:
        probs[score_idx], strengths = _fit_and_score(x[fit_idx], y[fit_idx], x[score_idx], num_labels, task,
                                                     config, seed)
        chosen += strengths
    return HeldOutScores(probs, folds, chosen)


def held_out(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, num_labels: int, task: str,
             config: AuditConfig, seed: int) -> HeldOutScores:
    """Probabilities for `x_score` from one head fitted on all of `x_fit` (validation, from training)."""
    probs, strengths = _fit_and_score(x_fit, y_fit, x_score, num_labels, task, config, seed)
    return HeldOutScores(probs, 1, strengths)


def _outer_folds(y: np.ndarray, task: str, folds: int, seed: int) -> tuple[int, list[tuple[Any, Any]]]:
    from sklearn.model_selection import KFold, StratifiedKFold  # scikit-learn: see _fit_and_score

    if task == "multi_label":  # no stratification over label sets here: shuffled folds
        k = max(2, min(folds, len(y)))
        return k, list(KFold(k, shuffle=True, random_state=seed).split(y))
    rarest = int(np.bincount(y)[np.unique(y)].min())
    k = max(2, min(folds, rarest))
    with warnings.catch_warnings():  # a class of one row: it is scored by heads that never saw it
        warnings.simplefilter("ignore", UserWarning)
        return k, list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _fit_and_score(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray, num_labels: int, task: str,
                   config: AuditConfig, seed: int) -> tuple[np.ndarray, list[float]]:
    """Fit the head on (`x_fit`, `y_fit`) and return its probabilities for `x_score` `[n, K]`, with the
    inverse L2 strength chosen for each head fitted."""
    # scikit-learn takes about two seconds to import, and `import tunetext` (every CLI command) reaches
    # this module; only an audit needs it
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_fit)
    a, b = scaler.transform(x_fit), scaler.transform(x_score)
    if task != "multi_label":
        c = _choose_strength(x_fit, y_fit, config, seed)
        return _probabilities(_fit(a, y_fit, c, config), b, num_labels), [c]
    out = np.zeros((len(x_score), num_labels))
    chosen = []
    for j in range(num_labels):
        column = y_fit[:, j]
        if column.min() == column.max():  # never (or always) present here: its rate is all there is
            out[:, j] = float(column[0])
            continue
        c = _choose_strength(x_fit, column, config, seed)
        out[:, j] = _probabilities(_fit(a, column, c, config), b, 2)[:, 1]
        chosen.append(c)
    return out, chosen


def _fit(x: np.ndarray, y: np.ndarray, c: float, config: AuditConfig, model: Any = None) -> Any:
    """A logistic regression (`model`, or a new one) fitted on (`x`, `y`) with inverse L2 strength `c`."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn: see _fit_and_score

    model = model or LogisticRegression(max_iter=config.max_iter)
    model.set_params(C=c)
    with warnings.catch_warnings():  # a head that has not fully converged still ranks well
        warnings.simplefilter("ignore")
        return model.fit(x, y)


def _probabilities(model: Any, x: np.ndarray, num_labels: int) -> np.ndarray:
    """`model`'s probabilities as `[n, num_labels]` columns: a class its fit lacked gets 0."""
    out = np.zeros((len(x), num_labels))
    if len(model.classes_) == 1:
        out[:, model.classes_[0]] = 1.0
        return out
    out[:, model.classes_] = model.predict_proba(x)
    return out


def _choose_strength(x: np.ndarray, y: np.ndarray, config: AuditConfig, seed: int) -> float:
    """The inverse L2 strength of `config.inverse_l2` with the lowest log-loss in an inner stratified
    cross-validation on (`x`, `y`) alone (fewer inner folds when a class has fewer rows). With one value,
    or a class of one row, the middle of the list."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn: see _fit_and_score
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    grid = sorted(config.inverse_l2)
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    k = min(config.inner_folds, int(counts[present].min()))
    if len(grid) == 1 or k < 2 or len(present) < 2:
        return grid[len(grid) // 2]
    losses = np.zeros(len(grid))
    for fit_idx, score_idx in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        scaler = StandardScaler().fit(x[fit_idx])
        a, b = scaler.transform(x[fit_idx]), scaler.transform(x[score_idx])
        model = LogisticRegression(max_iter=config.max_iter, warm_start=True)  # each C starts from the last
        for j, c in enumerate(grid):
            probs = _probabilities(_fit(a, y[fit_idx], c, config, model), b, len(counts))[:, present]
            probs = np.clip(probs, 1e-12, 1)
            losses[j] += log_loss(y[score_idx], probs / probs.sum(1, keepdims=True), labels=present)
    return grid[int(np.argmin(losses))]


def find_issues(y: np.ndarray, probs: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the rows cleanlab flags, most likely wrong first; every row's label quality score)."""
    from cleanlab.filter import find_label_issues  # cleanlab's import takes a second; only the audit needs it

    if task == "multi_label":
        from cleanlab.multilabel_classification.rank import get_label_quality_scores as multi_quality

        lists = [list(np.flatnonzero(row)) for row in y]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mask = find_label_issues(lists, probs, multi_label=True, n_jobs=1)
            quality = multi_quality(lists, probs)
    else:
        from cleanlab.rank import get_label_quality_scores

        probs = _normalised(probs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mask = find_label_issues(y, probs, n_jobs=1)
            quality = get_label_quality_scores(y, probs)
    flagged = np.flatnonzero(mask)
    return flagged[np.argsort(quality[flagged], kind="stable")], quality


def _normalised(probs: np.ndarray) -> np.ndarray:
    """Rows of a distribution kept off exact zeros (a class a fold's head never saw), as cleanlab wants."""
    probs = np.clip(probs, 1e-6, 1)
    return probs / probs.sum(1, keepdims=True)


def label_issues(rows: list[Row], y: np.ndarray, probs: np.ndarray, label_names: list[str],
                 task: str) -> list[LabelIssue]:
    """The rows cleanlab flags as `LabelIssue`s, most likely wrong first: the suggested label is the
    head's answer (the labels above 0.5, for multi-label data), its confidence the probability the head
    gives it."""
    flagged, quality = find_issues(y, probs, task)
    out = []
    for i in flagged:
        if task == "multi_label":
            chosen = probs[i] >= 0.5
            suggested = "|".join(n for n, on in zip(label_names, chosen, strict=True) if on)
            confidence = float(np.prod(np.where(chosen, probs[i], 1 - probs[i])))
        else:
            best = int(np.argmax(probs[i]))
            suggested, confidence = label_names[best], float(probs[i, best])
        out.append(LabelIssue(rows[i], suggested, confidence, float(quality[i])))
    return out
