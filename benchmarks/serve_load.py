"""How much load `tunetext serve` takes, on PyTorch and on its ONNX int8 export, against a prediction endpoint
written the way tutorials write it.

One run starts the servers on loopback, serving the same run directory, and drives the same bounded load
against each one's `POST /predict` (by default 2,000 requests, one SMS text each, from 32 concurrent
clients on keep-alive connections), after a warm-up. The servers take turns (`--rounds`, default 2, each
round a share of the requests), so that other work starting or stopping on the machine hits all alike.
`--sides` chooses the servers (default all three; `--sides tunetext,baseline` is the older two-way run):

  tunetext       `tunetext serve RUN_DIR --backend torch` with the other defaults: one worker, dynamic
                 batching (32 texts, 5 ms), forward passes of 8 length-sorted texts on cores inference
                 threads, bf16 where the CPU has AMX.
  tunetext_onnx  `tunetext serve RUN_DIR --backend onnx`, the same service on the run's ONNX export (one
                 ONNX Runtime thread per inference thread). Without a usable export the script makes one
                 first (`tunetext export RUN_DIR --quantize int8`): int8 when it passes its accuracy gate.
  baseline       `transformers.pipeline("text-classification", model=RUN_DIR)` called once per request in a
                 plain FastAPI route (`def predict(req)`, so FastAPI runs it in its thread pool), under
                 uvicorn.

Both tunetext servers run with the prediction cache off (`--cache-size 0`). It reports requests/s,
p50/p95/p99 latency and requests per server CPU-second for each side as JSON, and the ratios of
requests/s (wall clock) and of p99. Targets, each with a lower p99 in every round: tunetext at least 3x
the baseline's throughput (`ratios`, `met`); the ONNX server at least 2x tunetext on torch and 6x the
baseline (`ratios_onnx`, `met.onnx`). It also checks that the servers answer with the same labels (the
ONNX server's int8 model may differ on a few: a warning, not a failure) and records the export's checks.

    python benchmarks/serve_load.py                                  # trains runs/serve-bench if missing
    python benchmarks/serve_load.py --run-dir runs/spam --requests 500 --output /tmp/serve_smoke.json
    python benchmarks/serve_load.py --sides tunetext,baseline       # the two-way comparison of issue 11

The load generator is a minimal HTTP/1.1 client on asyncio streams, so that it takes as little as
possible of the CPU the servers share with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from machine import CpuWatch, machine_info, verdict

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RUN = ROOT / "runs" / "serve-bench"
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "serve_load.json"
TRAIN = ["tunetext", "train", "--data", "sms_spam", "--model", "minilm-l6", "--output", str(DEFAULT_RUN),
         "--quiet", "train.epochs=1"]
BACKENDS = {"tunetext": "torch", "tunetext_onnx": "onnx"}  # the tunetext sides, and their --backend
SIDES = [*BACKENDS, "baseline"]
SERVERS = {  # what each side runs, for the JSON's config
    "tunetext": "tunetext serve RUN_DIR --backend torch --cache-size 0, else its defaults (settings in use: "
                "tunetext.server)",
    "tunetext_onnx": "tunetext serve RUN_DIR --backend onnx --cache-size 0, else its defaults (settings in "
                     "use: tunetext_onnx.server; the export's checks: onnx_export)",
    "baseline": "uvicorn + FastAPI sync route calling pipeline('text-classification')"}
TARGET = {"throughput_ratio_min": 3.0, "p99": "tunetext's p99 below the baseline's in every round"}
TARGET_ONNX = {  # the ONNX server's
    "over_torch": {"throughput_ratio_min": 2.0, "p99": "its p99 below tunetext's (torch) in every round"},
    "over_baseline": {"throughput_ratio_min": 6.0, "p99": "its p99 below the baseline's in every round"}}
# Each comparison: where it goes in the JSON (None: the top-level `ratios` and `met` keys, as in older
# results; else under `ratios_onnx` and `met.onnx`), the side expected to be faster, the other side, and
# the throughput ratio it must reach.
COMPARISONS = [
    (None, "tunetext", "baseline", TARGET["throughput_ratio_min"]),
    ("over_torch", "tunetext_onnx", "tunetext", TARGET_ONNX["over_torch"]["throughput_ratio_min"]),
    ("over_baseline", "tunetext_onnx", "baseline", TARGET_ONNX["over_baseline"]["throughput_ratio_min"]),
]

# The baseline, as the tutorials write it; run by this script in a subprocess (see --baseline-server).
BASELINE_APP = '''
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import pipeline

app = FastAPI()
classifier = pipeline("text-classification", model=RUN_DIR)


class PredictRequest(BaseModel):
    text: str


@app.post("/predict")
def predict(request: PredictRequest):
    result = classifier(request.text)[0]
    return {"label": result["label"], "score": result["score"]}
'''


# ---- the servers ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, run_dir: Path, port: int) -> subprocess.Popen:
    if kind in BACKENDS:
        # The prediction cache off: the tutorial endpoint has none, and a load of repeated texts would
        # measure the cache, not the model's serving path.
        cmd = [sys.executable, "-m", "tunetext.cli", "serve", str(run_dir), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--cache-size", "0",
               "--backend", BACKENDS[kind]]
    else:
        cmd = [sys.executable, __file__, "--baseline-server", str(run_dir), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.Popen(cmd, env=env, start_new_session=True)


def wait_ready(port: int, process: subprocess.Popen, path: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the server was not ready after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_baseline_server(run_dir: str, port: int) -> None:
    import uvicorn

    namespace: dict[str, Any] = {"RUN_DIR": run_dir}
    exec(compile(BASELINE_APP, "baseline_app.py", "exec"), namespace)
    uvicorn.run(namespace["app"], host="127.0.0.1", port=port, log_level="warning")


# ---- the load -------------------------------------------------------------------------------------------

async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> tuple[int, bytes]:
    writer.write(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def drive(port: int, bodies: list[bytes], requests: int, concurrency: int,
                max_seconds: float) -> dict[str, Any]:
    """`requests` POSTs from `concurrency` clients, each on its own keep-alive connection; raw results."""
    latencies: list[float] = []
    errors: list[str] = []
    answers: dict[int, dict] = {}
    next_index = 0
    deadline = time.perf_counter() + max_seconds

    async def client() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < requests and time.perf_counter() < deadline:
                i = next_index
                next_index += 1
                start = time.perf_counter()
                try:
                    status, payload = await _post(reader, writer, bodies[i % len(bodies)])
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors.append(f"HTTP {status}: {payload[:200]!r}")
                elif i < len(bodies):
                    answers[i] = json.loads(payload)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return {"latencies": latencies, "errors": errors, "answers": answers, "asked": requests,
            "wall": time.perf_counter() - start}


class Server:
    """One side of the comparison: its process, and what its load phases measured."""

    def __init__(self, kind: str, run_dir: Path):
        self.kind, self.port = kind, free_port()
        print(f"[{kind}] starting on 127.0.0.1:{self.port} ...", flush=True)
        started = time.perf_counter()
        self.process = start_server(kind, run_dir, self.port)
        wait_ready(self.port, self.process, "/ready" if kind in BACKENDS else "/docs")
        self.startup_seconds = time.perf_counter() - started
        self.phases: list[dict[str, Any]] = []

    def load(self, bodies: list[bytes], requests: int, args: argparse.Namespace,
             servers_cpu: Callable[[], float], record: bool = True) -> None:
        """Drive one load phase; `servers_cpu` gives all servers' CPU time so far, so that what they use
        is not taken for other work on the machine."""
        load_before, cpu_before = os.getloadavg()[0], cpu_seconds(self.process.pid)
        both_before, watch = servers_cpu(), CpuWatch()
        raw = asyncio.run(drive(self.port, bodies, requests, args.concurrency, args.max_seconds))
        # CPU the server used: on a machine shared with other work, throughput depends on how much CPU
        # each server gets (one with more runnable threads gets more); requests per CPU-second less so.
        raw["cpu"] = cpu_seconds(self.process.pid) - cpu_before
        raw["quiet"] = watch.stop(running_children_cpu=servers_cpu() - both_before)
        raw["loadavg"] = (load_before, os.getloadavg()[0])
        if record:
            self.phases.append(raw)
            print(f"[{self.kind}] round {len(self.phases)}: {len(raw['latencies']) / raw['wall']:.1f} req/s, "
                  f"p99 {np.percentile(raw['latencies'], 99) * 1000:.0f} ms, {len(raw['errors'])} errors, "
                  f"load average {load_before:.1f}", flush=True)

    def summary(self) -> dict[str, Any]:
        """All rounds pooled: requests over the summed wall time, percentiles over every latency."""
        latencies = np.array([x for p in self.phases for x in p["latencies"]]) * 1000
        errors = [e for p in self.phases for e in p["errors"]]
        wall, cpu = sum(p["wall"] for p in self.phases), sum(p["cpu"] for p in self.phases)
        n = len(latencies)
        return {
            "requests": n, "errors": len(errors), "error_examples": errors[:5],
            "wall_seconds": round(wall, 3),
            "truncated_by_time_limit": any(len(p["latencies"]) + len(p["errors"]) < p["asked"]
                                           for p in self.phases),
            "requests_per_second": round(n / wall, 2),
            "latency_ms": {f"p{q}": round(float(np.percentile(latencies, q)), 2) for q in (50, 95, 99)}
            | {"mean": round(float(latencies.mean()), 2), "max": round(float(latencies.max()), 2)},
            "server_cpu_seconds": round(cpu, 2),
            "requests_per_cpu_second": round(n / cpu, 2) if cpu else None,
            "rounds": [{"requests_per_second": round(len(p["latencies"]) / p["wall"], 2),
                        "p99_ms": round(float(np.percentile(p["latencies"], 99)) * 1000, 2),
                        "loadavg_1min_before": round(p["loadavg"][0], 2), "quiet": p["quiet"]}
                       for p in self.phases],
            "startup_seconds": round(self.startup_seconds, 1),
        }

    def answers(self) -> dict[int, dict]:
        return {i: a for p in self.phases for i, a in p["answers"].items()}

    def stop(self) -> None:
        stop_server(self.process)


def _batch_counts(port: int) -> tuple[int, int]:
    """Batches run and texts in them so far, from the service's own /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
              if line.startswith("tunetext_batch_size_")}
    return int(values.get("tunetext_batch_size_count", 0)), int(values.get("tunetext_batch_size_sum", 0))


