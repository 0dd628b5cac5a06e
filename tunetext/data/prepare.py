"""From raw splits to clean, de-duplicated, stratified train/val/test splits.

Every step that drops or changes data says so in the report: counts and row numbers.
"""

from __future__ import annotations

import hashlib
import html
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunetext.config import DataConfig
from tunetext.data.read import read_source
from tunetext.data.sources import DataError, RawSplit

SHOW_ROWS = 10  # row numbers listed per problem before "and N more"


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


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return " ".join(text.split())


# --- optional cleaning (DataConfig.strip_markup, strip_urls, lowercase) -------------------------------------

_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# A tag starts with a letter (or /letter, !DOCTYPE): "a < b", "x <3 y" and "<= 5" are left alone.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<![A-Za-z][^<>]*>")
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# A URL does not end in the punctuation of the sentence around it ("see www.x.org.").
_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]}]", re.IGNORECASE)


def _strip_markup(text: str) -> tuple[str, int]:
    """Tags, comments and script/style blocks become a space; entities are decoded. Returns the text and
    how many of them were removed or decoded."""
    n = 0
    for pattern in (_BLOCK, _COMMENT, _TAG):
        text, k = pattern.subn(" ", text)
        n += k
    entities = len(_ENTITY.findall(text))
    return (html.unescape(text) if entities else text), n + entities


def _strip_urls(text: str) -> tuple[str, int]:
    return _URL.subn(" ", text)


def _lowercase(text: str) -> tuple[str, int]:
    lower = text.lower()
    return lower, int(lower != text)


# In this order: markup first, so a URL inside a tag's attributes goes with the tag.
_CLEANING: tuple[tuple[str, Callable[[str], tuple[str, int]], str], ...] = (
    ("strip_markup", _strip_markup, "HTML tags/entities"),
    ("strip_urls", _strip_urls, "URLs"),
    ("lowercase", _lowercase, ""),
)


def _cleaning_steps(config: DataConfig | None) -> list[tuple[str, Callable[[str], tuple[str, int]], str]]:
    if config is None:
        return []
    return [step for step in _CLEANING if getattr(config, step[0])]


def clean_text(text: str, config: DataConfig | None = None) -> str:
    """The one definition of how a text is cleaned, for training data and for prediction alike: the
    optional steps `config` turns on (strip markup, strip URLs, lowercase), then whitespace
    normalisation. With no config (or every option off) only whitespace is normalised."""
    for _, step, _ in _cleaning_steps(config):
        text = step(text)[0]
    return normalize_text(text)


# An integral number as written in a text file: "1", "-2", "1.0"; not "01" or "+1", which may be codes.
_INTEGRAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.0+)?")


