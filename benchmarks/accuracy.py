"""How well tunetext's defaults do on every built-in dataset, against the issue's targets and the last
measurement.

For each dataset and seed: `tunetext train --data NAME --model minilm-l6 train.seed=S` in a fresh process,
with the default settings (which adapt to the data: the choices they made are recorded per run) on the
full official training set unless `--max-train-samples` says otherwise. Test and validation accuracy and
macro-F1 (mean and standard deviation over seeds), training and wall time, what the defaults chose, and:

- targets: R8 >= 97.8% accuracy, R52 >= 96.4% accuracy with macro-F1 >= 80%, 20newsgroups >= 85.3%
  accuracy (BERT-base on the Text-GCN splits, Lin et al., "BertGCN", 2021, Table 2; MiniLM-L6 is a fifth
  of its size), each with whether it was met and by how much it was missed;
- the last measurement (`--baseline`, by default results/accuracy_issue13.json) beside each dataset.

Seeds run in rounds (every dataset's first seed, then every dataset's second, ...), and the JSON and the
Markdown table are rewritten after every run, so `--deadline-s` (start no run after that many seconds)
still leaves a complete first round.

    python benchmarks/accuracy.py                        # all six datasets, 3 seeds (hours on 2 cores)
    python benchmarks/accuracy.py --datasets r8,r52 --seeds 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ["sms_spam", "rotten_tomatoes", "airline_sentiment", "20newsgroups", "r8", "r52"]
PUBLISHED_BERT = {"20newsgroups": 0.853, "r8": 0.978, "r52": 0.964}  # BertGCN (Lin et al., 2021), Table 2
TARGETS = {"20newsgroups": {"accuracy": 0.853}, "r8": {"accuracy": 0.978},
           "r52": {"accuracy": 0.964, "macro_f1": 0.80}}
FIRST_SEED = 42


def run_one(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One training run in a fresh process, and what it scored and chose."""
    out = args.workdir / Path(name).stem / f"seed-{seed}"
    cmd = ["train", "--data", name, "--model", args.model, "--output", str(out), "--overwrite", "--quiet",
           f"train.seed={seed}", *args.set]
    if args.max_train_samples is not None:
        cmd += ["--max-train-samples", str(args.max_train_samples)]
    print("$ tunetext " + " ".join(cmd), flush=True)
    watch = CpuWatch()
    code = subprocess.call([sys.executable, "-m", "tunetext.cli", *cmd], stdout=subprocess.DEVNULL)
    quiet = watch.stop()
    result: dict[str, Any] = {"seed": seed, "command": "tunetext " + " ".join(cmd),
                              "wall_seconds": quiet["wall_seconds"], "quiet": quiet,
                              "times_indicative": verdict([quiet])[0],
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if code != 0:
        return result | {"error": f"tunetext train exited with code {code}"}
    m = json.loads((out / "metrics.json").read_text())
    data = json.loads((out / "data.json").read_text())
    training = m["training"]
    return result | {
        "test_accuracy": m["test"]["accuracy"], "test_macro_f1": m["test"]["macro_f1"],
        "val_accuracy": m["val"]["accuracy"], "val_macro_f1": m["val"]["macro_f1"],
        "train_seconds": training["train_seconds"], "epochs_completed": training["epochs_completed"],
        "steps": training["steps"], "best_step": training["best_step"],
        "stopped_early": training["stopped_early"], "bf16": training["bf16"],
        "choices": training.get("choices", []), "lengths": training.get("lengths"),
        "warnings": m["test"].get("warnings", []),
        "split_sizes": {split: data[split]["size"] for split in ("train", "val", "test")}}


def _stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def summarise(name: str, runs: list[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, Any]:
    """A dataset's runs as mean and spread, its targets (met, or missed by how much) and the last
    measurement."""
    done = [r for r in runs if "error" not in r]
    out: dict[str, Any] = {"dataset": name, "per_seed": runs, "seeds": len(done),
                           "published_bert_accuracy": PUBLISHED_BERT.get(name)}
    if not done:
        return out
    for key in ("test_accuracy", "test_macro_f1", "val_accuracy", "val_macro_f1", "train_seconds",
                "wall_seconds"):
        out[key] = _stat([r[key] for r in done])
    out["split_sizes"] = done[0]["split_sizes"]
    out["choices"] = done[0]["choices"]
    out["lengths"] = done[0]["lengths"]
    out["targets"] = {}
    for metric, target in TARGETS.get(name, {}).items():
        mean = out[f"test_{metric}"]["mean"]
        out["targets"][metric] = {"target": target, "mean": mean, "met": mean >= target,
                                  "short_by": max(0.0, target - mean)}
    last = baseline.get("datasets", {}).get(name)
    if last and "test_accuracy" in last:
        out["last_measurement"] = {
            "test_accuracy": last["test_accuracy"]["mean"], "test_macro_f1": last["test_macro_f1"]["mean"],
            "train_size": last.get("split_sizes", {}).get("train"), "seeds": last.get("seeds"),
            "accuracy_change": out["test_accuracy"]["mean"] - last["test_accuracy"]["mean"],
            "macro_f1_change": out["test_macro_f1"]["mean"] - last["test_macro_f1"]["mean"]}
    return out


def _pm(stat: dict[str, float] | None, scale: float = 100.0, digits: int = 2) -> str:
    if stat is None:
        return "-"
    if stat["n"] == 1:
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def _target_cell(r: dict[str, Any]) -> str:
    cells = []
    for metric, t in r.get("targets", {}).items():
        verdict_text = "met" if t["met"] else f"missed by {100 * t['short_by']:.2f} points"
        cells.append(f"{metric} >= {100 * t['target']:.1f}: {verdict_text}")
    return "; ".join(cells) or "-"


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    where = machine["gpu"] or f"{machine['cpu']} ({machine['cores']} cores)"
    lines = [f"# {report['model']} with default settings on every built-in dataset", "",
             f"Measured on {where}; the defaults' choices per dataset below the table. "
             + ("Overrides: per dataset, as the table says." if "parts" in report else
                f"Overrides: {' '.join(report['overrides']) or 'none'}."), "",
             "| dataset | train / val / test | seeds | test accuracy % | test macro-F1 % | target (test) | "
             "last measurement: accuracy / macro-F1 % (train size) | train s | wall s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["datasets"].items():
        if "test_accuracy" not in r:
            errors = "; ".join(s.get("error", "") for s in r["per_seed"])
            lines.append(f"| {name} | {errors} | | | | | | | |")
            continue
        s = r["split_sizes"]
        last = r.get("last_measurement")
        last_cell = (f"{100 * last['test_accuracy']:.2f} / {100 * last['test_macro_f1']:.2f} "
                     f"({last['train_size']})" if last else "-")
        shown = f"{name} (with {' '.join(r['overrides'])})" if r.get("overrides") else name
        lines.append(f"| {shown} | {s['train']} / {s['val']} / {s['test']} | {r['seeds']} | "
                     f"{_pm(r['test_accuracy'])} | {_pm(r['test_macro_f1'])} | {_target_cell(r)} | "
                     f"{last_cell} | "
                     f"{r['train_seconds']['mean']:.0f} | {r['wall_seconds']['mean']:.0f} |")
    lines += ["", "What the defaults chose (first seed's run):", ""]
    for name, r in report["datasets"].items():
        for choice in r.get("choices", []):
            lines.append(f"- {name}: `{choice['key']}={choice['value']}`: {choice['reason']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated built-in datasets (or CSV files, for a smoke run)")
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per dataset, from --first-seed "
                        "(the data split stays the same)")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="instead of training, merge the runs of several results of this script (say, "
                        "parts run side by side) into --output")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every run (recorded in the result)")
    parser.add_argument("--max-train-samples", type=int, help="stratified training subsample (smoke runs)")
    parser.add_argument("--deadline-s", type=float, help="start no run after this many seconds")
    parser.add_argument("--baseline", type=Path, default=RESULTS / "accuracy_issue13.json",
                        help="an earlier result to compare each dataset with")
    parser.add_argument("--output", type=Path, default=RESULTS / "accuracy.json",
                        help="JSON result; the Markdown table goes next to it (.md)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-accuracy"))
    args = parser.parse_args(argv)
    baseline = json.loads(args.baseline.read_text()) if args.baseline.is_file() else {}
    if args.merge:
        write(merged(args.merge, baseline), args.output)
        return
    names = args.datasets.split(",")
    unknown = {n for n in names if n not in DATASETS and not Path(n).is_file()}
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(sorted(unknown))}; choose from {', '.join(DATASETS)}")

    started = time.perf_counter()
    report: dict[str, Any] = {
        "what": "minilm-l6, default settings, full training sets, on every built-in dataset (see the "
                "module docstring)", "machine": machine_info(), "model": args.model,
        "overrides": args.set, "max_train_samples": args.max_train_samples, "seeds_asked": args.seeds,
        "baseline": str(args.baseline.name) if baseline else None, "complete": False, "datasets": {}}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in names:
            if args.deadline_s is not None and time.perf_counter() - started > args.deadline_s:
                report["stopped_at_deadline"] = True
                continue
            runs[name].append(run_one(name, seed, args))
            report["datasets"][name] = summarise(name, runs[name], baseline)
            report["indicative_times"] = any(r.get("times_indicative", True) for rs in runs.values()
                                             for r in rs)
            report["complete"] = all(len(rs) == args.seeds for rs in runs.values())
            write(report, args.output)
    print(markdown(report), flush=True)


