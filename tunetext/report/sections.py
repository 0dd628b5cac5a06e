"""The report's sections: each turns a run's metrics (and the re-scored test split) into HTML and figures.

Figures use matplotlib's object API (`Figure`, rendered by Agg): no display, no pyplot global state.
"""


from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunetext.adaptive import METRICS
from tunetext.config import RunConfig
from tunetext.evaluate import ECE_BINS, MetricAccumulator
from tunetext.inference import softmax_with_temperature
from tunetext.task_metrics import HEADLINE_KEYS

MAX_MISTAKES = 10  # rows in the table of most confident mistakes
SECTIONS = (("learning-curves", "Learning curves"), ("confusion-matrix", "Confusion matrix"),
            ("per-class", "Per-class scores"), ("calibration", "Calibration"),
            ("mistakes", "Most confident mistakes"), ("before-after", "Before vs after fine-tuning"),
            ("data", "Data"))
# The sections of each task's page, in order; single-label's are SECTIONS.
TASK_SECTIONS = {
    "single_label": SECTIONS,
    "multi_label": (("learning-curves", "Learning curves"), ("thresholds", "Per-label thresholds"),
                    ("per-label", "Per-label scores"), ("calibration", "Calibration"),
                    ("label-errors", "Largest per-label errors"),
                    ("before-after", "Before vs after fine-tuning"), ("data", "Data")),
    "regression": (("learning-curves", "Learning curves"), ("predictions", "Predicted vs true"),
                   ("errors", "Largest errors"), ("before-after", "Before vs after fine-tuning"),
                   ("data", "Data")),
}
TITLES = {sid: title for sections in TASK_SECTIONS.values() for sid, title in sections}
TITLES["export"] = "ONNX export"  # shown only for a run that was exported
# What a degenerate model has not learned, and where to look (`warnings`).
LEARNED = {"single_label": "to tell the classes apart; look at the confusion matrix",
           "multi_label": "which labels a text has; look at the per-label scores",
           "regression": "the targets; look at the predicted-vs-true scatter"}
# Errors, not scores: lower is better, and on the targets' scale rather than 0 to 1.
ERRORS = ("mae", "rmse", "neg_mae", "neg_rmse", "hamming_loss")
# Columns of the before-vs-after table after the task's headline keys.
EXTRA_COLUMNS = {"single_label": ("weighted_f1",), "multi_label": ("samples_f1", "subset_accuracy"),
                 "regression": ("rmse", "spearman")}
BLUE, ORANGE, GREY, RED, GREEN = "#2563eb", "#ea580c", "#9ca3af", "#dc2626", "#16a34a"
@dataclass
class SplitScores:
    """Per-example scores on one of the run's splits, reloaded and re-scored: `log_probs` are the model's
    scores as `tunetext.inference` gives them (log-probabilities for single-label, logits for multi-label,
    standardised outputs for regression); `labels` are class indices, a multi-hot (n, K) array or the
    targets; `values` are the sigmoid probabilities (n, K) of a multi-label run or the predicted values
    (n,) of a regression run on the targets' scale (None for single-label)."""

    texts: list[str]
    labels: np.ndarray
    log_probs: np.ndarray
    temperature: float
    matches_run: bool  # the reloaded split has the fingerprint recorded in data.json
    values: np.ndarray | None = None


# --- figures ----------------------------------------------------------------------------------------------

class Figures:
    """Writes each figure as `<name>.png` next to the HTML and returns an inline <img> for it."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __call__(self, fig, name: str, alt: str) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=150, facecolor="white")  # constrained layout already fits
        png = buf.getvalue()
        (self.folder / f"{name}.png").write_bytes(png)
        width = round(fig.get_figwidth() * 96)  # CSS pixels at the size it was laid out for
        data = base64.b64encode(png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}" '
                f'style="width:{width}px"></figure>')


def _figure(width: float, height: float, **kw):
    from matplotlib.figure import Figure  # slow to import; see page.report

    return Figure(figsize=(width, height), layout="constrained", **kw)


def _short(name: str, n: int = 24) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"


# --- sections ---------------------------------------------------------------------------------------------

def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _section(sid: str, intro: str, *parts: str) -> str:
    title = TITLES[sid]
    return (f'<section id="{sid}"><h2>{title}</h2>' + (f'<p class="intro">{intro}</p>' if intro else "")
            + "".join(parts) + "</section>")


def _name(metric: str) -> str:
    return {"macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "micro_f1": "micro-F1",
            "samples_f1": "samples-F1", "subset_accuracy": "subset accuracy", "hamming_loss": "Hamming loss",
            "r2": "R²", "mae": "MAE", "rmse": "RMSE", "pearson": "Pearson", "spearman": "Spearman",
            "neg_mae": "−MAE", "neg_rmse": "−RMSE"}.get(metric, metric)


def task_of(metrics: dict[str, Any]) -> str:
    """The run's task from its metrics.json (runs from before multi-label have no record: single_label)."""
    return metrics.get("task", {}).get("type") or metrics["test"].get("task", "single_label")


