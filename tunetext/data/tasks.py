"""What a label is: the task (`single_label`, `multi_label`, `regression`), inferred from the raw labels
when `data.task` is `auto`, and one raw label read as that task wants it.

Inference only decides what is unambiguous (lists are label sets; numbers with a fraction part and many
distinct values are targets). Labels that merely look like sets (`"billing,shipping"`) or numbers (many
distinct integers) stop with an error that says what was seen and which setting decides: guessing wrong
would silently train a different model (sets as single classes, or ratings as 99 unordered classes).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from tunetext.config import DataConfig
from tunetext.data.clean import label_key
from tunetext.data.sources import DataError, RawSplit

TASKS = ("single_label", "multi_label", "regression")
# Numbers with a fraction part are regression targets once they take this many distinct values; fewer, or
# this many integers, could be classes as well, and `auto` asks.
REGRESSION_MIN_DISTINCT = 20
# Separators tried on string labels that may be label sets written in one cell.
SEPARATORS = (",", "|", ";")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_TRUE, _FALSE = {"1", "true", "yes"}, {"0", "false", "no"}
# Numbers with a few stray words among them (`n/a`, `unknown`) are still a numeric column: at least this
# share of the labels being numbers.
NUMERIC_SHARE = 0.9


def infer_task(raw: RawSplit, config: DataConfig) -> tuple[str, str]:
    """The task for `raw` (the training split) and why: `config.task` when set, else inferred from its
    labels. Raises a DataError when the labels look multi-label or numeric but are not unambiguously so."""
    if config.task != "auto":
        return config.task, "set in data.task"
    if config.label_columns:
        return "multi_label", f"labels come from {len(config.label_columns)} 0/1 columns (data.label_columns)"
    values = [v for v in raw.labels if label_key(v) is not None or isinstance(v, list | tuple | set)]
    lists = [isinstance(v, list | tuple | set) for v in values]
    if all(lists) and values:
        return "multi_label", "the labels are lists"
    if any(lists):
        _refuse_mixed(raw)
    if raw.label_names is not None:  # a dataset's own class names (ClassLabel): classes, whatever they say
        return "single_label", "the dataset names its classes"
    numbers = [n for n in (_number(v) for v in values) if n is not None]
    if values and len(numbers) == len(values):
        return _numeric_task(numbers, raw.origin)
    if values and len(numbers) >= NUMERIC_SHARE * len(values):
        _refuse_stray_words(raw, numbers)
    _refuse_delimited(values, raw.origin)
    return "single_label", "one label per text"


def _refuse_stray_words(raw: RawSplit, numbers: list[float]) -> None:
    """Mostly numbers, a few words: when the numbers alone would be targets (or ambiguous), the words are
    likely stray cells (`n/a`), and reading the column as classes would make every value a class. A few
    distinct integers with a word or two (`1`, `2`, `3`, `other`) are classes, and pass."""
    try:
        task, _ = _numeric_task(numbers, raw.origin)
    except DataError:
        task = "ambiguous"
    if task == "single_label":
        return
    words = [(row, v) for v, row in zip(raw.labels, raw.rows, strict=True)
             if label_key(v) is not None and _number(v) is None]
    shown = ", ".join(f"{raw.row_unit} {row} ({value!r:.30})" for row, value in words[:5])
    raise DataError(
        f"{raw.origin}: {len(numbers)} labels are numbers and {len(words)} are not: {shown}"
        f"{' ...' if len(words) > 5 else ''}. If the numbers are targets, set data.task=regression and fix "
        "those rows or leave their label empty (rows without a label are dropped); if every value is a "
        "class, set data.task=single_label")


def _refuse_mixed(raw: RawSplit) -> None:
    """Some labels are lists and others single values: a set of labels per text, or a stray list?"""
    kinds = [(row, isinstance(v, list | tuple | set)) for v, row in zip(raw.labels, raw.rows, strict=True)
             if label_key(v) is not None or isinstance(v, list | tuple | set)]
    lists = [row for row, is_list in kinds if is_list]
    single = [row for row, is_list in kinds if not is_list]
    raise DataError(
        f"{raw.origin}: {len(lists)} labels are lists (first at {raw.row_unit} {lists[0]}) and {len(single)} "
        f"are single values (first at {raw.row_unit} {single[0]}). Set data.task=multi_label if each text "
        "has a set of labels (a single value is then a set of one), or data.task=single_label if each "
        "has one label (then the lists are errors to fix)")


def _number(value: Any) -> float | None:
    """A label's value as a number, or None when it is not one (booleans and text are not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value)
    return None


