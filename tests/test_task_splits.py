"""Splitting, subsampling and describing multi-label and regression data (issue 15): iterative
stratification over label sets, quantile-binned stratification of a target, `subsample` for every label
kind, fingerprints of tuple and float labels, and `Dataset.summary`/`class_table` for the new tasks."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import numpy as np
import pytest

from tunetext.data.splits import (
    Dataset,
    Split,
    _most_wanting,
    binned_split,
    iterative_split,
    label_kind,
    stratified_split,
    subsample,
)


def label_rows(label_sets: list[tuple[int, ...]], parts: list[list[int]], label: int) -> list[int]:
    """How many rows of each part have `label`."""
    return [sum(label in label_sets[i] for i in part) for part in parts]


def random_label_sets(rows: int, num_labels: int, seed: int) -> list[tuple[int, ...]]:
    """Rows with 0-4 labels, label k drawn with weight 1/(k+1) (a long tail, like real tag data)."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(num_labels)]
    return [tuple(sorted(set(rng.choices(range(num_labels), weights=weights, k=rng.randint(0, 4)))))
            for _ in range(rows)]


def assert_partition(parts: list[list[int]], rows: int) -> None:
    assert all(part == sorted(part) for part in parts)
    assert sorted(i for part in parts for i in part) == list(range(rows))


# iterative_split


def test_iterative_split_hand_worked_case():
    # Label 0 on 3 rows (all also label 1), label 1 on 10 rows, 10 rows without a label; val 0.1, test 0.2.
    # Label 0 (fewest rows) goes first: each part wants one, so one row each. Label 1 wants 1/2/7 and its
    # rows placed with label 0 count: the other 7 go 0/1/6. The empty rows then fill each part to its
    # share of the 20 rows: 2/4/14.
    label_sets = [(0, 1)] * 3 + [(1,)] * 7 + [()] * 10
    parts = iterative_split(label_sets, 2, [0.1, 0.2], seed=0)
    assert_partition(parts, 20)
    assert [len(p) for p in parts] == [2, 4, 14]
    assert label_rows(label_sets, parts, 0) == [1, 1, 1]
    assert label_rows(label_sets, parts, 1) == [1, 2, 7]


def test_iterative_split_single_labels_as_sets_match_the_class_rule():
    # One label per row: each label is split by stratified_split's counts, small labels included.
    label_sets = [(0,)] * 1 + [(1,)] * 2 + [(2,)] * 3 + [(3,)] * 50
    parts = iterative_split(label_sets, 4, [0.1, 0.2], seed=1)
    assert_partition(parts, len(label_sets))
    assert label_rows(label_sets, parts, 0) == [0, 0, 1]  # 1 row: the rest (train)
    assert label_rows(label_sets, parts, 1) == [0, 1, 1]  # 2 rows: train and test (the larger share)
    assert label_rows(label_sets, parts, 2) == [1, 1, 1]
    assert label_rows(label_sets, parts, 3) == [5, 10, 35]


@pytest.mark.parametrize("seed", range(3))
def test_every_label_with_three_rows_reaches_every_part(seed):
    # Rare labels 0-4 (3 to 7 rows, one rare label per row) ride on rows that also carry common labels.
    rng = random.Random(seed)
    label_sets: list[tuple[int, ...]] = []
    for rare in range(5):
        label_sets += [tuple(sorted({rare, rng.randrange(5, 10)})) for _ in range(3 + rare)]
    label_sets += [tuple(sorted(set(rng.sample(range(5, 10), rng.randint(0, 3))))) for _ in range(300)]
    rng.shuffle(label_sets)
    parts = iterative_split(label_sets, 10, [0.1, 0.2], seed)
    assert_partition(parts, len(label_sets))
    for label in range(10):
        assert all(label_rows(label_sets, parts, label)), label


