"""Which reader a data source goes to: a built-in dataset's name, the user's file, or else a Hugging Face
dataset (a hub name or a folder written by `datasets.save_to_disk`).

It sits above both `builtin` and `sources`, which know nothing of each other's names.
"""

from __future__ import annotations

from pathlib import Path

from tunetext.data.builtin import BUILTIN
from tunetext.data.sources import FILE_SUFFIXES, DataError, LabelColumn, RawSplit, read_file, read_hf_dataset


def read_source(source: str, text_column: str = "text", label_column: LabelColumn = "label",
                validation: str | None = None, test: str | None = None) -> dict[str, RawSplit]:
    """Read a data source into raw splits keyed by `train`, and `validation`/`test` where given."""
    if source in BUILTIN:
        splits = BUILTIN[source].load()
    elif Path(source).suffix.lower() in FILE_SUFFIXES and not Path(source).is_dir():
        splits = {"train": read_file(Path(source), text_column, label_column)}
    else:
        try:
            splits = read_hf_dataset(source, text_column, label_column)
        except FileNotFoundError as exc:
            raise DataError(f"{source}: not a built-in dataset ({', '.join(BUILTIN)}), a file, or a "
                            f"Hugging Face dataset that could be loaded ({exc})") from exc
    for name, path in (("validation", validation), ("test", test)):
        if path is not None:
            splits[name] = read_file(Path(path), text_column, label_column)
    return splits
