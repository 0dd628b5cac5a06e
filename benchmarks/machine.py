"""What every benchmark records about its machine, and whether anything else used the CPU while it ran.

A timing taken while other work shares two cores measures the other work as much as the code. Each
benchmark wraps its measured part in a `CpuWatch`: the kernel's count of busy CPU time (/proc/stat) minus
the CPU time of the benchmark's own process and its finished children is what the rest of the machine
used. Above `BUSY_SHARE` of the cores' capacity the result is written with `"indicative": true` and a
warning, and quoting it as a measurement is wrong; rerun it on a quiet machine.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path
from typing import Any

# Other work may take this share of all cores' time before a result is only indicative. Daemons, the
# shell and the load generator's own kernel time on an idle machine stay well under it.
BUSY_SHARE = 0.05
# The CPU flags that decide which kernels and precisions run: bf16 and int8 matrix units and vector sets.
KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first core's entry
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())


def machine_info() -> dict[str, Any]:
    """The CPU (model, flags), the libraries' versions, thread settings and the load before measuring."""
    import accelerate
    import torch
    import transformers

    import tunetext

    info = _cpuinfo()
    flags = info.get("flags", "").split()
    return {
        "cpu": info.get("model name") or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "key_flags": {flag: flag in flags for flag in KEY_FLAGS},
        "amx_bf16": "amx_bf16" in flags,
        # what precision=auto chose on this CPU (AMX, or AVX512-BF16 and the probe measuring it faster)
        "auto_bf16_cpu": _auto_bf16_cpu(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "flags": " ".join(flags),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "tunetext": tunetext.__version__,
    }


def _auto_bf16_cpu() -> bool:
    import torch

    from tunetext.precision import use_bf16

    return use_bf16("auto", torch.device("cpu"))


def _busy_seconds() -> float:
    """CPU time every core has spent on anything but idling, since boot (Linux; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU time of this process and of every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuWatch:
    """How much CPU the rest of the machine used between `start()` and `stop()`.

    Children must have been waited for by `stop()`, or their CPU time counts as other work (which errs on
    the side of calling the machine busy).
    """

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self._wall, self._busy, self._own = time.perf_counter(), _busy_seconds(), _own_seconds()
        self._load = os.getloadavg()[0]

    def stop(self, running_children_cpu: float = 0.0) -> dict[str, Any]:
        """`running_children_cpu`: CPU seconds that children still running (servers) used meanwhile."""
        wall = time.perf_counter() - self._wall
        own = _own_seconds() - self._own + running_children_cpu
        other = max(0.0, (_busy_seconds() - self._busy) - own)
        share = other / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
        return {"wall_seconds": round(wall, 2), "other_cpu_seconds": round(other, 2),
                "other_share": round(share, 4), "busy": share > BUSY_SHARE,
                "loadavg_1min": {"before": round(self._load, 2), "after": round(os.getloadavg()[0], 2)}}


def verdict(watches: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """(indicative, warnings) for a result from its measured stretches."""
    busy = [w for w in watches if w["busy"]]
    if not busy:
        return False, []
    worst = max(w["other_share"] for w in busy)
    return True, [f"other work used up to {worst:.0%} of the CPU during {len(busy)} of {len(watches)} "
                  f"measured stretches (threshold {BUSY_SHARE:.0%}): this result is indicative only; "
                  "rerun it on a quiet machine"]
