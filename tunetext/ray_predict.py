"""Batch prediction on Ray Data: a run's `Classifier` as a pool of Ray actors over Parquet, CSV or JSON lines.

`predict_with_ray(run_dir, "in/", "out/")` reads a file or a folder of files (local, or any filesystem
Ray reads: `s3://`, `gs://`, a shared mount), runs `Classifier` in `num_workers` actors (each loads the
run once) through `Dataset.map_batches`, and writes a folder of Parquet files whose rows are the input's
rows, in the input's order, each with the same prediction columns as `predict_file` writes to Parquet.
`ray` is the optional extra `tunetext[ray]`, imported only here, only when called.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch

from tunetext.batch_predict import (
    CHUNK_ROWS,
    STDIO,
    Tally,
    flat_row,
    kept_columns,
    prediction_row,
    text_problem,
)
from tunetext.data.sources import DataError
from tunetext.errors import TunetextError, UsageError
from tunetext.predict import BATCH_SIZE, Classifier

# What an input's suffix means to Ray's readers (.json is JSON lines, as everywhere in tunetext).
RAY_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
INSTALL = "pip install 'tunetext[ray]'"


class PredictActor:
    """One Ray actor: the run's Classifier, loaded once in `__init__`, applied to each batch (an Arrow
    table) by `__call__`, which returns the batch's columns and the prediction columns."""

    def __init__(self, run_dir: str, backend: str, text_column: str, batch_size: int, input: str,
                 threads: int):
        # As many threads as CPUs the actor was given: Ray does not pin actors to cores, and ONNX Runtime
        # would otherwise start one spinning thread per core of the machine in every actor.
        torch.set_num_threads(threads)
        self.clf = Classifier.load(run_dir, backend=backend, threads=threads)  # type: ignore[arg-type]
        self.column, self.batch_size, self.input = text_column, batch_size, input

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa  # pyarrow: a dependency of ray[data]

        rows = batch.to_pylist()
        texts = [row[self.column] for row in rows]
        bad = [(text, why) for text in texts if (why := text_problem(self.clf, text)) is not None]
        if bad:  # no line numbers here: Ray's blocks do not know them, so the text itself says which
            shown = "; ".join(f"{str(text)[:40]!r}: {why}" for text, why in bad[:5])
            raise DataError(f"{self.input}: {len(bad)} row(s) of a batch cannot be classified ({shown}). "
                            f"Fix or drop them (column {self.column!r}); --engine ray has no "
                            "--on-bad-row skip")
        encoded = self.clf.encode(texts)
        probs = self.clf.encoded_probabilities(encoded, self.batch_size)
        tally = Tally()
        records = []
        for row, e, p in zip(rows, encoded, probs, strict=True):
            answer = self.clf.answer(p, e.truncated, None if e.chunks is None else len(e.chunks))
            columns = kept_columns(row, self.clf.label_names, tally)
            record = {**columns, **prediction_row(answer, self.clf.task)}
            records.append(flat_row(record, self.clf.label_names, None))
        table = pa.Table.from_pylist(records)
        # a column null in every row of this batch (e.g. no label over its threshold) must not be typed
        # null here and string in another block: Parquet files of one folder share one schema
        kept = {name: batch.schema.field(name).type for name in batch.column_names}
        fields = [pa.field(f.name, kept.get(f.name, _not_null(f.type, pa))) for f in table.schema]
        return table.cast(pa.schema(fields))


def _not_null(kind: Any, pa: Any) -> Any:
    if pa.types.is_null(kind):
        return pa.string()
    if pa.types.is_list(kind) and pa.types.is_null(kind.value_type):
        return pa.list_(pa.string())
    return kind


def _import_ray() -> Any:
    try:
        import ray  # ray: the optional extra tunetext[ray], needed only by --engine ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray Data, which is not installed ({exc}); {INSTALL}") from None
    return ray