def _numeric_task(numbers: list[float], origin: str) -> tuple[str, str]:
    distinct = set(numbers)
    fractional = any(not n.is_integer() for n in distinct if math.isfinite(n))
    if fractional and len(distinct) >= REGRESSION_MIN_DISTINCT:
        return "regression", (f"the labels are numbers with {len(distinct)} distinct values from "
                              f"{min(distinct):g} to {max(distinct):g}")
    if not fractional and len(distinct) < REGRESSION_MIN_DISTINCT:
        return "single_label", f"the labels are {len(distinct)} distinct integers, read as classes"
    raise DataError(
        f"{origin}: the labels are numbers ({len(distinct)} distinct values from {min(distinct):g} to "
        f"{max(distinct):g}): set data.task=regression to predict the number, or data.task=single_label to "
        "make each distinct value a class (in the config file, or as a KEY=VALUE argument)")


def _refuse_delimited(values: list[Any], origin: str) -> None:
    """Stop when string labels look like label sets written in one cell: some hold a separator, and their
    pieces recur (in other combinations, or as labels of their own)."""
    names = {str(v).strip() for v in values}
    for sep in SEPARATORS:
        joined = [n for n in names if sep in n]
        if not joined:
            continue
        pieces = Counter(p.strip() for n in joined for p in n.split(sep) if p.strip())
        recurring = [p for p, count in pieces.items() if count > 1 or p in names]
        if recurring:
            rows = sum(1 for v in values if sep in str(v))
            example = sorted(joined)[0]
            raise DataError(
                f"{origin}: the labels look like label sets: {rows} rows have labels joined by {sep!r} (such "
                f"as {example!r}) whose parts also occur on their own or in other combinations. Set "
                f"data.task=multi_label (and data.label_separator={sep!r}) to train on the sets, or "
                "data.task=single_label to make each written combination a class of its own")


def label_set(raw: RawSplit, value: Any, row: int, config: DataConfig) -> tuple[str, ...] | None:
    """A multi-label row's labels as sorted names; () for a row with none, None for a missing label (the
    row is dropped). A list (JSONL, Parquet, Hugging Face), a string joined by `data.label_separator`
    (CSV), or a dict of 0/1 columns (`data.label_columns`)."""
    where = f"{raw.origin}, {raw.row_unit} {row}"
    if value is None:
        return None
    if isinstance(value, dict):
        names = [column for column, flag in value.items() if _flag(flag, where, column)]
    elif isinstance(value, list | tuple | set):
        names = []
        for item in value:
            if isinstance(item, list | tuple | dict | set):
                raise DataError(f"{where}: a label in the list is a {type(item).__name__}, {item!r:.60}; "
                                "each label of a multi-label row must be a string or an integer")
            key = label_key(item)
            if key is not None:
                names.append(key)
    else:
        names = [p for p in (label_key(part) for part in str(value).split(config.label_separator)) if p]
    return tuple(sorted(set(names)))


def _flag(value: Any, where: str, column: str) -> bool:
    """A 0/1 label column's value as a bool; anything else is an error naming the row and column."""
    key = label_key(value)
    if key is not None and key.lower() in _TRUE | _FALSE:
        return key.lower() in _TRUE
    held = "no value" if key is None else repr(value)
    raise DataError(f"{where}: column {column!r} holds {held}; each label column (data.label_columns) "
                    "must hold 1 (the text has the label) or 0 (it does not)")


def target(raw: RawSplit, value: Any, row: int) -> float | None:
    """A regression row's target as a float; None for a missing one (the row is dropped). Text that is not
    a number, and infinities or NaN written out, are errors naming the row."""
    if not isinstance(value, str) and label_key(value) is None:  # None, or NaN (a missing cell in pandas)
        return None
    if isinstance(value, str) and not value.strip():
        return None
    number = _number(value)
    if number is None or not math.isfinite(number):
        raise DataError(f"{raw.origin}, {raw.row_unit} {row}: the label {value!r:.60} is not a finite "
                        "number; a regression target must be a number (fix or remove the row, or check "
                        "--label-column)")
    return number
