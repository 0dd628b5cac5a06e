"""Metrics, calibration and `tunetext.evaluate`.

Single-label metrics stream through a confusion matrix (`MetricAccumulator`). Multi-label and regression
scores are gathered whole (one float per label or per text) and scored by `tunetext.task_metrics`; what
turns a model's raw scores into them is the run's task record (`metrics.json`'s `task`: the thresholds, or
the targets' scale), `TaskRecord`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tunetext.batches import LongText
from tunetext.data.prepare import load_all, load_dataset
from tunetext.data.splits import Split
from tunetext.errors import UsageError
from tunetext.inference import iter_log_probs, sigmoid, softmax_with_temperature, to_values
from tunetext.predict import Classifier
from tunetext.task_metrics import (
    format_multi_label,
    format_regression,
    multi_label_metrics,
    regression_metrics,
    tune_thresholds,
)

TaskRecord = dict[str, Any]  # metrics.json's `task`: {"type": ..., "thresholds": ..., "target_mean": ...}


def compute_metrics(labels: list[int] | np.ndarray, preds: list[int] | np.ndarray,
                    label_names: list[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted precision/recall/F1, per-class scores and the confusion matrix.

    A class never predicted has precision 0 (and never present, recall 0), as scikit-learn's
    `zero_division=0`. Macro scores average the classes present in `labels` only (see
    `metrics_from_confusion`).
    """
    k = len(label_names)
    confusion = np.zeros((k, k), dtype=np.int64)  # rows: true label, columns: predicted
    np.add.at(confusion, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return metrics_from_confusion(confusion, label_names)


# Degenerate-model warnings (`model_warnings`). A model that gives one class to at least
# COLLAPSE_SHARE of the examples, while fewer than COLLAPSE_TRUE_SHARE of them have that class, has
# collapsed to it (a model that is right to answer it that often is not warned about). A model whose
# accuracy is at most MAJORITY_MARGIN above the share of the most common true class does no better than
# always answering that class.
COLLAPSE_SHARE = 0.95
COLLAPSE_TRUE_SHARE = 0.90
MAJORITY_MARGIN = 0.01


def metrics_from_confusion(confusion: np.ndarray, label_names: list[str]) -> dict[str, Any]:
    """`compute_metrics` from a confusion matrix (rows: true label, columns: predicted).

    Macro precision, recall and F1 average over the classes with at least one example here (support > 0):
    a class absent from the split has no recall to measure, and counting it as 0 would make one stray
    label cost a whole class's share. `macro_classes` says how many were averaged and `classes_absent`
    names the others; `per_class` keeps every class. A class present but never predicted counts with F1 0.
    `warnings` lists what `model_warnings` finds.
    """
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = int(confusion.sum())
    weights = support / n if n else support
    present = support > 0

    def macro(values: np.ndarray) -> float:
        return float(values[present].mean()) if present.any() else 0.0

    out: dict[str, Any] = {
        "n": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "macro_classes": int(present.sum()),
        "classes_absent": [name for name, p in zip(label_names, present, strict=True) if not p],
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion.tolist(),
        "label_names": list(label_names),
        "warnings": model_warnings(confusion, label_names),
    }
    return out


def model_warnings(confusion: np.ndarray, label_names: list[str]) -> list[str]:
    """Warnings about a degenerate model, from its confusion matrix: one that answers (almost) one class
    for everything, or one no better than always answering the most common class (thresholds:
    `COLLAPSE_SHARE`, `COLLAPSE_TRUE_SHARE`, `MAJORITY_MARGIN`). Empty when neither holds, or when the
    split has fewer than two classes (then the majority rule is no baseline)."""
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    n = int(confusion.sum())
    if not n or int((support > 0).sum()) < 2:
        return []
    found = []
    top = int(predicted.argmax())
    if predicted[top] >= COLLAPSE_SHARE * n and support[top] < COLLAPSE_TRUE_SHARE * n:
        found.append(
            f"the model answers {label_names[top]!r} for {predicted[top] / n:.0%} of the {n} examples, while "
            f"only {support[top] / n:.0%} of them are {label_names[top]!r}: it has (almost) collapsed to one "
            "class; check the labels, the learning rate and the class balance (train.class_weights)")
    majority = int(support.argmax())
    accuracy = float(np.trace(confusion) / n)
    if accuracy <= support[majority] / n + MAJORITY_MARGIN:
        found.append(
            f"accuracy {accuracy:.4f} is no better than always answering the most common class "
            f"{label_names[majority]!r} ({support[majority] / n:.4f} of the {n} examples)")
    return found


def warning_lines(metrics: dict[str, Any], where: str) -> list[str]:
    """`metrics`' warnings as `WARNING: <where>: ...` lines, for a terminal (the CLI prints them on
    stderr)."""
    return [f"WARNING: {where}: {w}" for w in metrics.get("warnings", [])]


def format_metrics(metrics: dict[str, Any], title: str = "") -> str:
    """A human-readable table: headline scores, per-class scores and the confusion matrix (multi-label:
    per-label scores and thresholds; regression: the errors and correlations)."""
    if metrics.get("task") == "multi_label":
        return format_multi_label(metrics, title)
    if metrics.get("task") == "regression":
        return format_regression(metrics, title)
    names = metrics["label_names"]
    width = max(9, *(len(n) for n in names)) + 1
    lines = [title] if title else []
    lines.append(f"  accuracy {metrics['accuracy']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
                 f"weighted-F1 {metrics['weighted_f1']:.4f}   (n={metrics['n']})")
    if metrics.get("classes_absent"):  # older metrics.json files have no such key: all classes averaged
        lines.append(f"  macro over {metrics['macro_classes']} of {len(names)} classes (absent from this "
                     f"split: {', '.join(metrics['classes_absent'])})")
    if "ece" in metrics:
        lines.append(f"  calibration error (ECE) {metrics['ece']:.4f} at temperature "
                     f"{metrics['temperature']:.2f}, {metrics['ece_uncalibrated']:.4f} without")
    lines.append(f"  {'label':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}")
    for name in names:
        c = metrics["per_class"][name]
        lines.append(f"  {name:<{width}}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}"
                     f"{c['support']:>10d}")
    lines.append("  confusion matrix (rows: true, columns: predicted)")
    lines.append("  " + " " * width + "".join(f"{n[:9]:>10}" for n in names))
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        lines.append(f"  {name:<{width}}" + "".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)


ECE_BINS = 15


class MetricAccumulator:
    """Streaming metrics: a confusion matrix and calibration bins, updated batch by batch."""

    def __init__(self, label_names: list[str], temperature: float = 1.0):
        self.label_names = label_names
        self.temperature = temperature
        k = len(label_names)
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self.nll = 0.0
        # per temperature (1.0 and `temperature`): examples, summed confidence, summed correctness per bin
        self.bins = np.zeros((2, 3, ECE_BINS))

    def update(self, log_probs: np.ndarray, labels: np.ndarray | list[int]) -> None:
        labels = np.asarray(labels, dtype=np.int64)
        preds = log_probs.argmax(axis=1)
        np.add.at(self.confusion, (labels, preds), 1)
        for row, temperature in enumerate((1.0, self.temperature)):
            probs = softmax_with_temperature(log_probs, temperature)
            if row == 1:
                self.nll -= float(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).sum())
            confidence = probs.max(axis=1)
            which = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
            np.add.at(self.bins[row, 0], which, 1)
            np.add.at(self.bins[row, 1], which, confidence)
            np.add.at(self.bins[row, 2], which, preds == labels)

    def ece(self, row: int) -> float:
        """The expected calibration error at temperature 1.0 (`row` 0) or at `temperature` (`row` 1)."""
        count, confidence, correct = self.bins[row]
        n = count.sum()
        return float(np.abs(correct - confidence).sum() / n) if n else 0.0

    def result(self) -> dict[str, Any]:
        metrics = metrics_from_confusion(self.confusion, self.label_names)
        n = max(1, metrics["n"])
        metrics.update(ece=self.ece(1), ece_uncalibrated=self.ece(0), log_loss=self.nll / n,
                       temperature=self.temperature,
                       reliability={"bins": ECE_BINS, "count": self.bins[1, 0].tolist(),
                                    "confidence": self.bins[1, 1].tolist(),
                                    "correct": self.bins[1, 2].tolist()})
        return metrics


