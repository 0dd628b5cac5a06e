"""The audit's frozen features: one embedding per prepared text, from model.name, computed once.

Encoders: the mean of the last hidden state over the attention mask, which is how sentence-transformers
defines the embeddings of the default `minilm-l6` (all-MiniLM-L6-v2: mean pooling, then unit length).
Decoders: the last hidden state (after the final norm) at the last non-pad token, the position a decoder
classifies from (`tunetext.models.pooled_positions`). Either way the vectors are scaled to unit length,
so a dot product is a cosine similarity. Texts go in as training sees them (`data.template` applied),
cut at model.max_length (the count of cut texts is reported), one forward pass each, in length-sorted
batches.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from tunetext.batches import collate, sorted_batches, tokenize_marking_cuts
from tunetext.config import RunConfig
from tunetext.inference import autocast
from tunetext.models import Family, load_classifier, pooled_positions, resolve, unwrap_peft
from tunetext.precision import use_bf16
from tunetext.runs import is_finished


@dataclass
class Embeddings:
    """Unit-length embeddings of each split's texts (`vectors[split]`, `[n, dim]`, in the split's order),
    how many texts of each split were cut at model.max_length, and the seconds it took."""

    vectors: dict[str, np.ndarray]
    truncated: dict[str, int]
    seconds: float
    dim: int


def embed_splits(texts: dict[str, list[str]], config: RunConfig, progress: bool = True) -> Embeddings:
    """Embed the texts of every split (`{"train": [...], "val": [...], "test": [...]}`) with
    `config.model.name`, as the module's doc says; batches of `config.train.eval_batch_size`."""
    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve(config.model.name)
    # A finished run keeps its own head; a pretrained base gets a throwaway one (only the body is used).
    labels = None if is_finished(path) else ["a", "b"]
    model, tokenizer, family = load_classifier(path, labels, config.model.attention, device,
                                               config.model.implementation)
    model = unwrap_peft(model).to(device).eval()
    names = list(texts)
    flat = [t for name in names for t in texts[name]]
    ids, cut = tokenize_marking_cuts(tokenizer, flat, config.model.max_length, config.data.template)
    vectors = _embed_ids(model, family, ids, tokenizer.pad_token_id, config.train.eval_batch_size, device,
                         use_bf16(config.train.precision, device), progress)
    out, truncated, start = {}, {}, 0
    for name in names:
        end = start + len(texts[name])
        out[name], truncated[name] = vectors[start:end], int(sum(cut[start:end]))
        start = end
    return Embeddings(out, truncated, time.perf_counter() - started, int(vectors.shape[1]))


@torch.no_grad()
def _embed_ids(model, family: Family, ids: list[list[int]], pad_id: int, batch_size: int,
               device: torch.device, bf16: bool, progress: bool) -> np.ndarray:
    """Unit-length embeddings of tokenised texts, in input order."""
    body = model.base_model
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    batches = sorted_batches([len(x) for x in ids], batch_size)
    for idx in tqdm(batches, desc="embed", unit="batch", file=sys.stderr, disable=None if progress else True,
                    leave=False):
        batch = collate([ids[i] for i in idx], pad_id)
        input_ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        with autocast(device, bf16):
            hidden = body(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        if family.kind == "decoder":
            pooled = hidden[torch.arange(len(idx), device=device), pooled_positions(input_ids, pad_id)]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
    return out