@pytest.mark.parametrize("fractions", [[0.1, 0.2], [0.15], [0.3, 0.3]])
def test_iterative_split_sizes_and_label_shares_follow_the_fractions(fractions):
    label_sets = random_label_sets(2000, 20, seed=0)
    parts = iterative_split(label_sets, 20, fractions, seed=0)
    assert_partition(parts, 2000)
    shares = [*fractions, 1 - sum(fractions)]
    for part, share in zip(parts, shares, strict=True):
        assert abs(len(part) - 2000 * share) <= 0.01 * 2000
    total = Counter(i for labels in label_sets for i in labels)
    for label in range(20):
        for count, share in zip(label_rows(label_sets, parts, label), shares, strict=True):
            assert abs(count - total[label] * share) <= 1.5, (label, count, total[label] * share)


def test_iterative_split_is_deterministic_by_seed():
    label_sets = random_label_sets(500, 8, seed=3)
    first = iterative_split(label_sets, 8, [0.1, 0.2], seed=7)
    assert iterative_split(label_sets, 8, [0.1, 0.2], seed=7) == first
    assert iterative_split(label_sets, 8, [0.1, 0.2], seed=8) != first


def test_ties_go_to_the_part_with_the_most_room_then_by_seed():
    assert _most_wanting([0, 0, -1], [1.0, 5.0, 9.0], random.Random(0)) == 1  # want first
    assert _most_wanting([1, 1, 1], [1.0, 5.0, 9.0], random.Random(0)) == 2  # then room
    picks = {_most_wanting([1, 1, 0], [2.0, 2.0, 9.0], random.Random(seed)) for seed in range(20)}
    assert picks == {0, 1}  # then random, by seed


def test_rows_without_labels_are_spread_by_share():
    parts = iterative_split([()] * 100, 3, [0.1, 0.2], seed=0)  # labels 0-2 unused: nothing to place
    assert_partition(parts, 100)
    assert [len(p) for p in parts] == [10, 20, 70]
    assert iterative_split([], 3, [0.1, 0.2], seed=0) == [[], [], []]


def test_iterative_split_on_a_large_random_set():
    # A sanity check that the per-label lists keep it linear (no timing asserted): 50k rows, 50 labels.
    label_sets = random_label_sets(50_000, 50, seed=1)
    parts = iterative_split(label_sets, 50, [0.1, 0.2], seed=0)
    assert [len(p) for p in parts] == pytest.approx([5000, 10000, 35000], abs=100)
    assert sum(map(len, parts)) == 50_000


# binned_split