def _count(n: int) -> str:
    """22.7M, 118.4k, 9,216: parameter counts as people say them."""
    for at_least, unit, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if n >= at_least:
            return f"{n / unit:.1f}{suffix}"
    return f"{n:,}"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def header(run_dir: Path, config: RunConfig, metrics: dict[str, Any], info: dict[str, Any],
           label_names: list[str]) -> str:
    """The run's facts, a card per headline test score (the task's `HEADLINE_KEYS`) with its change since
    before fine-tuning, the calibration error, the test size, and the links to the task's sections."""
    test, before = metrics["test"], metrics.get("before_finetune", {}).get("test")
    task = task_of(metrics)
    training = metrics.get("training", {})
    tc = config.train
    strategy = f"last_n (last {tc.last_n} blocks and the head)" if tc.strategy == "last_n" else tc.strategy
    facts = [("model", config.model.name), ("data", config.data.source), ("fine-tuning", strategy),
             ("target", label_names[0]) if task == "regression" else ("labels", ", ".join(label_names))]
    if training:
        t = training
        facts.append(("training", f"{t['steps']} steps in {t['epochs_completed']} epochs, "
                      f"{t['train_seconds']:.0f} s; {_count(t['trainable_parameters'])} of "
                      f"{_count(t['total_parameters'])} parameters trained"))
    if "finished" in info:
        facts.append(("finished", info["finished"].replace("T", " ")))

    def card(label: str, value: str, note: str = "") -> str:
        return (f'<div class="card"><div class="label">{label}</div><div class="value">{value}</div>'
                f'<div class="note">{note}</div></div>')

    def delta(key: str) -> str:
        if not before:
            return ""
        d = test[key] - before[key]
        better = d <= 0 if key in ERRORS else d >= 0
        return f'<span class="{"up" if better else "down"}">{_signed(d)}</span> vs before fine-tuning'

    cards = [card(f"test {_name(key)}", f"{test[key]:.3f}", delta(key)) for key in HEADLINE_KEYS[task]]
    if "ece" in test:
        cards.append(card("calibration error (ECE)", f"{test['ece']:.3f}",
                          f"{test['ece_uncalibrated']:.3f} before temperature scaling"))
    elif "calibration" in test:  # multi-label: each label's probability as a binary forecast
        cards.append(card("calibration error (ECE)", f"{test['calibration']['ece_mean']:.3f}",
                          "mean over the labels"))
    if "at_0.5" in test:
        cards.append(card("macro-F1 at 0.5", f"{test['at_0.5']['macro_f1']:.3f}",
                          "every label at threshold 0.5 instead of its tuned one"))
    cards.append(card("test examples", f"{test['n']:,}",
                      "" if task == "regression" else f"{len(label_names)} labels"))
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in TASK_SECTIONS[task])
    rows = "".join(f"<tr><th>{k}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    return (f'<header><div class="kicker">tunetext run report</div><h1>{_e(run_dir.name)}</h1>'
            f'<table class="facts">{rows}</table><div class="cards">{"".join(cards)}</div>'
            f'<nav>{nav}</nav></header>')


