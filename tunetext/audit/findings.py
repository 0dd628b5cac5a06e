"""What an audit finds: the records every part of `tunetext.audit` returns, and the editable findings file.

Rows are named by split and position in the prepared `Dataset` (after cleaning and de-duplication), and by
their text, which is what `data.drop_flagged` matches on: positions move when data or seed change, a text does
not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["label_issue", "near_duplicate", "outlier"]


@dataclass(frozen=True)
class Row:
    """One text of the prepared data: `split` is train, val or test; `row` its position there."""

    split: str
    row: int
    text: str
    label: str  # the given label as the user wrote it ("a|b" for several labels)


@dataclass(frozen=True)
class LabelIssue:
    """A training text whose given label the out-of-sample probabilities doubt. `quality` is cleanlab's label
    quality score (low = more likely wrong); `confidence` the out-of-sample probability of `suggested`."""

    row: Row
    suggested: str
    confidence: float
    quality: float


@dataclass(frozen=True)
class DuplicateGroup:
    """Texts that are the same after normalisation (`how="normalized"`) or close in embedding space
    (`how="embedding"`, `similarity` the smallest cosine similarity of a member to the group's first)."""

    rows: tuple[Row, ...]
    how: Literal["normalized", "embedding"]
    similarity: float

    @property
    def splits(self) -> set[str]:
        return {r.split for r in self.rows}

    @property
    def leaks(self) -> bool:
        """True when the group spans training and a held-out split: a score on that split is flattered."""
        return "train" in self.splits and len(self.splits) > 1


@dataclass(frozen=True)
class Outlier:
    """A text far from every class. `score` ranks (higher = stranger); `reason` says why in words."""

    row: Row
    score: float
    reason: str


@dataclass
class AuditResult:
    label_issues: list[LabelIssue]
    duplicates: list[DuplicateGroup]
    outliers: list[Outlier]
    summary: dict[str, Any] = field(default_factory=dict)  # data, model, folds, thresholds, counts, seconds
