"""Streaming batch prediction: a file of texts in, a file of predictions out, in chunks.

`predict_file(run_dir, "in.csv", "out.parquet")` reads CSV, TSV, JSONL, Parquet or text lines (`-`: stdin)
a chunk of rows at a time, predicts each chunk with `Classifier`, and writes the rows, the input's own
columns beside the predictions, into a temporary file next to the output that is renamed into place when
all is done. Memory holds one chunk, whatever the file's size. A row that cannot be classified (a blank
line, a missing or non-string text) is named by its line (row, for Parquet) and fails the run or is skipped,
as `on_bad_row` says.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from tqdm.auto import tqdm

from tunetext.data.sources import DataError
from tunetext.errors import UsageError
from tunetext.predict import BATCH_SIZE, Classifier, Prediction, has_content

# What a file name's suffix means, for input and for output (.json is JSON lines, as for training data).
INPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet",
                 ".txt": "txt"}
OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
STDIO = "-"
# How many bad rows' line numbers the summary lists (the count covers them all; memory stays bounded).
LISTED_BAD_ROWS = 100
# The columns predictions add (besides p_<label>); an input column of one of these names is kept as
# input_<name>, so neither hides the other.
PREDICTION_COLUMNS = ("label", "score", "labels", "value", "probabilities", "truncated", "chunks")

# Rows read, predicted and written at a time. Ray's engine cuts its blocks the same way: int8 ONNX models
# scale each forward pass's activations together, so a text's scores depend a little on its batch's
# companions, and equal chunks give both engines equal batches and equal answers.
CHUNK_ROWS = 2048


def prediction_row(p: Prediction, task: str) -> dict[str, Any]:
    """One prediction as `tunetext predict` writes it: the label and its score, the labels over their
    thresholds, or the value; every label's probability; whether the text was cut; with
    data.long_text=chunks, how many windows were pooled."""
    answer: dict[str, Any] = ({"value": p.value} if task == "regression" else {"labels": p.labels}
                              if task == "multi_label" else {"label": p.label, "score": p.score})
    if task != "regression":
        answer["probabilities"] = p.probabilities
    chunks = {} if p.chunks is None else {"chunks": p.chunks}
    return {**answer, "truncated": p.truncated, **chunks}


# ---- reading ----------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One input row: its 1-based line (row, for Parquet), its text or why it has none, its columns."""

    line: int
    text: Any
    columns: dict[str, Any]
    problem: str | None = None


def _format(name: str, formats: dict[str, str], given: str | None, default: str, role: str) -> str:
    """The format of `name` (`given`, or its suffix; `default` for `-`), or a UsageError up front."""
    if given is not None:
        if given not in set(formats.values()):
            known = ", ".join(sorted(set(formats.values())))
            raise UsageError(f"{role} format {given!r} is not one of {known}")
        return given
    if name == STDIO:
        return default
    suffix = Path(name).suffix.lower()
    if suffix not in formats:
        raise UsageError(f"{role} {name}: unknown suffix {suffix or '(none)'!r}; name it with one of "
                         f"{', '.join(sorted(formats))}")
    return formats[suffix]


@contextmanager
def _text_stream(path: str) -> Iterator[IO[str]]:
    """The input as UTF-8 text (a byte-order mark dropped); stdin is left open for the caller's process."""
    # newline="": csv needs it, and text lines then keep \r\n, which `_read_txt` removes
    if path != STDIO:
        with open(path, encoding="utf-8-sig", newline="") as f:
            yield f
        return
    stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
    try:
        yield stream
    finally:
        stream.detach()


def _strip_newline(line: str) -> str:
    return line[:-1] if line.endswith("\n") else line


def _read_txt(stream: IO[str]) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        text = _strip_newline(line).removesuffix("\r")
        yield Row(number, text, {"text": text})


def _read_jsonl(stream: IO[str], text_column: str) -> Iterator[Row]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            yield Row(number, None, {}, "a blank line")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Row(number, None, {}, f"not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield Row(number, None, {}, f"expected a JSON object, got {type(record).__name__}")
        elif text_column not in record:
            yield Row(number, None, record, f"no {text_column!r} field")
        else:
            yield Row(number, record[text_column], record)


def _read_delimited(stream: IO[str], delimiter: str, text_column: str, name: str) -> Iterator[Row]:
    reader = csv.reader(stream, delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    if text_column not in header:
        raise DataError(f"{name}: no column {text_column!r}; the columns are {', '.join(header)}. Choose "
                        "the text column with --text-column")
    where = header.index(text_column)
    line = reader.line_num + 1
    for record in reader:
        if not record:
            yield Row(line, None, {}, "a blank line")
        elif len(record) != len(header):
            yield Row(line, None, {}, f"{len(record)} fields but the header has {len(header)}")
        else:
            yield Row(line, record[where], dict(zip(header, record, strict=True)))
        line = reader.line_num + 1


def _read_parquet(path: str, text_column: str, chunk_rows: int) -> Iterator[Row]:
    import pyarrow as pa  # pyarrow: only Parquet files need it
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); write it again, or give a CSV, TSV or "
                        "JSONL file") from exc
    if text_column not in parquet.schema_arrow.names:
        raise DataError(f"{path}: no column {text_column!r}; the columns are "
                        f"{', '.join(parquet.schema_arrow.names)}. Choose the text column with --text-column")
    number = 0
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, record[text_column], record)