def learning_curves(fig_out: Figures, entries: list[dict[str, Any]], metrics: dict[str, Any],
                     config: RunConfig) -> str:
    train = [e for e in entries if e.get("event") == "train"]
    evals = [e for e in entries if e.get("event") == "eval"]
    if not train and not evals:
        return _section("learning-curves", "This run has no training log (train_log.jsonl).")
    task = task_of(metrics)
    metric = config.train.metric if config.train.metric != "auto" else METRICS[task][0]
    fig = _figure(10, 3.6)
    ax_loss, ax_val = fig.subplots(1, 2)
    if train:
        ax_loss.plot([e["step"] for e in train], [e["loss"] for e in train], color=BLUE, marker="o",
                     markersize=3, linewidth=1.8)
    loss = {"single_label": "cross-entropy loss", "multi_label": "binary cross-entropy loss",
            "regression": "loss (standardised targets)"}[task]
    ax_loss.set(title="Training loss", xlabel="optimizer step", ylabel=loss)
    before = metrics.get("before_finetune", {}).get("val", {})
    # Besides the early-stopping metric, the task's first headline score for comparison (accuracy for
    # single-label); errors such as MAE are on the targets' scale and would squash the 0-to-1 scores.
    candidates = HEADLINE_KEYS[task][:1] if task == "single_label" else HEADLINE_KEYS[task]
    others = [k for k in candidates if k != metric and k not in ERRORS][:1]
    for name, colour in [*((k, GREY) for k in others), (metric, ORANGE)]:  # the metric in orange, last
        points = [(0, before[name])] if name in before else []
        points += [(e["step"], e[f"val_{name}"]) for e in evals if f"val_{name}" in e]
        if points:
            xs, ys = zip(*points, strict=True)
            ax_val.plot(xs, ys, color=colour, marker="o", markersize=4, linewidth=1.8, label=_name(name))
    best = metrics.get("training", {}).get("best_step")
    best_score = metrics.get("training", {}).get(f"best_val_{metric}")
    if best is not None and best_score is not None:
        ax_val.scatter([best], [best_score], s=140, marker="*", color=ORANGE, edgecolor="black", zorder=5,
                       label=f"best ({best_score:.3f}, step {best})")
    ax_val.set(title="Validation", xlabel="optimizer step (0: before fine-tuning)", ylabel="score")
    if metric not in ERRORS:  # an error (neg_mae) keeps its own scale
        ax_val.set_ylim(min(0.0, ax_val.get_ylim()[0]), 1.02)
    ax_val.legend(loc="lower right")
    stopped = " Training stopped early." if metrics.get("training", {}).get("stopped_early") else ""
    intro = (f"Loss on training batches (averaged between log lines) and validation scores after each "
             f"evaluation; the weights kept are those with the best validation "
             f"{_name(metric)}.{stopped}")
    return _section("learning-curves", intro, fig_out(fig, "learning_curves", "learning curves"))


def confusion(fig_out: Figures, test: dict[str, Any]) -> str:
    names = test["label_names"]
    matrix = np.asarray(test["confusion_matrix"])
    k = len(names)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    side = min(14.0, max(3.8, 0.5 * k + 2.4))
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.grid(False)
    ax.spines[:].set_visible(False)
    ticks = [_short(n) for n in names]
    ax.set_xticks(range(k), ticks, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), ticks)
    ax.set(xlabel="predicted label", ylabel="true label", title=f"Test set (n={test['n']:,})")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{matrix[i, j]:,}\n{rates[i, j]:.0%}" if k <= 8 else f"{matrix[i, j]}",
                        ha="center", va="center", fontsize=11 if k <= 8 else 8,
                        color="white" if rates[i, j] > 0.55 else "black")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true label's examples")
    intro = ("Rows are the true labels, columns the predictions; each cell shows the count and its share "
             "of the row, so the diagonal is each label's recall.")
    return _section("confusion-matrix", intro, fig_out(fig, "confusion_matrix", "confusion matrix"))


def per_class(fig_out: Figures, test: dict[str, Any]) -> str:
    names = test["label_names"]
    per = test["per_class"]
    k = len(names)
    fig = _figure(9, min(30.0, max(2.6, 0.55 * k + 1.2)))
    ax = fig.subplots()
    y = np.arange(k)
    height = 0.26
    for offset, key, colour in ((-height, "precision", BLUE), (0, "recall", ORANGE), (height, "f1", GREEN)):
        bars = ax.barh(y + offset, [per[n][key] for n in names], height, color=colour,
                       label=key.replace("f1", "F1"))
        if k <= 12:
            ax.bar_label(bars, fmt="%.2f", padding=3, fontsize=9)
    ax.set_yticks(y, [f"{_short(n)} (n={per[n]['support']})" for n in names])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.08), xlabel="score on the test set")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    rows = "".join(f"<tr><td>{_e(n)}</td>"
                   + "".join(f"<td>{per[n][c]:.3f}</td>" for c in ("precision", "recall", "f1"))
                   + f"<td>{per[n]['support']:,}</td></tr>" for n in names)
    table = ("<table><thead><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th>"
             f"</tr></thead><tbody>{rows}</tbody><tfoot><tr><td>macro average</td>"
             f"<td>{test['macro_precision']:.3f}</td><td>{test['macro_recall']:.3f}</td>"
             f"<td>{test['macro_f1']:.3f}</td><td>{test['n']:,}</td></tr></tfoot></table>")
    return _section("per-class", "", fig_out(fig, "per_class", "per-class scores"), table)