def _batch_stats(port: int, after_warmup: tuple[int, int]) -> dict[str, Any]:
    """Batches and texts per batch in the measured rounds (the warm-up's subtracted); serving settings."""
    batches, texts = (now - warm for now, warm in zip(_batch_counts(port), after_warmup, strict=True))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as r:
        serving = json.loads(r.read())["serving"]
    return {"batches": batches, "texts": texts,
            "mean_batch_size": round(texts / batches, 2) if batches else None,
            "inference_threads": serving["threads"], "pass_size": serving["pass_size"],
            "precision": serving["precision"], "max_batch_size": serving["max_batch_size"],
            "max_wait_ms": serving["max_wait_ms"], "backend": serving["backend"],
            "onnx_model": serving["onnx_model"]}


# ---- main -----------------------------------------------------------------------------------------------

def ensure_run(run_dir: Path | None) -> Path:
    from tunetext.runs import is_finished

    if run_dir is not None:
        if not is_finished(run_dir):
            raise SystemExit(f"{run_dir} is not a finished tunetext run")
        return run_dir
    if not is_finished(DEFAULT_RUN):
        print(f"training the benchmark model: {' '.join(TRAIN)}", flush=True)
        subprocess.run(TRAIN + (["--overwrite"] if DEFAULT_RUN.exists() else []), check=True)
    return DEFAULT_RUN


