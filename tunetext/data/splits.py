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
