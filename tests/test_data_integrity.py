"""Data that would train a wrong model without a word: one class, one label written several ways, texts
that are not text, undecodable files, directories, and labels that differ only in case or spaces."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tunetext.config import ConfigError, DataConfig, load_config
from tunetext.data import DataError, RawSplit, load_dataset, prepare, read_source
from tunetext.data.clean import label_key


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


# --- 4: a training split with one label ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_one_label_in_train_is_refused_naming_it_and_its_count(tmp_path, suffix):
    path = write(tmp_path / f"d{suffix}", labelled(["ham"] * 30))
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source=str(path)))
    message = str(info.value)
    assert message.startswith(f"{path}: the training split has only one label, 'ham' (all 30 usable rows)")
    assert "--label-column" in message and "data.label_column: now 'label'" in message


def test_one_label_left_after_cleaning_and_dedupe_is_refused_too():
    # Two labels as read, but every "spam" row has an empty text: train is all "ham".
    raw = RawSplit("d.csv", [f"t {i}" for i in range(20)] + ["", " "], ["ham"] * 20 + ["spam"] * 2,
                   list(range(2, 24)), "line")
    with pytest.raises(DataError, match=r"only one label, 'ham' \(all 20 usable rows\)"):
        prepare({"train": raw}, DataConfig(), seed=0)


def test_one_label_is_refused_before_any_model_loads(tmp_path):
    from tunetext import train

    path = write(tmp_path / "d.csv", labelled(["ham"] * 30))
    config = load_config(overrides={"data.source": str(path), "model.name": str(tmp_path / "no-such-model")})
    with pytest.raises(DataError, match="only one label"):  # not a model error: the data fails first
        train(config, tmp_path / "run", progress=False)


def test_one_class_data_can_still_be_evaluated_against_a_known_label_set(tmp_path):
    # A trained run's labels are given: a test file of spam only is a fair thing to score.
    path = write(tmp_path / "d.csv", labelled(["spam"] * 30))
    dataset = load_dataset(DataConfig(source=str(path)), label_names=["ham", "spam"])
    assert names_of(dataset) == {"ham": 0, "spam": 30}


# --- 5: one label, several spellings -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "key"), [
    (1, "1"), (1.0, "1"), ("1", "1"), (" 1 ", "1"), ("1.0", "1"), ("1.00", "1"), (-2, "-2"), ("-2.0", "-2"),
    (0.5, "0.5"), ("01", "01"), ("+1", "+1"), ("1e3", "1e3"), (True, "true"), (False, "false"),
    (" Spam ", "Spam"), ("Spam", "Spam"), ("bill  ing", "bill  ing"), ("", None), ("  ", None), (None, None),
    (math.nan, None),
])
def test_label_key(value, key):
    assert label_key(value) == key


def test_jsonl_number_and_string_labels_are_one_class_and_the_merge_is_reported(tmp_path):
    path = write(tmp_path / "d.jsonl", labelled([1, "1"] * 10 + [0] * 20))
    dataset = load_dataset(DataConfig(source=str(path)), seed=0)
    assert names_of(dataset) == {"0": 20, "1": 20}
    assert (f"{path}: label '1' was written 2 ways, merged into it: 1 (10 rows), '1' (10 rows)"
            in dataset.report)


def test_csv_spellings_of_one_number_are_one_class_and_the_merge_is_reported(tmp_path):
    path = write(tmp_path / "d.csv", labelled(["1"] * 12 + ["1.0"] * 6 + [" 1 "] * 3 + ["0"] * 21))
    dataset = load_dataset(DataConfig(source=str(path)), seed=0)
    assert names_of(dataset) == {"0": 21, "1": 21}
    assert (f"{path}: label '1' was written 3 ways, merged into it: '1' (12 rows), '1.0' (6 rows), "
            "' 1 ' (3 rows)") in dataset.report


def test_parquet_float_labels_are_named_as_integers_and_string_spellings_merge(tmp_path):
    floats = write(tmp_path / "f.parquet", labelled([0.0, 1.0] * 15))
    dataset = load_dataset(DataConfig(source=str(floats)), seed=0)
    assert names_of(dataset) == {"0": 15, "1": 15}
    assert not any("ways" in line for line in dataset.report)  # one spelling each: nothing merged
    strings = write(tmp_path / "s.parquet", labelled(["2", "2.0"] * 10 + ["10"] * 20))
    dataset = load_dataset(DataConfig(source=str(strings)), seed=0)
    assert dataset.label_names == ["2", "10"]  # numeric order
    assert f"{strings}: label '2' was written 2 ways, merged into it: '2' (10 rows), '2.0' (10 rows)" \
        in dataset.report


def test_string_labels_keep_their_spelling_and_booleans_read_as_json_writes_them(tmp_path):
    strings = write(tmp_path / "s.jsonl", labelled(["Spam", " Spam ", "Not spam"] * 10))
    dataset = load_dataset(DataConfig(source=str(strings)), seed=0)
    assert names_of(dataset) == {"Not spam": 10, "Spam": 20}
    assert (f"{strings}: label 'Spam' was written 2 ways, merged into it: 'Spam' (10 rows), "
            "' Spam ' (10 rows)") in dataset.report
    booleans = write(tmp_path / "b.jsonl", labelled([True, False] * 15))
    assert names_of(load_dataset(DataConfig(source=str(booleans)), seed=0)) == {"false": 15, "true": 15}


def test_a_list_label_is_an_error_naming_its_row(tmp_path):
    path = write(tmp_path / "d.jsonl", labelled(["a", "b"] * 10 + [["a", "b"]]))
    with pytest.raises(DataError, match=r"d\.jsonl, line 21: the label is a list, \['a', 'b'\], not one .*"
                       "data.task=multi_label"):
        load_dataset(DataConfig(source=str(path), task="single_label"))
    # left at auto, lists among single values are ambiguous: the error names the first of each and asks
    with pytest.raises(DataError, match=r"1 labels are lists \(first at line 21\) and 20 are single values "
                       r"\(first at line 1\)\. Set data\.task=multi_label"):
        load_dataset(DataConfig(source=str(path)))
    # set, each single value is a set of one
    dataset = load_dataset(DataConfig(source=str(path), task="multi_label"))
    assert dataset.task == "multi_label" and dataset.label_names == ["a", "b"]


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


# --- 18: labels that differ only in case or spaces ------------------------------------------------------

SIMILAR = ["Billing", "billing", "bill ing", "Tech"] * 8  # rows 2, 3, 4, 5, 6, ... in a CSV


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_labels_differing_in_case_or_spaces_are_an_error_naming_them(tmp_path, suffix):
    path = write(tmp_path / f"d{suffix}", labelled(SIMILAR))
    first = 2 if suffix == ".csv" else 1
    unit = "row" if suffix == ".parquet" else "line"
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source=str(path)))
    message = str(info.value)

    def rows(offset):
        return f"{unit}s {first + offset}, {first + offset + 4}, {first + offset + 8} and 5 more"

    assert message.startswith(
        "labels that differ only in letter case or spaces would become separate classes: "
        f"'Billing' (8 rows: {path} {rows(0)}) vs 'bill ing' (8 rows: {path} {rows(2)}) vs "
        f"'billing' (8 rows: {path} {rows(1)}). ")
    assert "spell it one way" in message and "data.similar_labels=keep" in message


def test_similar_labels_in_different_files_are_caught(tmp_path):
    train = write(tmp_path / "train.csv", labelled(["Billing", "Tech"] * 10))
    test = write(tmp_path / "test.csv", labelled(["billing", "Tech"] * 3, prefix="t"))
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source=str(train), test=str(test)))
    assert (f"'Billing' (10 rows: {train} lines 2, 4, 6 and 7 more) vs "
            f"'billing' (3 rows: {test} lines 2, 4, 6)") in str(info.value)


def test_similar_labels_kept_apart_when_asked_and_reported(tmp_path):
    path = write(tmp_path / "d.csv", labelled(SIMILAR))
    dataset = load_dataset(DataConfig(source=str(path), similar_labels="keep"), seed=0)
    assert names_of(dataset) == {"Billing": 8, "Tech": 8, "bill ing": 8, "billing": 8}
    (line,) = [r for r in dataset.report if "similar_labels" in r]
    assert line.startswith("kept apart labels that differ only in letter case or spaces "
                           "(data.similar_labels=keep): 'Billing' (8 rows")


def test_outer_spaces_are_merged_and_reported_not_an_error(tmp_path):
    path = write(tmp_path / "d.csv", labelled(["Billing", "Billing ", "Tech", "Tech"] * 8))
    dataset = load_dataset(DataConfig(source=str(path)), seed=0)
    assert names_of(dataset) == {"Billing": 16, "Tech": 16}
    assert (f"{path}: label 'Billing' was written 2 ways, merged into it: 'Billing' (8 rows), "
            "'Billing ' (8 rows)") in dataset.report


def test_similar_labels_error_shows_merged_spellings(tmp_path):
    path = write(tmp_path / "d.csv", labelled(["Billing", "Billing ", "billing", "Tech"] * 8))
    with pytest.raises(DataError, match=r"'Billing' \(16 rows, written 'Billing' 8, 'Billing ' 8: "):
        load_dataset(DataConfig(source=str(path)))


def test_similar_labels_option_is_validated_and_an_override():
    assert DataConfig().similar_labels == "error"
    assert load_config(overrides={"data.similar_labels": "keep"}).data.similar_labels == "keep"
    with pytest.raises(ConfigError, match="similar_labels"):
        load_config(overrides={"data.similar_labels": "merge"})