def test_binned_split_keeps_both_ends_of_a_sorted_target_in_every_part():
    values = [float(v) for v in range(100)]
    parts = binned_split(values, [0.1, 0.2], seed=0)
    assert_partition(parts, 100)
    assert [len(p) for p in parts] == [10, 20, 70]
    for part in parts:  # every decile bin gives each part its share
        assert min(values[i] for i in part) < 10 and max(values[i] for i in part) >= 90
        assert Counter(int(values[i]) // 10 for i in part) == Counter(
            {b: len(part) // 10 for b in range(10)})


def test_binned_split_spans_the_range_of_a_shuffled_target():
    rng = random.Random(0)
    values = [rng.gauss(3.0, 2.0) for _ in range(1000)]
    low, high = sorted(values)[100], sorted(values)[-101]  # the lowest and highest tenth
    for part in binned_split(values, [0.1, 0.2], seed=4):
        assert min(values[i] for i in part) < low and max(values[i] for i in part) > high


def test_binned_split_uses_fewer_bins_for_few_rows():
    # 25 rows, smallest share 0.1: one bin per 10 rows, so 2 bins (13 and 12 rows) give val 1 + 1 and
    # test 3 + 2; ten bins of 2-3 rows would give val 5 and test 10.
    values = [float(v) for v in range(25)]
    val, test, train = binned_split(values, [0.1, 0.2], seed=0)
    assert (len(val), len(test), len(train)) == (2, 5, 18)
    assert sorted(i >= 13 for i in val) == [False, True]
    # 3 rows make one bin: one row each, as stratified_split does for a class of 3.
    assert [len(p) for p in binned_split([2.0, 1.0, 3.0], [0.1, 0.2], seed=0)] == [1, 1, 1]


def test_binned_split_is_stratified_split_over_rank_bins():
    rng = random.Random(2)
    values = [rng.random() for _ in range(200)]
    rank = {row: r for r, row in enumerate(sorted(range(200), key=lambda i: values[i]))}
    bins = [rank[i] * 5 // 200 for i in range(200)]
    assert binned_split(values, [0.2], seed=3, bins=5) == stratified_split(bins, [0.2], seed=3)
    assert binned_split(values, [0.2], seed=3, bins=5) != binned_split(values, [0.2], seed=4, bins=5)


# subsample


def old_subsample(split: Split, n: int, seed: int) -> Split:
    """`subsample` for class labels as it was before the other kinds (issue 15)."""
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


@pytest.mark.parametrize("n", [1, 7, 50, 299])
def test_class_label_subsample_is_unchanged(n):
    rng = random.Random(n)
    labels = [rng.randrange(5) for _ in range(300)]
    split = Split([f"t{i}" for i in range(300)], labels)
    assert subsample(split, n, seed=n) == old_subsample(split, n, seed=n)


def test_multi_label_subsample_keeps_shares_and_every_label():
    label_sets = random_label_sets(1000, 12, seed=5) + [(12,)]  # label 12 on one row only
    split = Split([f"t{i}" for i in range(len(label_sets))], label_sets)
    small = subsample(split, 200, seed=0)
    assert 200 <= len(small) <= 202  # the iterative part, plus a row for each label it lacks
    assert set(small.texts) <= set(split.texts)
    assert small.texts == sorted(small.texts, key=lambda t: int(t[1:]))  # original order kept
    have = Counter(i for labels in small.labels for i in labels)
    total = Counter(i for labels in label_sets for i in labels)
    assert set(have) == set(range(13))
    for label in range(12):
        assert abs(have[label] - total[label] / 5) <= 2
    assert subsample(split, 200, seed=0) == small and subsample(split, 200, seed=1) != small


def test_regression_subsample_spans_the_target():
    values = [float(v) for v in range(1000)]
    split = Split([f"t{i}" for i in range(1000)], values)
    small = subsample(split, 100, seed=0)
    assert len(small) == 100
    assert min(small.labels) < 100 and max(small.labels) >= 900
    assert all(split.labels[int(t[1:])] == v for t, v in zip(small.texts, small.labels, strict=True))
    assert subsample(split, 5000, seed=0) is split


def test_label_kind_reads_the_labels_and_refuses_a_mix():
    assert label_kind([0, 2, 1]) == "single_label"
    assert label_kind([(0,), (), (1, 2)]) == "multi_label"
    assert label_kind([0.5, 2.0]) == "regression"
    assert label_kind([]) == "single_label"
    with pytest.raises(TypeError, match="several kinds"):
        label_kind([1, 0.5])


# fingerprints


def sha(lines: str) -> str:
    return hashlib.sha256(lines.encode()).hexdigest()


def test_fingerprints_of_each_label_kind_are_pinned():
    assert Split(["b", "a"], [1, 0]).fingerprint() == sha("0\ta\n1\tb\n")  # as before issue 15
    assert Split(["b", "a", "c"], [(0, 2), (), (3,)]).fingerprint() == sha("()\ta\n(0, 2)\tb\n(3,)\tc\n")
    assert Split(["b", "a"], [0.5, 2.0]).fingerprint() == sha("2.0\ta\n0.5\tb\n")


def test_fingerprints_do_not_confuse_kinds_or_numpy_scalars():
    prints = {Split(["a"], [label]).fingerprint() for label in [1, 1.0, (1,), (1, 2), (12,), ()]}
    assert len(prints) == 6
    plain = Split(["a", "b"], [(0, 2), (1,)])
    assert Split(["a", "b"], [tuple(np.array([0, 2])), (np.int64(1),)]).fingerprint() == plain.fingerprint()
    assert Split(["a"], [np.float64(0.1)]).fingerprint() == Split(["a"], [0.1]).fingerprint()


# Dataset.summary and class_table


def multi_label_dataset() -> Dataset:
    train = Split(["a", "b", "c", "d"], [(0, 1), (0,), (), (1, 2)])
    val = Split(["e", "f"], [(0,), ()])
    test = Split(["g"], [(2,)])
    return Dataset(train, val, test, ["spam", "news", "ads"], task="multi_label")


def test_multi_label_summary_counts_rows_per_label_and_empty_rows():
    summary = multi_label_dataset().summary()
    assert summary["label_names"] == ["spam", "news", "ads"]
    train = summary["train"]
    assert train["size"] == 4 and train["empty"] == 1 and train["labels_per_row"] == 1.25
    assert train["label_counts"] == {"spam": 2, "news": 2, "ads": 1}
    assert summary["val"]["label_counts"] == {"spam": 1, "news": 0, "ads": 0}
    assert summary["test"]["empty"] == 0 and summary["test"]["labels_per_row"] == 1.0
    assert train["sha256"] == Split(["a", "b", "c", "d"], [(0, 1), (0,), (), (1, 2)]).fingerprint()


def test_multi_label_class_table():
    lines = multi_label_dataset().class_table()
    cells = [line.split() for line in lines]
    assert cells[0] == ["label", "train", "val", "test"]
    assert cells[1] == ["spam", "2", "(50.0%)", "1", "(50.0%)", "0", "(0.0%)"]
    assert cells[3] == ["ads", "1", "(25.0%)", "0", "(0.0%)", "1", "(100.0%)"]
    assert cells[4] == ["(no", "label)", "1", "(25.0%)", "1", "(50.0%)", "0", "(0.0%)"]
    assert cells[5] == ["labels/row", "1.25", "0.50", "1.00"]
    assert cells[6] == ["total", "4", "2", "1"]


def regression_dataset() -> Dataset:
    train = Split(["a", "b", "c", "d"], [1.0, 2.0, 3.0, 6.0])
    val = Split(["e"], [4.0])
    test = Split([], [])
    return Dataset(train, val, test, ["rating"], task="regression")


def test_regression_summary_describes_the_target():
    summary = regression_dataset().summary()
    assert summary["train"]["target"] == {"mean": 3.0, "std": pytest.approx(1.870829, abs=1e-6),
                                          "min": 1.0, "max": 6.0}
    assert "label_counts" not in summary["train"]
    assert summary["val"]["target"] == {"mean": 4.0, "std": 0.0, "min": 4.0, "max": 4.0}
    assert summary["test"] == {"size": 0, "target": {"mean": None, "std": None, "min": None, "max": None},
                               "sha256": Split([], []).fingerprint()}


def test_regression_class_table():
    cells = [line.split() for line in regression_dataset().class_table()]
    assert cells == [["target", "train", "val", "test"], ["n", "4", "1", "0"],
                     ["mean", "3", "4", "nan"], ["std", "1.871", "0", "nan"], ["min", "1", "4", "nan"],
                     ["median", "2.5", "4", "nan"], ["max", "6", "4", "nan"]]


def test_single_label_dataset_reads_as_before():
    dataset = Dataset(Split(["a", "b"], [0, 1]), Split(["c"], [1]), Split(["d"], [0]), ["x", "y"])
    assert dataset.task == "single_label"
    assert dataset.summary()["train"] == {"size": 2, "label_counts": {"x": 1, "y": 1},
                                          "sha256": sha("0\ta\n1\tb\n")}
    assert dataset.class_table()[1].split() == ["x", "1", "(50.0%)", "0", "(0.0%)", "1", "(100.0%)"]
