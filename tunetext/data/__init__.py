"""Data: reading sources (`sources`), built-in datasets (`builtin`) and preparing splits (`prepare`)."""

from tunetext.data.builtin import BUILTIN
from tunetext.data.prepare import Dataset, Split, clean_text, load_dataset, normalize_text, prepare
from tunetext.data.sources import DataError, RawSplit, read_source

__all__ = ["BUILTIN", "DataError", "Dataset", "RawSplit", "Split", "clean_text", "load_dataset",
           "normalize_text", "prepare", "read_source"]
