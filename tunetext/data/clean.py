"""How a text is cleaned, for training data and for prediction alike, and how a raw label is named.

Whitespace is always normalised; the optional steps (DataConfig.strip_markup, strip_urls, lowercase) each
return how much they removed or changed, so preparation can report it.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable
from typing import Any

from tunetext.config import DataConfig

# A cleaning step: its DataConfig option, the function (text -> text and how many items it removed or
# changed) and what it removes, for the report.
CleaningStep = tuple[str, Callable[[str], tuple[str, int]], str]


def normalize_text(text: str) -> str:
    """Collapse every run of whitespace to one space and strip the ends."""
    return " ".join(text.split())


# --- optional cleaning (DataConfig.strip_markup, strip_urls, lowercase) -------------------------------------

_BLOCK = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
# A tag starts with a letter (or /letter, !DOCTYPE): "a < b", "x <3 y" and "<= 5" are left alone.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|<![A-Za-z][^<>]*>")
_ENTITY = re.compile(r"&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# A URL does not end in the punctuation of the sentence around it ("see www.x.org.").
_URL = re.compile(r"\b(?:(?:https?|ftp)://|www\.)[^\s<>\"']*[^\s<>\"'.,;:!?)\]}]", re.IGNORECASE)


def _strip_markup(text: str) -> tuple[str, int]:
    """Tags, comments and script/style blocks become a space; entities are decoded. Returns the text and
    how many of them were removed or decoded."""
    n = 0
    for pattern in (_BLOCK, _COMMENT, _TAG):
        text, k = pattern.subn(" ", text)
        n += k
    entities = len(_ENTITY.findall(text))
    return (html.unescape(text) if entities else text), n + entities


def _strip_urls(text: str) -> tuple[str, int]:
    return _URL.subn(" ", text)


def _lowercase(text: str) -> tuple[str, int]:
    lower = text.lower()
    return lower, int(lower != text)


# In this order: markup first, so a URL inside a tag's attributes goes with the tag.
_CLEANING: tuple[CleaningStep, ...] = (
    ("strip_markup", _strip_markup, "HTML tags/entities"),
    ("strip_urls", _strip_urls, "URLs"),
    ("lowercase", _lowercase, ""),
)


def cleaning_steps(config: DataConfig | None) -> list[CleaningStep]:
    """The optional steps `config` turns on, in the order they run."""
    if config is None:
        return []
    return [step for step in _CLEANING if getattr(config, step[0])]


def clean_text(text: str, config: DataConfig | None = None) -> str:
    """The one definition of how a text is cleaned, for training data and for prediction alike: the
    optional steps `config` turns on (strip markup, strip URLs, lowercase), then whitespace
    normalisation. With no config (or every option off) only whitespace is normalised."""
    for _, step, _ in cleaning_steps(config):
        text = step(text)[0]
    return normalize_text(text)


# An integral number as written in a text file: "1", "-2", "1.0"; not "01" or "+1", which may be codes.
_INTEGRAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.0+)?")


def label_key(value: Any) -> str | None:
    """A raw label's canonical name, or None for a missing one. Strings are stripped; integral numbers are
    written as integers, whether they came as numbers or as text (1, 1.0, "1", " 1 " and "1.0" are all
    "1"); booleans are "true" and "false", as JSON writes them. Anything else keeps its spelling."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if _INTEGRAL.fullmatch(text):
        return str(int(text.split(".")[0]))
    return text or None


def similar_key(label: str) -> str:
    """What labels that differ only in letter case or spaces have in common."""
    return "".join(label.casefold().split())
