"""Batch prediction on Ray Data (`tunetext.ray_predict.predict_with_ray`, `tunetext predict --engine ray`):
on a local Ray with 2 CPUs and 2 actors, over inputs split across several files, the output folder holds
the single-process `predict_file` rows, row for row, in the input's order, the other columns kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from tunetext.batch_predict import predict_file  # noqa: E402
from tunetext.cli import main  # noqa: E402
from tunetext.data.sources import DataError  # noqa: E402
from tunetext.errors import UsageError  # noqa: E402
from tunetext.ray_predict import predict_with_ray  # noqa: E402

WORDS = ["free", "entry", "win", "prize", "lunch", "call", "now", "later", "cash", "ok", "sorry", "claim"]
ROWS = [{"id": i, "text": " ".join(WORDS[(i * k) % len(WORDS)] for k in range(1, 2 + i % 9)),
         "source": f"s{i % 3}"} for i in range(300)]


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance with 2 CPUs for this module, shut down after it. The dashboard is off (it needs
    ports and extra processes); uv's runtime-env hook is off (it would try to rebuild the venv with uv)."""
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


def parquet_folder(folder: Path, rows: list[dict], files: int = 3) -> Path:
    folder.mkdir()
    step = -(-len(rows) // files)
    for n in range(files):
        pq.write_table(pa.Table.from_pylist(rows[n * step:(n + 1) * step]), folder / f"part-{n}.parquet")
    return folder


def jsonl_folder(folder: Path, rows: list[dict], files: int = 3) -> Path:
    folder.mkdir()
    step = -(-len(rows) // files)
    for n in range(files):
        part = rows[n * step:(n + 1) * step]
        (folder / f"part-{n}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


def expected_rows(run: Path, tmp_path: Path) -> list[dict]:
    """The single-process answer: `predict_file` on the same rows, written as Parquet."""
    single = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), single)
    predict_file(run, single, tmp_path / "single.parquet", progress=False)
    return pq.read_table(tmp_path / "single.parquet").to_pylist()


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want) == len(ROWS)
    assert list(got[0]) == list(want[0])  # same columns, same order: input's first, then predictions
    for g, w in zip(got, want, strict=True):
        assert (g["id"], g["text"], g["source"], g["label"]) == (w["id"], w["text"], w["source"], w["label"])
        for key in w:
            if key.startswith("p_") or key == "score":
                assert g[key] == pytest.approx(w[key], abs=1e-5), key


def test_ray_equals_single_process_row_for_row(local_ray, trained_run, tmp_path):
    want = expected_rows(trained_run, tmp_path)
    folder = parquet_folder(tmp_path / "texts", ROWS)
    summary = predict_with_ray(trained_run, folder, tmp_path / "out", num_workers=2, chunk_rows=64,
                               progress=False)
    assert summary["rows"] == len(ROWS)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["part-000000.parquet"]
    got = pq.read_table(tmp_path / "out").to_pylist()
    assert_same_rows(got, want)  # 5 blocks of 64 rows through 2 actors, back in the input's order
    assert {r["label"] for r in got} <= {"ham", "spam"}
    assert not list(tmp_path.glob(".out.*"))  # the temporary folder was renamed into place


def test_cli_engine_ray_over_jsonl(local_ray, trained_run, tmp_path, capsys):
    want = expected_rows(trained_run, tmp_path)
    folder = jsonl_folder(tmp_path / "texts", ROWS)
    out = tmp_path / "preds.parquet"
    code = main(["predict", str(trained_run), "--input", str(folder), "--output", str(out), "--engine", "ray",
                 "--num-workers", "2", "--batch-size", "16"])
    assert code == 0
    assert f"wrote {len(ROWS)} predictions to {out}" in capsys.readouterr().err
    assert out.is_dir()
    assert_same_rows(pq.read_table(out).to_pylist(), want)
    # run again onto the same output: refused, nothing of it deleted
    before = sorted(p.name for p in out.iterdir())
    assert main(["predict", str(trained_run), "--input", str(folder), "--output", str(out), "--engine",
                 "ray"]) != 0
    assert "exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_missing_text_column_is_named(local_ray, trained_run, tmp_path):
    folder = parquet_folder(tmp_path / "texts", [{"id": r["id"], "body": r["text"]} for r in ROWS], files=2)
    with pytest.raises(DataError, match=r"no column 'text'; the columns are id, body"):
        predict_with_ray(trained_run, folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_an_empty_text_fails_naming_it(local_ray, trained_run, tmp_path):
    rows = [dict(r) for r in ROWS[:40]]
    rows[17]["text"] = "   "
    folder = parquet_folder(tmp_path / "texts", rows, files=2)
    with pytest.raises(DataError, match="1 row.*cannot be classified.*blank"):
        predict_with_ray(trained_run, folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # the partial folder removed


@pytest.mark.parametrize(("input", "output", "message"), [
    ("-", "out", "cannot read stdin"),
    ("texts.txt", "out", "reads Parquet, CSV and JSON lines"),
    ("texts.csv", "-", "not stdout"),
    ("texts.csv", "out.csv", "writes a folder of Parquet files"),
])
def test_what_ray_cannot_do_is_refused_up_front(trained_run, tmp_path, input, output, message):
    """Refused before Ray starts (no local_ray fixture here)."""
    (tmp_path / "texts.txt").write_text("hello\n")
    (tmp_path / "texts.csv").write_text("text\nhello\n")
    where = input if input == "-" else str(tmp_path / input)
    to = output if output == "-" else str(tmp_path / output)
    with pytest.raises(UsageError, match=message):
        predict_with_ray(trained_run, where, to, progress=False)
