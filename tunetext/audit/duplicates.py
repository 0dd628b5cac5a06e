"""Near-duplicates and leakage: texts that are the same after a strong normalisation, or close in embedding
space, within training and across train/validation/test ([docs/audit.md]).

Preparation already removed exact duplicates inside each split. What is left: copies that differ in case,
punctuation or spacing ("Free CASH now!!" and "free cash now"), which `normalized_key` makes equal, and
paraphrases or templates with a changed word, whose mean-pooled embeddings have a cosine similarity at or
above a threshold.

Embedding groups are formed by leader clustering (Taylor-Butina), not by connected components: a chain of
pairs each above the threshold can join texts that have nothing in common, and on a large set one component
can swallow thousands of texts. A leader takes its unassigned neighbours; a text left alone although it has
neighbours joins the group of its most similar neighbour (one hop, so `similarity`, measured against the
group's first text, may then be below the threshold). Leaders that have a neighbour across the train /
held-out boundary go first, and a lone held-out text prefers a training neighbour's group, so that every
held-out text with a training neighbour at or above the threshold ends in a leaking group.

Similarities are computed in chunks of rows against the rest (upper triangle only): memory stays at
`CHUNK` x N floats, never N x N.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

import numpy as np

from tunetext.audit.findings import DuplicateGroup, Row

SPLIT_ORDER = ("train", "val", "test")
CHUNK = 512  # rows per matrix product: 512 x 50,000 float32 is 100 MB
MAX_GROUP = 50  # the most texts one embedding group holds (and the most neighbours kept per text)
_NOT_WORD = re.compile(r"[\W_]+")  # runs of anything but letters and digits (Unicode-aware)


def normalized_key(text: str) -> str:
    """What near-identical copies have in common: Unicode compatibility forms folded (NFKC: full-width
    letters, ligatures), case folded, accents kept, every run of punctuation, symbols and whitespace made one
    space. Digits are kept: "1/10" and "9/10" are different reviews, and a template with a changed number
    is left to the embedding comparison."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return _NOT_WORD.sub(" ", folded).strip()


def _flatten(rows: dict[str, list[Row]], embeddings: dict[str, np.ndarray]) -> tuple[list[Row], np.ndarray]:
    """All rows in split order (train, val, test, then any other) and their unit-length embeddings."""
    names = [s for s in SPLIT_ORDER if s in rows] + sorted(s for s in rows if s not in SPLIT_ORDER)
    flat: list[Row] = []
    parts: list[np.ndarray] = []
    dim = None
    for name in names:
        emb = np.asarray(embeddings.get(name, np.zeros((0, 0))), dtype=np.float32)
        if len(rows[name]) == 0:
            continue
        if emb.ndim != 2 or emb.shape[0] != len(rows[name]):
            raise ValueError(f"near_duplicates: split {name!r} has {len(rows[name])} rows but embeddings of "
                             f"shape {emb.shape}")
        if dim is not None and emb.shape[1] != dim:
            raise ValueError(f"near_duplicates: split {name!r} has embeddings of width {emb.shape[1]}, "
                             f"the others {dim}")
        dim = emb.shape[1]
        flat.extend(rows[name])
        parts.append(emb)
    if not parts:
        return [], np.zeros((0, 1), dtype=np.float32)
    matrix = np.concatenate(parts)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    # A zero vector stays zero (similarity 0 to everything) instead of becoming NaN.
    return flat, matrix / np.maximum(norms, 1e-12)


def similar_pairs(unit: np.ndarray, threshold: float, keep: int = MAX_GROUP,
                  chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j), i < j, of unit vectors with cosine similarity >= `threshold`, and their similarities.
    Each i keeps at most its `keep` most similar j: a block of thousands of near-identical texts yields
    N x `keep` pairs, not N^2. Computed `chunk` rows at a time against the rows after them."""
    found_i, found_j, found_s = [], [], []
    n = len(unit)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        sims = unit[start:stop] @ unit[start:].T  # (stop - start) x (n - start)
        # Only j > i: blank the diagonal and the lower triangle of this block.
        sims[np.tril_indices(stop - start, 0, sims.shape[1])] = -np.inf
        r, c = np.nonzero(sims >= threshold)
        if len(r) == 0:
            continue
        s = sims[r, c]
        counts = np.bincount(r, minlength=stop - start)
        if counts.max() > keep:  # rare: keep each row's `keep` most similar
            order = np.lexsort((-s, r))
            r, c, s = r[order], c[order], s[order]
            rank = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
            r, c, s = r[rank < keep], c[rank < keep], s[rank < keep]
        found_i.append(r + start)
        found_j.append(c + start)
        found_s.append(s)
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)


def _normalized_groups(flat: list[Row]) -> list[DuplicateGroup]:
    """Texts with the same `normalized_key` (not an empty one: "!!!" and "..." are outliers, not copies)."""
    by_key: dict[str, list[Row]] = defaultdict(list)
    for row in flat:
        key = normalized_key(row.text)
        if key:
            by_key[key].append(row)
    return [DuplicateGroup(tuple(same), "normalized", 1.0) for same in by_key.values() if len(same) > 1]


def _neighbours(n: int, i: np.ndarray, j: np.ndarray, s: np.ndarray) -> list[list[tuple[float, int]]]:
    """Each text's neighbours as (similarity, index), most similar first."""
    near: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    for a, b, sim in zip(i.tolist(), j.tolist(), s.tolist(), strict=True):
        near[a].append((sim, b))
        near[b].append((sim, a))
    for lst in near:
        lst.sort(key=lambda t: (-t[0], t[1]))
    return near


