"""Small classes: stratified splits that keep one example of each class in every split when its count
allows, warnings naming rare classes and classes a split lacks, and the per-class table of `data show`."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tunetext.cli import main
from tunetext.config import DataConfig
from tunetext.data.prepare import prepare
from tunetext.data.sources import RawSplit
from tunetext.data.splits import stratified_split


def raw(pairs, origin="d.csv") -> RawSplit:
    return RawSplit(origin, [t for t, _ in pairs], [lbl for _, lbl in pairs], list(range(2, len(pairs) + 2)),
                    "line")


def pairs(counts: dict[str, int], prefix: str = "text") -> list[tuple[str, str]]:
    return [(f"{prefix} {label} {i}", label) for label, n in counts.items() for i in range(n)]


def rounding_only(labels: list[int], fractions: list[float], seed: int) -> list[list[int]]:
    """The split before small classes were looked after: each part gets round(count * fraction)."""
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
    return [sorted(p) for p in parts]


def per_part(labels: list[int], parts: list[list[int]], label: int) -> list[int]:
    return [sum(labels[i] == label for i in part) for part in parts]


@pytest.mark.parametrize("seed", range(4))
def test_large_classes_split_exactly_as_before(seed):
    rng = random.Random(seed)
    labels = [rng.randrange(4) for _ in range(400)]  # every class well over 10 examples
    for fractions in ([0.1, 0.2], [0.1], [0.25]):
        assert stratified_split(labels, fractions, seed) == rounding_only(labels, fractions, seed)


def test_each_class_reaches_every_part_when_its_count_allows():
    # val 0.1, test 0.2, the rest train: counts 1..6 of classes 0..5, and a big class 6.
    labels = [c for c in range(6) for _ in range(c + 1)] + [6] * 50
    val, test, train = stratified_split(labels, [0.1, 0.2], seed=0)
    parts = [val, test, train]
    assert per_part(labels, parts, 0) == [0, 0, 1]  # 1 example: only train
    assert per_part(labels, parts, 1) == [0, 1, 1]  # 2: train and test (the larger share) first
    assert per_part(labels, parts, 2) == [1, 1, 1]  # 3: one in each
    assert per_part(labels, parts, 3) == [1, 1, 2]
    assert per_part(labels, parts, 5) == [1, 1, 4]  # 6: rounding alone gives val 1, test 1
    assert per_part(labels, parts, 6) == [5, 10, 35]  # untouched
    assert sorted(val + test + train) == list(range(len(labels)))


def test_only_validation_is_carved_when_the_data_brings_its_test_split():
    splits = {"train": raw(pairs({"big": 40, "pair": 2, "one": 1})),
              "test": raw(pairs({"big": 5, "pair": 1, "one": 1}, "t"), "t.csv")}
    dataset = prepare(splits, DataConfig(), seed=0)
    names = dataset.label_names
    val = Counter(names[i] for i in dataset.val.labels)
    train = Counter(names[i] for i in dataset.train.labels)
    assert val == {"big": 4, "pair": 1} and train == {"big": 36, "pair": 1, "one": 1}
    assert ("warning: no validation example of 1 class(es): 'one' (1 in train); validation macro scores "
            "leave them out (splitting puts a class in train, validation and test only from 3 examples on)"
            in dataset.report)


def test_rare_classes_and_missing_ones_are_named_in_the_report():
    dataset = prepare({"train": raw(pairs({"big": 60, "three": 3, "pair": 2, "one": 1}))}, DataConfig(),
                      seed=0)
    assert ("warning: 3 rare class(es) with fewer than 5 training examples (data.rare_class_min): "
            "'one' 1, 'pair' 1, 'three' 1; their scores rest on very few examples") in dataset.report
    assert ("warning: no validation example of 2 class(es): 'one' (1 in train), 'pair' (1 in train); "
            "validation macro scores leave them out (splitting puts a class in train, validation and test "
            "only from 3 examples on)") in dataset.report
    assert any(line.startswith("warning: no test example of 1 class(es): 'one' (1 in train)")
               for line in dataset.report)
    names = dataset.label_names
    assert Counter(names[i] for i in dataset.test.labels)["three"] == 1


def test_rare_class_min_is_a_setting():
    data = {"train": raw(pairs({"a": 40, "b": 12}))}  # b keeps 9 in train (12 - 1 val - 2 test)
    assert not [r for r in prepare(data, DataConfig(), seed=0).report if "rare" in r]
    report = prepare(data, DataConfig(rare_class_min=10), seed=0).report
    assert [r for r in report if "rare" in r] == [
        "warning: 1 rare class(es) with fewer than 10 training examples (data.rare_class_min): 'b' 9; "
        "their scores rest on very few examples"]


def test_data_show_prints_a_per_class_table_and_the_warnings(tmp_path, capsys):
    path = tmp_path / "small.csv"
    path.write_text("text,label\n" + "\n".join(f"{t},{lbl}" for t, lbl in
                                               pairs({"ham": 30, "spam": 10, "rare": 3})) + "\n")
    assert main(["data", "show", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    head = lines.index("per class: count (share of the split)")
    table = [line.split() for line in lines[head + 1:head + 6]]
    assert table == [["label", "train", "val", "test"],
                     ["ham", "21", "(72.4%)", "3", "(60.0%)", "6", "(66.7%)"],
                     ["rare", "1", "(3.4%)", "1", "(20.0%)", "1", "(11.1%)"],
                     ["spam", "7", "(24.1%)", "1", "(20.0%)", "2", "(22.2%)"],
                     ["total", "29", "5", "9"]]
    assert ("  preparation: warning: 1 rare class(es) with fewer than 5 training examples "
            "(data.rare_class_min): 'rare' 1; their scores rest on very few examples") in lines
