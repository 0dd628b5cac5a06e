"""Reading labelled text as it comes: the user's files and Hugging Face datasets.

The bottom of `tunetext.data`: the built-in datasets (`builtin`) parse into the same raw splits, and
`read.read_source` picks the reader for a source name. Readers return raw splits: texts and labels
exactly as found, with the row number each came from, so preparation can report precisely what it
dropped. Nothing is cleaned here; what cannot be read as text (a file that is not UTF-8, a JSONL text
that is a list or a number, a directory) is an error naming the file and, where there is one, the line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunetext.errors import TunetextError

SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
                 "dev": "validation", "test": "test"}
FILE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".json": "jsonl",
                 ".parquet": "parquet", ".pq": "parquet"}


# One label column, or several 0/1 columns of a multi-label set (data.label_columns): a row's label is then
# a dict of each column's value, which preparation turns into the set of labels whose column is 1.
LabelColumn = str | list[str]


def _columns(label_column: LabelColumn) -> list[str]:
    return [label_column] if isinstance(label_column, str) else list(label_column)


def _label_of(get: Any, label_column: LabelColumn) -> Any:
    """A row's raw label: `get(column)` of the label column, or a dict over several label columns."""
    if isinstance(label_column, str):
        return get(label_column)
    return {column: get(column) for column in label_column}


class DataError(TunetextError, ValueError):
    """Input data that cannot be used as given; the message says where and what to do."""


@dataclass
class RawSplit:
    """One split as read: raw texts and labels, and where each row came from."""

    origin: str
    texts: list[Any] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)  # 1-based line (text files) or row (tables) numbers
    row_unit: str = "row"
    label_names: list[str] | None = None  # when labels are indices into these names

    def __len__(self) -> int:
        return len(self.texts)


# --- the user's files ---------------------------------------------------------------------------------


def read_file(path: Path, text_column: str, label_column: LabelColumn) -> RawSplit:
    """Read a CSV, TSV, JSONL or Parquet file into a raw split."""
    if path.is_dir():
        raise _directory_error(path)
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of "
                        f"{', '.join(sorted(set(FILE_SUFFIXES)))}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if kind == "parquet":
        return _read_parquet(path, text_column, label_column)
    try:
        if kind == "jsonl":
            return _read_jsonl(path, text_column, label_column)
        return _read_delimited(path, "\t" if kind == "tsv" else ",", text_column, label_column)
    except UnicodeDecodeError as exc:
        # Text files are decoded a block at a time, so the exception's offset is within a block, not
        # the file: find the first bad byte in the file itself.
        raise _not_utf8(path, exc) from exc


def is_saved_hf_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `datasets`' `save_to_disk` (a DatasetDict or a Dataset)."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _directory_error(path: Path) -> DataError:
    if is_saved_hf_dataset(path):
        return DataError(f"{path}: is a dataset written by datasets' save_to_disk, not a data file; give it "
                         "as the data source (data.source), whose validation and test splits are used")
    inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES and p.is_file())
    if inside:
        hint = (f"it holds {', '.join(inside[:5])}{' ...' if len(inside) > 5 else ''}: give one of those "
                f"files instead, e.g. {path / inside[0]} (and any test file as data.test)")
    else:
        hint = "it holds no CSV, TSV, JSONL or Parquet file"
    return DataError(f"{path}: is a directory, not a data file, nor a dataset written by datasets' "
                     f"save_to_disk (it has no dataset_dict.json or state.json); {hint}")


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> DataError:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as found:
        offset = found.start
    else:  # cannot happen for a file that failed to decode, but the message must not depend on it
        return DataError(f"{path}: not UTF-8 text ({exc}); re-encode the file as UTF-8")
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    end = data.find(b"\n", offset)
    context = data[max(start, offset - 30):min(end if end >= 0 else len(data), offset + 30)]
    return DataError(
        f"{path}, line {line} (byte {offset}): not UTF-8 text: byte 0x{data[offset]:02x} in {context!r}. "
        "Re-encode the file as UTF-8, e.g. `iconv -f windows-1252 -t utf-8 FILE > NEW_FILE` for a file "
        "saved by Excel on Windows (or the encoding it was written in), and use the new file."
    )


def _read_parquet(path: Path, text_column: str, label_column: LabelColumn) -> RawSplit:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except pa.ArrowInvalid as exc:  # a ValueError from pyarrow: say which file, and what to do
        raise DataError(f"{path}: not a readable Parquet file ({exc}); write it again, or give a CSV, TSV or "
                        "JSONL file") from exc
    _check_columns(path, table.column_names, text_column, label_column)
    kind = table.schema.field(text_column).type
    value_kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    if not (pa.types.is_string(value_kind) or pa.types.is_large_string(value_kind)
            or pa.types.is_null(value_kind)):
        raise DataError(f"{path}: column {text_column!r} holds {kind} values, not text (strings). Choose "
                        "the text column with --text-column (data.text_column), or store the texts as "
                        "strings.")
    texts = table.column(text_column).to_pylist()
    if isinstance(label_column, str):
        labels = table.column(label_column).to_pylist()
    else:
        values = {column: table.column(column).to_pylist() for column in label_column}
        labels = [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]
    return RawSplit(str(path), texts, labels, list(range(1, len(texts) + 1)), "row")


def _check_columns(path: Path | str, columns: list[str], text_column: str, label_column: LabelColumn) -> None:
    missing = [c for c in (text_column, *_columns(label_column)) if c not in columns]
    if missing:
        raise DataError(
            f"{path}: no column {' or '.join(repr(m) for m in missing)}; the columns are "
            f"{', '.join(repr(c) for c in columns)}. Choose them with --text-column/--label-column "
            "(data.text_column / data.label_column)."
        )