def _leader_groups(flat: list[Row], near: list[list[tuple[float, int]]]) -> list[list[int]]:
    """Leader clustering over the neighbour lists (see the module docstring): lists of indices, leader
    first, each at most `MAX_GROUP` long."""
    train = [r.split == "train" for r in flat]

    def crosses(a: int, b: int) -> bool:
        return train[a] != train[b]

    has_cross = [any(crosses(a, b) for _, b in near[a]) for a in range(len(flat))]
    order = sorted((a for a in range(len(flat)) if near[a]),
                   key=lambda a: (not has_cross[a], -len(near[a]), a))
    group_of: dict[int, int] = {}
    groups: list[list[int]] = []
    alone: list[int] = []
    for leader in order:
        if leader in group_of:
            continue
        members = [b for _, b in near[leader] if b not in group_of][:MAX_GROUP - 1]
        if not members:
            alone.append(leader)
            continue
        for b in (leader, *members):
            group_of[b] = len(groups)
        groups.append([leader, *members])
    # A lone text's neighbours were all taken before its turn: it joins one of their groups, a neighbour
    # across the train / held-out boundary first (so a leak is shown as one), else its most similar.
    for a in alone:
        ranked = sorted(near[a], key=lambda t: (not crosses(a, t[1]), -t[0], t[1]))
        for _, b in ranked:
            if b in group_of and len(groups[group_of[b]]) < MAX_GROUP:
                group_of[a] = group_of[b]
                groups[group_of[b]].append(a)
                break
    return groups


def _embedding_groups(flat: list[Row], unit: np.ndarray, threshold: float) -> list[DuplicateGroup]:
    i, j, s = similar_pairs(unit, threshold, chunk=CHUNK)  # CHUNK read now, so a test can shrink it
    out = []
    for members in _leader_groups(flat, _neighbours(len(flat), i, j, s)):
        first, rest = members[0], members[1:]
        sims = unit[rest] @ unit[first]
        order = np.argsort(-sims, kind="stable")
        rows = tuple(flat[k] for k in [first, *(rest[o] for o in order)])
        # Texts that are all one normalised copy are already a "normalized" group: nothing new here.
        if len({normalized_key(r.text) for r in rows}) > 1:
            out.append(DuplicateGroup(rows, "embedding", round(float(min(sims.min(), 1.0)), 4)))
    return out


def _sort_key(group: DuplicateGroup) -> tuple:
    first = group.rows[0]
    split_rank = SPLIT_ORDER.index(first.split) if first.split in SPLIT_ORDER else len(SPLIT_ORDER)
    return (not group.leaks, -group.similarity, -len(group.rows), split_rank, first.row)


def near_duplicates(rows: dict[str, list[Row]], embeddings: dict[str, np.ndarray],
                    threshold: float) -> list[DuplicateGroup]:
    """Groups of near-duplicate texts within and across the splits in `rows` ("train", "val", "test"),
    `embeddings[split]` aligned with `rows[split]` (any scale: they are normalised here).

    Two kinds: texts equal after `normalized_key` (`how="normalized"`, similarity 1.0) and texts whose
    embeddings have cosine similarity >= `threshold` (`how="embedding"`, grouped by leader clustering; see the
    module docstring). A text is in at most one group of each kind; an embedding group that only repeats a
    normalised one is left out. Leaking groups (training and a held-out split) come first, then by
    similarity, highest first."""
    flat, unit = _flatten(rows, embeddings)
    groups = _normalized_groups(flat)
    if len(flat) > 1:
        groups += _embedding_groups(flat, unit, threshold)
    return sorted(groups, key=_sort_key)


def leaks_to_drop(groups: list[DuplicateGroup]) -> list[Row]:
    """The training members of leaking groups, for removing near-duplicates across splits. Never a held-out
    row: choosing test rows to drop by looking at test texts would change the test score by reading the test
    data. Each row once, in the order of `groups`."""
    seen: dict[Row, None] = {}
    for group in groups:
        if group.leaks:
            for row in group.rows:
                if row.split == "train":
                    seen.setdefault(row, None)
    return list(seen)