def label_key(value: Any) -> str | None:
    """A raw label's canonical name, or None for a missing one. Strings are stripped; integral numbers are
    written as integers, whether they came as numbers or as text (1, 1.0, "1", " 1 " and "1.0" are all
    "1"); booleans are "true" and "false", as JSON writes them. Anything else keeps its spelling."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if _INTEGRAL.fullmatch(text):
        return str(int(text.split(".")[0]))
    return text or None


def similar_key(label: str) -> str:
    """What labels that differ only in letter case or spaces have in common."""
    return "".join(label.casefold().split())


def _rows(rows: list[int], unit: str, show: int = SHOW_ROWS) -> str:
    shown = ", ".join(str(r) for r in rows[:show])
    more = f" and {len(rows) - show} more" if len(rows) > show else ""
    return f"{unit}s {shown}{more}"


@dataclass
class _Cleaned:
    """One split after `_clean`: kept texts (cleaned, and with only whitespace normalised) and labels, the
    rows where each label name was found (dropped rows included) and how its raw values were written."""

    texts: list[str]
    labels: list[str]
    plain: list[str]
    label_rows: dict[str, list[int]]
    spellings: dict[str, Counter[str]]


def _label(raw: RawSplit, value: Any, row: int, spellings: dict[str, Counter[str]]) -> str | None:
    """The label name of one raw label; counts the raw spellings of each name in `spellings`."""
    where = f"{raw.origin}, {raw.row_unit} {row}"
    if isinstance(value, list | tuple | dict | set):
        raise DataError(f"{where}: the label is a {type(value).__name__}, {value!r:.60}, not one value; each "
                        "text takes exactly one label, a string or an integer (multi-label data is not "
                        "supported)")
    if raw.label_names is not None and isinstance(value, int) and not isinstance(value, bool):
        if value == -1:
            return None  # Hugging Face's ClassLabel marks unlabelled rows (GLUE test splits) with -1
        if not 0 <= value < len(raw.label_names):
            raise DataError(f"{where}: label index {value} is outside the dataset's "
                            f"{len(raw.label_names)} label names")
        return raw.label_names[value]
    key = label_key(value)
    if key is not None:
        spellings.setdefault(key, Counter())[repr(value)] += 1
    return key


def _clean(raw: RawSplit, report: list[str], config: DataConfig | None = None) -> _Cleaned:
    """Clean texts (`clean_text`) and normalise labels (`label_key`, reporting merged spellings); drop and
    report empty texts and missing labels. Also keeps each kept text with only its whitespace normalised,
    to tell cleaning-made duplicates."""
    texts: list[str] = []
    plain: list[str] = []
    labels: list[str] = []
    label_rows: dict[str, list[int]] = {}
    spellings: dict[str, Counter[str]] = {}  # label name -> repr of each raw value -> rows
    empty: list[int] = []
    emptied: list[int] = []  # non-empty before the optional cleaning, empty after it
    unlabeled: list[int] = []
    steps = _cleaning_steps(config)
    changed = Counter[str]()  # texts each step changed
    removed = Counter[str]()  # items (URLs, tags) each step removed
    for text, label, row in zip(raw.texts, raw.labels, raw.rows, strict=True):
        key = _label(raw, label, row, spellings)
        if key is not None:
            label_rows.setdefault(key, []).append(row)
        original = normalize_text(str(text)) if text is not None else ""
        clean = str(text) if text is not None else ""
        if key is not None and original:
            for name, step, _ in steps:
                clean, n = step(clean)
                changed[name] += n > 0
                removed[name] += n
        clean = normalize_text(clean)  # as clean_text: the optional steps, then whitespace
        if key is None:
            unlabeled.append(row)
        elif not clean:
            (emptied if original else empty).append(row)
        else:
            texts.append(clean)
            plain.append(original)
            labels.append(key)
    total = len(texts) + len(emptied)
    for name, _, what in steps:
        if name == "lowercase":
            report.append(f"{raw.origin}: lowercase changed {changed[name]} of {total} texts")
        else:
            report.append(f"{raw.origin}: {name} removed {removed[name]} {what} from {changed[name]} of "
                          f"{total} texts")
    if emptied:
        report.append(f"{raw.origin}: dropped {len(emptied)} texts left empty by cleaning "
                      f"({_rows(emptied, raw.row_unit)})")
    if empty:
        report.append(f"{raw.origin}: dropped {len(empty)} empty texts ({_rows(empty, raw.row_unit)})")
    if unlabeled:
        report.append(f"{raw.origin}: dropped {len(unlabeled)} rows without a label "
                      f"({_rows(unlabeled, raw.row_unit)})")
    for key, forms in spellings.items():
        if len(forms) > 1:
            ways = ", ".join(f"{form} ({n} rows)" for form, n in forms.most_common())
            report.append(f"{raw.origin}: label {key!r} was written {len(forms)} ways, merged into it: "
                          f"{ways}")
    return _Cleaned(texts, labels, plain, label_rows, spellings)


def _dedupe(texts: list[str], labels: list[str], origin: str, report: list[str],
            plain: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Keep the first copy of every text. `plain` (the texts before the optional cleaning) tells how many
    duplicates only cleaning made."""
    first: dict[str, tuple[str, str]] = {}
    conflicts = made_by_cleaning = 0
    out_t, out_l = [], []
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        before = plain[i] if plain is not None else text
        if text in first:
            conflicts += first[text][0] != label
            made_by_cleaning += first[text][1] != before
            continue
        first[text] = (label, before)
        out_t.append(text)
        out_l.append(label)
    removed = len(texts) - len(out_t)
    if removed:
        msg = f"{origin}: removed {removed} exact duplicate texts, kept {len(out_t)}"
        notes = []
        if made_by_cleaning:
            notes.append(f"{made_by_cleaning} of them differed from the kept copy before cleaning")
        if conflicts:
            notes.append(f"{conflicts} duplicates had a different label than the first copy, which was kept")
        if notes:
            msg += f" ({'; '.join(notes)})"
        report.append(msg)
    return out_t, out_l


