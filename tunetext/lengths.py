"""How long the texts are in tokens, and what the window (`model.max_length`) does to them.

`length_report` summarises token lengths counted as the model would see each text whole: in the run's
template, special tokens included, nothing cut (`tunetext.batches.token_lengths`). A text is cut or split
exactly when its length is above `max_length`. `tunetext data show` prints the report, training logs it
and stores it in `metrics.json` under `training.lengths`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tunetext.batches import LongText

COUNTED = "tokens per text as the model sees it whole: template and special tokens included, nothing cut"


def length_report(lengths: Sequence[int], max_length: int) -> dict[str, Any]:
    """Minimum, median, 90th and 95th percentile (numpy's linear interpolation, to one decimal) and
    maximum of `lengths`, and how many texts (and what share) are longer than `max_length`."""
    x = np.asarray(lengths, dtype=np.float64)
    longer = int((x > max_length).sum())
    if not len(x):
        return {"texts": 0, "min": 0, "median": 0.0, "p90": 0.0, "p95": 0.0, "max": 0,
                "max_length": max_length, "longer": 0, "longer_share": 0.0, "counted": COUNTED}
    return {"texts": len(x), "min": int(x.min()), "median": round(float(np.median(x)), 1),
            "p90": round(float(np.percentile(x, 90)), 1), "p95": round(float(np.percentile(x, 95)), 1),
            "max": int(x.max()),
            "max_length": max_length, "longer": longer, "longer_share": longer / len(x), "counted": COUNTED}


def what_long_text_does(long_text: LongText, room: int) -> str:
    """In words, what `long_text` does to a text too long for the window, which leaves `room` tokens for
    text (`tunetext.batches.text_room`)."""
    if long_text.mode == "head_tail":
        head = round(long_text.head_fraction * room)
        return f"data.long_text=head_tail keeps the first {head} + last {room - head} tokens of each"
    if long_text.mode == "chunks":
        overlap = round(long_text.chunk_overlap * room)
        return (f"data.long_text=chunks splits each into windows of {room} text tokens overlapping by "
                f"{overlap}, at most {long_text.max_chunks} per text")
    return f"data.long_text=truncate keeps the first {room} tokens of each"


def describe(report: dict[str, Any], long_text: LongText, room: int, which: str = "training") -> str:
    """One line: the median and 95th percentile, the share of `which` texts longer than the window, and
    what becomes of them, e.g. `median 180, p95 900 tokens; 41% of training texts are longer than
    max_length 256 -> data.long_text=head_tail keeps the first 64 + last 190 tokens of each`."""
    line = (f"median {report['median']:.0f}, p95 {report['p95']:.0f}, max {report['max']} tokens; "
            f"{100 * report['longer_share']:.0f}% of {which} texts ({report['longer']} of {report['texts']}) "
            f"are longer than max_length {report['max_length']}")
    return line + (f" -> {what_long_text_does(long_text, room)}" if report["longer"] else "")