def write(report: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(report))


def merged(paths: list[Path], baseline: dict[str, Any]) -> dict[str, Any]:
    """One result from several parts: every part's runs of a dataset together, in seed order. The parts
    must come from one machine and model, with the same overrides for any dataset they share."""
    parts = [json.loads(p.read_text()) for p in paths]
    first = parts[0]
    if any(p["machine"]["cpu"] != first["machine"]["cpu"] or p["model"] != first["model"] for p in parts):
        raise SystemExit("the parts come from different machines or models; merge only parts of one run")
    runs: dict[str, list[dict[str, Any]]] = {}
    overrides: dict[str, list[str]] = {}
    for part in parts:
        for name, entry in part["datasets"].items():
            if overrides.setdefault(name, part["overrides"]) != part["overrides"]:
                raise SystemExit(f"{name} ran with different overrides in different parts")
            runs.setdefault(name, []).extend(entry["per_seed"])
    ordered = [n for n in DATASETS if n in runs] + [n for n in runs if n not in DATASETS]
    datasets = {}
    for name in ordered:
        datasets[name] = summarise(name, sorted(runs[name], key=lambda r: r["seed"]), baseline)
        datasets[name]["overrides"] = overrides[name]
    return {**first, "parts": [p.name for p in paths], "datasets": datasets,
            "overrides": sorted({o for os_ in overrides.values() for o in os_}),
            "complete": all(p["complete"] for p in parts),
            "indicative_times": any(p.get("indicative_times", True) for p in parts)}


if __name__ == "__main__":
    main()
