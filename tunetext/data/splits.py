"""Prepared splits (`Split`, `Dataset`) and how indices are drawn from them, stratified by label."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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

    def class_table(self) -> list[str]:
        """Lines of a table: per class, its count and its share of each split (train, val, test), and
        the totals."""
        counts = {name: Counter(split.labels) for name, split in self.splits().items()}
        width = max(5, *(len(n) for n in self.label_names)) + 2
        lines = [f"{'label':<{width}}" + "".join(f"{name:>16}" for name in counts)]

        def cell(count: int, size: int) -> str:
            return f"{count} ({count / size:.1%})" if size else "0"

        for i, label in enumerate(self.label_names):
            lines.append(f"{label:<{width}}" + "".join(
                f"{cell(c[i], len(self.splits()[name])):>16}" for name, c in counts.items()))
        lines.append(f"{'total':<{width}}" + "".join(f"{len(split):>16}" for split in self.splits().values()))
        return lines


def stratified_split(labels: list[int], fractions: list[float], seed: int) -> list[list[int]]:
    """Split indices into len(fractions)+1 parts; each part gets `fraction` of every class (rounded), the
    last part the rest. Deterministic for a given seed.

    A small class whose rounded share for a part is 0 still gives that part one example while the last
    part keeps at least one: a class with at least len(fractions)+1 examples is in every part. With
    fewer, the last part gets one first, then the parts with the larger fractions (so with validation
    0.1 and test 0.2, a class of 2 goes to train and test, and a class of 1 stays in train). A class
    large enough that every rounded share is at least 1 is split exactly as by rounding alone."""
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        start = 0
        for part, n in zip(parts, _part_sizes(len(idx), fractions), strict=False):
            part.extend(idx[start:start + n])
            start += n
        parts[-1].extend(idx[start:])
    for part in parts:
        part.sort()
    return parts


def _part_sizes(count: int, fractions: list[float]) -> list[int]:
    """How many of a class's `count` examples each fraction's part gets (see `stratified_split`)."""
    sizes = [round(count * frac) for frac in fractions]
    for i in sorted(range(len(fractions)), key=lambda i: -fractions[i]):  # larger shares first
        if sizes[i] == 0 and count - sum(sizes) > 1:
            sizes[i] = 1
    return sizes


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
