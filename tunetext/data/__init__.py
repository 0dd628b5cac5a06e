"""Data: reading files (`sources`), built-in datasets (`builtin`), which of them a source name means
(`read`) and preparing splits (`prepare`)."""

from tunetext.data.builtin import BUILTIN
from tunetext.data.prepare import Dataset, Split, clean_text, load_dataset, normalize_text, prepare
from tunetext.data.read import read_source
from tunetext.data.sources import DataError, RawSplit

__all__ = ["BUILTIN", "DataError", "Dataset", "RawSplit", "Split", "clean_text", "load_dataset",
           "normalize_text", "prepare", "read_source"]
