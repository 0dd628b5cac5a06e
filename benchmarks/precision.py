"""bf16 autocast against fp32 on this CPU: a training step and an inference batch of MiniLM-L6, and what
`precision: auto` chose here.

The same batch (32 texts of 48 tokens, random token ids, as in the probe that motivated the rule) runs
both ways in alternating rounds after a warm-up; each way's best round counts. `train_fp32_over_bf16`
above 1 means bf16 is faster per training step (loop time of one step: forward, backward, optimizer).
Beside it: `tunetext.precision`'s own probe (a feed-forward layer, what `auto` decides by) and the
decision.

    python benchmarks/precision.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--output", type=Path, default=RESULTS / "precision.json")
    args = parser.parse_args(argv)

    import torch

    from tunetext.models import load_classifier
    from tunetext.precision import MIN_SPEEDUP, _measure_speedup, cpu_has_amx, cpu_has_avx512_bf16, use_bf16

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model, _, _ = load_classifier(args.model, ["a", "b"], "eager", cpu)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab // 2), min(20000, vocab), (args.batch, args.tokens))
    labels = torch.randint(0, 2, (args.batch,))

    def train_step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    @torch.no_grad()
    def inference(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids)
        return time.perf_counter() - start

    result: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "machine": machine_info(),
                              "model": args.model, "batch": args.batch, "tokens": args.tokens}
    watch = CpuWatch()
    for name, fn in (("train", train_step), ("inference", inference)):
        best = {"fp32": float("inf"), "bf16": float("inf")}
        for bf16 in (False, True):
            fn(bf16)
            fn(bf16)
        for _ in range(args.rounds):
            for way, bf16 in (("fp32", False), ("bf16", True)):
                best[way] = min(best[way], fn(bf16))
        result[name] = {"seconds": best, "fp32_over_bf16": best["fp32"] / best["bf16"]}
    probe = _measure_speedup()
    quiet = watch.stop()
    result.update(
        train_fp32_over_bf16=result["train"]["fp32_over_bf16"],
        inference_fp32_over_bf16=result["inference"]["fp32_over_bf16"],
        probe_fp32_over_bf16=probe, probe_min_speedup=MIN_SPEEDUP,
        cpu_has_amx=cpu_has_amx(), cpu_has_avx512_bf16=cpu_has_avx512_bf16(),
        auto_chose="bf16" if use_bf16("auto", cpu) else "fp32", quiet=quiet)
    result["indicative"], result["warnings"] = verdict([quiet])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"train step fp32/bf16 {result['train_fp32_over_bf16']:.2f}x, inference "
          f"{result['inference_fp32_over_bf16']:.2f}x, probe {probe:.2f}x: auto chose {result['auto_chose']}")


if __name__ == "__main__":
    main()
