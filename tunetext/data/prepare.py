"""From raw splits to clean, de-duplicated, stratified train/val/test splits.

Every step that drops or changes data says so in the report: counts and row numbers. How one text is
cleaned and one label named is `clean`; the split types and stratified drawing are `splits`; the
training-split options (balance, augment) are `resample`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tunetext.config import DataConfig
from tunetext.data.clean import cleaning_steps, label_key, normalize_text, similar_key
from tunetext.data.flagged import apply_marks
from tunetext.data.read import read_source
from tunetext.data.resample import augment, undersample
from tunetext.data.sources import DataError, RawSplit
from tunetext.data.splits import Dataset, Split, binned_split, iterative_split, stratified_split, subsample
from tunetext.data.tasks import infer_task, label_set, target

SHOW_ROWS = 10  # row numbers listed per problem before "and N more"


def _rows(rows: list[int], unit: str, show: int = SHOW_ROWS) -> str:
    shown = ", ".join(str(r) for r in rows[:show])
    more = f" and {len(rows) - show} more" if len(rows) > show else ""
    return f"{unit}s {shown}{more}"


@dataclass
class _Cleaned:
    """One split after `_clean`: kept texts (cleaned, and with only whitespace normalised) and labels, the
    rows where each label name was found (dropped rows included) and how its raw values were written."""

    texts: list[str]
    labels: list[Any]  # a name (single_label), a sorted tuple of names (multi_label), a float (regression)
    plain: list[str]
    label_rows: dict[str, list[int]]
    spellings: dict[str, Counter[str]]


def _label(raw: RawSplit, value: Any, row: int, spellings: dict[str, Counter[str]]) -> str | None:
    """The label name of one raw label; counts the raw spellings of each name in `spellings`."""
    where = f"{raw.origin}, {raw.row_unit} {row}"
    if isinstance(value, list | tuple | dict | set):
        raise DataError(f"{where}: the label is a {type(value).__name__}, {value!r:.60}, not one value; each "
                        "text takes exactly one label, a string or an integer, under data.task=single_label "
                        "(set data.task=multi_label for texts with a set of labels)")
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


def _read_label(raw: RawSplit, value: Any, row: int, task: str, config: DataConfig | None,
                spellings: dict[str, Counter[str]]) -> Any:
    """One raw label as `task` reads it (see `_Cleaned.labels`); None for a missing one."""
    if task == "multi_label":
        assert config is not None
        return label_set(raw, value, row, config)
    if task == "regression":
        return target(raw, value, row)
    return _label(raw, value, row, spellings)


def _names(label: Any, task: str) -> tuple[str, ...]:
    """The label names a read label mentions: its one name, the names of its set, none for a number."""
    if task == "multi_label":
        return tuple(label)
    return () if task == "regression" else (label,)


def _clean(raw: RawSplit, report: list[str], config: DataConfig | None = None,
           task: str = "single_label") -> _Cleaned:
    """Clean texts (`clean_text`) and normalise labels (`label_key`, reporting merged spellings; a set of
    them or a number, as `task` says); drop and report empty texts and missing labels. Also keeps each kept
    text with only its whitespace normalised, to tell cleaning-made duplicates."""
    texts: list[str] = []
    plain: list[str] = []
    labels: list[Any] = []
    label_rows: dict[str, list[int]] = {}
    spellings: dict[str, Counter[str]] = {}  # label name -> repr of each raw value -> rows
    empty: list[int] = []
    emptied: list[int] = []  # non-empty before the optional cleaning, empty after it
    unlabeled: list[int] = []
    steps = cleaning_steps(config)
    changed = Counter[str]()  # texts each step changed
    removed = Counter[str]()  # items (URLs, tags) each step removed
    no_label: list[int] = []  # multi_label rows with an empty label set
    for text, label, row in zip(raw.texts, raw.labels, raw.rows, strict=True):
        key = _read_label(raw, label, row, task, config, spellings)
        if key is not None:
            for name in _names(key, task):
                label_rows.setdefault(name, []).append(row)
            if key == ():
                no_label.append(row)
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
    if no_label:
        report.append(f"{raw.origin}: {len(no_label)} rows have an empty label set (no label applies; kept: "
                      f"{_rows(no_label, raw.row_unit)})")
    for key, forms in spellings.items():
        if len(forms) > 1:
            ways = ", ".join(f"{form} ({n} rows)" for form, n in forms.most_common())
            report.append(f"{raw.origin}: label {key!r} was written {len(forms)} ways, merged into it: "
                          f"{ways}")
    return _Cleaned(texts, labels, plain, label_rows, spellings)


def _dedupe(texts: list[str], labels: list[Any], origin: str, report: list[str],
            plain: list[str] | None = None) -> tuple[list[str], list[Any]]:
    """Keep the first copy of every text. `plain` (the texts before the optional cleaning) tells how many
    duplicates only cleaning made."""
    first: dict[str, tuple[Any, str]] = {}
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


def _clean_all(raw: dict[str, RawSplit], report: list[str], config: DataConfig,
               task: str = "single_label") -> dict[str, tuple[list[str], list[Any]]]:
    cleaned = {}
    parts: dict[str, _Cleaned] = {}
    for name, split in raw.items():
        part = parts[name] = _clean(split, report, config, task)
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


def _encode(texts: list[str], labels: list[Any], label_names: list[str], origin: str,
            split_name: str, task: str = "single_label") -> Split:
    """A cleaned split with its labels as `Split` holds them: indices into `label_names` (single_label),
    sorted tuples of indices (multi_label), or the numbers (regression)."""
    if task == "regression":
        return Split(texts, [float(v) for v in labels])
    index = {name: i for i, name in enumerate(label_names)}
    mentioned = {name for label in labels for name in _names(label, task)}
    unknown = sorted(mentioned - set(index))
    if unknown:
        raise DataError(
            f"{origin}: label(s) {', '.join(map(repr, unknown))} in the {split_name} split are not among "
            f"the known labels {', '.join(map(repr, label_names))}"
            + ("" if split_name == "train" else "; a model cannot learn a label the training data lacks")
            + ("; a label set written as one string is split on data.label_separator: check that it is the "
               "file's" if task == "multi_label" else "")
        )
    if task == "multi_label":
        return Split(texts, [tuple(sorted(index[n] for n in label)) for label in labels])
    return Split(texts, [index[lbl] for lbl in labels])


def _one_label_error(origin: str, label: str, rows: int, config: DataConfig) -> DataError:
    return DataError(
        f"{origin}: the training split has only one label, {label!r} (all {rows} usable rows); a classifier "
        f"needs at least two, and one trained on this data would answer {label!r} for every text. Check that "
        f"the label column is the right one (--label-column, data.label_column: now "
        f"{config.label_column!r}), or add examples of the other classes."
    )


def _report_small_classes(train: Split, val: Split, test: Split, label_names: list[str], rare_min: int,
                          report: list[str]) -> None:
    """Warn about classes with fewer than `rare_min` training examples, and about classes of train that
    validation or test lacks (too few examples to split; see `stratified_split`): their macro scores
    leave those classes out."""
    counts = Counter(train.labels)
    rare = [f"{label_names[i]!r} {counts[i]}" for i in sorted(counts) if counts[i] < rare_min]
    if rare:
        report.append(f"warning: {len(rare)} rare class(es) with fewer than {rare_min} training examples "
                      f"(data.rare_class_min): {', '.join(rare)}; their scores rest on very few examples")
    for name, split in (("validation", val), ("test", test)):
        held = set(split.labels)
        absent = [f"{label_names[i]!r} ({counts[i]} in train)" for i in sorted(counts) if i not in held]
        if absent:
            report.append(f"warning: no {name} example of {len(absent)} class(es): {', '.join(absent)}; "
                          f"{name} macro scores leave them out (splitting puts a class in train, validation "
                          "and test only from 3 examples on)")


def prepare(raw: dict[str, RawSplit], config: DataConfig, seed: int,
            label_names: list[str] | None = None) -> Dataset:
    """Clean, de-duplicate (unless `config.dedupe` is false) and split raw data.

    The task (`data.task`, or inferred: `tunetext.data.tasks.infer_task`) says what a label is. With only
    a training split, a stratified split by `config.val_fraction`/`config.test_fraction` (by class, by
    label set, or by target range); with train and test, validation (`val_fraction` of train) is carved
    from train. `label_names` fixes the label set (as when evaluating a trained run); a label outside it is
    an error.
    """
    report: list[str] = []
    task, why = infer_task(raw["train"], config)
    if task != "single_label" or config.task != "auto":
        report.append(f"task {task} ({why})")
    if task != "single_label" and config.balance != "none":
        raise DataError(f"data.balance={config.balance} balances classes, and task {task} has none; set "
                        "data.balance=none (for multi-label, train.class_weights weights each label's "
                        "positives)")
    cleaned = _clean_all(raw, report, config, task)
    train_texts = set(cleaned["train"][0])
    for name in ("validation", "test"):
        if name in cleaned:
            overlap = sum(t in train_texts for t in cleaned[name][0])
            if overlap:
                report.append(f"warning: {overlap} of {len(cleaned[name][0])} {name} texts also appear in "
                              "train; scores on that split will be optimistic")
    if label_names is None:
        label_names = _label_names(raw, cleaned, config, task)
    encoded = {name: _encode(*cleaned[name], label_names, raw[name].origin, name, task) for name in cleaned}
    whole, test, val = encoded["train"], encoded.get("test"), encoded.get("validation")
    if test is None and val is None:
        val_idx, test_idx, train_idx = split_indices(
            whole.labels, len(label_names), [config.val_fraction, config.test_fraction], seed, task)
    elif val is None:
        val_idx, train_idx = split_indices(whole.labels, len(label_names), [config.val_fraction], seed, task)
        test_idx = []
    elif test is None:
        test_idx, train_idx = split_indices(whole.labels, len(label_names), [config.test_fraction], seed,
                                            task)
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
        report.append(f"training subsampled to {len(train)} of {before} (stratified); validation {len(val)} "
                      f"and test {len(test)} are unchanged")
    if config.balance == "undersample":
        train = undersample(train, label_names, seed, report)
    flagged = None
    if config.drop_flagged is not None:  # after splitting: the test split stays every run's own
        train, val, flagged = apply_marks(config.drop_flagged, train, val, label_names, task, report)
    _check_held_out(train, val, test, label_names, task, config, report)
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
    return Dataset(train, val, test, label_names, report, task, why, flagged)


def split_indices(labels: list[Any], num_labels: int, fractions: list[float], seed: int,
                  task: str) -> list[list[int]]:
    """Row indices in len(fractions)+1 parts, stratified as the task allows: by class (single_label), by
    label set (multi_label, `iterative_split`), by range of the target (regression, `binned_split`)."""
    if task == "multi_label":
        return iterative_split(labels, num_labels, fractions, seed)
    if task == "regression":
        return binned_split(labels, fractions, seed)
    return stratified_split(labels, fractions, seed)


def _label_names(raw: dict[str, RawSplit], cleaned: dict[str, tuple[list[str], list[Any]]],
                 config: DataConfig, task: str) -> list[str]:
    """The label set of freshly prepared data: the training split's classes (single_label; at least two),
    the label columns or every label named in any split (multi_label), the target's column (regression)."""
    if task == "regression":
        targets = cleaned["train"][1]
        if len(set(targets)) < 2:
            raise DataError(f"{raw['train'].origin}: every training target is {targets[0]:g}; a regression "
                            "needs targets that vary (check --label-column)")
        return [config.label_column]
    if task == "multi_label":
        if config.label_columns:
            return list(config.label_columns)
        return label_order({name for _, labels in cleaned.values() for label in labels for name in label})
    present = Counter(cleaned["train"][1])
    declared = raw["train"].label_names  # a dataset's own names (ClassLabel) keep their order
    names = [n for n in declared if n in present] if declared else label_order(set(present))
    if len(names) < 2:
        raise _one_label_error(raw["train"].origin, names[0], present[names[0]], config)
    return names