def _reliability_panel(ax_bar, ax_hist, count, confidence, correct, title: str, num_labels: int) -> None:
    bins = len(count)
    low = np.floor(bins / num_labels) / bins  # no prediction is less confident than 1 / labels
    edges = np.linspace(0, 1, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    used = count > 0
    accuracy = np.where(used, correct / np.maximum(count, 1), 0)
    mean_conf = np.where(used, confidence / np.maximum(count, 1), 0)
    ax_bar.bar(centers[used], accuracy[used], width=1 / bins, color=BLUE, edgecolor="white",
               label="accuracy in the bin")
    # The gap is hatched, not filled, so where it overlaps an accuracy bar both stay readable.
    ax_bar.bar(centers[used], (mean_conf - accuracy)[used], bottom=accuracy[used], width=1 / bins,
               fill=False, edgecolor=RED, hatch="///", linewidth=1, label="gap to the mean confidence")
    ax_bar.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1, label="perfect calibration")
    ax_bar.set(xlim=(low, 1), ylim=(0, 1.02), ylabel="accuracy", title=title)
    bars = ax_hist.bar(centers, count / max(count.sum(), 1), width=1 / bins, color=GREY, edgecolor="white")
    # Counts on the bars: a bin of 2 examples can look as badly calibrated as one of 2,000.
    ax_hist.bar_label(bars, labels=[f"{int(c):,}" if c else "" for c in count], padding=2, fontsize=8)
    ax_hist.set(xlim=(low, 1), ylim=(0, 1.3), yticks=[0, 0.5, 1],
                xlabel="confidence (probability of the predicted label)", ylabel="share")


def warnings(metrics: dict[str, Any]) -> str:
    """A red box under the header with the degenerate-model warnings of validation and test (see
    `evaluate.model_warnings`); nothing when there are none."""
    found = [(where, w) for where, key in (("validation", "val"), ("test", "test"))
             for w in metrics.get(key, {}).get("warnings", [])]
    if not found:
        return ""
    items = "".join(f"<li><b>{where}:</b> {_e(w)}</li>" for where, w in found)
    return (f'<section id="warnings" class="alert"><h2>Warning: this model may be degenerate</h2>'
            f'<ul>{items}</ul><p class="intro">The scores below are real, but a model like this has not '
            f"learned {LEARNED[task_of(metrics)]} before using it.</p></section>")


