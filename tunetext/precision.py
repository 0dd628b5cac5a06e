"""Which precision `auto` means on this machine: bfloat16 autocast where it runs faster, else fp32.

On CUDA, bf16 wherever the GPU supports it. On a CPU the answer depends on more than the instruction
set: Intel CPUs with AMX tiles run bf16 matrix products several times faster than fp32; AMD Zen 4
(AVX512-BF16, no AMX) measured 1.95x faster per MiniLM training step (issue 14's figure, not measured
here); but an Intel Xeon reporting AVX512-BF16 without AMX (a virtual machine that hides the tiles)
measured bf16 *slower*, 0.67x per training step (benchmarks/results/precision.json). So where the CPU
has AVX512-BF16 but no AMX, a short probe times a transformer feed-forward layer both ways, once per
machine, and keeps the answer in the tunetext cache (`precision.json`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import cache
from pathlib import Path

import torch

from tunetext.assets import cache_dir

log = logging.getLogger(__name__)

PROBE_FILE = "precision.json"
PROBE_ROUNDS = 5
# bf16 must win clearly: below this speed-up the rounding costs accuracy for too little time.
MIN_SPEEDUP = 1.15


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later), through torch's public
    `torch.cpu.get_capabilities()`."""
    return bool(torch.cpu.get_capabilities().get("amx_tile", False))


def cpu_has_avx512_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake and later)."""
    return bool(torch.cpu.get_capabilities().get("avx512_bf16", False))


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether `precision` (`auto`, `bf16` or `fp32`) means bfloat16 autocast on `device`."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if cpu_has_amx():
        return True
    return cpu_has_avx512_bf16() and cpu_bf16_speedup() >= MIN_SPEEDUP


@cache
def cpu_bf16_speedup() -> float:
    """fp32 time over bf16-autocast time for a MiniLM-sized feed-forward layer, forward and backward, on
    this CPU with this torch and thread count: measured once (a second or two), then read from the
    cache."""
    key = _machine_key()
    path = cache_dir() / PROBE_FILE
    known = _read_probes(path)
    if isinstance(known.get(key), int | float):
        return float(known[key])
    speedup = _measure_speedup()
    log.info("precision: bf16 autocast measured %.2fx the speed of fp32 on this CPU (%s); auto uses %s",
             speedup, key, "bf16" if speedup >= MIN_SPEEDUP else "fp32")
    _write_probe(path, known, key, speedup)
    return speedup


def _machine_key() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read_probes(path: Path) -> dict:
    """Earlier answers; a missing, unreadable or corrupted file (tunetext's own) counts as none."""
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write_probe(path: Path, known: dict, key: str, speedup: float) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{PROBE_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: round(speedup, 3)}, indent=1))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache only means measuring again next time
        log.debug("precision: could not cache the bf16 probe in %s: %s", path, e)


def _measure_speedup() -> float:
    """Interleaved rounds of the same layer in fp32 and under bf16 autocast; the best time of each."""
    generator = torch.Generator().manual_seed(0)
    # A MiniLM-L6 feed-forward block on a batch of 32 texts of 48 tokens: 1536 rows, 384 -> 1536 -> 384.
    x = torch.randn(1536, 384, generator=generator)
    w1 = torch.randn(1536, 384, generator=generator).div_(20).requires_grad_()
    w2 = torch.randn(384, 1536, generator=generator).div_(40).requires_grad_()

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, w1)), w2)
        out.float().square().mean().backward()
        w1.grad = w2.grad = None
        return time.perf_counter() - start

    best = {False: float("inf"), True: float("inf")}
    for bf16 in (False, True):  # warm-up: oneDNN builds its kernels on first use
        step(bf16)
    for _ in range(PROBE_ROUNDS):
        for bf16 in (False, True):
            best[bf16] = min(best[bf16], sum(step(bf16) for _ in range(3)))
    return best[False] / best[True]
