"""Fast CPU inference: the tutorials' `transformers.pipeline` against tunetext's PyTorch, ONNX fp32 and ONNX
int8 backends, on short texts and on long documents, in one run.

Ways (each scores the same finished run):

  pipeline    `transformers.pipeline("text-classification", model=RUN_DIR)` called on the list of texts
              with `batch_size=8, truncation=True`: the tutorials' way, fp32, texts in input order.
  torch       `Classifier.load(RUN_DIR, backend="torch").predict(texts, batch_size=B)`.
  onnx_fp32   the run's export (`tunetext export RUN_DIR --quantize int8`), its fp32 (fused) graph.
  onnx_int8   the same export's int8 graph (dynamic quantization), whether or not its gate chose it.

Data: all of sms_spam's test texts (1,032) scored by `--sms-run`, and `--long-texts` (default 1,000) of
20newsgroups' test texts (a stratified, seeded subsample) scored by `--long-run`. Without those options the
runs are trained first (`runs/demo` as `make demo` trains it; `runs/news-bench`: minilm-l6 on 1,000
stratified training texts, 3 epochs) and exported if they have no int8 export.

Every way runs in a fresh process per round (so its peak resident memory is its own: model, session and
predictions), in interleaved rounds (`--rounds`, the ways' order rotated each round). Per way and round:
texts/s over the whole test set (the wall time of one call, tokenisation and cleaning included; tunetext's
tokenisation time is also recorded on its own), single-text latency (p50 and p99 of one-text calls, after a
warm-up), peak RSS. Accuracy and macro-F1 against the test labels come from the first round (every way
answers the same in every round). tunetext's batch size is chosen per backend and data set from a sweep
over `SWEEP` on validation texts (each size twice, the faster pass kept), before the rounds; the
pipeline's is the tutorials' 8. Threads: every way uses what its library defaults to on this machine
(torch: one per core; ONNX Runtime: every core).

Ratios divide texts/s by texts/s (medians over rounds: wall-clock throughput). Targets (issue 16): int8 at
least 8x the pipeline and 3x tunetext torch in texts/s, single-text p50 under 5 ms for an SMS, int8's
accuracy within 0.5 points of fp32's.

    python benchmarks/inference.py                                   # trains and exports what is missing
    python benchmarks/inference.py --sms-run runs/spam --long-run runs/news --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
WAYS = ("pipeline", "torch", "onnx_fp32", "onnx_int8")
TUNETEXT_WAYS = WAYS[1:]
TUNETEXT = [sys.executable, "-m", "tunetext.cli"]
PIPELINE_BATCH = 8
SWEEP = (4, 8, 16, 32, 64)
TARGET = {"int8_over_pipeline_min": 8.0, "int8_over_torch_min": 3.0, "sms_p50_ms_max": 5.0,
          "int8_accuracy_drop_points_max": 0.5}
DATASETS = {
    "sms_spam": {"run": ROOT / "runs" / "demo",
                 "train": ["--data", "sms_spam", "--model", "minilm-l6"], "latency_texts": 300},
    "20newsgroups": {"run": ROOT / "runs" / "news-bench",
                     "train": ["--data", "20newsgroups", "--model", "minilm-l6",
                               "--max-train-samples", "1000", "--epochs", "3"], "latency_texts": 100},
}


# ---- one way, in its own process ---------------------------------------------------------------------------

def peak_mib() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def load_way(way: str, run_dir: str) -> tuple[Any, Any]:
    """A function scoring a list of texts with a batch size, returning one label per text; and tunetext's
    tokenisation (`Classifier.encode`), None for the pipeline."""
    if way == "pipeline":
        from transformers import pipeline

        scorer = pipeline("text-classification", model=run_dir, device="cpu")
        return (lambda texts, batch_size: [r["label"] for r in scorer(texts, batch_size=batch_size,
                                                                        truncation=True)]), None
    from tunetext.predict import Classifier

    clf = (Classifier.load(run_dir, backend="torch") if way == "torch" else
           Classifier.load(run_dir, backend="onnx", export="fp32" if way == "onnx_fp32" else "int8"))
    return (lambda texts, batch_size: [p.label for p in clf.predict(texts, batch_size=batch_size)]), \
        clf.encode


def child(args: argparse.Namespace) -> None:
    """Measure one way on the texts in `args.texts` and print the result as one JSON line."""
    import numpy as np

    texts = [json.loads(line) for line in Path(args.texts).read_text().splitlines()]
    score, encode = load_way(args.way, args.run_dir)
    loaded = peak_mib()
    if args.sweep:
        # Every size scored twice, forwards then backwards, the faster pass kept: a first pass at a size
        # can pay for memory the runtime has not yet allocated, and a short sweep is easily disturbed.
        speeds: dict[int, float] = {}
        score(texts, SWEEP[-1])  # warm-up, at the largest shapes
        for size in [*SWEEP, *reversed(SWEEP)]:
            start = time.perf_counter()
            score(texts, size)
            speeds[size] = max(speeds.get(size, 0.0), round(len(texts) / (time.perf_counter() - start), 2))
        print(json.dumps({"texts_per_second": speeds}))
        return
    score(texts[:32], args.batch_size)  # warm-up: first-call allocations, lazy initialisation
    start = time.perf_counter()
    labels = score(texts, args.batch_size)
    seconds = time.perf_counter() - start
    encode_seconds = None
    if encode is not None:
        start = time.perf_counter()
        encode(texts)
        encode_seconds = round(time.perf_counter() - start, 4)
    latencies = []
    for text in texts[:args.latency_texts]:
        start = time.perf_counter()
        score([text], 1)
        latencies.append((time.perf_counter() - start) * 1000)
    print(json.dumps({
        "seconds": round(seconds, 4), "texts_per_second": round(len(texts) / seconds, 2),
        "encode_seconds": encode_seconds,
        "latency_ms": {"p50": round(float(np.percentile(latencies, 50)), 3),
                       "p99": round(float(np.percentile(latencies, 99)), 3), "texts": len(latencies)},
        "peak_rss_mib": peak_mib(), "rss_after_load_mib": loaded, "labels": labels}))


def run_child(way: str, run_dir: Path, texts: Path, **options: Any) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--way", way, "--run-dir", str(run_dir),
               "--texts", str(texts)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{way} on {run_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the runs and their data ---------------------------------------------------------------------------

def ensure_run(name: str, run_dir: Path | None) -> Path:
    """A finished run with an int8 export: the one given, or the data set's default, trained and exported
    when missing."""
    from tunetext.backends.onnx import FP32, INT8, export_dir, usable_export
    from tunetext.runs import is_finished

    spec = DATASETS[name]
    run_dir = run_dir or spec["run"]
    if not is_finished(run_dir):
        command = [*TUNETEXT, "train", *spec["train"], "--output", str(run_dir), "--quiet"]
        print(f"training {name}'s run: {' '.join(command)}", flush=True)
        subprocess.run(command + (["--overwrite"] if run_dir.exists() else []), check=True)
    usable, _ = usable_export(run_dir)
    if usable is None or not all((export_dir(run_dir) / f).is_file() for f in (FP32, INT8)):
        print(f"exporting {run_dir}: tunetext export {run_dir} --quantize int8", flush=True)
        subprocess.run([*TUNETEXT, "export", str(run_dir), "--quantize", "int8"], check=True)
    return run_dir


def test_and_validation(run_dir: Path, n_test: int | None, n_val: int) -> tuple[Any, list[str], list[str]]:
    """The run's test split (a stratified, seeded subsample of `n_test` when given), its label names, and
    `n_val` validation texts for the batch-size sweep."""
    from tunetext.data import load_dataset
    from tunetext.data.splits import subsample
    from tunetext.runs import read_run

    config, _, info = read_run(run_dir)
    splits = load_dataset(config.data, label_names=info["label_names"]).splits()
    test = splits["test"] if n_test is None else subsample(splits["test"], n_test, seed=0)
    return test, info["label_names"], splits["val"].texts[:n_val]


def write_texts(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in texts))
    return path


def measure_dataset(name: str, run_dir: Path, n_test: int | None, n_val: int, rounds: int,
                    work: Path) -> dict[str, Any]:
    """The four ways on one data set: batch sizes swept on validation, then interleaved rounds on test."""
    from tunetext.backends.onnx import read_record
    from tunetext.evaluate import compute_metrics

    test, label_names, val_texts = test_and_validation(run_dir, n_test, n_val)
    test_file = write_texts(work / f"{name}-test.jsonl", test.texts)
    val_file = write_texts(work / f"{name}-val.jsonl", val_texts)
    print(f"{name}: {len(test.texts)} test texts, run {run_dir}", flush=True)
    sweeps = {way: run_child(way, run_dir, val_file, sweep=True)["texts_per_second"] for way in TUNETEXT_WAYS}
    batch = {way: int(max(speeds, key=speeds.get)) for way, speeds in sweeps.items()} | {"pipeline":
                                                                                         PIPELINE_BATCH}
    print(f"  batch sizes chosen on {len(val_texts)} validation texts: {batch}", flush=True)
    latency_texts = DATASETS[name]["latency_texts"]
    per_round: dict[str, list[dict[str, Any]]] = {way: [] for way in WAYS}
    watches = []
    for r in range(rounds):
        order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
        for way in order:
            watch = CpuWatch()
            result = run_child(way, run_dir, test_file, batch_size=batch[way], latency_texts=latency_texts)
            result["quiet"] = watch.stop()
            watches.append(result["quiet"])
            per_round[way].append(result)
            print(f"  round {r + 1} {way:<10} {result['texts_per_second']:>8.1f} texts/s, p50 "
                  f"{result['latency_ms']['p50']:.2f} ms, p99 {result['latency_ms']['p99']:.2f} ms, "
                  f"peak {result['peak_rss_mib']} MiB", flush=True)
    ways = {}
    index = {label: i for i, label in enumerate(label_names)}
    for way, results in per_round.items():
        first = results[0]
        predicted = [index[label] for label in first["labels"]]
        scores = compute_metrics(test.labels, predicted, label_names)
        ways[way] = {
            "batch_size": batch[way], "sweep_texts_per_second": sweeps.get(way),
            "texts_per_second": statistics.median(r["texts_per_second"] for r in results),
            "latency_ms": {q: statistics.median(r["latency_ms"][q] for r in results) for q in ("p50", "p99")},
            "peak_rss_mib": max(r["peak_rss_mib"] for r in results),
            "rss_after_load_mib": max(r["rss_after_load_mib"] for r in results),
            "encode_seconds": statistics.median(r["encode_seconds"] for r in results)
            if first["encode_seconds"] is not None else None,
            "accuracy": round(scores["accuracy"], 4), "macro_f1": round(scores["macro_f1"], 4),
            "rounds": [{k: v for k, v in r.items() if k != "labels"} for r in results]}
        if ways[way]["encode_seconds"] is not None:
            ways[way]["tokenise_share"] = round(ways[way]["encode_seconds"] * ways[way]["texts_per_second"]
                                                / len(test.texts), 3)
    speed = {way: ways[way]["texts_per_second"] for way in WAYS}
    ratios = {"what": "texts/s over texts/s: medians over rounds of wall-clock throughput",
              "int8_over_pipeline": round(speed["onnx_int8"] / speed["pipeline"], 2),
              "int8_over_torch": round(speed["onnx_int8"] / speed["torch"], 2),
              "fp32_over_torch": round(speed["onnx_fp32"] / speed["torch"], 2),
              "torch_over_pipeline": round(speed["torch"] / speed["pipeline"], 2),
              "per_round_int8_over_pipeline": _per_round(per_round["onnx_int8"], per_round["pipeline"]),
              "per_round_int8_over_torch": _per_round(per_round["onnx_int8"], per_round["torch"])}
    drop = (ways["onnx_fp32"]["accuracy"] - ways["onnx_int8"]["accuracy"]) * 100
    record = read_record(run_dir) or {}
    int8 = record.get("int8") or {}
    return {"run_dir": str(run_dir), "test_texts": len(test.texts),
            "validation_texts_for_sweep": len(val_texts), "latency_texts": latency_texts, "ways": ways,
            "ratios": ratios, "int8_accuracy_drop_points": round(drop, 2),
            "export": {k: record.get(k) for k in ("chosen", "reason", "exporter", "fusions")}
            | {"int8": {k: int8.get(k) for k in ("weight_type", "metric_drop_points", "used")}},
            "watches": watches}


def _per_round(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[float]:
    return [round(a["texts_per_second"] / b["texts_per_second"], 2)
            for a, b in zip(ours, theirs, strict=True)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sms-run", type=Path,
                        help="a finished sms_spam run (default: runs/demo, trained if missing)")
    parser.add_argument("--long-run", type=Path,
                        help="a finished 20newsgroups run (default: runs/news-bench, trained if missing)")
    parser.add_argument("--long-texts", type=int, default=1000, help="20newsgroups test texts to score")
    parser.add_argument("--sweep-texts", type=int, default=300, help="validation texts for the batch sweep")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datasets", default="sms_spam,20newsgroups")
    parser.add_argument("--output", type=Path, default=RESULTS / "inference.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--way", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--texts", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--latency-texts", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sweep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    result: dict[str, Any] = {"benchmark": "inference", "what": __doc__.split("\n\n")[0],
                              "command": "python benchmarks/inference.py " + " ".join(sys.argv[1:]),
                              "machine": machine_info(), "rounds": args.rounds, "target": TARGET,
                              "datasets": {}}
    runs = {"sms_spam": args.sms_run, "20newsgroups": args.long_run}
    names = args.datasets.split(",")
    run_dirs = {name: ensure_run(name, runs[name]) for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            n_test = None if name == "sms_spam" else args.long_texts
            sweep = args.sweep_texts if name == "sms_spam" else min(args.sweep_texts, 150)
            result["datasets"][name] = measure_dataset(name, run_dirs[name], n_test, sweep, args.rounds,
                                                       Path(tmp))
    watches = [w for d in result["datasets"].values() for w in d.pop("watches")]
    result["indicative"], result["warnings"] = verdict(watches)
    met = {}
    for name, data in result["datasets"].items():
        ratios = data["ratios"]
        met[name] = {"int8_over_pipeline": ratios["int8_over_pipeline"] >= TARGET["int8_over_pipeline_min"],
                     "int8_over_torch": ratios["int8_over_torch"] >= TARGET["int8_over_torch_min"],
                     "accuracy": data["int8_accuracy_drop_points"] <= TARGET["int8_accuracy_drop_points_max"]}
        if name == "sms_spam":
            met[name]["sms_p50"] = data["ways"]["onnx_int8"]["latency_ms"]["p50"] < TARGET["sms_p50_ms_max"]
    result["met"] = met | {"all": all(all(m.values()) for m in met.values())}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    for name, data in result["datasets"].items():
        print(f"\n{name} ({data['test_texts']} test texts)")
        print(f"{'':<11}{'batch':>6}{'texts/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'accuracy':>10}{'macro-F1':>10}"
              f"{'peak MiB':>10}")
        for way, w in data["ways"].items():
            print(f"{way:<11}{w['batch_size']:>6}{w['texts_per_second']:>10.1f}{w['latency_ms']['p50']:>9.2f}"
                  f"{w['latency_ms']['p99']:>9.2f}{w['accuracy']:>10.4f}{w['macro_f1']:>10.4f}"
                  f"{w['peak_rss_mib']:>10.1f}")
        r = data["ratios"]
        print(f"int8: {r['int8_over_pipeline']}x the pipeline (target {TARGET['int8_over_pipeline_min']}), "
              f"{r['int8_over_torch']}x tunetext torch (target {TARGET['int8_over_torch_min']}); accuracy "
              f"{data['int8_accuracy_drop_points']:+.2f} points below fp32; met {met[name]}")
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    print(f"written to {args.output}")
    return 0 if result["met"]["all"] else 1


if __name__ == "__main__":
    sys.exit(main())