def _read_delimited(path: Path, delimiter: str, text_column: str, label_column: LabelColumn) -> RawSplit:
    split = RawSplit(str(path), row_unit="line")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{path}: the file is empty") from None
        _check_columns(path, header, text_column, label_column)
        ti = header.index(text_column)
        where = {column: header.index(column) for column in _columns(label_column)}
        line = reader.line_num + 1
        try:
            for record in reader:
                if not record:  # a blank line
                    line = reader.line_num + 1
                    continue
                if len(record) > len(header):
                    raise DataError(
                        f"{path}, line {line}: {len(record)} fields but the header has {len(header)}; "
                        f"is a text containing {delimiter!r} missing its quotes?"
                    )
                split.texts.append(record[ti] if ti < len(record) else None)
                split.labels.append(_label_of(
                    lambda column, r=record: r[where[column]] if where[column] < len(r) else None,
                    label_column))
                split.rows.append(line)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise DataError(f"{path}, line {line}: unreadable row ({exc})") from exc
    return split


def _read_jsonl(path: Path, text_column: str, label_column: LabelColumn) -> RawSplit:
    split = RawSplit(str(path), row_unit="line")
    seen_columns: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object, "
                                f"got {type(record).__name__}")
            seen_columns.update(record)
            text = record.get(text_column)
            if text is not None and not isinstance(text, str):
                raise _json_text_error(path, line_no, text_column, text)
            split.texts.append(text)
            split.labels.append(_label_of(record.get, label_column))
            split.rows.append(line_no)
    if not split.texts:
        raise DataError(f"{path}: the file holds no records")
    if not {text_column, *_columns(label_column)} <= seen_columns:
        _check_columns(path, sorted(seen_columns), text_column, label_column)
    return split


_JSON_KINDS = {list: "a JSON array", dict: "a JSON object", bool: "a JSON boolean", int: "a JSON number",
               float: "a JSON number"}


def _json_text_error(path: Path, line_no: int, text_column: str, value: Any) -> DataError:
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    kind = _JSON_KINDS.get(type(value), type(value).__name__)
    if isinstance(value, list | dict):
        fix = ("join its parts into one string if they are one text, or choose another field with "
               "--text-column (data.text_column)")
    else:
        fix = (f'write it as a JSON string ("{shown}") if it really is the text, or choose the text field '
               "with --text-column (data.text_column)")
    return DataError(f"{path}, line {line_no}: {text_column!r} is {kind}, {shown}, not a string; {fix}")


# --- Hugging Face datasets ----------------------------------------------------------------------------


def read_hf_dataset(name_or_path: str, text_column: str, label_column: LabelColumn) -> dict[str, RawSplit]:
    """Read a hub dataset name (needs internet) or a folder written by `datasets.save_to_disk`.

    A name found nowhere raises `FileNotFoundError`, for the caller to say what else it could have been.
    """
    import datasets

    folder = Path(name_or_path)
    if folder.is_dir() and not is_saved_hf_dataset(folder):
        raise _directory_error(folder)
    try:
        if folder.is_dir():
            loaded = datasets.load_from_disk(name_or_path)
        else:
            loaded = datasets.load_dataset(name_or_path)
    except FileNotFoundError:
        raise  # found nowhere: `read_source` knows what else the name could have been, and says so
    except Exception as exc:  # datasets raises many types for an unreachable hub or bad name
        raise DataError(f"{name_or_path}: could not load it as a Hugging Face dataset: {exc}") from exc
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    splits: dict[str, RawSplit] = {}
    for split_name, ds in loaded.items():
        canonical = SPLIT_ALIASES.get(split_name)
        if canonical is None or canonical in splits:
            continue
        _check_columns(f"{name_or_path} [{split_name}]", ds.column_names, text_column, label_column)
        text = ds.features[text_column]
        if not (isinstance(text, datasets.Value) and text.dtype in ("string", "large_string")):
            raise DataError(f"{name_or_path} [{split_name}]: column {text_column!r} holds {text}, not text "
                            "(strings); choose the text column with --text-column (data.text_column)")
        splits[canonical] = _hf_split(f"{name_or_path} [{split_name}]", ds, text_column, label_column)
    if "train" not in splits:
        raise DataError(f"{name_or_path}: no 'train' split; found {', '.join(loaded)}")
    return splits


def _hf_split(origin: str, ds: Any, text_column: str, label_column: LabelColumn) -> RawSplit:
    """One split of a Hugging Face dataset. A ClassLabel column's indices keep their names; so do those of a
    list of ClassLabel (a multi-label column, as in go_emotions), mapped to the names here."""
    import datasets

    rows = list(range(1, len(ds) + 1))
    if not isinstance(label_column, str):
        columns = {column: list(ds[column]) for column in label_column}
        labels = [{column: values[i] for column, values in columns.items()} for i in range(len(ds))]
        return RawSplit(origin, list(ds[text_column]), labels, rows, "row")
    feature = ds.features[label_column]
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) or [ClassLabel]
    if isinstance(feature, list) and feature:
        inner = feature[0]
    if isinstance(inner, datasets.ClassLabel):
        names = list(inner.names)
        sets: list[Any] = [None if value is None else [names[v] for v in value] for value in ds[label_column]]
        return RawSplit(origin, list(ds[text_column]), sets, rows, "row")
    declared = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    return RawSplit(origin, list(ds[text_column]), list(ds[label_column]), rows, "row", declared)