def calibration(fig_out: Figures, metrics: dict[str, Any], scores: SplitScores | None,
                 problem: str | None) -> str:
    test = metrics["test"]
    temperature = metrics.get("calibration", {}).get("temperature", test.get("temperature", 1.0))
    if scores is not None:
        acc = MetricAccumulator(test["label_names"], scores.temperature)
        acc.update(scores.log_probs, scores.labels)
        result = acc.result()
        panels = [(acc.bins[0], f"Before: temperature 1 (ECE {result['ece_uncalibrated']:.3f})"),
                  (acc.bins[1], f"After: temperature {scores.temperature:.2f} (ECE {result['ece']:.3f})")]
        note = (f"<p>On the {len(scores.texts):,} test texts the ECE is {result['ece_uncalibrated']:.3f} at "
                f"temperature 1 and {result['ece']:.3f} at temperature {scores.temperature:.2f}; log loss "
                f"{result['log_loss']:.3f} after scaling.</p>")
    elif "reliability" in test:
        r = test["reliability"]
        panels = [(np.array([r["count"], r["confidence"], r["correct"]]),
                   f"After: temperature {temperature:.2f} (ECE {test['ece']:.3f})")]
        note = f'<p class="warn">{_e(problem)} Only the calibrated diagram, from metrics.json, is shown.</p>'
    else:
        return _section("calibration", "This run's metrics have no calibration data.")
    fig = _figure(5 * len(panels), 5.4)
    grid = fig.subplots(2, len(panels), height_ratios=[3, 1], sharex="col", squeeze=False)
    for col, (bins, title) in enumerate(panels):
        count, confidence, correct = np.asarray(bins)
        _reliability_panel(grid[0, col], grid[1, col], count, confidence, correct, title,
                           len(test["label_names"]))
    fig.legend(*grid[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=3)
    intro = (f"How far the model's confidence is from its accuracy on the test set, in {ECE_BINS} "
             f"confidence bins (the lower plots show where the examples fall). Temperature scaling divides "
             f"the logits by T = {temperature:.2f}, fitted on validation; it changes the probabilities "
             "but never the predicted label. The expected calibration error (ECE) is the average gap, "
             "weighted by examples.")
    fit = metrics.get("calibration", {})
    if fit.get("kept") is False:  # runs before this rule have no "kept": their temperature was applied
        note += (f'<p class="note">A temperature of {fit["fitted_temperature"]:.2f} was fitted on validation '
                 "but not kept: it would have raised the validation ECE from "
                 f'{fit["val_ece_uncalibrated"]:.3f} to {fit["val_ece_fitted"]:.3f}, so the probabilities '
                 "are left at temperature 1.</p>")
    return _section("calibration", intro, note, fig_out(fig, "calibration", "reliability diagrams"))


def mistakes_table(texts: list[str], labels: np.ndarray, log_probs: np.ndarray, temperature: float,
                   label_names: list[str], limit: int = MAX_MISTAKES) -> tuple[str, int]:
    """The HTML table of the `limit` most confident mistakes (by calibrated probability) and how many
    mistakes there are in all. Texts and labels are HTML-escaped."""
    calibrated = softmax_with_temperature(log_probs, temperature)
    raw = softmax_with_temperature(log_probs, 1.0)
    preds = log_probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    order = wrong[np.argsort(-calibrated[wrong, preds[wrong]], kind="stable")][:limit]
    rows = "".join(
        f'<tr><td class="num">{calibrated[i, preds[i]]:.3f}</td><td class="num">{raw[i, preds[i]]:.3f}</td>'
        f'<td><span class="pill pred">{_e(label_names[preds[i]])}</span></td>'
        f'<td><span class="pill true">{_e(label_names[labels[i]])}</span></td>'
        f'<td class="text">{_e(texts[i])}</td></tr>' for i in order)
    table = ('<table class="mistakes"><thead><tr><th>confidence</th><th>raw (T=1)</th><th>predicted</th>'
             f"<th>true</th><th>text</th></tr></thead><tbody>{rows}</tbody></table>")
    return table, len(wrong)


def mistakes(scores: SplitScores | None, label_names: list[str], problem: str | None) -> str:
    if scores is None:
        return _section("mistakes", "", f'<p class="warn">{_e(problem)}</p>')
    table, n_wrong = mistakes_table(scores.texts, scores.labels, scores.log_probs, scores.temperature,
                                    label_names)
    n = len(scores.texts)
    if not n_wrong:
        return _section("mistakes", f"No mistakes: every one of the {n:,} test texts is classified right.")
    shown = min(n_wrong, MAX_MISTAKES)
    intro = (f"{n_wrong:,} of {n:,} test texts are misclassified; the {shown} the model was surest about are "
             "below, as the model saw them (after the run's text cleaning), with the calibrated probability "
             "of the wrong label (and the raw one, temperature 1). "
             "Confident mistakes are often label noise, or a pattern the model has latched on to.")
    return _section("mistakes", intro, table)


def before_after(fig_out: Figures, metrics: dict[str, Any]) -> str:
    """Test scores before fine-tuning, of any prompt baselines, and after: the task's headline scores
    (`HEADLINE_KEYS`) and a few more (`EXTRA_COLUMNS`) in a table, the headline scores on a 0-to-1 scale
    (not errors such as MAE) as bars."""
    task = task_of(metrics)
    keys = HEADLINE_KEYS[task]
    rows: list[tuple[str, dict[str, Any]]] = []
    if "test" in metrics.get("before_finetune", {}):
        rows.append(("before fine-tuning (new head)", metrics["before_finetune"]["test"]))
    for key, result in (metrics.get("prompt_baselines") or {}).items():
        if isinstance(result, dict) and all(k in result for k in keys):
            prompt = result.get("prompt", {})
            shots = prompt.get("shots")
            what = "zero-shot prompt" if shots == 0 or (shots is None and key == "zero_shot") else \
                f"{shots}-shot prompt" if shots else key.replace("_", "-") + " prompt"
            rows.append((f"{what} ({prompt['model']})" if prompt.get("model") else what, result))
    rows.append(("after fine-tuning", metrics["test"]))
    columns = [*keys, *EXTRA_COLUMNS[task]]
    cells = "".join(
        f'<tr class="{"final" if i == len(rows) - 1 else ""}"><td>{_e(name)}</td>'
        + "".join(f"<td>{m[k]:.3f}</td>" if k in m else "<td>–</td>" for k in columns)
        + f'<td>{m["n"]:,}</td></tr>' for i, (name, m) in enumerate(rows))
    table = ("<table><thead><tr><th></th>" + "".join(f"<th>{_name(k)}</th>" for k in columns)
             + f"<th>n</th></tr></thead><tbody>{cells}</tbody></table>")
    drawn = [k for k in keys if k not in ERRORS]
    fig = _figure(9, 0.55 * len(rows) * len(drawn) + 1.0)
    ax = fig.subplots()
    y = np.arange(len(rows))
    step = 0.8 / len(drawn)
    for j, (key, colour) in enumerate(zip(drawn, (BLUE, ORANGE, GREEN), strict=False)):
        offset = (j - (len(drawn) - 1) / 2) * step
        bars = ax.barh(y + offset, [m[key] for _, m in rows], 0.95 * step, color=colour, label=_name(key))
        ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=9)
    ax.set_yticks(y, [_short(name, 40) for name, _ in rows])
    ax.invert_yaxis()
    low = min(0.0, *(m[k] for _, m in rows for k in drawn))  # R² and correlations can be below 0
    ax.set(xlim=(low - 0.1 if low < 0 else 0, 1.1), xlabel="score on the test set")
    if low < 0:
        ax.axvline(0, color="black", linewidth=0.8)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(drawn))
    sizes = {m.get("n") for _, m in rows}
    note = ('<p class="note">Prompt scores are on a stratified subsample of the test split.</p>'
            if len(sizes) > 1 else "")
    intro = ("The same test split scored by the pretrained model with a freshly initialised head (before), "
             + ("by prompting a language model, " if len(rows) > 2 else "")
             + "and by the fine-tuned model (after).")
    if task == "multi_label":
        intro += (" Before fine-tuning every label is at threshold 0.5; after, at its tuned threshold "
                  "(the Per-label scores section has both).")
    return _section("before-after", intro, fig_out(fig, "before_after", "before vs after fine-tuning"),
                    table, note)