def _rows(path: str, kind: str, text_column: str, chunk_rows: int) -> Iterator[Row]:
    """Every row of the input, in order, read lazily."""
    if kind == "parquet":
        yield from _read_parquet(path, text_column, chunk_rows)
        return
    with _text_stream(path) as stream:
        if kind == "txt":
            yield from _read_txt(stream)
        elif kind == "jsonl":
            yield from _read_jsonl(stream, text_column)
        else:
            yield from _read_delimited(stream, "," if kind == "csv" else "\t", text_column, path)


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _count_lines(path: str) -> int | None:
    """A text file's line count, read in large blocks (about a second a gigabyte); None for stdin."""
    if path == STDIO:
        return None
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _total_rows(path: str, kind: str) -> int | None:
    """The number of rows when it is cheap to know (Parquet metadata; a line count of text lines and JSON
    lines), for the progress bar's ETA; None otherwise (CSV rows may span lines)."""
    if kind == "parquet":
        import pyarrow.parquet as pq  # pyarrow: only Parquet files need it

        with suppress(Exception):  # an unreadable file is reported by the reader, with the fix
            return int(pq.ParquetFile(path).metadata.num_rows)
        return None
    return _count_lines(path) if kind in ("txt", "jsonl") else None


# ---- writing ----------------------------------------------------------------------------------------------

def flat_row(record: dict[str, Any], label_names: list[str], separator: str | None) -> dict[str, Any]:
    """A row for a table: each label's probability as p_<label>; with `separator`, labels joined by it."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "probabilities":  # in its place, so p_<label> stand before truncated as they always did
            out.update({f"p_{name}": value[name] for name in label_names})
        elif key == "labels" and separator is not None:
            out[key] = separator.join(value)
        else:
            out[key] = value
    return out


class _Writer:
    """Rows to CSV, TSV, JSON lines or Parquet, a chunk at a time, into an open binary file."""

    def __init__(self, f: IO[bytes], kind: str, label_names: list[str], separator: str):
        self.f, self.kind, self.label_names, self.separator = f, kind, label_names, separator
        self.text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True) \
            if kind != "parquet" else None
        self.csv: Any = None
        self.parquet: Any = None
        self.schema: Any = None

    def write(self, records: list[dict[str, Any]]) -> None:
        if self.kind == "jsonl":
            assert self.text is not None
            self.text.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        elif self.kind in ("csv", "tsv"):
            self._write_delimited([flat_row(r, self.label_names, self.separator) for r in records])
        else:
            self._write_parquet([flat_row(r, self.label_names, None) for r in records])

    def _write_delimited(self, rows: list[dict[str, Any]]) -> None:
        assert self.text is not None
        if self.csv is None:
            self.csv = csv.DictWriter(self.text, fieldnames=list(rows[0]),
                                      delimiter="," if self.kind == "csv" else "\t")
            self.csv.writeheader()
        self.csv.writerows([{k: _cell(v) for k, v in r.items()} for r in rows])

    def _write_parquet(self, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa  # pyarrow: only Parquet output needs it
        import pyarrow.parquet as pq

        if self.parquet is None:
            inferred = pa.Table.from_pylist(rows).schema
            # a column empty in the first chunk would be typed null and refuse later values: text it is
            self.schema = pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                                     for f in inferred])
            self.parquet = pq.ParquetWriter(self.f, self.schema)
        self.parquet.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.text is not None:
            self.text.flush()
            self.text.detach()
        self.f.flush()


def _cell(value: Any) -> Any:
    """A value as CSV writes it: floats to 6 places, booleans as true/false."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6f}"
    return value


def check_output(output: str, input: str | None) -> Path | None:
    """The output's folder exists and is writable, the output is not a folder nor the input: checked before
    any work. Returns the output path (None for stdout)."""
    if output == STDIO:
        return None
    out = Path(output)
    folder = out.parent
    if not folder.is_dir():
        raise UsageError(f"--output {output}: the folder {folder} does not exist; create it first, or choose "
                         "another place")
    if out.is_dir():
        raise UsageError(f"--output {output} is a folder; give a file name such as {out / 'predictions.csv'}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: the folder {folder} is not writable; choose another place")
    if input not in (None, STDIO) and out.exists() and out.resolve() == Path(input).resolve():
        raise UsageError(f"--output {output} is the input file; write the predictions to another file")
    return out


