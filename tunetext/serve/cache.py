"""The service's prediction cache: a bounded LRU of the model's rows, keyed on the cleaned text as the
model sees it.

The key is the text's token ids as `Classifier.encode` makes them: the text cleaned by the run's cleaning
(`Classifier.clean`), put into its template, tokenised and cut into its window(s). The model's row follows
from those alone, so texts that clean to the same text share an entry; and the ids are at hand, so the
service cleans and tokenises each text once, as without the cache. The key is held as a SHA-256, so that
the table's memory is bounded by its number of rows, not by the texts' length. What is cached is the
row of `Classifier.probabilities`, not a formatted answer, so `top_k`, thresholds and the answer's
convention (`/predict` or the Hugging Face one) are applied afresh to every hit. Each worker process has
its own cache.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


def key_of(windows: list[list[int]]) -> str:
    """The cache key of a text encoded as `windows` of token ids (`Encoded.windows`): their SHA-256, each
    window's length before its ids so that no two different encodings give the same bytes."""
    digest = hashlib.sha256()
    for ids in windows:
        digest.update(struct.pack("<q", len(ids)))
        digest.update(np.asarray(ids, dtype="<i8").tobytes())
    return digest.hexdigest()


class PredictionCache:
    """At most `size` rows, the least recently used dropped first; `size` 0 keeps nothing.

    `on_change(hits, misses, entries)` is called after every `get_many` and `put_many` (for metrics). A
    lock guards the table, so request handlers and inference threads may use it at once.
    """

    def __init__(self, size: int, on_change: Callable[[int, int, int], None] | None = None):
        self.size = size
        self.on_change = on_change
        self._rows: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def get_many(self, keys: list[str]) -> list[np.ndarray | None]:
        """The cached row of each key, or None; a hit becomes the most recently used."""
        found: list[np.ndarray | None] = []
        with self._lock:
            for key in keys:
                row = self._rows.get(key)
                if row is not None:
                    self._rows.move_to_end(key)
                found.append(row)
            entries = len(self._rows)
        if self.on_change is not None and self.enabled:
            hits = sum(row is not None for row in found)
            self.on_change(hits, len(keys) - hits, entries)
        return found

    def put_many(self, keys: list[str], rows: list[np.ndarray]) -> None:
        """Remember each key's row (a read-only copy), dropping the least recently used beyond `size`."""
        if not self.enabled:
            return
        with self._lock:
            for key, row in zip(keys, rows, strict=True):
                kept = np.array(row, copy=True)
                kept.flags.writeable = False  # every hit shares it: nothing may change it in place
                self._rows[key] = kept
                self._rows.move_to_end(key)
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
            entries = len(self._rows)
        if self.on_change is not None:
            self.on_change(0, 0, entries)
