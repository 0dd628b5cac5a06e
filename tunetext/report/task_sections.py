"""The report's sections for multi-label and regression runs (`sections` has the shared ones and the
single-label ones): per-label threshold curves, per-label scores and calibration and the largest per-label
errors; a predicted-vs-true scatter with residuals and the largest errors.

They read metrics.json's `task` record and `val`/`test` dicts (`tunetext.task_metrics`) and the splits
the page re-scored (`SplitScores.values`: sigmoid probabilities or predicted values).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tunetext.report.sections import (
    BLUE,
    GREY,
    MAX_MISTAKES,
    ORANGE,
    Figures,
    SplitScores,
    _e,
    _figure,
    _name,
    _section,
    _short,
)
from tunetext.task_metrics import ECE_BINS, MIN_POSITIVES, THRESHOLD_FLOOR

MAX_CURVES = 12  # threshold curves drawn (the most frequent labels); the table lists every label
GRID = np.linspace(0.01, 0.99, 99)  # thresholds a curve is drawn at


def f1_curve(truth: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """One label's F1 at each threshold, a text predicted when its probability is at least the threshold
    (as `task_metrics.apply_thresholds`); 0 where nothing is predicted right."""
    truth = truth.astype(bool)
    predicted = probs[:, None] >= thresholds[None, :]
    tp = (predicted & truth[:, None]).sum(axis=0)
    return 2 * tp / np.maximum(predicted.sum(axis=0) + truth.sum(), 1)


def _shown_labels(names: list[str], support: dict[str, int]) -> list[str]:
    """The MAX_CURVES labels with the most examples (ties in label order), in label order."""
    top = sorted(names, key=lambda n: (-support.get(n, 0), names.index(n)))[:MAX_CURVES]
    return [n for n in names if n in top]


def thresholds(fig_out: Figures, metrics: dict[str, Any], val: SplitScores | None, test: SplitScores | None,
               problem: str | None) -> str:
    """Headline scores at the tuned thresholds against 0.5, and per label F1 against the threshold on
    validation (where the thresholds were tuned) with the chosen threshold and 0.5 marked, test dotted."""
    tuned, base, record = metrics["test"], metrics["test"].get("at_0.5"), metrics.get("task", {})
    keys = ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss")
    rows = [("tuned thresholds", tuned)] + ([("0.5 for every label", base)] if base else [])
    table = ("<table><thead><tr><th>test</th>" + "".join(f"<th>{_name(k)}</th>" for k in keys)
             + "</tr></thead><tbody>" + "".join(
                 f"<tr><td>{name}</td>" + "".join(f"<td>{m[k]:.3f}</td>" for k in keys) + "</tr>"
                 for name, m in rows) + "</tbody></table>")
    floor, fewest = record.get("floor", THRESHOLD_FLOOR), record.get("min_positives", MIN_POSITIVES)
    intro = ("Each label is predicted when its probability reaches its own threshold, the one that "
             f"maximised that label's F1 on the validation split (never below {floor}; 0.5 when validation "
             f"has fewer than {fewest} positives of the label). Hamming loss is lower-better.")
    if val is None or val.values is None:
        return _section("thresholds", intro, table, f'<p class="warn">{_e(problem)}</p>')
    names = tuned["label_names"]
    chosen = record.get("thresholds", {})
    support = dict(zip(names, (int(c) for c in val.labels.sum(axis=0)), strict=True))
    shown = _shown_labels(names, support)
    cols = min(4, len(shown))
    grid_rows = -(-len(shown) // cols)
    fig = _figure(2.6 * cols, 2.2 * grid_rows + 0.5)
    axes = np.atleast_1d(fig.subplots(grid_rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for ax, name in zip(axes, shown, strict=False):
        k = names.index(name)
        ax.plot(GRID, f1_curve(val.labels[:, k], val.values[:, k], GRID), color=BLUE, linewidth=1.6,
                label="validation")
        if test is not None and test.values is not None:
            ax.plot(GRID, f1_curve(test.labels[:, k], test.values[:, k], GRID), color=GREY, linestyle=":",
                    linewidth=1.4, label="test")
        ax.axvline(0.5, color=GREY, linestyle="--", linewidth=0.8)
        t = chosen.get(name, 0.5)
        at = f1_curve(val.labels[:, k], val.values[:, k], np.array([t]))[0]
        ax.scatter([t], [at], s=40, color=ORANGE, edgecolor="black", zorder=5, label="chosen threshold")
        ax.set_title(f"{_short(name, 18)} (n={support[name]})", fontsize=10)
        ax.set(xlim=(0, 1), ylim=(0, 1.05))
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    fig.supxlabel("threshold", fontsize=10)
    fig.supylabel("F1", fontsize=10)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncol=3)
    note = (f'<p class="note">The {len(shown)} labels with the most validation examples of {len(names)}; '
            "the table below has every label.</p>" if len(shown) < len(names) else "")
    curves = (f"<p>F1 against the threshold on the {len(val.texts):,} validation texts (solid) and the test "
              "texts (dotted); the dot is the chosen threshold, the dashed line 0.5.</p>")
    return _section("thresholds", intro, table, curves,
                    fig_out(fig, "thresholds", "F1 against the threshold per label"), note)


def per_label(metrics: dict[str, Any]) -> str:
    """Every label's threshold, how it was chosen, and precision, recall and F1 at it and at 0.5."""
    tuned = metrics["test"]
    base = tuned.get("at_0.5", tuned)
    how = metrics.get("task", {}).get("how", {})
    heads = ("threshold", "chosen", "precision", "recall", "F1", "precision at 0.5", "recall at 0.5",
             "F1 at 0.5", "support", "predicted")
    rows = []
    for name in tuned["label_names"]:
        t, b = tuned["per_label"][name], base["per_label"][name]
        rows.append(f"<tr><td>{_e(name)}</td><td>{tuned['thresholds'][name]:.3f}</td>"
                    f"<td>{_e(how.get(name, 'not recorded'))}</td>"
                    + "".join(f"<td>{m[c]:.3f}</td>" for m in (t, b) for c in ("precision", "recall", "f1"))
                    + f"<td>{t['support']:,}</td><td>{t['predicted']:,}</td></tr>")
    table = ("<table><thead><tr><th>label</th>" + "".join(f"<th>{h}</th>" for h in heads)
             + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    intro = (f"On the {tuned['n']:,} test texts; predicted counts the texts given the label at its tuned "
             f"threshold. {tuned['empty_true']:,} texts have no label, {tuned['empty_predicted']:,} are "
             "given none.")
    if tuned.get("labels_absent"):
        intro += (f" No test text has {_e(', '.join(tuned['labels_absent']))}: left out of the macro "
                  "averages.")
    return _section("per-label", intro, table)


def label_calibration(fig_out: Figures, test: dict[str, Any]) -> str:
    """Each label's expected calibration error on test (its probability as a binary forecast)."""
    names = test["label_names"]
    ece = test["calibration"]["ece_per_label"]
    fig = _figure(7, min(30.0, max(2.4, 0.4 * len(names) + 1.2)))
    ax = fig.subplots()
    bars = ax.barh(np.arange(len(names)), [ece[n] for n in names], color=BLUE)
    if len(names) <= 30:
        ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=9)
    ax.set_yticks(np.arange(len(names)), [_short(n) for n in names])
    ax.invert_yaxis()
    ax.set(xlabel="expected calibration error (ECE) on the test set",
           xlim=(0, max(0.1, 1.2 * max(ece.values(), default=0))))
    intro = (f"How far each label's probability is from how often the label is right, in {ECE_BINS} "
             "probability bins, weighted by examples (0 is perfect). Mean over the labels: "
             f"{test['calibration']['ece_mean']:.3f}. The probabilities are the model's sigmoids as they are "
             "(nothing rescales them); the tuned thresholds make the decisions.")
    return _section("calibration", intro, fig_out(fig, "calibration", "calibration error per label"))