def ensure_export(run_dir: Path) -> dict[str, Any]:
    """The run's ONNX export record, which the ONNX server serves; made first (`tunetext export --quantize
    int8`: int8 where it passes its accuracy gate) when the run has no usable export."""
    from tunetext.backends.onnx import read_record, usable_export

    path, why = usable_export(run_dir)
    if path is None:
        print(f"no usable ONNX export ({why}); making one: tunetext export {run_dir} --quantize int8",
              flush=True)
        done = subprocess.run([sys.executable, "-m", "tunetext.cli", "export", str(run_dir), "--quantize",
                               "int8"], env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode:
            raise SystemExit(f"tunetext export failed (exit code {done.returncode}, its message above): "
                             "the tunetext_onnx side needs the export; leave it out with "
                             "--sides tunetext,baseline")
    record = read_record(run_dir) or {}
    # The CPU's flags and the library versions stay in the record's own file; `machine` has the key ones.
    kept = {k: v for k, v in record.items() if k not in ("cpu", "versions")}
    return kept | {"made_by_this_run": path is None}


def request_bodies(run_dir: Path, limit: int) -> list[bytes]:
    """One body per text of the run's own test split: real SMS messages of realistic lengths."""
    from tunetext.data import load_dataset
    from tunetext.runs import read_run

    config, _, _ = read_run(run_dir)
    texts = load_dataset(config.data).test.texts[:limit]
    return [json.dumps({"text": t}).encode() for t in texts]


def sides_arg(text: str) -> list[str]:
    """`--sides`: two or more of SIDES, comma-separated, in the order they take turns."""
    sides = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in sides if s not in SIDES]
    if unknown or len(set(sides)) != len(sides) or len(sides) < 2:
        raise argparse.ArgumentTypeError(f"expected two or more of {', '.join(SIDES)}, each once; "
                                         f"got {text!r}")
    return sides


# ---- the comparisons ------------------------------------------------------------------------------------

