"""Prepared splits (`Split`, `Dataset`) and how indices are drawn from them, stratified by label: by class
(single_label), by the iterative algorithm over label sets (multi_label), or by quantile bins of the
target (regression)."""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# What one row's label is after preparation: a class index (single_label), the sorted indices of its
# labels (multi_label, maybe empty), or the target (regression).
Label = int | tuple[int, ...] | float


@dataclass
class Split:
    texts: list[str]
    labels: list[Any]  # one `Label` kind for all rows; Any so single-label code can index with them

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for text, label in sorted(zip(self.texts, self.labels, strict=True)):
            digest.update(f"{_label_text(label)}\t{text}\n".encode())
        return digest.hexdigest()


def _label_text(label: Label) -> str:
    """A label as the fingerprint writes it: `3` (as before this knew other kinds), `(0, 2)`, `()`, or the
    float's shortest round-trip repr (`0.5`, never `0.50`). Elements are made plain ints and floats first,
    so a numpy scalar writes the same as the Python number (numpy 2 would write `np.int64(3)` in a tuple)."""
    if isinstance(label, tuple):
        return str(tuple(int(i) for i in label))
    if isinstance(label, float):
        return repr(float(label))
    return f"{label}"


def label_kind(labels: list[Any]) -> str:
    """The task a split's labels belong to: "multi_label" for tuples, "regression" for floats,
    "single_label" otherwise (ints; also an empty list). Mixed kinds are a bug in preparation."""
    kinds = {_kind(label) for label in labels}
    if len(kinds) > 1:
        raise TypeError(f"labels of several kinds in one split: {sorted(kinds)}")
    return kinds.pop() if kinds else "single_label"


def _kind(label: Any) -> str:
    if isinstance(label, tuple):
        return "multi_label"
    return "regression" if isinstance(label, float) else "single_label"


@dataclass
class Dataset:
    """Prepared splits with label names. Labels are indices into `label_names` (single_label), sorted
    tuples of them (multi_label), or floats with `label_names` = [the target's name] (regression);
    `task` says which."""

    train: Split
    val: Split
    test: Split
    label_names: list[str]
    report: list[str] = field(default_factory=list)
    task: str = "single_label"
    task_reason: str = ""  # why `task`: set in data.task, or what inference saw in the labels
    flagged: dict[str, Any] | None = None  # data.drop_flagged: the findings file, its sha256, what changed

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def summary(self) -> dict[str, Any]:
        """Sizes, labels and a sha256 fingerprint of each split. Per split, single_label: `label_counts`
        {name: rows}; multi_label: `label_counts` {name: rows having it}, `empty` (rows with no label) and
        `labels_per_row` (mean); regression: `target` {mean, std, min, max} (None for an empty split). With
        data.drop_flagged, `drop_flagged`: the findings file, its sha256, the rows dropped and relabelled."""
        out: dict[str, Any] = {"label_names": self.label_names}
        for name, split in self.splits().items():
            entry: dict[str, Any] = {"size": len(split)}
            if self.task == "regression":
                entry["target"] = _target_stats(split.labels)
            elif self.task == "multi_label":
                counts = _label_presence(split.labels)
                entry["label_counts"] = {n: counts.get(i, 0) for i, n in enumerate(self.label_names)}
                entry["empty"] = sum(not labels for labels in split.labels)
                entry["labels_per_row"] = _mean_labels(split.labels)
            else:
                counts = Counter(split.labels)
                entry["label_counts"] = {n: counts.get(i, 0) for i, n in enumerate(self.label_names)}
            entry["sha256"] = split.fingerprint()
            out[name] = entry
        if self.flagged is not None:
            out["drop_flagged"] = self.flagged
        return out

    def class_table(self) -> list[str]:
        """Lines of a table over the splits (train, val, test): per class (single_label) or per label
        (multi_label, rows having it, plus rows with no label and the mean labels per row), its count and
        share of each split, and the totals; for regression the target's n, mean, std, min, median, max."""
        if self.task == "regression":
            return _target_table(self.splits())
        multi = self.task == "multi_label"
        counts = {name: _label_presence(s.labels) if multi else Counter(s.labels)
                  for name, s in self.splits().items()}
        sizes = {name: len(split) for name, split in self.splits().items()}
        extra = ["(no label)", "labels/row"] if multi else []
        width = max(5, *(len(n) for n in self.label_names + extra)) + 2
        lines = [f"{'label':<{width}}" + "".join(f"{name:>16}" for name in counts)]

        def cell(count: int, size: int) -> str:
            return f"{count} ({count / size:.1%})" if size else "0"

        for i, label in enumerate(self.label_names):
            lines.append(f"{label:<{width}}" + "".join(
                f"{cell(c[i], sizes[name]):>16}" for name, c in counts.items()))
        if multi:
            empty = {name: sum(not labels for labels in s.labels) for name, s in self.splits().items()}
            lines.append(f"{'(no label)':<{width}}" + "".join(
                f"{cell(empty[name], sizes[name]):>16}" for name in counts))
            lines.append(f"{'labels/row':<{width}}" + "".join(
                f"{_mean_labels(s.labels):>16.2f}" for s in self.splits().values()))
        lines.append(f"{'total':<{width}}" + "".join(f"{size:>16}" for size in sizes.values()))
        return lines