def label_mistakes(scores: SplitScores | None, label_names: list[str], chosen: dict[str, float],
                   problem: str | None, limit: int = MAX_MISTAKES) -> str:
    """The `limit` wrong (text, label) decisions at the tuned thresholds with the largest error
    |truth - probability|: labels given with a high probability to texts without them, and labels missed
    with a low one."""
    if scores is None or scores.values is None:
        return _section("label-errors", "", f'<p class="warn">{_e(problem)}</p>')
    probs, truth = scores.values, scores.labels.astype(bool)
    cut = np.array([chosen.get(n, 0.5) for n in label_names])
    wrong = (probs >= cut) != truth
    rows, cols = np.nonzero(wrong)
    error = np.abs(truth[rows, cols] - probs[rows, cols])
    order = np.argsort(-error, kind="stable")[:limit]
    n = len(scores.texts)
    if not len(rows):
        return _section("label-errors", f"No mistakes: every label of the {n:,} test texts is decided right.")
    body = "".join(
        f'<tr><td class="num">{probs[i, j]:.3f}</td><td class="num">{cut[j]:.3f}</td>'
        f'<td><span class="pill {"pred" if not truth[i, j] else "true"}">{_e(label_names[j])}</span></td>'
        f'<td>{"given, but not true" if not truth[i, j] else "true, but missed"}</td>'
        f'<td class="text">{_e(scores.texts[i])}</td></tr>'
        for i, j in zip(rows[order], cols[order], strict=True))
    table = ('<table class="mistakes"><thead><tr><th>probability</th><th>threshold</th><th>label</th>'
             f"<th>mistake</th><th>text</th></tr></thead><tbody>{body}</tbody></table>")
    intro = (f"{len(rows):,} of the {n * len(label_names):,} (text, label) decisions on the test set are "
             f"wrong at the tuned thresholds; the {len(order)} furthest from the truth are below (a label "
             "given with a high probability, or missed with a low one), as the model saw the texts.")
    return _section("label-errors", intro, table)