def compare(sides: dict[str, dict[str, Any]], fast: str, slow: str,
            target: float) -> tuple[dict[str, Any], dict[str, bool]]:
    """`fast`'s ratios over `slow`'s (requests/s over requests/s, wall clock; p99; requests per
    CPU-second) and the targets met: the throughput ratio, and a p99 lower in every round, not just
    pooled."""
    f, s = sides[fast], sides[slow]
    p99 = f"p99_{slow}_over_{fast}"
    paired = list(zip(f["rounds"], s["rounds"], strict=True))
    ratios = {"throughput": round(f["requests_per_second"] / s["requests_per_second"], 2),
              p99: round(s["latency_ms"]["p99"] / f["latency_ms"]["p99"], 2),
              "requests_per_cpu_second": round(f["requests_per_cpu_second"] / s["requests_per_cpu_second"], 2)
              if f["requests_per_cpu_second"] and s["requests_per_cpu_second"] else None,
              f"{p99}_per_round": [round(theirs["p99_ms"] / ours["p99_ms"], 2) for ours, theirs in paired]}
    met = {"throughput": ratios["throughput"] >= target,
           "p99": all(ours["p99_ms"] < theirs["p99_ms"] for ours, theirs in paired),
           "p99_pooled": f["latency_ms"]["p99"] < s["latency_ms"]["p99"]}
    return ratios, met | {"all": met["throughput"] and met["p99"]}


def label_agreement(ours: dict[int, dict], theirs: dict[int, dict]) -> float | None:
    """Share of the texts both servers answered on which their labels agree. Only labels: tunetext's
    scores are temperature-calibrated, and int8's are rounded."""
    both = sorted(set(ours) & set(theirs))
    return sum(ours[i]["label"] == theirs[i]["label"] for i in both) / len(both) if both else None


def judge(sides: dict[str, dict[str, Any]], answers: dict[str, dict[int, dict]]) -> list[dict[str, Any]]:
    """Every comparison of COMPARISONS whose two sides ran: its ratios, targets met and label agreement."""
    judged = []
    for key, fast, slow, target in COMPARISONS:
        if fast in sides and slow in sides:
            ratios, met = compare(sides, fast, slow, target)
            judged.append({"key": key, "fast": fast, "slow": slow, "target": target, "ratios": ratios,
                           "met": met, "label_agreement": label_agreement(answers[fast], answers[slow])})
    return judged


def placed(judged: list[dict[str, Any]]) -> dict[str, Any]:
    """The comparisons under their JSON keys: tunetext over the baseline at the top level, as in older
    results; the ONNX server's under `ratios_onnx`, `met.onnx` and `label_agreement_onnx`. `met.all`:
    every comparison met its targets."""
    out: dict[str, Any] = {"label_agreement": None, "label_agreement_onnx": {}, "ratios": {},
                           "ratios_onnx": {}, "met": {}}
    met_onnx = {}
    for c in judged:
        if c["key"] is None:
            out["ratios"], out["label_agreement"] = c["ratios"], c["label_agreement"]
            out["met"].update(c["met"])
        else:
            out["ratios_onnx"][c["key"]], met_onnx[c["key"]] = c["ratios"], c["met"]
            out["label_agreement_onnx"][c["key"]] = c["label_agreement"]
    out["met"] |= {"onnx": met_onnx, "all": all(c["met"]["all"] for c in judged)}
    return out