# ---- the whole file ---------------------------------------------------------------------------------------

@dataclass
class Tally:
    """Counts of one prediction pass: rows written, rows read, bad rows skipped (and their first lines)."""
    rows: int = 0
    read: int = 0
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    unit: str = "line"  # what a row's number counts: a file's lines, a Parquet file's rows, texts given


def predict_file(run_dir_or_classifier: str | Path | Classifier, input: str | Path | list[str],
                 output: str | Path,
                 text_column: str | None = None, batch_size: int = BATCH_SIZE, chunk_rows: int = CHUNK_ROWS,
                 on_bad_row: Literal["fail", "skip"] = "fail", progress: bool = True,
                 input_format: str | None = None, output_format: str | None = None,
                 backend: Literal["auto", "torch", "onnx"] = "auto") -> dict[str, Any]:
    """Predict every row of `input` (a CSV/TSV/JSONL/Parquet/.txt file, or `-` for stdin read as text lines
    unless `input_format` says otherwise) and write `output` (.csv/.tsv/.jsonl/.parquet by its suffix, or
    `-` for stdout as JSON lines unless `output_format` says otherwise), `chunk_rows` rows at a time,
    `batch_size` texts per forward pass. Texts are in `text_column` (default: the run's
    `data.text_column`); the input's other columns are kept beside the predictions (`prediction_row`;
    tables get each label's probability as `p_<label>`). A bad row (a blank line, a missing or non-string
    text, one with nothing to classify) fails the run naming its line (`on_bad_row="fail"`) or is left out
    and counted (`"skip"`). A run given by its folder is loaded with `backend` (`Classifier.load`). Returns a
    summary: rows written, rows skipped and their first lines, seconds."""
    if on_bad_row not in ("fail", "skip"):
        raise UsageError(f"on_bad_row must be 'fail' or 'skip', not {on_bad_row!r}")
    if chunk_rows < 1 or batch_size < 1:
        raise UsageError("chunk_rows and batch_size must be at least 1")
    texts = input if isinstance(input, list) else None  # texts given directly: numbered from 1
    input, output = "the texts given" if texts is not None else str(input), str(output)
    in_kind = "texts" if texts is not None else _format(input, INPUT_FORMATS, input_format, "txt", "--input")
    out_kind = _format(output, OUTPUT_FORMATS, output_format, "jsonl", "--output")
    if in_kind == "parquet" and input == STDIO:
        raise UsageError("Parquet cannot be read from stdin; give the file's path")
    if out_kind == "parquet" and output == STDIO:
        raise UsageError("Parquet cannot be written to stdout; give a file name ending in .parquet")
    out = check_output(output, None if texts is not None else input)
    if texts is None and input != STDIO and not Path(input).is_file():
        raise DataError(f"--input {input}: no such file")
    clf = (run_dir_or_classifier if isinstance(run_dir_or_classifier, Classifier)
           else Classifier.load(run_dir_or_classifier, backend=backend))
    column = text_column or clf.config.data.text_column
    started = time.perf_counter()
    tally = Tally(unit="text" if texts is not None else "row" if in_kind == "parquet" else "line")
    rows = (_rows(input, in_kind, column, chunk_rows) if texts is None
            else (Row(i, t, {"text": t}) for i, t in enumerate(texts, start=1)))
    total = len(texts) if texts is not None else _total_rows(input, in_kind)
    bar = tqdm(total=total, unit="rows", desc="predict", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    temp: Path | None = None
    try:
        if out is None:
            sys.stdout.flush()  # what was printed before comes first
            target: IO[bytes] = sys.stdout.buffer
        else:
            handle, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
            temp = Path(name)
            target = os.fdopen(handle, "wb")
        writer = _Writer(target, out_kind, clf.label_names, clf.config.data.label_separator)
        for chunk in _chunks(rows, chunk_rows):
            records = _predict_chunk(clf, chunk, input, batch_size, on_bad_row, tally)
            if records:
                writer.write(records)
            tally.rows += len(records)
            tally.read += len(chunk)
            bar.update(len(chunk))
        if tally.rows == 0:  # an empty output (an empty Parquet file is not even valid) helps nobody
            where = ", ".join(map(str, tally.skipped_lines[:10]))
            raise DataError(f"{input} holds no rows" if tally.read == 0 else
                            f"{input}: none of its {tally.read} rows could be classified (bad rows at "
                            f"{tally.unit}s {where}); nothing written")
        writer.close()
        if out is not None and temp is not None:
            target.close()
            os.replace(temp, out)
            temp = None
    except UnicodeDecodeError as exc:
        raise DataError(f"--input {input}: not UTF-8 text ({exc}); re-encode the file as UTF-8") from None
    finally:
        bar.close()
        if temp is not None:  # failed or interrupted: remove only the partial file this call created
            with suppress(OSError):
                if out is not None:
                    target.close()
            temp.unlink(missing_ok=True)
    return {"input": input, "output": output, "format": out_kind, "rows": tally.rows,
            "skipped": tally.skipped, "skipped_lines": tally.skipped_lines, "numbered_by": tally.unit,
            "renamed": tally.renamed,
            "seconds": round(time.perf_counter() - started, 3)}


def _predict_chunk(clf: Classifier, chunk: list[Row], input: str, batch_size: int, on_bad_row: str,
                   tally: Tally) -> list[dict[str, Any]]:
    """One chunk's output rows: bad rows failed or skipped, the rest predicted."""
    candidates = [r for r in chunk if r.problem is None]
    encoded = clf.encode([r.text for r in candidates])
    bad = [(r.line, r.problem) for r in chunk if r.problem is not None]
    bad += [(r.line, e.error) for r, e in zip(candidates, encoded, strict=True) if e.error is not None]
    if bad:
        bad.sort()

        if on_bad_row == "fail":
            shown = "; ".join(f"{tally.unit} {line}: {why}" for line, why in bad[:5])
            raise DataError(f"{input}: {len(bad)} row(s) cannot be classified in the rows read so far "
                            f"({shown}). Fix them, or pass --on-bad-row skip to leave such rows out")
        tally.skipped += len(bad)
        tally.skipped_lines.extend(line for line, _ in bad[:LISTED_BAD_ROWS - len(tally.skipped_lines)])
    good = [(r, e) for r, e in zip(candidates, encoded, strict=True) if e.error is None]
    if not good:
        return []
    probs = clf.encoded_probabilities([e for _, e in good], batch_size)
    records = []
    for (row, e), p in zip(good, probs, strict=True):
        answer = prediction_row(clf.answer(p, e.truncated, None if e.chunks is None else len(e.chunks)),
                                clf.task)
        records.append({**kept_columns(row.columns, clf.label_names, tally), **answer})
    return records


def kept_columns(columns: dict[str, Any], label_names: list[str], tally: Tally) -> dict[str, Any]:
    """The input's columns, one that a prediction column would hide renamed input_<name>."""
    taken = set(PREDICTION_COLUMNS) | {f"p_{n}" for n in label_names}
    out = {}
    for name, value in columns.items():
        key = f"input_{name}" if name in taken else name
        if key != name:
            tally.renamed[name] = key
        out[key] = value
    return out


def read_texts(clf: Classifier, input: str | Path, text_column: str | None = None,
               on_bad_row: Literal["fail", "skip"] = "fail", input_format: str | None = None) -> list[str]:
    """Every text of `input` (read as `predict_file` reads it), whole, for printing a few answers; bad rows
    fail naming their lines, or are left out (`on_bad_row`). For large files use `predict_file`."""
    input = str(input)
    kind = _format(input, INPUT_FORMATS, input_format, "txt", "--input")
    if input != STDIO and not Path(input).is_file():
        raise DataError(f"--input {input}: no such file")
    unit = "row" if kind == "parquet" else "line"
    texts: list[str] = []
    bad: list[tuple[int, str]] = []
    try:
        for row in _rows(input, kind, text_column or clf.config.data.text_column, 4096):
            why = row.problem or text_problem(clf, row.text)
            if why is None:
                texts.append(row.text)
            else:
                bad.append((row.line, why))
    except UnicodeDecodeError as exc:
        raise DataError(f"--input {input}: not UTF-8 text ({exc}); re-encode the file as UTF-8") from None
    if bad and on_bad_row == "fail":
        shown = "; ".join(f"{unit} {line}: {why}" for line, why in bad[:5])
        raise DataError(f"{input}: {len(bad)} row(s) cannot be classified ({shown}). Fix them, or pass "
                        "--on-bad-row skip to leave such rows out")
    if not texts:
        why = f" that can be classified ({len(bad)} bad)" if bad else ""
        raise UsageError(f"{input} holds no texts{why}")
    return texts


def text_problem(clf: Classifier, text: Any) -> str | None:
    """Why `text` cannot be classified by `clf` (as `Classifier.encode` judges it, without tokenising)."""
    if not isinstance(text, str):
        return f"must be a string, not {type(text).__name__}"
    if not has_content(text):
        return "a blank text: nothing to classify"
    if not has_content(clf.clean([text])[0]):
        return "nothing is left of this text after the run's text cleaning"
    return None
