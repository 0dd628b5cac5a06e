"""Resampling the training split (DataConfig.balance, augment): undersampling the larger classes, and
adding augmented copies of the texts. Both are seeded and say in the report what they did."""

from __future__ import annotations

import random
from collections import Counter

from tunetext.config import DataConfig
from tunetext.data.splits import Split


def _counts(split: Split, label_names: list[str]) -> str:
    counts = Counter(split.labels)
    return ", ".join(f"{name} {counts.get(i, 0)}" for i, name in enumerate(label_names))


def undersample(split: Split, label_names: list[str], seed: int, report: list[str]) -> Split:
    """Drop examples of the larger classes (seeded) until every class has as many as the smallest; the
    kept examples stay in their original order."""
    rng = random.Random(f"{seed}:undersample")
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(split.labels):
        by_label.setdefault(label, []).append(i)
    size = min(len(idx) for idx in by_label.values())
    keep = sorted(i for label in sorted(by_label) for i in rng.sample(by_label[label], size))
    out = Split([split.texts[i] for i in keep], [split.labels[i] for i in keep])
    report.append(f"balanced train by undersampling to {size} per class: {len(split)} -> {len(out)} "
                  f"examples (was {_counts(split, label_names)})")
    return out


def augment_text(text: str, op: str, prob: float, rng: random.Random) -> str:
    """One augmented version of `text` (EDA, Wei and Zou 2019, without synonyms): `swap` two words,
    `delete` words (each with probability `prob`, at least one word is kept), or `insert` a copy of one
    of the text's words at a random position; `swap` and `insert` act on `prob` of the words, at least
    one."""
    words = text.split()
    n = max(1, round(prob * len(words)))
    if op == "swap":
        for _ in range(n if len(words) > 1 else 0):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif op == "delete":
        kept = [w for w in words if rng.random() >= prob]
        words = kept or [rng.choice(words)]
    elif op == "insert":
        for _ in range(n):
            words.insert(rng.randrange(len(words) + 1), rng.choice(words))
    else:
        raise ValueError(f"unknown augmentation {op!r}; use swap, delete or insert")
    return " ".join(words)


def augment(split: Split, config: DataConfig, seed: int, report: list[str],
            held_out: set[str] | frozenset[str] = frozenset()) -> Split:
    """Append `config.augment` augmented copies of every training text, each made by one operation drawn
    from `config.augment_ops`. A copy equal to a text already in train, or to a validation/test text in
    `held_out` (which would leak it), is skipped and counted."""
    rng = random.Random(f"{seed}:augment")
    seen = set(split.texts)
    texts, labels = list(split.texts), list(split.labels)
    made = Counter[str]()
    duplicate = leaked = 0
    for text, label in zip(split.texts, split.labels, strict=True):
        for _ in range(config.augment):
            op = rng.choice(config.augment_ops)
            new = augment_text(text, op, config.augment_prob, rng)
            if new in held_out:
                leaked += 1
            elif new in seen:
                duplicate += 1
            else:
                seen.add(new)
                texts.append(new)
                labels.append(label)
                made[op] += 1
    ops = ", ".join(f"{op} {made[op]}" for op in config.augment_ops)
    skipped = f"; skipped {duplicate} that repeated a training text" if duplicate else ""
    if leaked:
        skipped += f" and {leaked} equal to a validation/test text"
    report.append(f"augmented train: added {sum(made.values())} copies ({ops}) of {len(split)} texts"
                  f"{skipped}; train now {len(texts)} examples")
    return Split(texts, labels)