def _label_presence(label_sets: list[tuple[int, ...]]) -> Counter[int]:
    """Per label, how many rows have it."""
    return Counter(i for labels in label_sets for i in labels)


def _mean_labels(label_sets: list[tuple[int, ...]]) -> float:
    return sum(map(len, label_sets)) / len(label_sets) if label_sets else 0.0


def _target_stats(values: list[float]) -> dict[str, float | None]:
    """Mean, population std, min and max of a split's target; None each for an empty split."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "min": min(values),
            "max": max(values)}


def _target_table(splits: dict[str, Split]) -> list[str]:
    """Lines of a table: per split, the target's n, mean, std (population), min, median and max."""
    width = 8
    lines = [f"{'target':<{width}}" + "".join(f"{name:>16}" for name in splits)]
    lines.append(f"{'n':<{width}}" + "".join(f"{len(s):>16}" for s in splits.values()))
    stats: dict[str, Any] = {
        "mean": statistics.fmean, "std": statistics.pstdev, "min": min, "median": statistics.median,
        "max": max}
    for stat, fn in stats.items():
        lines.append(f"{stat:<{width}}" + "".join(
            f"{fn(s.labels) if len(s) else float('nan'):>16.4g}" for s in splits.values()))
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


def iterative_split(label_sets: list[tuple[int, ...]], num_labels: int, fractions: list[float],
                    seed: int) -> list[list[int]]:
    """Split multi-label rows into len(fractions)+1 parts (the last the rest), each with about its
    fraction of the rows and of every label: the iterative stratification of Sechidis, Tsoumakas and
    Vlahavas (2011), "On the stratification of multi-label data". Deterministic for a given seed.

    Each part starts wanting its share of every label and of the rows. Then, repeatedly, the label with
    the fewest rows not yet placed (ties: random) hands each of those rows to the part that wants that
    label most (ties: the part that wants the most rows, then random); placing a row lowers what that
    part wants of every label the row has. Rows with no label go last, each to the part that wants the
    most rows. Unlike the paper, a part's wanted share of a label is `stratified_split`'s rounded count
    with its small-class rule, so a label on at least len(fractions)+1 rows is wanted by every part
    (rows placed earlier for a rarer label can still use up a part's share). Labels must lie in
    range(num_labels); the work is linear in the rows' labels plus num_labels squared."""
    rng = random.Random(seed)
    order = list(range(len(label_sets)))
    rng.shuffle(order)  # the order in which a label's rows are handed out
    rows_of: list[list[int]] = [[] for _ in range(num_labels)]
    for row in order:
        for label in label_sets[row]:
            rows_of[label].append(row)
    left = [len(rows) for rows in rows_of]  # rows of each label not placed yet
    wants = [_part_sizes(n, fractions) for n in left]
    for n, want in zip(left, wants, strict=True):
        want.append(n - sum(want))
    shares = [*fractions, 1 - sum(fractions)]
    room = [len(label_sets) * share for share in shares]  # rows each part still wants
    part_of = [-1] * len(label_sets)
    parts: list[list[int]] = [[] for _ in shares]

    def place(row: int, part: int) -> None:
        part_of[row] = part
        parts[part].append(row)
        room[part] -= 1
        for label in label_sets[row]:
            wants[label][part] -= 1
            left[label] -= 1

    while True:
        live = [label for label in range(num_labels) if left[label] > 0]
        if not live:
            break
        fewest = min(left[label] for label in live)
        label = rng.choice([lb for lb in live if left[lb] == fewest])
        for row in rows_of[label]:
            if part_of[row] < 0:
                place(row, _most_wanting(wants[label], room, rng))
    for row in order:
        if not label_sets[row]:
            place(row, _most_wanting(room, room, rng))
    for part in parts:
        part.sort()
    return parts


