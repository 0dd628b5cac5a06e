"""Outliers: texts far from every class, or that fail a cheap check on the text itself ([docs/audit.md]).

Distance: each class has a centre, the mean of its training texts' unit-length embeddings (a multi-label
text, label "a|b", counts for each of its labels). Classes are not equally tight, so a text's cosine
distance to a centre is measured in that class's own spread: (distance - the class's median training
distance) / 1.4826 x its median absolute deviation, a robust z-score. A text's distance score is its
smallest z over the classes: it is an outlier only when even the class it fits best finds it far.

Text checks, each with its reason in words: empty or nearly empty, mostly not letters (numbers, symbols),
mostly URLs, mostly letters of another script than the training data's. A failed check adds
`TEXT_CHECK_SCORE` to the score, so it outranks a text that is merely somewhat far from the classes.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

import numpy as np

from tunetext.audit.findings import Outlier, Row

MIN_DEVIATIONS = 2.0  # a text is listed for its distance only from this many robust deviations out
TEXT_CHECK_SCORE = 5.0  # what one failed text check adds to the score
# On sms_spam, "Ok" and "U 2." are ordinary messages and spam carries phone numbers ("08714712388 between
# 10am-7pm Cost 10p", 48% letters): the limits flag "k" and "2/2 146tf150p" (25% letters), not those.
MIN_CHARS = 2  # fewer letters or digits than this is "nearly empty"
MIN_LETTER_SHARE = 1 / 3  # below this share of letters among the non-space characters: "mostly not letters"
MIN_CLASS_SIZE = 5  # smaller classes borrow the spread of all training texts
_MAD_TO_SD = 1.4826  # the MAD of a normal distribution times this is its standard deviation
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)


def script_of(char: str) -> str:
    """A letter's script as the first word of its Unicode name: LATIN, CYRILLIC, CJK, ARABIC, ..."""
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "OTHER"


def majority_script(texts: list[str]) -> str | None:
    """The script most letters of `texts` are written in (None when they have no letters)."""
    counts: Counter[str] = Counter(script_of(c) for text in texts for c in text if c.isalpha())
    return counts.most_common(1)[0][0] if counts else None


def text_checks(text: str, script: str | None) -> list[str]:
    """What is wrong with `text` by itself, each in words; [] when nothing is. `script` is the data's
    majority script (`majority_script`)."""
    chars = [c for c in text if not c.isspace()]
    letters = [c for c in chars if c.isalpha()]
    alnum = sum(c.isalnum() for c in chars)
    if alnum == 0:
        return ["empty" if not chars else f"no letters or digits, only {len(chars)} symbols"]
    reasons = []
    if alnum < MIN_CHARS:
        what = "letter or digit" if alnum == 1 else "letters or digits"
        reasons.append(f"nearly empty: only {alnum} {what}")
    url_chars = sum(len(m.group()) for m in _URL.finditer(text))
    if url_chars / len(chars) >= 0.5:
        reasons.append(f"mostly URLs ({url_chars / len(chars):.0%} of the characters)")
    elif len(letters) / len(chars) < MIN_LETTER_SHARE:
        digits = sum(c.isdigit() for c in chars)
        rest = "mostly digits" if digits >= len(chars) - len(letters) - digits else "mostly symbols"
        reasons.append(f"{len(letters) / len(chars):.0%} letters ({rest})")
    if script is not None and len(letters) >= 3:  # "é" alone says little about the script
        scripts = Counter(script_of(c) for c in letters)
        if scripts[script] / len(letters) < 0.5:
            other, n = scripts.most_common(1)[0]
            reasons.append(f"mostly {other.title()} letters ({n / len(letters):.0%}); the training data is "
                           f"mostly {script.title()}")
    return reasons


@dataclass
class _Classes:
    """Each class's centre (unit length) and the spread of its training texts' cosine distances to it."""

    names: list[str]
    centres: np.ndarray  # (K, dim)
    median: np.ndarray  # (K,) median cosine distance of the class's training texts
    scale: np.ndarray  # (K,) robust standard deviation of those distances


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _spread(d: np.ndarray) -> tuple[float, float]:
    med = float(np.median(d))
    return med, _MAD_TO_SD * float(np.median(np.abs(d - med)))


def fit_classes(train_embeddings: np.ndarray, train_labels: list[str]) -> _Classes | None:
    """Class centres and spreads from the training texts; None without any labelled training text."""
    unit = _unit(train_embeddings)
    members: dict[str, list[int]] = {}
    for i, label in enumerate(train_labels):
        for name in str(label).split("|"):
            if name:
                members.setdefault(name, []).append(i)
    if not members or len(unit) == 0:
        return None
    names = sorted(members)
    centres = _unit(np.stack([unit[members[n]].mean(axis=0) for n in names]))
    own = [1.0 - unit[members[n]] @ centres[k] for k, n in enumerate(names)]
    pooled_med, pooled_scale = _spread(np.concatenate(own))
    median, scale = np.empty(len(names)), np.empty(len(names))
    for k, d in enumerate(own):
        med, sc = _spread(d)
        small = len(d) < MIN_CLASS_SIZE or sc < 1e-6
        median[k], scale[k] = (pooled_med, pooled_scale) if small else (med, sc)
    scale = np.maximum(scale, 1e-6)  # all training texts identical: any distance at all is far
    return _Classes(names, centres, median, scale)


def distance_scores(embeddings: np.ndarray, classes: _Classes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each text: its smallest robust z over the classes, the index of that class, and the cosine
    similarity to its centre."""
    cos = _unit(embeddings) @ classes.centres.T  # (n, K)
    z = ((1.0 - cos) - classes.median) / classes.scale
    best = z.argmin(axis=1)
    rows = np.arange(len(z))
    return z[rows, best], best, cos[rows, best]


def outliers(rows: list[Row], embeddings: np.ndarray, train_rows: list[Row], train_embeddings: np.ndarray,
             train_labels: list[str], limit: int) -> list[Outlier]:
    """The `limit` strangest of `rows` (any split; `embeddings` aligned with them), strangest first, each
    with its reason in words. Class centres, their spreads and the majority script come from the training
    texts (`train_rows`, `train_embeddings`, `train_labels`, aligned). A text is listed when it fails a text
    check or its distance score is at least `MIN_DEVIATIONS` (see the module docstring)."""
    if not rows or limit <= 0:
        return []
    if not (len(embeddings) == len(rows) and len(train_embeddings) == len(train_rows) == len(train_labels)):
        raise ValueError(f"outliers: {len(rows)} rows with {len(embeddings)} embeddings, "
                         f"{len(train_rows)} training rows with {len(train_embeddings)} embeddings and "
                         f"{len(train_labels)} labels")
    script = majority_script([r.text for r in train_rows])
    classes = fit_classes(train_embeddings, train_labels) if len(train_rows) else None
    if classes is not None:
        z, best, cos = distance_scores(embeddings, classes)
    found = []
    for i, row in enumerate(rows):
        reasons = text_checks(row.text, script)
        score = TEXT_CHECK_SCORE * len(reasons)
        if classes is not None:
            zi = float(z[i])
            score += max(zi, 0.0)
            if zi >= MIN_DEVIATIONS:
                k = int(best[i])
                reasons.append(f"far from every class: the closest is '{classes.names[k]}' at cosine "
                               f"{cos[i]:.2f}, typical {1.0 - classes.median[k]:.2f} "
                               f"({zi:.1f} deviations out)")
        if reasons:
            found.append(Outlier(row, round(score, 3), "; ".join(reasons)))
    found.sort(key=lambda o: -o.score)  # stable: ties keep the order of `rows`
    return found[:limit]
