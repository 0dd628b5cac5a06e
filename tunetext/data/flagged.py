"""`data.drop_flagged`: the rows a person marked in an audit's findings file, dropped or relabelled.

`tunetext data audit` writes findings.csv (and findings.jsonl, the same rows); a person fills its `action`
column with `drop`, `relabel` (and a `new_label`) or `keep`. Preparation then reads the file back
(`read_marks`) and applies it to the prepared training and validation splits (`apply_marks`), matching
each marked row by its split and its text, the prepared text the file shows. Positions are not used:
they move when the data or the seed change, a text does not.

The test split is never changed: choosing which test rows to drop or relabel after looking at them is
choosing the test score. A marked test row is an error, as is a marked row that matches nothing, an
unknown action, or a new label the data does not have; all of them are reported together, by file line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunetext.data.sources import DataError
from tunetext.data.splits import Split

ACTIONS = ("drop", "relabel", "keep")
LABEL_SEPARATOR = "|"  # the labels of a multi-label row in one cell, as the findings file writes them
SPLITS = ("train", "val", "test")
COLUMNS = ("split", "text", "action", "new_label")  # what preparation reads; the file has more


@dataclass(frozen=True)
class Mark:
    """One row of a findings file that has an action: where it is in the file, and what it asks."""

    line: int
    split: str
    text: str
    action: str
    new_label: str


def read_marks(path: str | Path) -> list[Mark]:
    """The rows of a findings file (CSV or JSONL) whose `action` is filled in; a row with an empty action
    changes nothing and is skipped. A missing file or column is a `DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data.drop_flagged={path}: no such file; give the findings.csv (or findings.jsonl) "
                        "that tunetext data audit wrote, with its action column filled in")
    rows = _read_jsonl(path) if path.suffix.lower() in (".jsonl", ".json") else _read_csv(path)
    return [Mark(line, _cell(row, "split"), _cell(row, "text"), _cell(row, "action").lower(),
                 _cell(row, "new_label")) for line, row in rows if _cell(row, "action")]


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip() if column != "text" else str(value)


def _read_csv(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        # utf-8-sig: a spreadsheet saving UTF-8 CSV puts a byte-order mark first
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            _check_columns(path, list(reader.fieldnames or []))
            rows, line = [], 2  # line 1 is the header; a text with newlines spans several lines
            for row in reader:
                rows.append((line, row))
                line = reader.line_num + 1
            return rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"data.drop_flagged={path}: not a readable UTF-8 CSV file ({exc}); save it as CSV "
                        "UTF-8 from the spreadsheet") from exc


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"data.drop_flagged={path}, line {number}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DataError(f"data.drop_flagged={path}, line {number}: a JSON object was expected")
        _check_columns(path, list(row))
        rows.append((number, row))
    return rows


def _check_columns(path: Path, found: list[str]) -> None:
    missing = [c for c in COLUMNS if c not in found]
    if missing:
        raise DataError(f"data.drop_flagged={path}: no column(s) {', '.join(missing)}; a findings file of "
                        f"tunetext data audit has {', '.join(COLUMNS)} among its columns (found "
                        f"{', '.join(found) or 'none'})")


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def apply_marks(path: str | Path, train: Split, val: Split, label_names: list[str], task: str,
                report: list[str]) -> tuple[Split, Split, dict[str, Any]]:
    """`train` and `val` with the rows marked `drop` in the findings file at `path` left out and those
    marked `relabel` given their `new_label`; a line for `report`, and the record kept with the run's
    data summary (file, sha256, counts). Every problem of the file is one `DataError`, by line."""
    marks = read_marks(path)
    splits = {"train": train, "val": val}
    texts = {name: set(split.texts) for name, split in splits.items()}
    problems: list[str] = []
    wanted: dict[tuple[str, str], tuple[Mark, Any]] = {}  # (split, text) -> the mark and its new label
    for mark in marks:
        problem = _problem(mark, texts, label_names, task)
        if problem is not None:
            problems.append(f"line {mark.line}: {problem}")
            continue
        new = _new_label(mark, label_names, task) if mark.action == "relabel" else None
        key = (mark.split, mark.text)
        if key in wanted and (wanted[key][0].action, wanted[key][1]) != (mark.action, new):
            problems.append(f"line {mark.line}: the {mark.split} text {_short(mark.text)} is marked "
                            f"{mark.action} here but {wanted[key][0].action} on line {wanted[key][0].line}; "
                            "mark it one way")
            continue
        wanted[key] = (mark, new)
    if problems:
        raise DataError(f"data.drop_flagged={path}: {len(problems)} problem(s) with the marked rows:\n"
                        + "\n".join(f"  {p}" for p in problems))
    record: dict[str, Any] = {"file": str(path), "sha256": sha256(path), "dropped": {}, "relabelled": {}}
    out = {}
    for name, split in splits.items():
        kept_texts: list[str] = []
        kept_labels: list[Any] = []
        dropped = relabelled = 0
        for text, label in zip(split.texts, split.labels, strict=True):
            found = wanted.get((name, text))
            if found is not None and found[0].action == "drop":
                dropped += 1
                continue
            if found is not None and found[0].action == "relabel":
                relabelled += found[1] != label
                label = found[1]
            kept_texts.append(text)
            kept_labels.append(label)
        out[name] = Split(kept_texts, kept_labels)
        record["dropped"][name], record["relabelled"][name] = dropped, relabelled
    report.append(f"data.drop_flagged {path}: dropped {record['dropped']['train']} train and "
                  f"{record['dropped']['val']} val rows, relabelled {record['relabelled']['train']} train "
                  f"and {record['relabelled']['val']} val rows (test unchanged)")
    return out["train"], out["val"], record


def _problem(mark: Mark, texts: dict[str, set[str]], label_names: list[str], task: str) -> str | None:
    """What is wrong with one marked row (`texts`: each split's texts), or None."""
    if mark.action not in ACTIONS:
        return f"unknown action {mark.action!r}; write one of {', '.join(ACTIONS)} (or leave it empty)"
    if mark.split == "test":
        return (f"a test row is marked {mark.action} ({_short(mark.text)}); the test split is never "
                "changed here, since choosing test rows after looking at them chooses the test score. Fix "
                "the source file instead (and re-split), or clear the action")
    if mark.split not in texts:
        return f"unknown split {mark.split!r}; findings name train, val or test"
    if mark.text not in texts[mark.split]:
        return (f"no {mark.split} text is {_short(mark.text)}; the file must come from an audit of this "
                "data with the same data settings (the text as the audit printed it)")
    if mark.action == "relabel":
        try:
            _new_label(mark, label_names, task)
        except ValueError as exc:
            return str(exc)
    return None


def _new_label(mark: Mark, label_names: list[str], task: str) -> Any:
    """A relabelled row's new label as the split holds labels (an index, a tuple of them, a number); a
    ValueError saying what is wrong with it."""
    value = mark.new_label
    if task == "regression":
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"relabel needs a number in new_label for this regression data, got "
                             f"{value!r}") from None
    if task == "multi_label":
        names = [n.strip() for n in value.split(LABEL_SEPARATOR) if n.strip()]
    elif not value:
        raise ValueError("relabel needs the new label in new_label")
    else:
        names = [value]
    unknown = [n for n in names if n not in label_names]
    if unknown:
        raise ValueError(f"new_label {', '.join(map(repr, unknown))} is not a label of this data (labels: "
                         f"{', '.join(label_names)})")
    index = {n: i for i, n in enumerate(label_names)}
    return tuple(sorted({index[n] for n in names})) if task == "multi_label" else index[names[0]]


def _short(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[:width - 3] + "...")
