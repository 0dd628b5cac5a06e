"""From raw splits to clean, de-duplicated, stratified train/val/test splits.

Every step that drops or changes data says so in the report: counts and row numbers.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunetext.config import DataConfig
from tunetext.data.sources import DataError, RawSplit, read_source

SHOW_ROWS = 10  # row numbers listed per problem before "and N more"


@dataclass
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text, label in sorted(zip(self.texts, self.labels, strict=True)):
            digest.update(f"{label}\t{text}\n".encode())
        return digest.hexdigest()


@dataclass
class Dataset:
    """Prepared splits with label names; labels are indices into `label_names`."""

    train: Split
    val: Split
    test: Split
    label_names: list[str]
    report: list[str] = field(default_factory=list)

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """Sizes, label counts and a sha256 fingerprint of each split."""
        out: dict[str, Any] = {"label_names": self.label_names}
        for name, split in self.splits().items():
            counts = Counter(split.labels)
            out[name] = {
                "size": len(split),
                "label_counts": {n: counts.get(i, 0) for i, n in enumerate(self.label_names)},
                "sha256": split.fingerprint(),
            }
        return out


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return " ".join(text.split())


def _label_key(value: Any) -> str | int | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return text or None


def _rows(rows: list[int], unit: str) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOW_ROWS])
    more = f" and {len(rows) - SHOW_ROWS} more" if len(rows) > SHOW_ROWS else ""
    return f"{unit}s {shown}{more}"


def _clean(raw: RawSplit, report: list[str]) -> tuple[list[str], list[str | int]]:
    """Normalise texts and labels; drop and report empty texts and missing labels."""
    texts: list[str] = []
    labels: list[str | int] = []
    empty: list[int] = []
    unlabeled: list[int] = []
    for text, label, row in zip(raw.texts, raw.labels, raw.rows, strict=True):
        key = _label_key(label)
        if raw.label_names is not None and isinstance(key, int):
            if not 0 <= key < len(raw.label_names):
                raise DataError(f"{raw.origin}, {raw.row_unit} {row}: label index {key} is outside the "
                                f"dataset's {len(raw.label_names)} label names")
            key = raw.label_names[key]
        clean = normalize_text(str(text)) if text is not None else ""
        if key is None:
            unlabeled.append(row)
        elif not clean:
            empty.append(row)
        else:
            texts.append(clean)
            labels.append(key)
    if empty:
        report.append(f"{raw.origin}: dropped {len(empty)} empty texts ({_rows(empty, raw.row_unit)})")
    if unlabeled:
        report.append(f"{raw.origin}: dropped {len(unlabeled)} rows without a label "
                      f"({_rows(unlabeled, raw.row_unit)})")
    return texts, labels


def _dedupe(texts: list[str], labels: list[str | int], origin: str, report: list[str]):
    first_label: dict[str, str | int] = {}
    conflicts = 0
    out_t, out_l = [], []
    for text, label in zip(texts, labels, strict=True):
        if text in first_label:
            conflicts += first_label[text] != label
            continue
        first_label[text] = label
        out_t.append(text)
        out_l.append(label)
    removed = len(texts) - len(out_t)
    if removed:
        msg = f"{origin}: removed {removed} exact duplicate texts, kept {len(out_t)}"
        if conflicts:
            msg += f" ({conflicts} duplicates had a different label than the first copy, which was kept)"
        report.append(msg)
    return out_t, out_l


def label_order(values: set[str | int]) -> list[str]:
    """Label names in a stable order: numeric labels numerically (also as CSV gives them, strings such
    as "10", so "2" comes before "10"), others alphabetically."""
    if all(isinstance(v, int) or re.fullmatch(r"-?\d+", v) for v in values):
        return [str(v) for v in sorted(values, key=int)]
    return sorted(str(v) for v in values)


def stratified_split(labels: list[int], fractions: list[float], seed: int) -> list[list[int]]:
    """Split indices into len(fractions)+1 parts; each part gets `fraction` of every class, the last
    part the rest. Deterministic for a given seed."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        start = 0
        for part, frac in zip(parts, fractions, strict=False):
            n = round(len(idx) * frac)
            part.extend(idx[start:start + n])
            start += n
        parts[-1].extend(idx[start:])
    for part in parts:
        part.sort()
    return parts


def subsample(split: Split, n: int, seed: int) -> Split:
    """A stratified subsample of about `n` examples; every class keeps at least one."""
    if n >= len(split):
        return split
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_label.setdefault(label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        keep.extend(idx[:max(1, round(len(idx) * n / len(split)))])
    keep.sort()
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep])