def data(fig_out: Figures, config: RunConfig, data_info: dict[str, Any], scores: SplitScores | None) -> str:
    splits: list[str] = [s for s in ("train", "val", "test") if s in data_info]
    if not splits:
        return _section("data", "This run has no data.json.")
    if "label_counts" in data_info[splits[0]]:
        table, figure = _label_counts(fig_out, data_info, splits)
    else:  # regression: the targets' spread per split
        table, figure = _targets(data_info, splits), ""
    steps = data_info.get("preparation", [])
    prep = ("<h3>What preparation changed</h3><ul class=\"prep\">"
            + "".join(f"<li>{_e(line)}</li>" for line in steps) + "</ul>" if steps else
            "<p>Preparation changed nothing beyond whitespace normalisation.</p>")
    options = [name for name in ("lowercase", "strip_urls", "strip_markup") if getattr(config.data, name)]
    if config.data.balance != "none":
        options.append(f"balance={config.data.balance}")
    if config.data.augment:
        options.append(f"augment={config.data.augment}")
    settings = (f"<p>Source <code>{_e(config.data.source)}</code>, split seed {config.data.seed}"
                + (f", options: {_e(', '.join(options))}" if options else "") + ".</p>")
    extra = ""
    if scores is not None:
        words = sorted(len(t.split()) for t in scores.texts)
        extra = (f"<p>Test texts have a median of {words[len(words) // 2]} words (longest {words[-1]}).</p>")
        if not scores.matches_run:
            extra += ('<p class="warn">The data read now does not match the fingerprint recorded when the '
                      "run was trained: it changed since, so the mistakes and the reliability diagram above "
                      "are for the data as it is now.</p>")
    return _section("data", "", settings, table, figure, extra, prep)