def find_warnings(sides: dict[str, dict[str, Any]], judged: list[dict[str, Any]],
                  export: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """(indicative, warnings): a busy machine, errors, cut-short phases, labels that differ, and an ONNX
    server that did not run the int8 model the targets are about."""
    from tunetext.backends.onnx import INT8

    indicative, warnings = verdict([r["quiet"] for side in sides.values() for r in side["rounds"]])
    if any(side["errors"] for side in sides.values()):
        warnings.append("errors: " + ", ".join(f"{kind} {side['errors']}" for kind, side in sides.items()))
    if any(side["truncated_by_time_limit"] for side in sides.values()):
        warnings.append("a load phase hit --max-seconds; fewer requests were measured")
    for c in judged:
        if (agreement := c["label_agreement"]) is not None and agreement < 1:
            warnings.append(f"{c['fast']} and {c['slow']} disagree on {1 - agreement:.1%} of labels")
    if export is not None and (served := sides["tunetext_onnx"]["server"]["onnx_model"]) != INT8:
        warnings.append(f"the ONNX server ran {served}, not the int8 model the targets are about (the "
                        f"export chose {export.get('chosen')}: {export.get('reason')})")
    return indicative, warnings


def print_summary(sides: dict[str, dict[str, Any]], judged: list[dict[str, Any]],
                  warnings: list[str]) -> None:
    print(f"\n{'':<15}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}{'req/CPU-s':>11}")
    for kind, side in sides.items():
        lat = side["latency_ms"]
        print(f"{kind:<15}{side['requests_per_second']:>10.1f}{lat['p50']:>10.1f}{lat['p95']:>10.1f}"
              f"{lat['p99']:>10.1f}{side['errors']:>8d}{side['requests_per_cpu_second'] or 0:>11.1f}")
    print()
    for c in judged:
        ratios, fast, slow = c["ratios"], c["fast"], c["slow"]
        print(f"{fast} over {slow}: throughput {ratios['throughput']:.2f}x (target >= {c['target']}x), "
              f"p99 {ratios[f'p99_{slow}_over_{fast}']:.2f}x lower "
              f"({'' if c['met']['p99'] else 'not '}lower in every round)"
              + (f", {ratios['requests_per_cpu_second']:.2f}x the requests per CPU-second"
                 if ratios["requests_per_cpu_second"] else "")
              + ("" if c["label_agreement"] is None else f"; labels agree on {c['label_agreement']:.1%}"))
    for kind in BACKENDS:
        if "server" in sides.get(kind, {}):
            server = sides[kind]["server"]
            model = server["precision"] if server["backend"] == "torch" else f"ONNX {server['onnx_model']}"
            print(f"{kind} ran {server['batches']} batches, {server['mean_batch_size']} texts each on "
                  f"average, in passes of {server['pass_size']} on {server['inference_threads']} inference "
                  f"thread(s), {model}")
    for w in warnings:
        print(f"warning: {w}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help=f"finished run to serve (default: {DEFAULT_RUN}, "
                        "trained first if missing)")
    parser.add_argument("--sides", type=sides_arg, default=",".join(SIDES),
                        help=f"the servers to compare, comma-separated (default: {','.join(SIDES)})")
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per server")
    parser.add_argument("--rounds", type=int, default=2, help="the servers take turns this many times, "
                        "sharing the requests")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent clients")
    parser.add_argument("--warmup", type=int, default=200, help="requests before measuring")
    parser.add_argument("--max-seconds", type=float, default=300, help="time limit for each load phase")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--baseline-server", help=argparse.SUPPRESS)  # internal: run the baseline app
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline_server(args.baseline_server, args.port)
        return 0

    from tunetext.runs import read_run

    run_dir = ensure_run(args.run_dir)
    export = ensure_export(run_dir) if "tunetext_onnx" in args.sides else None
    bodies = request_bodies(run_dir, limit=1000)
    print(f"{len(bodies)} distinct texts from the run's test split", flush=True)
    # All servers stay up (an idle one costs no CPU) and take turns, so that a change in what else runs
    # on the machine affects every side alike.
    machine = machine_info()
    servers: dict[str, Server] = {}

    def servers_cpu() -> float:
        return sum(cpu_seconds(s.process.pid) for s in servers.values())

    try:
        for kind in args.sides:
            servers[kind] = Server(kind, run_dir)
        per_round = -(-args.requests // args.rounds)
        for server in servers.values():
            server.load(bodies, args.warmup, args, servers_cpu, record=False)
        warm_counts = {kind: _batch_counts(s.port) for kind, s in servers.items() if kind in BACKENDS}
        for _ in range(args.rounds):
            for server in servers.values():
                server.load(bodies, per_round, args, servers_cpu)
        sides = {kind: server.summary() for kind, server in servers.items()}
        for kind, counts in warm_counts.items():
            sides[kind]["server"] = _batch_stats(servers[kind].port, counts)
        answers = {kind: server.answers() for kind, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    judged = judge(sides, answers)
    indicative, warnings = find_warnings(sides, judged, export)
    result = {
        "benchmark": "serve_load",
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "indicative": indicative,
        "machine": machine,
        "config": {"run_dir": str(run_dir), "model": read_run(run_dir)[0].model.name, "sides": args.sides,
                   "requests": args.requests, "rounds": args.rounds, "concurrency": args.concurrency,
                   "warmup": args.warmup,
                   "distinct_texts": len(bodies), "max_seconds": args.max_seconds}
        | {f"{kind}_server": SERVERS[kind] for kind in args.sides},
        **sides,
        **({"onnx_export": export} if export is not None else {}),
        **placed(judged),
        "target": TARGET, "target_onnx": TARGET_ONNX,
        "warnings": warnings,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print_summary(sides, judged, warnings)
    print(f"written to {args.output}")
    return 0 if result["met"]["all"] and not any(side["errors"] for side in sides.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
