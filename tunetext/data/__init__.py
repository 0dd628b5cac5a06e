"""Data: reading files (`sources`), built-in datasets (`builtin`, `text_gcn`, their `cards`), which of
them a source name means (`read`), cleaning a text (`clean`) and preparing splits (`prepare`, `splits`,
`resample`)."""

from tunetext.data.builtin import BUILTIN
from tunetext.data.clean import clean_text, normalize_text
from tunetext.data.prepare import load_dataset, prepare
from tunetext.data.read import read_source
from tunetext.data.sources import DataError, RawSplit
from tunetext.data.splits import Dataset, Split

__all__ = ["BUILTIN", "DataError", "Dataset", "RawSplit", "Split", "clean_text", "load_dataset",
           "normalize_text", "prepare", "read_source"]