def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _input_format(input: str, given: str | None) -> str:
    """csv, jsonl or parquet: `given`, the input's suffix, or the suffix its local folder's files share."""
    if input == STDIO:
        raise UsageError("--engine ray cannot read stdin; give a Parquet, CSV or JSON lines file or folder "
                         "(local or a URI such as s3://bucket/texts/), or use --engine local")
    if given is not None:
        if given not in set(RAY_FORMATS.values()):
            raise UsageError(f"--engine ray reads parquet, csv and jsonl, not {given!r}; use --engine local "
                             "for text lines and TSV")
        return given
    suffix = Path(input.rstrip("/")).suffix.lower()
    if not suffix and not _is_uri(input) and Path(input).is_dir():
        suffixes = {p.suffix.lower() for p in Path(input).iterdir() if p.is_file() and not
                    p.name.startswith((".", "_"))}
        suffix = suffixes.pop() if len(suffixes) == 1 else ""
    if suffix not in RAY_FORMATS:
        raise UsageError(f"--input {input}: --engine ray reads Parquet, CSV and JSON lines files or "
                         f"folders of them ({', '.join(RAY_FORMATS)}), not {suffix or 'this'!r}; pass "
                         "--input-format, or use --engine local for .txt, .tsv and stdin")
    return RAY_FORMATS[suffix]


def _check_output(output: str, input: str) -> None:
    """The output is a new folder's name: refused if anything is there (tunetext never deletes what it did
    not write), if it names stdout or a single-file format, or if its parent is missing."""
    if output == STDIO:
        raise UsageError("--engine ray writes a folder of Parquet files, not stdout; give a folder name")
    if Path(output).suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        raise UsageError(f"--output {output}: --engine ray writes a folder of Parquet files; give a folder "
                         "name (such as predictions/ or predictions.parquet), or use --engine local")
    if _is_uri(output):
        import pyarrow.fs as pafs  # pyarrow: a dependency of ray[data]

        fs, path = pafs.FileSystem.from_uri(output)
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            raise UsageError(f"--output {output} exists; choose a new name (tunetext does not replace what "
                             "it may not have written)")
        return
    out = Path(output)
    if out.exists() or out.is_symlink():
        raise UsageError(f"--output {output} exists; choose a new name, or remove it yourself (tunetext does "
                         "not replace what it may not have written)")
    if not out.parent.is_dir():
        raise UsageError(f"--output {output}: the folder {out.parent} does not exist; create it first")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--output {output}: the folder {out.parent} is not writable; choose another place")
    if out.resolve() == Path(input).resolve():
        raise UsageError(f"--output {output} is the input; write the predictions elsewhere")


def _read(ray: Any, input: str, kind: str, column: str) -> Any:
    """The input as a Ray Dataset; a CSV's text column read as text, whatever Arrow would infer."""
    if kind == "parquet":
        return ray.data.read_parquet(input)
    if kind == "jsonl":
        return ray.data.read_json(input, lines=True, file_extensions=None)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    return ray.data.read_csv(input, file_extensions=None,
                             convert_options=pacsv.ConvertOptions(column_types={column: pa.string()}))


