"""Data: reading sources (`sources`) and preparing splits (`prepare`)."""

from tunetext.data.prepare import Dataset, Split, load_dataset, normalize_text, prepare
from tunetext.data.sources import BUILTIN, DataError, RawSplit, read_source

__all__ = ["BUILTIN", "DataError", "Dataset", "RawSplit", "Split", "load_dataset", "normalize_text",
           "prepare", "read_source"]