def _targets(data_info: dict[str, Any], splits: list[str]) -> str:
    """A regression run's splits: size, the targets' mean, standard deviation and range, fingerprint."""
    def cells(split: dict[str, Any]) -> str:
        target = split.get("target") or {}
        return "".join(f'<td class="num">{target[k]:.4g}</td>' if k in target else "<td>–</td>"
                       for k in ("mean", "std", "min", "max"))

    body = "".join(f"<tr><td>{s}</td><td>{data_info[s]['size']:,}</td>{cells(data_info[s])}"
                   f'<td class="hash">{data_info[s]["sha256"][:12]}</td></tr>' for s in splits)
    return ("<table><thead><tr><th>split</th><th>examples</th><th>target mean</th><th>std</th><th>min</th>"
            f"<th>max</th><th>sha256</th></tr></thead><tbody>{body}</tbody></table>")


def _label_counts(fig_out: Figures, data_info: dict[str, Any], splits: list[str]) -> tuple[str, str]:
    """Label counts per split, as a table and a figure of shares; a multi-label run's table also counts
    the rows with no label."""
    names = data_info["label_names"]
    empty = all("empty" in data_info[s] for s in splits)
    head = "".join(f"<th>{_e(n)}</th>" for n in names) + ("<th>no label</th>" if empty else "")
    body = "".join(
        f"<tr><td>{s}</td><td>{data_info[s]['size']:,}</td>"
        + "".join(f"<td>{data_info[s]['label_counts'].get(n, 0):,}</td>" for n in names)
        + (f"<td>{data_info[s]['empty']:,}</td>" if empty else "")
        + f'<td class="hash">{data_info[s]["sha256"][:12]}</td></tr>' for s in splits)
    table = (f"<table><thead><tr><th>split</th><th>examples</th>{head}<th>sha256</th></tr></thead>"
             f"<tbody>{body}</tbody></table>")
    k = len(names)
    fig = _figure(9, min(30.0, max(2.4, 0.5 * k + 1.2)))
    ax = fig.subplots()
    y = np.arange(k)
    for offset, split, colour in zip((-0.27, 0, 0.27), splits, (BLUE, ORANGE, GREEN), strict=False):
        size = max(data_info[split]["size"], 1)
        counts = [data_info[split]["label_counts"].get(n, 0) for n in names]
        bars = ax.barh(y + offset, [c / size for c in counts], 0.26, color=colour,
                       label=f"{split} ({data_info[split]['size']:,})")
        if k <= 12:
            ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=3, fontsize=9)
    ax.set_yticks(y, [_short(n) for n in names])
    ax.invert_yaxis()
    ax.set(xlabel="share of the split (bars labelled with counts)", xlim=(0, 1.05))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)
    return table, fig_out(fig, "data", "label distribution per split")


def _export_row(name: str, part: dict[str, Any]) -> str:
    agreement, diff = part.get("label_agreement"), part.get("max_probability_difference")
    cells = [name, f"{(part.get('bytes') or 0) / 1e6:.2f} MB", f"{part['metric']:.4f}",
             "" if agreement is None else f"{agreement:.2%}", "" if diff is None else f"{diff:.2e}"]
    return "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"


def export(record: dict[str, Any] | None) -> str:
    """The run's ONNX export (`tunetext export`'s record): which model `backend="auto"` uses and why, and
    each model's size, agreement with its reference and validation metric; nothing without an export."""
    if record is None:
        return ""
    rows = [_export_row(name, record[key]) for name, key in (("PyTorch", "torch"), ("ONNX fp32", "fp32"),
                                                              ("ONNX int8", "int8")) if record.get(key)]
    cpu = record.get("cpu", {})
    flags = ", ".join(cpu.get("flags", [])) or "no int8 extensions found"
    used = f"backend auto uses the {record.get('chosen')} model" if record.get("passed") else "not used"
    fusions = record.get("fusions", {}).get("why")
    intro = (f"{_e(used)}: {_e(record.get('reason', ''))}. CPU: {_e(cpu.get('name', ''))} ({_e(flags)}); "
             + (f"graph: {_e(fusions)}; " if fusions else "")
             + "answers and probabilities are compared with PyTorch for fp32, with fp32 for int8.")
    head = "".join(f"<th>{_e(h)}</th>" for h in ("model", "size", f"validation {_name(record['metric'])}",
                                                 "same answers", "largest probability difference"))
    return _section("export", intro, f"<table><tr>{head}</tr>{''.join(rows)}</table>")