def _cause(exc: BaseException) -> TunetextError | None:
    """The TunetextError an actor raised, found under Ray's wrappers (RayTaskError, UserCodeException):
    as an exception object where Ray kept one, else from the traceback text Ray keeps in its message."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, TunetextError):
            return current
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    found = re.search(r"^tunetext\.[\w.]*?\.(\w+Error): (.+)$", str(exc), re.MULTILINE)
    if found is None:
        return None
    kinds = {kind.__name__: kind for kind in (DataError, UsageError)}
    return kinds.get(found.group(1), TunetextError)(found.group(2))


def predict_with_ray(run_dir: str | Path, input: str | Path, output: str | Path,
                     text_column: str | None = None, num_workers: int = 2, batch_size: int = BATCH_SIZE,
                     chunk_rows: int = CHUNK_ROWS, address: str | None = None,
                     backend: Literal["auto", "torch", "onnx"] = "auto", input_format: str | None = None,
                     cpus_per_worker: float | None = None, progress: bool = True) -> dict[str, Any]:
    """Predict every row of `input` (a Parquet, CSV or JSON lines file, or a folder of them; a local path or
    any URI Ray reads, such as s3://...) on Ray Data, and write `output`, a new folder of Parquet files, with
    `num_workers` actors, each holding the run's `Classifier` (loaded once, with `backend`) and scoring
    `chunk_rows` rows a call (cut from the input's start as `predict_file` cuts its chunks), `batch_size`
    texts per forward pass. Rows keep the input's columns (one a prediction column would hide renamed
    input_<name>) and get `predict_file`'s Parquet columns; their order
    is the input's (Ray's `preserve_order`): read the folder's files sorted by name, as pyarrow and pandas do.
    `address`: None starts a local Ray (all this machine's CPUs) for this call, unless one is running in this
    process; `auto` or `ray://host:10001` joins a cluster, whose workers must all be able to read `run_dir`,
    `input` and `output`. Returns a summary: rows written, seconds. A row that cannot be classified fails
    the run (there is no skipping here). `cpus_per_worker` (default: 1, or less so that one CPU of the
    cluster stays free for reading and writing: with every CPU held by an actor, Ray Data waits forever)."""
    if num_workers < 1 or batch_size < 1 or chunk_rows < 1:
        raise UsageError("num_workers, batch_size and chunk_rows must be at least 1")
    input, output = str(input), str(output)
    kind = _input_format(input, input_format)
    _check_output(output, input)
    if not _is_uri(input) and not Path(input).exists():
        raise DataError(f"--input {input}: no such file or folder")
    run = Path(run_dir).resolve()  # the actors may run elsewhere: an absolute path they can all read
    clf = Classifier.load(run, backend=backend)  # checked here, where its errors are plain to read
    column = text_column or clf.config.data.text_column
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, logging_level="warning",
                 log_to_driver=progress)
    temp: Path | None = None
    started = time.perf_counter()
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # the output's rows in the input's order
        ctx.enable_progress_bars = progress
        if not progress:  # Ray Data's own INFO lines (execution plans, sink summaries) too
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = _read(ray, input, kind, column)
        names = ds.schema().names
        if column not in names:
            raise DataError(f"{input}: no column {column!r}; the columns are {', '.join(names)}. Choose the "
                            "text column with --text-column")
        # One file is one block to Ray's readers, which would feed a single actor: blocks of one call's rows,
        # in order, give every actor work
        ds = ds.repartition(target_num_rows_per_block=chunk_rows)
        if not _is_uri(output):  # written beside the output, renamed into place when all is done
            temp = Path(tempfile.mkdtemp(dir=Path(output).parent, prefix=f".{Path(output).name}.",
                                         suffix=".partial"))
        cpus = cpus_per_worker or _cpus_per_worker(ray, num_workers)
        predicted = ds.map_batches(
            PredictActor, batch_format="pyarrow", batch_size=chunk_rows, num_cpus=cpus,
            compute=ray.data.ActorPoolStrategy(size=num_workers), udf_modifying_row_count=False,
            fn_constructor_kwargs={"run_dir": str(run), "backend": backend, "text_column": column,
                                   "batch_size": batch_size, "input": input,
                                   "threads": max(1, math.floor(cpus))})
        try:
            _write_in_order(predicted, str(temp) if temp is not None else output)
        except Exception as exc:
            cause = _cause(exc)
            if cause is None:
                raise
            raise cause from None
        if temp is not None:
            os.replace(temp, output)
            temp = None
    finally:
        if temp is not None:  # failed or interrupted: remove only the folder this call created
            shutil.rmtree(temp, ignore_errors=True)
        if started_here:
            ray.shutdown()
    return {"input": input, "output": output, "format": "parquet", "rows": _count(output),
            "workers": num_workers, "seconds": round(time.perf_counter() - started, 3)}


def _write_in_order(predicted: Any, folder: str, rows_per_file: int = 100_000) -> None:
    """The predicted blocks, in the input's order, into part-000000.parquet, part-000001.parquet, ... of
    `folder` (local or a URI). Ray's own `write_parquet` names files by write task, and under
    `preserve_order` those names were seen out of the input's order here, so the driver writes: blocks
    arrive in order from `iter_batches`, while the actors keep predicting ahead."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, root = pafs.FileSystem.from_uri(folder) if _is_uri(folder) else (pafs.LocalFileSystem(), folder)
    fs.create_dir(root, recursive=True)
    writer: Any = None
    parts = rows = 0
    try:
        for table in predicted.iter_batches(batch_size=None, batch_format="pyarrow"):
            if writer is not None and rows >= rows_per_file:
                writer.close()
                writer, rows = None, 0
            if writer is None:
                writer = pq.ParquetWriter(f"{root}/part-{parts:06d}.parquet", table.schema, filesystem=fs)
                schema, parts = table.schema, parts + 1
            writer.write_table(table.cast(schema))
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()


def _cpus_per_worker(ray: Any, num_workers: int) -> float:
    """One CPU an actor, or the share of all but one of the cluster's CPUs when there are too few."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(0.1, min(1.0, (cpus - 1) / num_workers))


def _count(output: str) -> int:
    """Rows written, from the Parquet files' metadata (nothing is read but their footers)."""
    import pyarrow.dataset as pads

    return int(pads.dataset(output, format="parquet").count_rows())
