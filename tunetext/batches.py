"""Tokenising once, and batching with as little padding as possible.

Texts are tokenised once without padding; a text longer than the window (`model.max_length`) is cut or
split into windows as `data.long_text` says (`LongText`, `tokenize_windows`). Training batches group texts
of similar length (shuffled within large windows, then the batches shuffled), so each batch is padded only
to its own longest text. Inference batches are simply sorted by length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from tunetext.config import TEXT_FIELD, DataConfig
from tunetext.errors import UsageError

BLOCK = 1024  # texts tokenised whole at a time: a long document's full token list lives only this long


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


@dataclass(frozen=True)
class LongText:
    """What becomes of a text longer than the window: `data.long_text` and its settings, as
    `LongText.of(config.data)`; the field descriptions in `DataConfig` say what each does."""

    mode: str  # truncate, head_tail or chunks
    head_fraction: float
    chunk_overlap: float
    max_chunks: int

    @classmethod
    def of(cls, data: DataConfig) -> LongText:
        # Training writes the mode `auto` resolved to into the run's config; `auto` in a saved config is
        # a run from before data.long_text existed, and those truncated.
        mode = "truncate" if data.long_text == "auto" else data.long_text
        return cls(mode, data.head_fraction, data.chunk_overlap, data.max_chunks)


def _truncates(long_text: LongText | None) -> bool:
    return long_text is None or long_text.mode == "truncate"


def tokenize_windows(tokenizer, texts: list[str], max_length: int, template: str | None = None,
                     long_text: LongText | None = None) -> list[list[list[int]]]:
    """Each text's windows of token ids, at most `max_length` each: one window (`tokenize`'s ids, or
    head and tail with `head_tail`), or several with `chunks`. `long_text` None (or `truncate`) is
    `tokenize`, exactly."""
    if _truncates(long_text):
        return [[seq] for seq in tokenize(tokenizer, texts, max_length, template)]
    return tokenize_windows_marking_cuts(tokenizer, texts, max_length, template, long_text)[0]


def tokenize_windows_marking_cuts(tokenizer, texts: list[str], max_length: int, template: str | None = None,
                                  long_text: LongText | None = None
                                  ) -> tuple[list[list[list[int]]], list[bool]]:
    """`tokenize_windows`, and for each text whether some of its tokens are in none of its windows
    (truncated, cut to head and tail, or chunked past `max_chunks` with gaps between the windows)."""
    if _truncates(long_text):
        truncated, marks = tokenize_marking_cuts(tokenizer, texts, max_length, template)
        return [[seq] for seq in truncated], marks
    assert long_text is not None
    lead, trail = special_counts(tokenizer)
    windows: list[list[list[int]]] = []
    cuts: list[bool] = []
    for start in range(0, len(texts), BLOCK):
        whole, bounds = _whole(tokenizer, texts[start:start + BLOCK], template, lead, trail)
        for ids, (a, b) in zip(whole, bounds, strict=True):
            seqs, cut = split_long(ids, a, b, max_length, long_text)
            windows.append(seqs)
            cuts.append(cut)
    return windows, cuts


def token_lengths(tokenizer, texts: list[str], template: str | None = None) -> list[int]:
    """Each text's length in tokens as the model would see it whole: in `template`, special tokens
    included, nothing cut (so a text is cut exactly when its length is above `max_length`)."""
    lengths: list[int] = []
    for start in range(0, len(texts), BLOCK):
        if texts[start:start + BLOCK]:
            batch = tokenizer(format_inputs(texts[start:start + BLOCK], template), truncation=False,
                              padding=False, verbose=False)
            lengths += [len(seq) for seq in batch["input_ids"]]
    return lengths


def text_room(tokenizer, max_length: int, template: str | None = None) -> int:
    """Tokens of a window left for the text once the special tokens and the template are in (for an
    empty text; BPE merges at the template's edges can shift it by a token)."""
    return max_length - token_lengths(tokenizer, [""], template)[0]


def special_counts(tokenizer) -> tuple[int, int]:
    """How many special tokens the tokenizer puts before and after a text: ([CLS], [SEP]) is (1, 1),
    GPT-2 (0, 0), Llama's `<s>` (1, 0)."""
    mask = tokenizer("a", return_special_tokens_mask=True)["special_tokens_mask"]
    lead = next((i for i, m in enumerate(mask) if not m), len(mask))
    trail = next((i for i, m in enumerate(reversed(mask)) if not m), 0)
    return lead, trail


def _whole(tokenizer, texts: list[str], template: str | None, lead: int,
           trail: int) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """The texts tokenised whole (in `template`, with special tokens), and for each where its text's
    own tokens are, `(a, b)`: `ids[:a]` is the special tokens and the template before the text,
    `ids[b:]` the template and special tokens after it.

    The text's tokens are found from the tokenizer's character offsets (a token straddling the text's
    edge counts as text). A slow tokenizer has no offsets: then everything between the special tokens
    counts as text, template included."""
    if not texts:
        return [], []
    offsets = template is not None and getattr(tokenizer, "is_fast", False)
    batch = tokenizer(format_inputs(texts, template), truncation=False, padding=False, verbose=False,
                      return_offsets_mapping=offsets)
    ids = batch["input_ids"]
    bounds = [(lead, len(seq) - trail) for seq in ids]
    if offsets:
        assert template is not None
        before = template.index(TEXT_FIELD)  # where the text starts in the filled-in template ...
        after = len(template) - template.rindex(TEXT_FIELD) - len(TEXT_FIELD)  # ... and what follows it
        for i, (text, spans) in enumerate(zip(texts, batch["offset_mapping"], strict=True)):
            start, end = before, len(format_inputs([text], template)[0]) - after
            a, b = bounds[i]
            first = next((j for j in range(a, b) if spans[j][1] > start), b)
            last = next((j for j in range(b - 1, first - 1, -1) if spans[j][0] < end), first - 1)
            bounds[i] = (first, last + 1)
    return ids, bounds


def split_long(ids: list[int], a: int, b: int, max_length: int,
               long_text: LongText) -> tuple[list[list[int]], bool]:
    """One text's windows from its whole token ids, whose text part is `ids[a:b]` (see `_whole`), and
    whether any text token is in none of them. What is before and after the text part (special tokens,
    template) is in every window whole.

    `head_tail` keeps the text's first `round(head_fraction x room)` tokens and its last ones, where
    `room` is what the window leaves for text. `chunks` cuts the text into windows of `room` tokens
    (see `chunk_starts`)."""
    if len(ids) <= max_length:
        return [ids], False
    before, text, after = ids[:a], ids[a:b], ids[b:]
    room = max_length - len(before) - len(after)
    if room < 1:
        raise UsageError(f"the special tokens and data.template alone take {len(before) + len(after)} of "
                         f"model.max_length={max_length} tokens, leaving no room for the text; raise "
                         "model.max_length or shorten the template")
    if long_text.mode == "head_tail":
        head = round(long_text.head_fraction * room)
        return [before + text[:head] + text[len(text) - (room - head):] + after], True
    starts = chunk_starts(len(text), room, long_text.chunk_overlap, long_text.max_chunks)
    gaps = any(later - earlier > room for earlier, later in zip(starts, starts[1:], strict=False))
    return [before + text[s:s + room] + after for s in starts], gaps


def chunk_starts(n: int, room: int, overlap: float, max_chunks: int) -> list[int]:
    """Where the windows of `room` tokens start in a text of `n > room` tokens: every `room -
    round(overlap x room)` tokens from the start, and a last one that ends at the text's end. More than
    `max_chunks` of them: `max_chunks` windows spread evenly from the first to the last instead, so the
    end of the text still counts (the tokens between windows are then skipped)."""
    last = n - room
    stride = max(1, room - round(overlap * room))
    starts = list(range(0, last, stride)) + [last]
    if len(starts) <= max_chunks:
        return starts
    if max_chunks == 1:
        return [0]
    return [round(i * last / (max_chunks - 1)) for i in range(max_chunks)]


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
