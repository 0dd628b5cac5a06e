"""Defaults that adapt to the data: the training settings left at `auto` (or null), chosen from the data's
shape, each with the reason it was chosen.

Three settings adapt; anything the user sets explicitly is used as given.

- `train.epochs`: enough passes for at least `max(MIN_STEPS, STEPS_PER_CLASS x classes)` optimizer steps,
  never fewer than MIN_EPOCHS nor more than MAX_EPOCHS. Three epochs of a few thousand short texts are a
  few hundred steps, plenty for two classes; R52's 52 classes over 6,500 texts need about ten passes
  before its rare classes are predicted at all (at three, the model predicted a handful of them).
- `train.class_weights`: `sqrt` (loss weights proportional to 1/sqrt(class count)) when the largest
  training class is at least IMBALANCE_RATIO times the rarest, else `none`. Macro scores, which the
  validation metric is by default, count a rare class as much as a common one; full inverse-frequency
  weights would multiply the loss of a class with two examples by a thousand.
- `train.early_stopping_patience`: a quarter of the epochs, at least 2, so that a long schedule is not
  stopped by one noisy evaluation and a short one still stops.

The task (`data.task`, inferred by `tunetext.data.tasks` when auto) shapes the others: `train.metric`
auto is the task's headline score (`METRICS`' first), a multi-label set counts its labels as classes and
gets no class weights (thresholds tuned on validation answer label imbalance), a regression has no classes.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tunetext.config import ConfigError, RunConfig

# What data.long_text=auto uses when some training text is longer than model.max_length: the way with the
# best validation macro-F1 on 20newsgroups in benchmarks/long_text.py (results/long_text.json).
LONG_TEXT_WHEN_LONG = "head_tail"

MIN_STEPS = 300
STEPS_PER_CLASS = 40
MIN_EPOCHS = 3
MAX_EPOCHS = 20
IMBALANCE_RATIO = 10
AUTO = {"train.epochs": None, "train.class_weights": "auto", "train.early_stopping_patience": "auto",
        "train.metric": "auto", "data.long_text": "auto", "data.task": "auto"}  # key: its auto value
# The validation metrics each task offers (train.metric); the first is what `auto` means.
METRICS = {"single_label": ("macro_f1", "accuracy", "weighted_f1"),
           "multi_label": ("micro_f1", "macro_f1", "samples_f1", "weighted_f1", "subset_accuracy"),
           "regression": ("r2", "pearson", "spearman", "neg_mae", "neg_rmse")}


@dataclass(frozen=True)
class DataShape:
    """What the defaults look at: training rows, the classes present in training (multi-label: the labels
    some training row has, counted by rows), how many training texts are longer than model.max_length (with
    special tokens and template), and the task with the reason it was taken."""

    rows: int
    classes: int
    largest: int
    rarest: int
    longer: int = 0
    task: str = "single_label"
    task_reason: str = ""

    @classmethod
    def of(cls, train_labels: list[Any], longer: int = 0, task: str = "single_label",
           task_reason: str = "") -> DataShape:
        if task == "regression":
            counts: Any = [len(train_labels)]
        elif task == "multi_label":
            counts = Counter(i for label in train_labels for i in label).values()
        else:
            counts = Counter(train_labels).values()
        return cls(rows=len(train_labels), classes=len(counts), largest=max(counts, default=0),
                   rarest=min(counts, default=0), longer=longer, task=task, task_reason=task_reason)


@dataclass(frozen=True)
class Choice:
    """One setting the defaults chose, and why."""

    key: str
    value: Any
    reason: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}: {self.reason}"


def long_text_mode(asked: str, longer: int) -> str:
    """What data.long_text `asked` means when `longer` training texts exceed model.max_length: `auto` is
    `truncate` when none does (nothing is cut), else LONG_TEXT_WHEN_LONG."""
    if asked != "auto":
        return asked
    return LONG_TEXT_WHEN_LONG if longer else "truncate"


def steps_per_epoch(rows: int, batch_size: int, accumulation: int = 1, processes: int = 1) -> int:
    """Optimizer steps in one pass over `rows` examples (every process runs the same number)."""
    micro = max(1, math.ceil(rows / batch_size) // processes)
    return max(1, math.ceil(micro / accumulation))


def resolve(config: RunConfig, shape: DataShape, processes: int = 1) -> tuple[RunConfig, list[Choice]]:
    """`config` with every `auto` training setting replaced by its value for data of `shape`, and the
    choices made, in order. Settings given explicitly are left as they are."""
    tc = config.train
    choices: list[Choice] = []
    if config.data.task == "auto":
        choices.append(Choice("data.task", shape.task, shape.task_reason))
    metric = _metric(tc.metric, shape.task, choices)
    per_epoch = steps_per_epoch(shape.rows, tc.batch_size, tc.gradient_accumulation_steps, processes)
    if tc.epochs is None:
        wanted = max(MIN_STEPS, STEPS_PER_CLASS * shape.classes)
        epochs = min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(wanted / per_epoch)))
        reason = (f"{shape.classes} classes and {shape.rows} training rows: at least {wanted} optimizer "
                  f"steps wanted (max({MIN_STEPS}, {STEPS_PER_CLASS} per class)), {per_epoch} per epoch")
        if epochs == MAX_EPOCHS and epochs * per_epoch < wanted:
            reason += f", capped at {MAX_EPOCHS} epochs"
        choices.append(Choice("train.epochs", epochs, reason))
    else:
        epochs = tc.epochs
    if shape.task == "regression" and tc.class_weights not in ("auto", "none"):
        raise ConfigError([f"train.class_weights={tc.class_weights} weights classes, and a regression has "
                           "none; set it to auto or none"])
    if tc.class_weights == "auto" and shape.task != "single_label":
        weights = "none"
        choices.append(Choice("train.class_weights", weights, "regression has no classes" if
                              shape.task == "regression" else "multi-label: thresholds tuned per label on "
                              "validation answer label imbalance"))
    elif tc.class_weights == "auto":
        ratio = shape.largest / max(1, shape.rarest)
        weights = "sqrt" if ratio >= IMBALANCE_RATIO else "none"
        choices.append(Choice("train.class_weights", weights,
                              f"largest class {shape.largest} / rarest {shape.rarest} = {ratio:.1f}, "
                              f"{'at least' if weights == 'sqrt' else 'under'} {IMBALANCE_RATIO}"))
    else:
        weights = tc.class_weights
    patience: int | None
    if tc.early_stopping_patience == "auto":
        # Patience counts evaluations: with train.eval_every there are several an epoch.
        evals = max(1, per_epoch // tc.eval_every) if tc.eval_every else 1
        patience = max(2, round(epochs * evals / 4))
        where = f"{epochs} epochs" + (f" of {evals} evaluations each" if evals > 1 else "")
        choices.append(Choice("train.early_stopping_patience", patience, f"a quarter of {where}, at least 2"))
    else:
        patience = tc.early_stopping_patience  # a number, or None: never stop early
    long_text = long_text_mode(config.data.long_text, shape.longer)
    if config.data.long_text == "auto":
        choices.append(Choice("data.long_text", long_text,
                              f"{shape.longer} of {shape.rows} training texts are longer than "
                              f"model.max_length {config.model.max_length}" if shape.longer else
                              f"no training text is longer than model.max_length {config.model.max_length}"))
    train = tc.model_copy(update={"epochs": epochs, "class_weights": weights,
                                  "early_stopping_patience": patience, "metric": metric})
    data = config.data.model_copy(update={"long_text": long_text, "task": shape.task})
    return config.model_copy(update={"train": train, "data": data}), choices


def _metric(asked: str, task: str, choices: list[Choice]) -> str:
    """train.metric for `task`: `auto` is the task's first in METRICS; one the task lacks is an error."""
    offered = METRICS[task]
    if asked == "auto":
        choices.append(Choice("train.metric", offered[0], f"the headline validation score of {task}"))
        return offered[0]
    if asked not in offered:
        raise ConfigError([f"train.metric={asked} is not a {task} score; use one of {', '.join(offered)} (or "
                           "auto)"])
    return asked


def same_run(saved: RunConfig, given: RunConfig) -> bool:
    """Whether `saved` (a run's resolved config) is what `given` resolves to: equal once each setting
    `given` leaves at auto takes the value `saved` chose for it."""
    chosen: dict[str, dict[str, Any]] = {"train": {}, "data": {}}
    for dotted, auto in AUTO.items():
        section, key = dotted.split(".")
        if getattr(getattr(given, section), key) == auto:
            chosen[section][key] = getattr(getattr(saved, section), key)
    return saved == given.model_copy(update={section: getattr(given, section).model_copy(update=values)
                                             for section, values in chosen.items()})