def _most_wanting(want: list[int] | list[float], room: list[float], rng: random.Random) -> int:
    """The part with the largest `want`, then the most `room`, then a random one of those tied."""
    best = max(zip(want, room, strict=True))
    tied = [j for j, key in enumerate(zip(want, room, strict=True)) if key == best]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def binned_split(values: list[float], fractions: list[float], seed: int,
                 bins: int = 10) -> list[list[int]]:
    """Split regression rows into len(fractions)+1 parts (the last the rest) by `stratified_split` over
    quantile bins of the target, so each part spans the whole range of values. Deterministic for a
    given seed.

    Rows are ranked by value (equal values by row order) and cut into equal-count bins. There are
    `bins` of them, but at most one per ceil(1 / smallest share) rows, the smallest share being the
    least of `fractions` and the rest's: each bin then holds at least one row's worth of the smallest
    part (with fractions 0.1 and 0.2, at most one bin per 10 rows; always at least one bin)."""
    shares = [share for share in [*fractions, 1 - sum(fractions)] if share > 0]
    # - 1e-9: a rest of 1 - 0.9 is 0.09999999999999998, whose inverse must still count as 10
    per_bin = math.ceil(1 / min(shares) - 1e-9) if shares else 1
    count = max(1, min(bins, len(values) // per_bin))
    ranked = sorted(range(len(values)), key=lambda i: (values[i], i))
    bin_of = [0] * len(values)
    for rank, row in enumerate(ranked):
        bin_of[row] = rank * count // len(values)
    return stratified_split(bin_of, fractions, seed)


def subsample(split: Split, n: int, seed: int) -> Split:
    """A stratified subsample of about `n` examples, by the kind of the split's labels (`label_kind`):
    single_label keeps each class's share and at least one example of every class; multi_label takes
    `iterative_split`'s part of n / len(split), then adds one row of every label it lacks (so every
    label keeps at least one row); regression takes `binned_split`'s part of n / len(split)."""
    if n >= len(split):
        return split
    kind = label_kind(split.labels)
    if kind == "multi_label":
        keep = _multi_label_subsample(split.labels, n, seed)
    elif kind == "regression":
        keep = binned_split(split.labels, [n / len(split)], seed)[0]
    else:
        keep = _single_label_subsample(split.labels, n, seed)
    return Split([split.texts[i] for i in keep], [split.labels[i] for i in keep])


def _single_label_subsample(labels: list[int], n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        keep.extend(idx[:max(1, round(len(idx) * n / len(labels)))])
    keep.sort()
    return keep


def _multi_label_subsample(label_sets: list[tuple[int, ...]], n: int, seed: int) -> list[int]:
    num_labels = 1 + max((i for labels in label_sets for i in labels), default=-1)
    keep = iterative_split(label_sets, num_labels, [n / len(label_sets)], seed)[0]
    have = _label_presence([label_sets[i] for i in keep])
    rng = random.Random(seed)
    kept = set(keep)
    rest = [i for i in range(len(label_sets)) if i not in kept]
    rng.shuffle(rest)
    for row in rest:  # a label the subsample lacks gets its first row in this random order
        if any(label not in have for label in label_sets[row]):
            keep.append(row)
            have.update(label_sets[row])
    keep.sort()
    return keep