def label_order(values: set[str]) -> list[str]:
    """Label names in a stable order: integers numerically (so "2" comes before "10"), others
    alphabetically."""
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return sorted(values, key=int)
    return sorted(values)


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


def _clean_all(raw: dict[str, RawSplit], report: list[str],
               config: DataConfig) -> dict[str, tuple[list[str], list[str]]]:
    cleaned = {}
    parts: dict[str, _Cleaned] = {}
    for name, split in raw.items():
        part = parts[name] = _clean(split, report, config)
        if not part.texts:
            raise DataError(f"{split.origin}: no usable rows (every text was empty or unlabeled)")
        if not config.dedupe:
            copies = len(part.texts) - len(set(part.texts))
            if copies:
                report.append(f"{split.origin}: kept {copies} exact duplicate texts (data.dedupe=false)")
            cleaned[name] = (part.texts, part.labels)
        else:
            cleaned[name] = _dedupe(part.texts, part.labels, split.origin, report, part.plain)
    _check_similar_labels(raw, parts, config, report)
    return cleaned


def _check_similar_labels(raw: dict[str, RawSplit], parts: dict[str, _Cleaned], config: DataConfig,
                          report: list[str]) -> None:
    """Labels that differ only in case or spaces (`Billing`, `billing`, `bill ing`), in any split, are an
    error unless `config.similar_labels` is `keep`; then they are reported."""
    groups: dict[str, set[str]] = {}
    for part in parts.values():
        for label in part.label_rows:
            groups.setdefault(similar_key(label), set()).add(label)
    similar = [sorted(names) for names in groups.values() if len(names) > 1]
    if not similar:
        return

    def where(label: str) -> str:
        found = [(raw[name], part) for name, part in parts.items() if label in part.label_rows]
        total = sum(len(part.label_rows[label]) for _, part in found)
        places = "; ".join(f"{split.origin} {_rows(part.label_rows[label], split.row_unit, show=3)}"
                           for split, part in found)
        forms = sum((part.spellings.get(label, Counter()) for _, part in found), Counter[str]())
        written = (", written " + ", ".join(f"{form} {n}" for form, n in forms.most_common())
                   if len(forms) > 1 else "")
        return f"{label!r} ({total} rows{written}: {places})"

    described = "; ".join(" vs ".join(where(label) for label in names) for names in sorted(similar))
    if config.similar_labels == "keep":
        report.append(f"kept apart labels that differ only in letter case or spaces "
                      f"(data.similar_labels=keep): {described}")
        return
    raise DataError(
        f"labels that differ only in letter case or spaces would become separate classes: {described}. "
        "If each group is one class, spell it one way in the data; if they really are different classes, "
        "set data.similar_labels=keep (in the config file, or as a KEY=VALUE argument of tunetext train or "
        "tunetext data show)."
    )


# --- training-split options (DataConfig.balance, augment) ------------------------------------------------


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


def _encode(texts: list[str], labels: list[str], label_names: list[str], origin: str,
            split_name: str) -> Split:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(
            f"{origin}: label(s) {', '.join(map(repr, unknown))} in the {split_name} split are not among "
            f"the known labels {', '.join(map(repr, label_names))}"
            + ("" if split_name == "train" else "; a model cannot learn a label the training data lacks")
        )
    return Split(texts, [index[lbl] for lbl in labels])


def _one_label_error(origin: str, label: str, rows: int, config: DataConfig) -> DataError:
    return DataError(
        f"{origin}: the training split has only one label, {label!r} (all {rows} usable rows); a classifier "
        f"needs at least two, and one trained on this data would answer {label!r} for every text. Check that "
        f"the label column is the right one (--label-column, data.label_column: now "
        f"{config.label_column!r}), or add examples of the other classes."
    )


