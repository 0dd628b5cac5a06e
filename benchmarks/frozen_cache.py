"""`last_n` with and without the frozen-prefix cache, timed so that machine load cannot skew the ratio.

Two whole training runs on a shared machine compare two stretches of time with different load. This runs
one epoch of real batches (minilm-l6, the sms_spam train split, batch 32, length-grouped, bf16 autocast
as `train()` picks it on an AMX CPU), each batch through the whole model and through the cached top
alternately (same optimizer, alternating which goes first), plus one cache build as `train()` makes it,
and projects 5 epochs: off = 5 x whole-model epoch, on = build + 5 x cached epoch. Wall and CPU time.

    python benchmarks/frozen_cache.py        # about 10 minutes on 2 cores
"""

from __future__ import annotations

import time

import torch

from tunetext import load_config
from tunetext.batches import collate, length_grouped_batches, tokenize
from tunetext.data import load_dataset
from tunetext.models import blocks, forward_top, load_classifier, train_mode
from tunetext.prefix_cache import build, collate_hidden
from tunetext.strategies import apply_strategy


def main() -> None:
    config = load_config(overrides=["train.strategy=last_n", "train.last_n=1"])
    tc = config.train
    dataset = load_dataset(config.data)
    model, tokenizer, family = load_classifier(config.model.name, dataset.label_names)
    apply_strategy(model, family, tc.strategy, tc.last_n)
    train_mode(model, family, tc.strategy, tc.last_n)
    n_frozen = len(blocks(model, family)) - tc.last_n
    ids = tokenize(tokenizer, dataset.train.texts, config.model.max_length)
    batches = length_grouped_batches([len(x) for x in ids], tc.batch_size, tc.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    wall, cpu = time.perf_counter(), time.process_time()
    with autocast():
        cache = build(model, family, ids, tokenizer.pad_token_id, n_frozen, tc.eval_batch_size,
                      torch.device("cpu"))
    build_wall, build_cpu = time.perf_counter() - wall, time.process_time() - cpu

    walls = {"whole": 0.0, "cached": 0.0}
    cpus = {"whole": 0.0, "cached": 0.0}
    for k, idx in enumerate(batches):
        labels = torch.tensor([dataset.train.labels[i] for i in idx])
        for mode in ("whole", "cached") if k % 2 else ("cached", "whole"):
            wall, cpu = time.perf_counter(), time.process_time()
            batch = collate([ids[i] for i in idx], tokenizer.pad_token_id)
            with autocast():
                if mode == "whole":
                    logits = model(**batch).logits
                else:
                    logits = forward_top(model, collate_hidden([cache[i] for i in idx]), batch["input_ids"],
                                         batch["attention_mask"], n_frozen)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            walls[mode] += time.perf_counter() - wall
            cpus[mode] += time.process_time() - cpu

    print(f"one epoch ({len(batches)} batches): whole model {walls['whole']:.1f} s wall / "
          f"{cpus['whole']:.1f} s CPU; cached top {walls['cached']:.1f} s wall / {cpus['cached']:.1f} s CPU; "
          f"cache build {build_wall:.1f} s wall / {build_cpu:.1f} s CPU")
    for name, t, b in (("wall", walls, build_wall), ("cpu", cpus, build_cpu)):
        off, on = 5 * t["whole"], b + 5 * t["cached"]
        print(f"{name}: per-epoch ratio {t['whole'] / t['cached']:.2f}; 5 epochs: off {off:.0f} s, "
              f"on {on:.0f} s, speed-up {off / on:.2f}x")

if __name__ == "__main__":
    main()
