"""Data that would train a wrong model without a word: texts that are not text, undecodable files and
directories."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tunetext.config import DataConfig
from tunetext.data import DataError, load_dataset, read_source


def write(path: Path, rows: list[tuple[object, object]]) -> Path:
    """(text, label) rows as a CSV (every value as text), JSONL (values as given) or Parquet file."""
    if path.suffix == ".csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["text", "label"])
            out.writerows(rows)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": lbl}) + "\n" for t, lbl in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": [t for t, _ in rows], "label": [lbl for _, lbl in rows]}), path)
    return path


def labelled(labels: list[object], prefix: str = "text") -> list[tuple[object, object]]:
    return [(f"{prefix} {i}", label) for i, label in enumerate(labels)]


def names_of(dataset) -> dict[str, int]:
    """Examples per label name over all three splits."""
    counts = dict.fromkeys(dataset.label_names, 0)
    for split in dataset.splits().values():
        for label in split.labels:
            counts[dataset.label_names[label]] += 1
    return counts


# --- 6: texts that are not text, files that are not UTF-8, directories --------------------------------


@pytest.mark.parametrize(("value", "kind"), [
    (["free", "prize"], 'a JSON array, ["free", "prize"]'),
    ({"subject": "free"}, 'a JSON object, {"subject": "free"}'),
    (12345, "a JSON number, 12345"),
    (True, "a JSON boolean, true"),
])
def test_jsonl_text_that_is_not_a_string_is_an_error_naming_file_and_line(tmp_path, value, kind):
    path = write(tmp_path / "d.jsonl", labelled(["a", "b"] * 5) + [(value, "a")])
    with pytest.raises(DataError) as info:
        read_source(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}, line 11: 'text' is {kind}, not a string; ")
    assert "--text-column" in message
    if isinstance(value, int):
        assert f'write it as a JSON string ("{json.dumps(value)}")' in message


def test_jsonl_null_text_is_still_an_empty_text_dropped_and_reported(tmp_path):
    path = write(tmp_path / "d.jsonl", labelled(["a", "b"] * 15) + [(None, "a")])
    dataset = load_dataset(DataConfig(source=str(path)), seed=0)
    assert f"{path}: dropped 1 empty texts (lines 31)" in dataset.report


def test_parquet_text_column_that_is_not_strings_is_an_error_naming_its_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [[1, 2], [3]], "label": ["a", "b"]}), path)
    with pytest.raises(DataError, match=r"column 'text' holds list<element: int64> values, not text"):
        read_source(str(path))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
@pytest.mark.parametrize("bad_line", [1, 1200])  # in the header, and past the reader's first block
def test_a_file_that_is_not_utf8_names_line_and_byte_and_says_to_re_encode(tmp_path, suffix, bad_line):
    sep = "\t" if suffix == ".tsv" else ","
    if suffix == ".jsonl":
        lines = [json.dumps({"text": f"text {i}", "label": "ab"[i % 2]}) for i in range(1500)]
        lines[bad_line - 1] = '{"text": "caf\xe9 au lait", "label": "a"}'
    else:
        lines = [f"text{sep}label", *(f"text {i}{sep}{'ab'[i % 2]}" for i in range(1500))]
        lines[bad_line - 1] = f"caf\xe9{sep}label" if bad_line == 1 else f"caf\xe9 au lait{sep}a"
    data = b"".join(line.encode("latin-1") + b"\n" for line in lines)
    assert len(data) > 8192 * 1.5
    path = tmp_path / f"d{suffix}"
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    with pytest.raises(DataError) as info:
        read_source(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}, line {bad_line} (byte {offset}): not UTF-8 text: byte 0xe9 in b'")
    assert "caf\\xe9" in message
    assert "Re-encode the file as UTF-8" in message and "iconv" in message


def test_a_directory_given_as_a_data_file_says_so(tmp_path):
    (tmp_path / "data.csv").mkdir()
    with pytest.raises(DataError) as info:
        read_source(str(tmp_path / "data.csv"))
    assert str(info.value).startswith(f"{tmp_path / 'data.csv'}: is a directory, not a data file")
    assert "holds no CSV, TSV, JSONL or Parquet file" in str(info.value)
    folder = tmp_path / "exported"
    folder.mkdir()
    write(folder / "train.csv", labelled(["a", "b"] * 10))
    write(folder / "test.csv", labelled(["a", "b"] * 3))
    with pytest.raises(DataError) as info:
        read_source(str(folder))
    assert str(info.value).startswith(f"{folder}: is a directory, not a data file, nor a dataset written by "
                                      "datasets' save_to_disk")
    assert f"it holds test.csv, train.csv: give one of those files instead, e.g. {folder / 'test.csv'}" \
        in str(info.value)
    with pytest.raises(DataError, match="is a directory, not a data file"):
        read_source(str(folder / "train.csv"), test=str(tmp_path / "data.csv"))


def test_a_saved_hugging_face_dataset_directory_is_still_a_source_but_not_a_test_file(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved.csv"  # a suffix does not make it a file
    rows = labelled(["a", "b"] * 10)
    datasets.Dataset.from_dict({"text": [t for t, _ in rows], "label": [lbl for _, lbl in rows]}
                               ).save_to_disk(str(folder))
    assert read_source(str(folder))["train"].labels == ["a", "b"] * 10
    with pytest.raises(DataError, match="is a dataset written by datasets' save_to_disk, not a data file"):
        read_source(str(folder), test=str(folder))