def fit_temperature(log_probs: np.ndarray, labels: list[int] | np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood of `labels` (temperature scaling,
    Guo et al. 2017), fitted on validation scores."""
    scores = torch.tensor(log_probs, dtype=torch.float64)
    target = torch.tensor(np.asarray(labels), dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores / log_t.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def choose_temperature(log_probs: np.ndarray, labels: list[int] | np.ndarray,
                       label_names: list[str]) -> dict[str, Any]:
    """Fit a temperature on validation scores (`fit_temperature`) and keep it only if it lowers the
    validation ECE: fitting minimises log-likelihood, which can trade a few confident mistakes for worse
    calibration everywhere else. Returns what `metrics["calibration"]` records: `temperature` (the one
    applied: the fitted one, or 1.0), `fitted_temperature`, `kept`, `val_ece_fitted` and
    `val_ece_uncalibrated`."""
    fitted = fit_temperature(log_probs, labels)
    acc = MetricAccumulator(label_names, fitted)
    acc.update(log_probs, labels)
    ece_fitted, ece_plain = acc.ece(1), acc.ece(0)
    kept = ece_fitted < ece_plain
    return {"temperature": fitted if kept else 1.0, "fitted_temperature": fitted, "kept": kept,
            "val_ece_fitted": ece_fitted, "val_ece_uncalibrated": ece_plain}


def with_progress(chunks: Iterable[tuple[int, np.ndarray]], total: int, desc: str,
                  progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Pass `iter_log_probs`' `(start, log_probs)` chunks through, counting texts on a progress bar on
    stderr; the bar is off when `progress` is false or stderr is not a terminal (tqdm's `disable=None`),
    and is cleared when done."""
    with tqdm(total=total, desc=desc, unit="text", disable=None if progress else True, leave=False,
              dynamic_ncols=True) as bar:
        for start, log_probs in chunks:
            yield start, log_probs
            bar.update(len(log_probs))


def evaluate_split(model, tokenizer, texts: list[str], labels: list[int], label_names: list[str],
                   max_length: int, batch_size: int, bf16: bool = False,
                   temperature: float = 1.0, template: str | None = None,
                   progress: bool = False, long_text: LongText | None = None,
                   task: TaskRecord | None = None, folded: float = 1.0) -> dict[str, Any]:
    """Metrics of `model` on labelled texts (put into `template` if given; a long text cut or scored
    window by window and pooled as `long_text` says, one prediction per text); `progress` shows a bar on
    a terminal (`with_progress`). Single-label scores stream chunk by chunk (memory does not grow with the
    set); `task` (the run's `TaskRecord`) says how multi-label or regression scores are read
    (`task_metrics`). `folded` is a temperature already folded into the model's head
    (`Classifier.folded_temperature`): its scores are multiplied back by it (softmax ignores the shift
    that leaves), so that `temperature` and the uncalibrated ECE mean what they mean for any run."""
    chunks = iter_log_probs(model, tokenizer, texts, max_length, batch_size, bf16, template, long_text)
    if task is not None and task["type"] != "single_label":
        scores = [lp for _, lp in with_progress(chunks, len(texts), "scoring", progress)]
        return task_metrics(np.concatenate(scores), labels, label_names, task)
    acc = MetricAccumulator(label_names, temperature)
    for start, log_probs in with_progress(chunks, len(texts), "scoring", progress):
        acc.update(log_probs * folded if folded != 1.0 else log_probs, labels[start:start + len(log_probs)])
    return {"task": "single_label", **acc.result()}


def multi_hot(labels: list[Any], num_labels: int) -> np.ndarray:
    """Multi-label sets (tuples of label indices) as an (n, num_labels) 0/1 matrix."""
    out = np.zeros((len(labels), num_labels), dtype=np.int8)
    for row, label in enumerate(labels):
        out[row, list(label)] = 1
    return out


def task_metrics(scores: np.ndarray, labels: list[Any], label_names: list[str],
                 task: TaskRecord) -> dict[str, Any]:
    """Metrics of a multi-label or regression model's raw scores (`tunetext.inference`): each label's
    probability against its threshold (and, once thresholds are tuned, at 0.5 too, under `at_0.5`), or the
    value on the targets' scale against the targets."""
    if task["type"] == "regression":
        return regression_metrics(np.asarray(labels, dtype=np.float64), to_values(scores, task)[:, 0])
    truth, probs = multi_hot(labels, len(label_names)), sigmoid(scores)
    tuned = task.get("thresholds")
    if tuned is None:
        return multi_label_metrics(truth, probs, label_names)
    metrics = multi_label_metrics(truth, probs, label_names, [tuned[name] for name in label_names])
    metrics["at_0.5"] = multi_label_metrics(truth, probs, label_names)
    return metrics




def evaluate(run_dir: str | Path, data: str | None = None, split: str | None = None,
             text_column: str | None = None, label_column: str | None = None,
             batch_size: int = 128, progress: bool = True) -> dict[str, Any]:
    """Evaluate a finished run on a split of `data` (default: the data it was trained on).

    The data goes through the run's own preparation (same seed, so the same split); `split` is
    `train`, `val`, `test` or `all` (every usable row). By default: `test` for the run's own data,
    `all` for other data. `progress` shows a progress bar on stderr while scoring, on a terminal only.
    """
    clf = Classifier.load(run_dir, backend="torch")  # evaluates the PyTorch weights
    data_config = clf.config.data.model_copy()
    if data is not None:
        data_config = data_config.model_copy(update={"source": data, "validation": None, "test": None})
    if text_column:
        data_config.text_column = text_column
    if label_column:
        data_config.label_column = label_column
    split = split or ("test" if data is None else "all")
    if split == "all":
        examples, report = load_all(data_config, clf.label_names)
    elif split in ("train", "val", "test"):
        dataset = load_dataset(data_config, label_names=clf.label_names)
        examples, report = dataset.splits()[split], dataset.report
    else:
        raise UsageError(f"split must be train, val, test or all; got {split!r}")
    metrics = evaluate_split(clf.model, clf.tokenizer, examples.texts, examples.labels,
                             clf.label_names, clf.config.model.max_length, batch_size,
                             temperature=clf.temperature * clf.folded_temperature,  # one of them is 1
                             template=clf.config.data.template, progress=progress,
                             long_text=LongText.of(clf.config.data), task=clf.task_record,
                             folded=clf.folded_temperature)
    metrics["split"] = split
    metrics["report"] = report
    return metrics


def calibrated_scores(model, tokenizer, val: Split, test: Split, label_names: list[str], max_length: int,
                      batch_size: int, template: str | None = None, progress: bool = False,
                      long_text: LongText | None = None, task: TaskRecord | None = None
                      ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Validation and test metrics of a trained model in fp32, as `Classifier.predict` computes them, with
    the temperature that calibrates its probabilities on validation, if it does (`choose_temperature`;
    argmax, and so accuracy and F1, are unchanged by it): (val metrics, test metrics, calibration).
    Multi-label: the calibration is each label's threshold, tuned on validation (`tune_thresholds`), and
    both splits are scored at them and at 0.5; regression has none ({})."""
    val_log_probs = np.concatenate([lp for _, lp in with_progress(iter_log_probs(
        model, tokenizer, val.texts, max_length, batch_size, template=template, long_text=long_text),
        len(val), "scoring validation", progress)])
    if task is not None and task["type"] != "single_label":
        calibration = ({} if task["type"] == "regression" else
                       tune_thresholds(multi_hot(val.labels, len(label_names)), sigmoid(val_log_probs),
                                       label_names))
        task = {**task, **({"thresholds": calibration["thresholds"]} if calibration else {})}
        test_metrics = evaluate_split(model, tokenizer, test.texts, test.labels, label_names, max_length,
                                      batch_size, template=template, progress=progress, long_text=long_text,
                                      task=task)
        return task_metrics(val_log_probs, val.labels, label_names, task), test_metrics, calibration
    calibration = choose_temperature(val_log_probs, val.labels, label_names)
    temperature = calibration["temperature"]
    val_scores = MetricAccumulator(label_names, temperature)
    val_scores.update(val_log_probs, val.labels)
    test_scores = evaluate_split(model, tokenizer, test.texts, test.labels, label_names, max_length,
                                 batch_size, temperature=temperature, template=template,
                                 progress=progress, long_text=long_text)
    return {"task": "single_label", **val_scores.result()}, test_scores, calibration
