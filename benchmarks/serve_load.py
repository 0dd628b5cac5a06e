"""How much load `tunetext serve` takes, against a prediction endpoint written the way tutorials write it.

One run starts both servers on loopback, serving the same run directory, and drives the same bounded
load against each one's `POST /predict` (by default 2,000 requests, one SMS text each, from 32 concurrent
clients on keep-alive connections), after a warm-up. The servers take turns (`--rounds`, default 2, each
round a share of the requests), so that other work starting or stopping on the machine hits both alike.

  tunetext   `tunetext serve RUN_DIR` with its defaults: one worker, dynamic batching (32 texts, 5 ms),
             forward passes of 8 length-sorted texts on cores inference threads, bf16 where the CPU has
             AMX.
  baseline   `transformers.pipeline("text-classification", model=RUN_DIR)` called once per request in a
             plain FastAPI route (`def predict(req)`, so FastAPI runs it in its thread pool), under uvicorn.

It reports requests/s, p50/p95/p99 latency and requests per server CPU-second for both as JSON, and the
ratios. Target: tunetext at least 3x the baseline's throughput, with a lower p99. It also checks that
both answer with the same labels.

    python benchmarks/serve_load.py                                  # trains runs/serve-bench if missing
    python benchmarks/serve_load.py --run-dir runs/spam --requests 500 --output /tmp/serve_smoke.json

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
TARGET = {"throughput_ratio_min": 3.0, "p99": "tunetext's p99 below the baseline's in every round"}

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
    if kind == "tunetext":
        # The prediction cache off: the tutorial endpoint has none, and a load of repeated texts would
        # measure the cache, not the model's serving path.
        cmd = [sys.executable, "-m", "tunetext.cli", "serve", str(run_dir), "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--cache-size", "0"]
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
        wait_ready(self.port, self.process, "/ready" if kind == "tunetext" else "/docs")
        self.startup_seconds = time.perf_counter() - started
        self.phases: list[dict[str, Any]] = []

    def load(self, bodies: list[bytes], requests: int, args: argparse.Namespace,
             servers_cpu: Callable[[], float], record: bool = True) -> None:
        """Drive one load phase; `servers_cpu` gives both servers' CPU time so far, so that what they use
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
            "max_wait_ms": serving["max_wait_ms"]}


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


