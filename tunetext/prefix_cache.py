"""Frozen-prefix caching for `train.strategy=last_n`.

Under `last_n` the embeddings and all but the last N blocks are frozen, and they run in eval mode
(`models.train_mode`), so their output for a training text is the same at every step of every epoch.
With the cache on, training computes that output once per text (`build`), keeps it in memory at the
text's own length, and each step runs only the top blocks, final norm and head from it
(`models.forward_top`). The result is that of the uncached path up to float rounding: the same weights
make the same numbers, only batched in different shapes. Validation and test still run the whole model.

The cache holds what the prefix produces, unconverted: float32 for float32 weights, also under bf16
autocast (each block ends in a float32 residual add or LayerNorm), so the top blocks see exactly the
values they would see uncached. Storing bfloat16 would halve the memory but round those values.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from accelerate import Accelerator

from tunetext.batches import collate, sorted_batches
from tunetext.config import TrainConfig
from tunetext.models import (
    Family,
    PrefixCacheUnsupported,
    blocks,
    encode_prefix,
    forward_top,
    frozen_prefix_modules,
    prefix_split,
)

log = logging.getLogger(__name__)


def decide(choice: str, strategy: str, model, num_processes: int, lengths: list[int],
           device: torch.device) -> tuple[bool, str]:
    """Whether a run caches its frozen prefix (`train.cache_frozen` is `choice`), and why, for the log.

    `auto` caches under `last_n` when the model class has a prefix/top split, the run is one process and
    the cache of texts with these token `lengths` fits in half the free memory of `device`. `on` caches
    whatever the memory, and raises `PrefixCacheUnsupported` naming the reason where it cannot cache.
    """
    if choice == "off":
        return False, "off (train.cache_frozen=off)"
    if strategy != "last_n":
        return False, f"off (strategy {strategy} freezes no prefix)"
    reason = why_not_split(model, num_processes)
    if reason is None:
        need, free = size_bytes(lengths, model), free_bytes(device)
        size = f"{len(lengths)} texts, {need / 2**20:.0f} MiB"
        if choice == "on" or need <= free // 2:
            return True, f"on (train.cache_frozen={choice}; {size} on {device.type})"
        return False, (f"off: the cache ({size}) would take more than half the {free / 2**20:.0f} MiB "
                       f"free on {device.type}; train.cache_frozen=on caches anyway")
    if choice == "on":
        raise PrefixCacheUnsupported(f"train.cache_frozen=on: {reason}. Use train.cache_frozen=auto "
                                     "(caches where it can) or off")
    return False, f"off: {reason}"


def why_not_split(model, num_processes: int) -> str | None:
    """Why training cannot run this model as frozen prefix + top (cached or not), or None where it can."""
    try:
        prefix_split(model)
    except PrefixCacheUnsupported as exc:
        return str(exc)
    if num_processes != 1:
        # The top would run outside DistributedDataParallel's forward, which gradient syncing relies on.
        return (f"training runs in {num_processes} processes, where the top blocks cannot run from "
                "cached hidden states, so the frozen prefix runs at every step")
    return None


def size_bytes(lengths: list[int], model) -> int:
    """Memory the cache of texts with these token counts takes: one float32 vector per token."""
    return sum(lengths) * model.config.get_text_config().hidden_size * 4


def free_bytes(device: torch.device) -> int:
    """Memory free for the cache on `device`: free GPU memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@torch.no_grad()
def build(model, family, ids: list[list[int]], pad_id: int, n_frozen: int, batch_size: int,
          device: torch.device) -> list[torch.Tensor]:
    """The hidden state after the frozen prefix for each of `ids`, `[length, hidden]` at the text's own
    length, computed in batches of similar length. Run it under the training autocast."""
    assert not any(m.training for m in frozen_prefix_modules(model, family, n_frozen)), \
        "the frozen prefix must be in eval mode (models.train_mode) for its output to be cached"
    cache: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    for idx in sorted_batches([len(x) for x in ids], batch_size):
        batch = collate([ids[i] for i in idx], pad_id)
        hidden = encode_prefix(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                               n_frozen)
        for row, i in enumerate(idx):
            cache[i] = hidden[row, :len(ids[i])].clone()  # a copy: a view would keep the padded batch
    return cache


def collate_hidden(hidden: list[torch.Tensor]) -> torch.Tensor:
    """Cached hidden states right-padded with zeros to the longest, `[batch, length, hidden]`, matching
    `batches.collate` of the same texts' token ids."""
    return torch.nn.utils.rnn.pad_sequence(hidden, batch_first=True)


def choose_forward(model: Any, inner: Any, family: Family, tc: TrainConfig, accelerator: Accelerator,
                    train_ids: list[list[int]], pad_id: int, device: torch.device
                    ) -> tuple[Callable[[dict[str, torch.Tensor]], torch.Tensor], list[torch.Tensor] | None,
                               float]:
    """How a training step runs the model: (forward, the frozen prefix's cached outputs or None, seconds
    spent building them). Cached last_n runs only the top blocks on the cache; uncached last_n runs the
    frozen prefix without autograd and then the same top; every other strategy runs the whole model, as
    transformers runs it."""
    cached, why = decide(tc.cache_frozen, tc.strategy, inner, accelerator.num_processes,
                                      [len(x) for x in train_ids], device)
    log.info("frozen-prefix cache: %s", why)
    n_frozen = len(blocks(inner, family)) - tc.last_n
    if cached:  # recomputed on resume: one pass of the frozen layers over the training set
        start = time.perf_counter()
        # In training-sized batches: on a CPU, batches of 128 took 30-60% longer than 32 for the same texts.
        with accelerator.autocast():
            hidden_cache = build(inner, family, train_ids, pad_id, n_frozen, tc.batch_size,
                                              device)
        return partial(_top_forward, inner, n_frozen, accelerator), hidden_cache, time.perf_counter() - start
    if tc.strategy == "last_n" and why_not_split(inner, accelerator.num_processes) is None:
        return partial(_prefix_and_top_forward, inner, n_frozen, accelerator), None, 0.0
    return partial(_full_forward, model), None, 0.0


def _full_forward(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _top_forward(inner: Any, n_frozen: int, accelerator: Accelerator, batch: dict[str, torch.Tensor]
                 ) -> torch.Tensor:
    with accelerator.autocast():
        return forward_top(inner, batch["hidden"], batch["input_ids"], batch["attention_mask"], n_frozen)


def _prefix_and_top_forward(inner: Any, n_frozen: int, accelerator: Accelerator,
                            batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Uncached last_n: the frozen prefix at every step, then the very top the cached path runs, so the two
    take the same steps; the prefix needs no autograd graph."""
    with torch.no_grad(), accelerator.autocast():
        hidden = encode_prefix(inner, batch["input_ids"], batch["attention_mask"], n_frozen)
    return _top_forward(inner, n_frozen, accelerator, batch | {"hidden": hidden})
