"""The forward pass for scoring: tokenised texts in, scores out, batched by length.

The scores are the model's raw answer in the form its task reads: class log-probabilities for a
single-label classifier, one logit per label for multi-label (a sigmoid of each makes its probability),
the standardised value for regression. Turning them into labels or numbers is `predict`'s business.
Shared by evaluation, prediction, serving, reports and training's validation passes; `tunetext.precision`
decides where bfloat16 autocast pays off. A text split into windows (`data.long_text=chunks`) gets one
answer from all of them (`pool_windows`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from tunetext.batches import LongText, collate, sorted_batches, tokenize_windows
from tunetext.models import task_of

CHUNK = 4096  # texts tokenised and length-sorted at a time, so memory stays flat for any set size


def autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.no_grad()
def predict_log_probs(model, ids: list[list[int]], pad_id: int, batch_size: int,
                      device: torch.device | None = None, bf16: bool = False) -> np.ndarray:
    """Scores for tokenised texts, in input order, batched by length: log class probabilities
    (single-label), or the raw logits of a multi-label or regression model (see the module's doc)."""
    device = device or next(model.parameters()).device
    # Switched only when needed: transformers' train()/eval() walks every module, about 3 ms a call for
    # MiniLM, a fifth of a single text's time on a 2-core CPU.
    was_training = model.training
    if was_training:
        model.eval()
    normalise = task_of(model.config) == "single_label"
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    for batch_idx in sorted_batches([len(x) for x in ids], batch_size):
        batch = collate([ids[i] for i in batch_idx], pad_id)
        with autocast(device, bf16):
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
        out[batch_idx] = (torch.log_softmax(logits, dim=-1) if normalise else logits).cpu().numpy()
    if was_training:
        model.train()
    return out


def predict_probabilities(model, ids: list[list[int]], pad_id: int, batch_size: int,
                          device: torch.device | None = None, bf16: bool = False,
                          temperature: float = 1.0) -> np.ndarray:
    """Class probabilities for tokenised texts, in input order, with temperature scaling."""
    return softmax_with_temperature(predict_log_probs(model, ids, pad_id, batch_size, device, bf16),
                                    temperature)


def softmax_with_temperature(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    scaled = log_probs / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    e = np.exp(scaled)
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """Each multi-label logit as its label's probability."""
    return 1 / (1 + np.exp(-np.clip(scores, -60, 60)))


def to_values(scores: np.ndarray, task: dict) -> np.ndarray:
    """A regression model's raw outputs (standardised), one column, on the targets' scale: times the run's
    `target_std` plus its `target_mean` (metrics.json's `task`; 1 and 0 when absent). Shape as given."""
    return scores.astype(np.float64) * task.get("target_std", 1.0) + task.get("target_mean", 0.0)


def pool_windows(log_probs: np.ndarray, counts: list[int], normalise: bool = True) -> np.ndarray:
    """One row of scores per text from its windows' rows (`counts[i]` consecutive rows for text i): the
    mean of its windows' logits, as log-probabilities (the log-softmax of it) when `normalise`. Each
    window's log-probabilities are its logits less a constant (their log-sum-exp), which the final
    log-softmax removes, so averaging them is averaging the logits. Raw scores (multi-label logits,
    regression values: `normalise` false) are averaged as they are. A text of one window keeps its row."""
    if all(c == 1 for c in counts):
        return log_probs
    starts = np.cumsum([0, *counts[:-1]])
    mean = np.add.reduceat(log_probs, starts, axis=0) / np.asarray(counts, dtype=np.float32)[:, None]
    pooled = mean - np.logaddexp.reduce(mean, axis=1, keepdims=True) if normalise else mean
    single = np.asarray(counts) == 1
    pooled[single] = log_probs[starts[single]]
    return pooled.astype(np.float32)


def predict_window_log_probs(model, windows: list[list[list[int]]], pad_id: int, batch_size: int,
                             device: torch.device | None = None, bf16: bool = False) -> np.ndarray:
    """Log class probabilities for texts given as their windows (`tunetext.batches.tokenize_windows`),
    one row per text in input order: every window is scored, batched by length with all the others,
    and each text's windows pooled (`pool_windows`)."""
    flat = [seq for text in windows for seq in text]
    log_probs = predict_log_probs(model, flat, pad_id, batch_size, device, bf16)
    return pool_windows(log_probs, [len(text) for text in windows], task_of(model.config) == "single_label")


def iter_log_probs(model, tokenizer, texts: list[str], max_length: int, batch_size: int,
                   bf16: bool = False, template: str | None = None, long_text: LongText | None = None):
    """Yield `(start, log_probs)` for consecutive chunks of `texts`: put into `template` if given,
    tokenised (long texts as `long_text` says, see `tunetext.batches.tokenize_windows`), scored (one row
    per text), released."""
    for start in range(0, len(texts), CHUNK):
        windows = tokenize_windows(tokenizer, texts[start:start + CHUNK], max_length, template, long_text)
        yield start, predict_window_log_probs(model, windows, tokenizer.pad_token_id, batch_size, bf16=bf16)