def request_bodies(run_dir: Path, limit: int) -> list[bytes]:
    """One body per text of the run's own test split: real SMS messages of realistic lengths."""
    from tunetext.data import load_dataset
    from tunetext.runs import read_run

    config, _, _ = read_run(run_dir)
    texts = load_dataset(config.data).test.texts[:limit]
    return [json.dumps({"text": t}).encode() for t in texts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help=f"finished run to serve (default: {DEFAULT_RUN}, "
                        "trained first if missing)")
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
    bodies = request_bodies(run_dir, limit=1000)
    print(f"{len(bodies)} distinct texts from the run's test split", flush=True)
    # Both servers stay up (an idle one costs no CPU) and take turns, so that a change in what else runs
    # on the machine affects both sides alike.
    machine = machine_info()
    servers = {kind: Server(kind, run_dir) for kind in ("tunetext", "baseline")}

    def servers_cpu() -> float:
        return sum(cpu_seconds(s.process.pid) for s in servers.values())

    try:
        per_round = -(-args.requests // args.rounds)
        for server in servers.values():
            server.load(bodies, args.warmup, args, servers_cpu, record=False)
        warm_counts = _batch_counts(servers["tunetext"].port)
        for _ in range(args.rounds):
            for server in servers.values():
                server.load(bodies, per_round, args, servers_cpu)
        sides = {kind: server.summary() for kind, server in servers.items()}
        sides["tunetext"]["server"] = _batch_stats(servers["tunetext"].port, warm_counts)
        answers = {kind: server.answers() for kind, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()

    # Same model on both sides: the labels must agree (tunetext's scores are temperature-calibrated, so
    # only the labels are compared).
    ours, theirs = answers["tunetext"], answers["baseline"]
    both = sorted(set(ours) & set(theirs))
    agreement = sum(ours[i]["label"] == theirs[i]["label"] for i in both) / len(both) if both else None

    t, b = sides["tunetext"], sides["baseline"]
    ratios = {"throughput": round(t["requests_per_second"] / b["requests_per_second"], 2),
              "p99_baseline_over_tunetext": round(b["latency_ms"]["p99"] / t["latency_ms"]["p99"], 2),
              "requests_per_cpu_second": round(t["requests_per_cpu_second"] / b["requests_per_cpu_second"], 2)
              if t["requests_per_cpu_second"] and b["requests_per_cpu_second"] else None}
    # A lower p99 is claimed only if it is lower in every round, not just pooled.
    paired = list(zip(t["rounds"], b["rounds"], strict=True))
    p99_rounds = [ours["p99_ms"] < theirs["p99_ms"] for ours, theirs in paired]
    ratios["p99_baseline_over_tunetext_per_round"] = [round(theirs["p99_ms"] / ours["p99_ms"], 2)
                                                      for ours, theirs in paired]
    met = {"throughput": ratios["throughput"] >= TARGET["throughput_ratio_min"],
           "p99": all(p99_rounds), "p99_pooled": t["latency_ms"]["p99"] < b["latency_ms"]["p99"]}
    indicative, warnings = verdict([r["quiet"] for side in (t, b) for r in side["rounds"]])
    if t["errors"] or b["errors"]:
        warnings.append(f"errors: tunetext {t['errors']}, baseline {b['errors']}")
    if t["truncated_by_time_limit"] or b["truncated_by_time_limit"]:
        warnings.append("a load phase hit --max-seconds; fewer requests were measured")
    if agreement is not None and agreement < 1:
        warnings.append(f"the two servers disagree on {1 - agreement:.1%} of labels")
    result = {
        "benchmark": "serve_load",
        "command": "python benchmarks/serve_load.py " + " ".join(sys.argv[1:]),
        "indicative": indicative,
        "machine": machine,
        "config": {"run_dir": str(run_dir), "model": read_run(run_dir)[0].model.name,
                   "requests": args.requests, "rounds": args.rounds, "concurrency": args.concurrency,
                   "warmup": args.warmup,
                   "distinct_texts": len(bodies), "max_seconds": args.max_seconds,
                   "tunetext_server": "tunetext serve RUN_DIR with its defaults (settings in use: "
                                      "tunetext.server)",
                   "baseline_server": "uvicorn + FastAPI sync route calling pipeline('text-classification')"},
        "tunetext": t, "baseline": b, "label_agreement": agreement,
        "ratios": ratios, "target": TARGET, "met": {**met, "all": met["throughput"] and met["p99"]},
        "warnings": warnings,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'':<10}{'req/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}{'req/CPU-s':>11}")
    for kind, side in sides.items():
        lat = side["latency_ms"]
        print(f"{kind:<10}{side['requests_per_second']:>10.1f}{lat['p50']:>10.1f}{lat['p95']:>10.1f}"
              f"{lat['p99']:>10.1f}{side['errors']:>8d}{side['requests_per_cpu_second'] or 0:>11.1f}")
    print(f"\nthroughput {ratios['throughput']:.2f}x the baseline (target >= "
          f"{TARGET['throughput_ratio_min']}x), p99 {ratios['p99_baseline_over_tunetext']:.2f}x lower")
    if agreement is not None:
        print(f"labels agree on {agreement:.1%} of {len(both)} texts")
    if ratios["requests_per_cpu_second"]:
        print(f"requests per server CPU-second: {ratios['requests_per_cpu_second']:.2f}x the baseline's")
    if "server" in t:
        server = t["server"]
        print(f"tunetext ran {server['batches']} batches, {server['mean_batch_size']} texts each on average, "
              f"in passes of {server['pass_size']} on {server['inference_threads']} inference thread(s), "
              f"{server['precision']}")
    for w in warnings:
        print(f"warning: {w}")
    print(f"written to {args.output}")
    return 0 if met["throughput"] and met["p99"] and not (t["errors"] or b["errors"]) else 1


if __name__ == "__main__":
    sys.exit(main())
