"""Eager attention against PyTorch's fused kernel (`sdpa`) for training on a CPU: why `model.attention=auto`
picks eager there.

One model is loaded twice, once with each kernel, from the same weights. Both train on the same batches:
the sms_spam training split (tunetext's default preparation), tokenised to 256 tokens at most,
length-grouped into batches of 32 as `train()` makes them, in fp32 and, where the CPU has bf16 units
(AMX, or AVX512-BF16 as on AMD Zen 4), under bf16 autocast too: `precision=auto` picks bf16 only with
AMX, but `train.precision=bf16` runs it anywhere. A training step (forward, backward, AdamW step) is timed
for each kernel in turn, batch by batch, alternating which goes first, after a few warm-up steps. The
result is the time per step of each kernel and the ratio sdpa / eager of their summed step times (loop
time: nothing but the steps is timed).

    python benchmarks/attention.py                   # about 3 minutes on 2 cores
    python benchmarks/attention.py --model PATH --data FILE.csv --steps 4 --output /tmp/attn.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, cpu_flags, machine_info, verdict

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "attention.json"
KERNELS = ("eager", "sdpa")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from tunetext import load_config
    from tunetext.batches import collate, length_grouped_batches, tokenize
    from tunetext.data import load_dataset
    from tunetext.inference import autocast
    from tunetext.models import load_classifier

    overrides: dict[str, Any] = {"model.name": args.model}
    if args.data:
        overrides["data.source"] = args.data
    config = load_config(overrides=overrides)
    data = load_dataset(config.data)
    models, tokenizer = {}, None
    for kernel in KERNELS:
        torch.manual_seed(0)  # the same new head for both
        models[kernel], tokenizer, _ = load_classifier(config.model.name, data.label_names, attention=kernel)
    ids = tokenize(tokenizer, data.train.texts, config.model.max_length)
    batches = length_grouped_batches([len(x) for x in ids], config.train.batch_size, seed=0)
    batches = batches[: args.warmup + args.steps]
    flags = cpu_flags()
    precisions = ["fp32"] + (["bf16"] if {"amx_bf16", "avx512_bf16"} & flags else [])
    result: dict[str, Any] = {"batches": len(batches) - args.warmup, "batch_size": config.train.batch_size,
                              "mean_tokens": sum(len(ids[i]) for b in batches for i in b)
                              / sum(len(b) for b in batches)}
    for precision in precisions:
        seconds = {k: 0.0 for k in KERNELS}
        optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}
        watch = CpuWatch()
        for n, idx in enumerate(batches):
            labels = [data.train.labels[i] for i in idx]
            batch = collate([ids[i] for i in idx], tokenizer.pad_token_id, labels)
            for kernel in (KERNELS if n % 2 == 0 else KERNELS[::-1]):
                model, optimizer = models[kernel], optimizers[kernel]
                model.train()
                start = time.perf_counter()
                with autocast(torch.device("cpu"), precision == "bf16"):
                    loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if n >= args.warmup:
                    seconds[kernel] += time.perf_counter() - start
        steps = len(batches) - args.warmup
        result[precision] = {"seconds_per_step": {k: s / steps for k, s in seconds.items()},
                             "sdpa_over_eager_loop": seconds["sdpa"] / seconds["eager"],
                             "quiet": watch.stop()}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--data", help="data source instead of tunetext's default (sms_spam)")
    parser.add_argument("--steps", type=int, default=60, help="timed steps per kernel (default 60)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    machine = machine_info()
    result = measure(args)
    stretches = [result[p]["quiet"] for p in ("fp32", "bf16") if p in result]
    indicative, warnings = verdict(stretches)
    report = {"benchmark": "attention", "command": "python benchmarks/attention.py " + " ".join(sys.argv[1:]),
              "indicative": indicative, "machine": machine, "model": args.model, **result,
              "ratio": "sdpa_over_eager_loop: summed step time with sdpa over eager (loop time)",
              "warnings": warnings}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    for precision in ("fp32", "bf16"):
        if precision in result:
            r = result[precision]
            per_step = r["seconds_per_step"]
            print(f"{precision}: eager {1000 * per_step['eager']:.1f} ms/step, "
                  f"sdpa {1000 * per_step['sdpa']:.1f} ms/step: sdpa/eager {r['sdpa_over_eager_loop']:.2f}x "
                  "(loop time)")
    for w in warnings:
        print(f"warning: {w}")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