def _clean_all(raw: dict[str, RawSplit], report: list[str]) -> dict[str, tuple[list[str], list]]:
    cleaned = {}
    for name, split in raw.items():
        texts, labels = _clean(split, report)
        if not texts:
            raise DataError(f"{split.origin}: no usable rows (every text was empty or unlabeled)")
        cleaned[name] = _dedupe(texts, labels, split.origin, report)
    return cleaned


def _encode(texts: list[str], labels: list, label_names: list[str], origin: str, split_name: str) -> Split:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({str(lbl) for lbl in labels} - set(index))
    if unknown:
        raise DataError(
            f"{origin}: label(s) {', '.join(map(repr, unknown))} in the {split_name} split are not among "
            f"the known labels {', '.join(map(repr, label_names))}"
            + ("" if split_name == "train" else "; a model cannot learn a label the training data lacks")
        )
    return Split(texts, [index[str(lbl)] for lbl in labels])


def prepare(raw: dict[str, RawSplit], config: DataConfig, seed: int,
            label_names: list[str] | None = None) -> Dataset:
    """Clean, de-duplicate and split raw data.

    With only a training split, a stratified split by `config.val_fraction`/`config.test_fraction`;
    with train and test, validation (`val_fraction` of train) is carved from train. `label_names` fixes
    the label set (as when evaluating a trained run); a label outside it is an error.
    """
    report: list[str] = []
    cleaned = _clean_all(raw, report)
    train_texts = set(cleaned["train"][0])
    for name in ("validation", "test"):
        if name in cleaned:
            overlap = sum(t in train_texts for t in cleaned[name][0])
            if overlap:
                report.append(f"warning: {overlap} of {len(cleaned[name][0])} {name} texts also appear in "
                              "train; scores on that split will be optimistic")
    if label_names is None:
        present = set(cleaned["train"][1])
        declared = raw["train"].label_names  # a dataset's own names (ClassLabel) keep their order
        label_names = [n for n in declared if n in present] if declared else label_order(present)
    whole = _encode(*cleaned["train"], label_names, raw["train"].origin, "train")
    test = _encode(*cleaned["test"], label_names, raw["test"].origin, "test") if "test" in cleaned else None
    val = (_encode(*cleaned["validation"], label_names, raw["validation"].origin, "validation")
           if "validation" in cleaned else None)
    if test is None and val is None:
        val_idx, test_idx, train_idx = stratified_split(
            whole.labels, [config.val_fraction, config.test_fraction], seed)
    elif val is None:
        val_idx, train_idx = stratified_split(whole.labels, [config.val_fraction], seed)
        test_idx = []
    elif test is None:
        test_idx, train_idx = stratified_split(whole.labels, [config.test_fraction], seed)
        val_idx = []
    else:
        train_idx, val_idx, test_idx = list(range(len(whole))), [], []

    def take(idx: list[int]) -> Split:
        return Split([whole.texts[i] for i in idx], [whole.labels[i] for i in idx])

    train = take(train_idx)
    val = val if val is not None else take(val_idx)
    test = test if test is not None else take(test_idx)
    if config.max_train_samples is not None and config.max_train_samples < len(train):
        before = len(train)
        train = subsample(train, config.max_train_samples, seed)
        report.append(f"subsampled train from {before} to {len(train)} examples (stratified)")
    missing = set(label_names) - {label_names[i] for i in train.labels}
    for name, split in (("val", val), ("test", test)):
        absent = sorted({label_names[i] for i in split.labels} & missing)
        if absent:
            raise DataError(f"label(s) {', '.join(map(repr, absent))} occur in {name} but not in train; "
                            "add training examples for them or drop them")
    if not len(val) or not len(test):
        raise DataError(f"too little data: {len(train)} train, {len(val)} val, {len(test)} test examples")
    return Dataset(train, val, test, label_names, report)


def load_all(config: DataConfig, label_names: list[str]) -> tuple[Split, list[str]]:
    """Every usable row of a source (all its splits together), cleaned and de-duplicated, unsplit."""
    raw = read_source(config.source, config.text_column, config.label_column,
                      config.validation, config.test)
    report: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    for name, (t, lbl) in _clean_all(raw, report).items():
        part = _encode(t, lbl, label_names, raw[name].origin, name)
        texts += part.texts
        labels += part.labels
    return Split(texts, labels), report


def load_dataset(config: DataConfig, seed: int | None = None, label_names: list[str] | None = None) -> Dataset:
    """Read `config.source` (and any separate validation/test files) and prepare it, splitting with
    `seed` (default `config.seed`)."""
    raw = read_source(config.source, config.text_column, config.label_column,
                      config.validation, config.test)
    return prepare(raw, config, config.seed if seed is None else seed, label_names)