def scatter(fig_out: Figures, test: dict[str, Any], scores: SplitScores | None, target: str,
            problem: str | None) -> str:
    """The regression scores, predicted against true values on test with the y = x line, and the
    residuals (true - predicted) against the predicted values."""
    keys = ("mae", "rmse", "r2", "pearson", "spearman")
    table = ("<table><thead><tr>" + "".join(f"<th>{_name(k)}</th>" for k in keys) + "<th>n</th></tr></thead>"
             "<tbody><tr>" + "".join(f"<td>{test[k]:.3f}</td>" for k in keys) + f"<td>{test['n']:,}</td>"
             "</tr></tbody></table>")
    intro = (f"Test scores of the predicted {_e(target)}: MAE and RMSE on the target's scale (lower is "
             "better), R² (1 is perfect, 0 no better than the mean), Pearson and Spearman correlation. "
             f"Targets: mean {test['mean_true']:.4g}, standard deviation {test['std_true']:.4g}; "
             f"predictions: mean {test['mean_pred']:.4g}, standard deviation {test['std_pred']:.4g}.")
    if scores is None or scores.values is None:
        return _section("predictions", intro, table, f'<p class="warn">{_e(problem)}</p>')
    true, pred = scores.labels, scores.values
    fig = _figure(10, 4.2)
    ax_fit, ax_res = fig.subplots(1, 2)
    small = len(true) <= 2000
    dots = {"s": 14 if small else 4, "alpha": 0.7 if small else 0.3, "color": BLUE, "edgecolor": "none"}
    ax_fit.scatter(true, pred, **dots)
    low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    pad = 0.03 * (high - low or 1)
    ax_fit.plot([low - pad, high + pad], [low - pad, high + pad], color="black", linestyle="--", linewidth=1,
                label="y = x (perfect)")
    ax_fit.set(xlim=(low - pad, high + pad), ylim=(low - pad, high + pad), xlabel=f"true {_short(target)}",
               ylabel="predicted", title=f"Predicted vs true (n={len(true):,})")
    ax_fit.set_aspect("equal", adjustable="box")
    ax_fit.legend(loc="upper left")
    ax_res.scatter(pred, true - pred, **dots)
    ax_res.axhline(0, color="black", linestyle="--", linewidth=1)
    ax_res.set(xlabel="predicted", ylabel="residual (true − predicted)", title="Residuals")
    mismatch = ('<p class="warn">The data read now does not match the fingerprint recorded when the run was '
                "trained: the figures are for the data as it is now.</p>" if not scores.matches_run else "")
    return _section("predictions", intro, table, mismatch,
                    fig_out(fig, "predictions", "predicted vs true values and residuals"))


def largest_errors(scores: SplitScores | None, problem: str | None, limit: int = MAX_MISTAKES) -> str:
    """The `limit` test texts whose predicted value is furthest from the true one."""
    if scores is None or scores.values is None:
        return _section("errors", "", f'<p class="warn">{_e(problem)}</p>')
    true, pred = scores.labels, scores.values
    order = np.argsort(-np.abs(true - pred), kind="stable")[:limit]
    body = "".join(
        f'<tr><td class="num">{pred[i]:.3f}</td><td class="num">{true[i]:.3f}</td>'
        f'<td class="num">{pred[i] - true[i]:+.3f}</td>'
        f'<td class="text">{_e(scores.texts[i])}</td></tr>' for i in order)
    table = ('<table class="mistakes"><thead><tr><th>predicted</th><th>true</th><th>error</th><th>text</th>'
             f"</tr></thead><tbody>{body}</tbody></table>")
    intro = (f"The {len(order)} of the {len(true):,} test texts with the largest absolute error, as the "
             "model saw them (after the run's text cleaning). Large errors are often label noise, or texts "
             "unlike the training data.")
    return _section("errors", intro, table)

