"""Batch prediction over a big file: tunetext's single-process streaming (`tunetext predict --input`) against
Ray Data with 2 workers (`tunetext predict --input --engine ray`), in one run.

Ways (each predicts the same finished run over the same Parquet file of `--rows` texts, default 100,000):

  local   `predict_file(RUN_DIR, INPUT, OUT.parquet)`: one process, chunks of rows, every core.
  ray     `predict_with_ray(RUN_DIR, INPUT, OUT_DIR, num_workers=2)`: a local Ray instance (started by the
          call, as `tunetext predict --engine ray` starts one) with 2 CPUs; 2 actors, each holding the run's
          Classifier on one core.

Both load the run with `backend="auto"` (its ONNX export where one passed, as the CLI does) and the same
batch size. The input is the SMS Spam Collection's texts (5,574, as `sms_spam` reads them) repeated with an
`id` column up to `--rows` rows: nothing caches predictions, so a repeated text costs what a new one does.

Every way runs in a fresh process per round, in interleaved rounds (`--rounds`, order rotated). Per way and
round: wall time of the whole call (start-up, model loading and Ray's start included) and texts/s over it;
peak memory of the way's whole process tree (the driver and, for Ray, its GCS, raylet and workers), sampled
every 0.2 s as the sum of proportional set sizes (PSS: shared pages such as Ray's object store counted once
across processes, not once per process); CPU seconds of the tree. After the rounds, the two outputs of the
last round are compared row by row (by `id`): labels equal and probabilities within `TOLERANCE`.

Ratios divide texts/s by texts/s (medians over rounds, wall time). There is no target: the question is what
Ray costs or gains on one 2-core machine, where it has no second machine to spread to.

    python benchmarks/batch_predict.py --run-dir runs/demo
    python benchmarks/batch_predict.py --run-dir runs/demo --rows 10000 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = ("local", "ray")
TOLERANCE = 1e-4
SAMPLE_SECONDS = 0.2


def write_input(path: Path, rows: int) -> int:
    """The benchmark's Parquet input: sms_spam's texts repeated to `rows` rows, with an id. Returns the
    number of distinct texts."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tunetext.data.read import read_source

    raw = read_source("sms_spam")
    texts = [t for split in raw.values() for t in split.texts]
    table = pa.table({"id": list(range(rows)), "text": [texts[i % len(texts)] for i in range(rows)]})
    pq.write_table(table, path, row_group_size=4096)
    return len(texts)


def child(args: argparse.Namespace) -> None:
    """One way, one call; prints its seconds as JSON."""
    start = time.perf_counter()
    if args.way == "local":
        from tunetext.batch_predict import predict_file

        predict_file(args.run_dir, args.input, args.output, batch_size=args.batch_size, progress=False)
    else:
        from tunetext.ray_predict import predict_with_ray

        predict_with_ray(args.run_dir, args.input, args.output, num_workers=2, batch_size=args.batch_size,
                         progress=False)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def run_way(way: str, run_dir: str, input: Path, output: Path, batch_size: int) -> dict[str, Any]:
    """Run one way in a fresh process; sample its process tree's memory and CPU until it ends."""
    if output.exists():
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    command = [sys.executable, __file__, "--child", "--way", way, "--run-dir", run_dir, "--input", str(input),
               "--output", str(output), "--batch-size", str(batch_size)]
    watch = CpuWatch()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    peak, cpu = 0, {}  # cpu: the last CPU seconds seen of every process of the tree, by pid
    while proc.poll() is None:
        pss = 0
        for p in _tree(root):
            try:
                pss += p.memory_full_info().pss
                times = p.cpu_times()
                cpu[p.pid] = times.user + times.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        peak = max(peak, pss)
        time.sleep(SAMPLE_SECONDS)
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{way} failed with exit status {proc.returncode}")
    seconds = json.loads(out.strip().splitlines()[-1])["seconds"]
    # The driver is waited for (its CPU counts as ours); Ray's processes are not, so pass what was seen.
    tree_cpu = sum(cpu.values())
    return {"seconds": round(seconds, 2), "peak_pss_mib": round(peak / 2**20, 1),
            "cpu_seconds_seen": round(tree_cpu, 1), "watch": watch.stop(running_children_cpu=tree_cpu)}


def read_output(path: Path) -> Any:
    """An output (a Parquet file or Ray's folder of them) as a pandas frame sorted by id."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas().sort_values("id").reset_index(drop=True)


def compare(local: Path, ray: Path, rows: int) -> dict[str, Any]:
    a, b = read_output(local), read_output(ray)
    probabilities = [c for c in a.columns if c.startswith("p_")]
    if len(a) != len(b):  # nothing to compare row by row
        return {"rows": [len(a), len(b)], "expected_rows": rows, "equal": False}
    diff = max(float((a[c] - b[c]).abs().max()) for c in probabilities)
    ids, labels = bool((a["id"] == b["id"]).all()), bool((a["label"] == b["label"]).all())
    return {"rows": [len(a), len(b)], "expected_rows": rows, "ids_equal": ids, "labels_equal": labels,
            "max_probability_difference": diff,
            "equal": len(a) == rows and ids and labels and diff <= TOLERANCE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/demo", help="a finished run (default: runs/demo)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows to predict (default 100,000)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="texts per forward pass, both ways")
    parser.add_argument("--output", type=Path, default=RESULTS / "batch_predict.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--way", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if not (Path(args.run_dir) / "metrics.json").exists():
        raise SystemExit(f"{args.run_dir} is not a finished run; `make demo` trains runs/demo")
    work = Path(tempfile.mkdtemp(prefix="tunetext-batch-bench-"))
    try:
        input = work / "input.parquet"
        distinct = write_input(input, args.rows)
        outputs = {"local": work / "local.parquet", "ray": work / "ray_out"}
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            order = WAYS if r % 2 == 0 else WAYS[::-1]
            result = {}
            for way in order:
                result[way] = run_way(way, args.run_dir, input, outputs[way], args.batch_size)
                result[way]["texts_per_second"] = round(args.rows / result[way]["seconds"], 1)
                print(f"round {r + 1} {way}: {result[way]['seconds']} s, "
                      f"{result[way]['texts_per_second']} texts/s, peak {result[way]['peak_pss_mib']} MiB",
                      flush=True)
            rounds.append(result)
        equal = compare(outputs["local"], outputs["ray"], args.rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    speed = {w: statistics.median([r[w]["texts_per_second"] for r in rounds]) for w in WAYS}
    memory = {w: max(r[w]["peak_pss_mib"] for r in rounds) for w in WAYS}
    indicative, warnings = verdict([r[w]["watch"] for r in rounds for w in WAYS])
    result = {
        "benchmark": "batch_predict", "machine": machine_info(), "run_dir": args.run_dir, "rows": args.rows,
        "distinct_texts": distinct, "batch_size": args.batch_size, "rounds": rounds,
        "texts_per_second": speed, "peak_pss_mib": memory,
        "ratio_ray_over_local": {"texts_per_second": round(speed["ray"] / speed["local"], 3),
                                 "divides": "median texts/s of ray over local (wall time of the whole call)"},
        "outputs": equal, "indicative_only": indicative, "warnings": warnings,
        "threads": {"local": os.cpu_count(), "ray": "1 per worker"},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("texts_per_second", "peak_pss_mib", "ratio_ray_over_local",
                                              "outputs")}, indent=2))
    return 0 if equal["equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
