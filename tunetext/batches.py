"""Tokenising once, and batching with as little padding as possible.

Texts are tokenised once without padding. Training batches group texts of similar length (shuffled
within large windows, then the batches shuffled), so each batch is padded only to its own longest text.
Inference batches are simply sorted by length.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from tunetext.config import TEXT_FIELD


def format_inputs(texts: list[str], template: str | None) -> list[str]:
    """The texts as the model sees them: put into `template` at `{text}` (`data.template`), or as they are.

    Plain replacement, not `str.format`, so other braces in a template (JSON, code) stay literal.
    """
    if template is None:
        return list(texts)
    return [template.replace(TEXT_FIELD, text) for text in texts]


def tokenize(tokenizer, texts: list[str], max_length: int, template: str | None = None) -> list[list[int]]:
    """Token ids for each text, put into `template` if given, truncated to `max_length`, unpadded.

    The one place where a run's texts become model inputs: training, evaluation and `Classifier.predict`
    (and so serving) all come through here, so a template applies to all of them alike.
    """
    if not texts:  # fast tokenizers raise IndexError on an empty batch; no texts, no ids
        return []
    return tokenizer(format_inputs(texts, template), truncation=True, max_length=max_length,
                     padding=False)["input_ids"]


def tokenize_marking_cuts(tokenizer, texts: list[str], max_length: int,
                          template: str | None = None) -> tuple[list[list[int]], list[bool]]:
    """`tokenize`, and for each text whether it was longer than `max_length` tokens (only its start kept),
    from the same one pass of the tokenizer."""
    if not texts:
        return [], []
    inputs = format_inputs(texts, template)
    batch = tokenizer(inputs, truncation=True, max_length=max_length, padding=False)
    ids = batch["input_ids"]
    if batch.encodings is not None:  # a Rust (`tokenizers`) tokenizer keeps what truncation cut off
        return ids, [bool(e.overflowing) for e in batch.encodings]
    # A pure-Python tokenizer keeps nothing of it: the texts that fill the window are tokenised again, whole.
    cut = [False] * len(ids)
    full = [i for i, seq in enumerate(ids) if len(seq) >= max_length]
    if full:
        whole = tokenizer([inputs[i] for i in full], truncation=False, padding=False, verbose=False)
        for i, seq in zip(full, whole["input_ids"], strict=True):
            cut[i] = len(seq) > max_length
    return ids, cut


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int,
                           window: int = 50) -> list[list[int]]:
    """Shuffled batches of indices in which lengths are similar.

    The indices are shuffled, cut into windows of `window` batches, each window sorted by length and cut
    into batches, and the batches shuffled, so batch composition still varies from epoch to epoch.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    size = batch_size * window
    batches = []
    for start in range(0, len(order), size):
        chunk = sorted(order[start:start + size], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def shuffled_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches for inference: longest texts first, so a memory problem shows at once."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def collate(ids: list[list[int]], pad_id: int, labels: list[int] | None = None) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest sequence (right padding) and build the attention mask."""
    lengths = np.array([len(seq) for seq in ids])
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    input_ids = np.full(mask.shape, pad_id, dtype=np.int64)
    input_ids[mask] = np.fromiter((t for seq in ids for t in seq), dtype=np.int64, count=lengths.sum())
    batch = {"input_ids": torch.from_numpy(input_ids),
             "attention_mask": torch.from_numpy(mask.astype(np.int64))}
    if labels is not None:
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
    return batch
