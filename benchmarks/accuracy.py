"""How well tunetext's defaults do on every built-in dataset, next to published figures.

For each dataset: `tunetext train --data NAME --seeds N` with `minilm-l6` and the default settings (3
epochs, lr 1e-4, batch 32, 256 tokens), in a fresh process; test accuracy and macro-F1 as mean and
standard deviation over the seeds, training time, and the published BERT figure where one exists (Text
GCN-version 20NG, R8 and R52: BERT-base 85.3 / 97.8 / 96.4 accuracy, as reported by Lin et al., "BertGCN",
2021, Table 2). The published models are BERT-base (110M parameters, 12 blocks, 512 tokens); MiniLM-L6 is a
fifth of its size and reads 256 tokens.

Each dataset's result is merged into the JSON as soon as it is done, so the benchmark can be run one
dataset at a time and resumed; the Markdown table is rewritten from the JSON each time.

    python benchmarks/accuracy.py                                    # all, 3 seeds (hours on 2 cores)
    python benchmarks/accuracy.py --datasets sms_spam --seeds 3
    python benchmarks/accuracy.py --datasets 20newsgroups --seeds 1 --max-train-samples 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = ["sms_spam", "rotten_tomatoes", "airline_sentiment", "20newsgroups", "r8", "r52"]
PUBLISHED_BERT = {"20newsgroups": 0.853, "r8": 0.978, "r52": 0.964}  # BertGCN (Lin et al., 2021), Table 2


def run_dataset(name: str, seeds: int, max_train_samples: int | None, work: Path,
                model: str = "minilm-l6") -> dict[str, Any]:
    out = work / Path(name).stem
    args = ["train", "--data", name, "--model", model, "--seeds", str(seeds), "--output", str(out),
            "--overwrite", "--quiet"]
    if max_train_samples is not None:
        args += ["--max-train-samples", str(max_train_samples)]
    print("$ tunetext " + " ".join(args), flush=True)
    watch = CpuWatch()
    code = subprocess.call([sys.executable, "-m", "tunetext.cli", *args], stdout=subprocess.DEVNULL)
    quiet = watch.stop()
    result: dict[str, Any] = {"dataset": name, "command": "tunetext " + " ".join(args),
                              "wall_seconds": quiet["wall_seconds"], "seeds": seeds,
                              "max_train_samples": max_train_samples,
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "quiet": quiet,
                              # accuracy does not depend on other load; its train_seconds do
                              "times_indicative": verdict([quiet])[0]}
    if code != 0:
        return result | {"error": f"tunetext train exited with code {code}"}
    summary = json.loads((out / "seeds.json").read_text())
    first = json.loads((out / f"seed-{summary['seeds'][0]}" / "data.json").read_text())
    result.update(
        test_accuracy=summary["test"]["accuracy"], test_macro_f1=summary["test"]["macro_f1"],
        train_seconds=summary["train_seconds"], split_sizes=_split_sizes(first),
        published_bert_accuracy=PUBLISHED_BERT.get(name),
        per_seed=[_seed_scores(out / f"seed-{s}") for s in summary["seeds"]])
    return result


def _split_sizes(data: dict[str, Any]) -> dict[str, int]:
    return {name: data[name]["size"] for name in ("train", "val", "test")}


def _seed_scores(run_dir: Path) -> dict[str, float]:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"],
            "train_seconds": m["training"]["train_seconds"], "epochs": m["training"]["epochs_completed"]}


def _pm(stat: dict[str, float], scale: float = 100.0, digits: int = 2) -> str:
    if stat["n"] == 1:
        return f"{scale * stat['mean']:.{digits}f}"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# minilm-l6 with default settings on every built-in dataset", "",
             "| dataset | train / val / test | seeds | test accuracy % | test macro-F1 % | train s (mean) | "
             "published BERT-base accuracy % |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for name in [*DATASETS, *(n for n in report["datasets"] if n not in DATASETS)]:
        r = report["datasets"].get(name)
        if r is None:
            continue
        if "error" in r:
            lines.append(f"| {name} | {r['error']} | | | | | |")
            continue
        sizes = r["split_sizes"]
        split = f"{sizes.get('train', '?')} / {sizes.get('val', '?')} / {sizes.get('test', '?')}"
        if r["max_train_samples"] is not None:
            split += f" (train subsampled to {r['max_train_samples']})"
        published = r["published_bert_accuracy"]
        lines.append(f"| {name} | {split} | {r['seeds']} | {_pm(r['test_accuracy'])} | "
                     f"{_pm(r['test_macro_f1'])} | {r['train_seconds']['mean']:.0f} | "
                     f"{'-' if published is None else f'{100 * published:.1f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated built-in datasets (or CSV files, for a smoke run)")
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per dataset (same split)")
    parser.add_argument("--max-train-samples", type=int,
                        help="stratified training subsample (long documents)")
    parser.add_argument("--output", type=Path, default=RESULTS / "accuracy.json",
                        help="JSON result, merged into if it exists; the Markdown table goes next to it "
                        "(.md)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-accuracy"))
    args = parser.parse_args(argv)
    names = args.datasets.split(",")
    unknown = {n for n in names if n not in DATASETS and not Path(n).is_file()}
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(sorted(unknown))}; choose from {', '.join(DATASETS)}")

    report = json.loads(args.output.read_text()) if args.output.is_file() else {"datasets": {}}
    report.update(what="minilm-l6, default settings, on every built-in dataset (see the module docstring)",
                  machine=machine_info(), model=args.model)
    for name in names:
        # Each dataset keeps the machine it ran on: the file collects runs of several invocations.
        report["datasets"][name] = {**run_dataset(name, args.seeds, args.max_train_samples, args.workdir,
                                                  args.model), "machine": report["machine"]}
        # Older entries, written before the busy-machine check, count as indicative.
        report["indicative_times"] = any(r.get("times_indicative", True) for r in report["datasets"].values())
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        args.output.with_suffix(".md").write_text(markdown(report))
        print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