def prepare(raw: dict[str, RawSplit], config: DataConfig, seed: int,
            label_names: list[str] | None = None) -> Dataset:
    """Clean, de-duplicate (unless `config.dedupe` is false) and split raw data.

    With only a training split, a stratified split by `config.val_fraction`/`config.test_fraction`;
    with train and test, validation (`val_fraction` of train) is carved from train. `label_names` fixes
    the label set (as when evaluating a trained run); a label outside it is an error.
    """
    report: list[str] = []
    cleaned = _clean_all(raw, report, config)
    train_texts = set(cleaned["train"][0])
    for name in ("validation", "test"):
        if name in cleaned:
            overlap = sum(t in train_texts for t in cleaned[name][0])
            if overlap:
                report.append(f"warning: {overlap} of {len(cleaned[name][0])} {name} texts also appear in "
                              "train; scores on that split will be optimistic")
    if label_names is None:
        present = Counter(cleaned["train"][1])
        declared = raw["train"].label_names  # a dataset's own names (ClassLabel) keep their order
        label_names = [n for n in declared if n in present] if declared else label_order(set(present))
        if len(label_names) < 2:
            raise _one_label_error(raw["train"].origin, label_names[0], present[label_names[0]], config)
    whole = _encode(*cleaned["train"], label_names, raw["train"].origin, "train")
    test = _encode(*cleaned["test"], label_names, raw["test"].origin, "test") if "test" in cleaned else None
    val = (_encode(*cleaned["validation"], label_names, raw["validation"].origin, "validation")
           if "validation" in cleaned else None)
    if test is None and val is None:
        val_idx, test_idx, train_idx = stratified_split(
            whole.labels, [config.val_fraction, config.test_fraction], seed)
    elif val is None:
        val_idx, train_idx = stratified_split(whole.labels, [config.val_fraction], seed)
        test_idx = []
    elif test is None:
        test_idx, train_idx = stratified_split(whole.labels, [config.test_fraction], seed)
        val_idx = []
    else:
        train_idx, val_idx, test_idx = list(range(len(whole))), [], []

    def take(idx: list[int]) -> Split:
        return Split([whole.texts[i] for i in idx], [whole.labels[i] for i in idx])

    train = take(train_idx)
    val = val if val is not None else take(val_idx)
    test = test if test is not None else take(test_idx)
    if config.max_train_samples is not None and config.max_train_samples < len(train):
        before = len(train)
        train = subsample(train, config.max_train_samples, seed)
        report.append(f"subsampled train from {before} to {len(train)} examples (stratified)")
    if config.balance == "undersample":
        train = undersample(train, label_names, seed, report)
    missing = set(label_names) - {label_names[i] for i in train.labels}
    for name, split in (("val", val), ("test", test)):
        absent = sorted({label_names[i] for i in split.labels} & missing)
        if absent:
            raise DataError(f"label(s) {', '.join(map(repr, absent))} occur in {name} but not in train; "
                            "add training examples for them or drop them")
    if not len(val) or not len(test):
        raise DataError(f"too little data: {len(train)} train, {len(val)} val, {len(test)} test examples")
    if not config.dedupe:
        in_train = set(train.texts)
        held = {"val": val, "test": test}
        copied = {name: sum(t in in_train for t in split.texts) for name, split in held.items()}
        if any(copied.values()):
            counts = ", ".join(f"{copied[name]} of {len(split)} {name} texts" for name, split in held.items())
            report.append(f"warning: data.dedupe=false: {counts} also appear in train; scores on those "
                          "splits will be optimistic")
    if config.augment:
        train = augment(train, config, seed, report, held_out=set(val.texts) | set(test.texts))
    return Dataset(train, val, test, label_names, report)


def load_all(config: DataConfig, label_names: list[str]) -> tuple[Split, list[str]]:
    """Every usable row of a source (all its splits together), cleaned and de-duplicated, unsplit."""
    raw = read_source(config.source, config.text_column, config.label_column,
                      config.validation, config.test)
    report: list[str] = []
    texts: list[str] = []
    labels: list[int] = []
    for name, (t, lbl) in _clean_all(raw, report, config).items():
        part = _encode(t, lbl, label_names, raw[name].origin, name)
        texts += part.texts
        labels += part.labels
    return Split(texts, labels), report


def load_dataset(config: DataConfig, seed: int | None = None,
                 label_names: list[str] | None = None) -> Dataset:
    """Read `config.source` (and any separate validation/test files) and prepare it, splitting with
    `seed` (default `config.seed`)."""
    raw = read_source(config.source, config.text_column, config.label_column,
                      config.validation, config.test)
    return prepare(raw, config, config.seed if seed is None else seed, label_names)