def _check_held_out(train: Split, val: Split, test: Split, label_names: list[str], task: str,
                    config: DataConfig, report: list[str]) -> None:
    """Warn about rare classes or labels and those validation or test lacks; a class of validation or test
    that train lacks is an error (single_label), a label no training row has is a warning (multi_label)."""
    if task == "regression":
        return
    if task == "multi_label":
        _report_rare_labels(train, val, test, label_names, config.rare_class_min, report)
        return
    _report_small_classes(train, val, test, label_names, config.rare_class_min, report)
    missing = set(label_names) - {label_names[i] for i in train.labels}
    for name, split in (("val", val), ("test", test)):
        absent = sorted({label_names[i] for i in split.labels} & missing)
        if absent:
            raise DataError(f"label(s) {', '.join(map(repr, absent))} occur in {name} but not in train; "
                            "add training examples for them or drop them")


def _report_rare_labels(train: Split, val: Split, test: Split, label_names: list[str], rare_min: int,
                        report: list[str]) -> None:
    """Multi-label: warn about labels no training row has (the model cannot learn them and will hardly
    ever answer them), labels with fewer than `rare_min` training rows, and labels validation lacks (their
    thresholds stay 0.5) or test lacks (left out of test's macro scores)."""
    counts = Counter(i for label in train.labels for i in label)
    never = [label_names[i] for i in range(len(label_names)) if not counts[i]]
    if never:
        report.append(f"warning: {len(never)} label(s) never positive in training: "
                      f"{', '.join(map(repr, never))}; the model cannot learn them and will (almost) never "
                      "answer them")
    rare = [f"{label_names[i]!r} {counts[i]}" for i in range(len(label_names)) if 0 < counts[i] < rare_min]
    if rare:
        report.append(f"warning: {len(rare)} rare label(s) in fewer than {rare_min} training rows "
                      f"(data.rare_class_min): {', '.join(rare)}; their scores rest on very few examples")
    for name, split, effect in (("validation", val, "their thresholds stay at 0.5"),
                                ("test", test, "test macro scores leave them out")):
        held = {i for label in split.labels for i in label}
        absent = [label_names[i] for i in sorted(counts) if i not in held]
        if absent:
            report.append(f"warning: no {name} row has {len(absent)} label(s): "
                          f"{', '.join(map(repr, absent))}; {effect}")


def load_all(config: DataConfig, label_names: list[str]) -> tuple[Split, list[str]]:
    """Every usable row of a source (all its splits together), cleaned and de-duplicated, unsplit."""
    raw = read_source(config.source, config.text_column, config.label_columns or config.label_column,
                      config.validation, config.test)
    task, _ = infer_task(raw["train"], config)
    report: list[str] = []
    texts: list[str] = []
    labels: list[Any] = []
    for name, (t, lbl) in _clean_all(raw, report, config, task).items():
        part = _encode(t, lbl, label_names, raw[name].origin, name, task)
        texts += part.texts
        labels += part.labels
    return Split(texts, labels), report


def load_dataset(config: DataConfig, seed: int | None = None,
                 label_names: list[str] | None = None) -> Dataset:
    """Read `config.source` (and any separate validation/test files) and prepare it, splitting with
    `seed` (default `config.seed`)."""
    raw = read_source(config.source, config.text_column, config.label_columns or config.label_column,
                      config.validation, config.test)
    return prepare(raw, config, config.seed if seed is None else seed, label_names)
