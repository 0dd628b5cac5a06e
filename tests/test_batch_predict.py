"""Streaming batch prediction (`tunetext.batch_predict.predict_file`, `tunetext predict --output`): the
same answers as `Classifier.predict` in memory, every format in and out, the input's columns kept, bad rows
named by their line, the output checked before any work and written only when all is done."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunetext.batch_predict import predict_file
from tunetext.cli import main
from tunetext.data.sources import DataError
from tunetext.errors import UsageError
from tunetext.predict import Classifier

TEXTS = ["free entry to win a prize now", "are we still on for lunch", "call 0800 now to claim",
         "ok see you later", "win cash txt now", "sorry i missed your call"] * 3
LONG = " ".join(["win a free prize now"] * 40)  # past the tiny run's max_length of 64 tokens


@pytest.fixture(scope="module")
def clf(trained_run) -> Classifier:
    return Classifier.load(trained_run)


def read_rows(path: Path) -> list[dict]:
    """Any output file's rows, as dicts."""
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.suffix in (".csv", ".tsv"):
        with open(path, newline="") as f:
            return list(csv.DictReader(f, delimiter="," if path.suffix == ".csv" else "\t"))
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_input(path: Path, rows: list[dict]) -> Path:
    """`rows` (id and text) in the format `path`'s suffix names."""
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix in (".csv", ".tsv"):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]),
                                    delimiter="," if path.suffix == ".csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".txt":
        path.write_text("".join(r["text"] + "\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_same(rows: list[dict], expected, label_names: list[str]) -> None:
    """Output rows carry exactly the in-memory predictions (tables as p_<label>, to their 6 places)."""
    assert len(rows) == len(expected)
    for row, p in zip(rows, expected, strict=True):
        assert row["label"] == p.label
        assert float(row["score"]) == pytest.approx(p.score, abs=1e-6)
        probabilities = row.get("probabilities") or {n: float(row[f"p_{n}"]) for n in label_names}
        assert probabilities == pytest.approx(p.probabilities, abs=1e-6)
        assert str(row["truncated"]).lower() == str(p.truncated).lower()


def test_streamed_jsonl_equals_in_memory_predictions_and_marks_truncation(clf, tmp_path):
    texts = [*TEXTS, LONG]
    source = write_input(tmp_path / "in.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    summary = predict_file(clf, source, tmp_path / "out.jsonl", chunk_rows=4, progress=False)
    rows = read_rows(tmp_path / "out.jsonl")
    expected = clf.predict(texts)
    assert summary["rows"] == len(texts) and summary["skipped"] == 0
    assert [r["id"] for r in rows] == list(range(len(texts)))  # the other column, in order
    assert [r["text"] for r in rows] == texts
    assert_same(rows, expected, clf.label_names)
    assert rows[-1]["truncated"] is True and not any(r["truncated"] for r in rows[:-1])


@pytest.mark.parametrize("into", [".csv", ".tsv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("source", [".csv", ".tsv", ".jsonl", ".parquet", ".txt"])
def test_every_format_round_trips_keeping_the_other_columns(clf, tmp_path, source, into):
    rows = [{"id": f"r{i}", "text": t} for i, t in enumerate(TEXTS[:5])]
    path = write_input(tmp_path / f"in{source}", rows)
    out = tmp_path / f"out{into}"
    predict_file(clf, path, out, chunk_rows=2, progress=False)
    got = read_rows(out)
    assert [r["text"] for r in got] == [r["text"] for r in rows]
    if source != ".txt":  # a text file has no other columns
        assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert_same(got, clf.predict([r["text"] for r in rows]), clf.label_names)
    if into in (".csv", ".tsv"):
        head = ["id"] * (source != ".txt") + ["text", "label", "score", "p_ham", "p_spam", "truncated"]
        assert list(got[0]) == head


def test_parquet_output_is_parquet_whatever_the_old_behaviour(clf, tmp_path):
    out = tmp_path / "out.parquet"
    predict_file(clf, write_input(tmp_path / "in.txt", [{"text": t} for t in TEXTS]), out, progress=False)
    assert out.read_bytes()[:4] == b"PAR1"
    table = pq.read_table(out)
    assert table.num_rows == len(TEXTS) and pa.types.is_floating(table.schema.field("p_spam").type)
    assert pa.types.is_boolean(table.schema.field("truncated").type)


def test_a_tiny_chunk_size_gives_the_same_answers(clf, tmp_path):
    source = write_input(tmp_path / "in.csv", [{"id": i, "text": t} for i, t in enumerate(TEXTS)])
    predict_file(clf, source, tmp_path / "one.jsonl", chunk_rows=1, batch_size=1, progress=False)
    predict_file(clf, source, tmp_path / "all.jsonl", chunk_rows=1000, progress=False)
    one, whole = read_rows(tmp_path / "one.jsonl"), read_rows(tmp_path / "all.jsonl")
    assert [r["label"] for r in one] == [r["label"] for r in whole]
    for a, b in zip(one, whole, strict=True):
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_bad_rows_fail_naming_their_file_lines_and_leave_no_output(clf, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text("free entry to win\n\nlunch later\n   \nok\n")
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match=r"line 2: .*line 4: ") as info:
        predict_file(clf, source, out, progress=False)
    assert "--on-bad-row skip" in str(info.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [source]  # the partial file is removed


def test_bad_rows_skipped_are_counted_with_their_lines(clf, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "text": "win now"}\n\n{"id": 3, "text": 7}\n{"id": 4}\nnot json\n'
                      '{"id": 6, "text": "lunch"}\n')
    out = tmp_path / "out.jsonl"
    summary = predict_file(clf, source, out, on_bad_row="skip", chunk_rows=2, progress=False)
    assert summary["skipped"] == 4 and summary["skipped_lines"] == [2, 3, 4, 5]
    assert summary["rows"] == 2 and [r["id"] for r in read_rows(out)] == [1, 6]


def test_a_csv_row_with_a_missing_field_is_named_by_line(clf, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text('id,text\n1,"a text over\ntwo lines"\n2\n3,fine\n')
    with pytest.raises(DataError, match=r"line 4: 1 fields but the header has 2"):
        predict_file(clf, source, tmp_path / "out.csv", progress=False)


def test_the_output_is_checked_before_any_work(clf, tmp_path, monkeypatch):
    source = write_input(tmp_path / "in.csv", [{"text": t} for t in TEXTS])
    monkeypatch.setattr(Classifier, "encode", lambda *a: pytest.fail("predicted before checking the output"))
    with pytest.raises(UsageError, match="does not exist"):
        predict_file(clf, source, tmp_path / "missing" / "out.csv", progress=False)
    with pytest.raises(UsageError, match="is the input file"):
        predict_file(clf, source, source, progress=False)
    with pytest.raises(UsageError, match="unknown suffix '.xlsx'"):
        predict_file(clf, source, tmp_path / "out.xlsx", progress=False)
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        predict_file(clf, source, tmp_path / "folder.csv", progress=False)


def test_an_interrupted_run_removes_only_its_own_partial_file(clf, tmp_path, monkeypatch):
    source = write_input(tmp_path / "in.csv", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.csv"
    out.write_text("the user's earlier file\n")
    calls = []

    def interrupt(self, encoded, batch_size=64):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, encoded, batch_size)

    original = Classifier.encoded_probabilities
    monkeypatch.setattr(Classifier, "encoded_probabilities", interrupt)
    with pytest.raises(KeyboardInterrupt):
        predict_file(clf, source, out, chunk_rows=3, progress=False)
    assert out.read_text() == "the user's earlier file\n"  # untouched until the run finishes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]


def test_a_clashing_input_column_is_kept_under_another_name(clf, tmp_path):
    source = write_input(tmp_path / "in.csv", [{"text": t, "label": "gold"} for t in TEXTS[:3]])
    summary = predict_file(clf, source, tmp_path / "out.jsonl", progress=False)
    rows = read_rows(tmp_path / "out.jsonl")
    assert summary["renamed"] == {"label": "input_label"}
    assert all(r["input_label"] == "gold" and r["label"] in clf.label_names for r in rows)


def test_stdin_to_stdout_through_the_cli(trained_run, clf, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("".join(t + "\n" for t in TEXTS).encode())))
    assert main(["predict", str(trained_run), "--input", "-", "--output", "-", "--chunk-rows", "4"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert_same(rows, clf.predict(TEXTS), clf.label_names)
    assert f"wrote {len(TEXTS)} predictions to -" in err


def test_cli_uses_the_runs_text_column_and_reports_skipped_lines(trained_run, clf, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text("id,text,other\n1,win now,x\n2,,y\n3,lunch,z\n")
    out = tmp_path / "out.parquet"
    code = main(["predict", str(trained_run), "--input", str(source), "--output", str(out),
                 "--on-bad-row", "skip"])
    assert code == 0
    err = capsys.readouterr().err
    assert "wrote 2 predictions" in err and "skipped 1 bad row(s), at line(s) 3" in err
    rows = pq.read_table(out).to_pylist()
    assert [r["id"] for r in rows] == ["1", "3"] and [r["other"] for r in rows] == ["x", "z"]
    code = main(["predict", str(trained_run), "--input", str(source), "--output", str(tmp_path / "o.csv")])
    assert code == 2
    assert "line 3" in capsys.readouterr().err


def test_multi_label_columns(trained_run, tmp_path):
    base = Classifier.load(trained_run)
    base.model.config.problem_type = "multi_label_classification"
    thresholds = {"ham": 0.3, "spam": 0.6}
    ml = Classifier(base.model, base.tokenizer, base.config, {"task": {"thresholds": thresholds}})
    source = write_input(tmp_path / "in.txt", [{"text": t} for t in TEXTS[:4]])
    predict_file(ml, source, tmp_path / "ml.csv", progress=False)
    rows = read_rows(tmp_path / "ml.csv")
    expected = ml.predict(TEXTS[:4])
    assert list(rows[0]) == ["text", "labels", "p_ham", "p_spam", "truncated"]
    assert [r["labels"] for r in rows] == [",".join(p.labels) for p in expected]
    predict_file(ml, source, tmp_path / "ml.parquet", progress=False)
    table = pq.read_table(tmp_path / "ml.parquet").to_pylist()
    assert [r["labels"] for r in table] == [p.labels for p in expected]  # a list column


def test_csv_on_stdin_as_csv_on_stdout(trained_run, clf, monkeypatch, capsys):
    table = "id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(TEXTS[:4]))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(table.encode())))
    assert main(["predict", str(trained_run), "--input", "-", "--input-format", "csv", "--output", "-",
                 "--output-format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in rows] == ["0", "1", "2", "3"]
    assert_same(rows, clf.predict(TEXTS[:4]), clf.label_names)


def test_cli_refuses_a_missing_output_folder_before_loading_the_run(tmp_path, capsys):
    source = write_input(tmp_path / "in.txt", [{"text": "hello"}])
    code = main(["predict", str(tmp_path / "no-such-run"), "--input", str(source), "--output",
                 str(tmp_path / "nowhere" / "out.csv")])
    assert code == 2 and "the folder" in capsys.readouterr().err  # not the missing run: checked first


def test_nothing_to_write_is_an_error_and_writes_nothing(clf, tmp_path):
    empty, blank = tmp_path / "empty.txt", tmp_path / "blank.txt"
    empty.write_text("")
    blank.write_text("\n \n")
    with pytest.raises(DataError, match="holds no rows"):
        predict_file(clf, empty, tmp_path / "out.parquet", progress=False)
    with pytest.raises(DataError, match=r"none of its 2 rows could be classified \(bad rows at lines 1, 2\)"):
        predict_file(clf, blank, tmp_path / "out.parquet", on_bad_row="skip", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.txt", "empty.txt"]


def test_a_file_that_is_not_utf8_is_an_error(clf, tmp_path):
    source = tmp_path / "latin1.txt"
    source.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8 text"):
        predict_file(clf, source, tmp_path / "out.csv", progress=False)
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(("name", "content", "total"), [
    ("a.txt", "one\ntwo\nthree", 3), ("b.txt", "one\n\nthree\n", 3), ("c.jsonl", '{"text": "x"}\n', 1),
    ("d.csv", 'text\n"two\nlines"\n', None)])
def test_the_progress_total_is_known_only_when_cheap(tmp_path, name, content, total):
    from tunetext.batch_predict import INPUT_FORMATS, _total_rows

    path = tmp_path / name
    path.write_text(content)
    assert _total_rows(str(path), INPUT_FORMATS[path.suffix]) == total


def test_the_progress_total_of_parquet_comes_from_its_metadata(tmp_path):
    from tunetext.batch_predict import _total_rows

    path = write_input(tmp_path / "in.parquet", [{"text": t} for t in TEXTS])
    assert _total_rows(str(path), "parquet") == len(TEXTS)


def test_printed_answers_name_bad_rows_by_line_too(trained_run, clf, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_text("free entry to win\n\nlunch later\n")
    assert main(["predict", str(trained_run), "--input", str(source), "--json"]) == 2
    assert "line 2: " in capsys.readouterr().err
    assert main(["predict", str(trained_run), "--input", str(source), "--json", "--on-bad-row", "skip"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert_same(rows, clf.predict(["free entry to win", "lunch later"]), clf.label_names)
