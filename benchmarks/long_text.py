"""Long documents: `data.long_text` = truncate, head_tail and chunks on 20newsgroups, in one run.

Every way trains `minilm-l6` with the default settings on the same split, and differs only in what it
does with a text longer than `model.max_length`:

- `truncate`: the first tokens only;
- `head_tail`: the first and the last tokens (Sun et al., 2019);
- `chunks`: overlapping windows, each a training example with the document's label; evaluation pools the
  windows' logits into one answer per document. Each epoch has more steps than the others', so chunks
  also runs once at the others' budget: `chunks_same_steps`, with its epochs cut so that its optimizer
  steps match truncate's (rounded to whole epochs).

The way a default should use is chosen on validation macro-F1 (then accuracy) among the first three;
test scores are reported for all and choose nothing. Train and wall seconds say what each way costs.

    python benchmarks/long_text.py                                  # full 20newsgroups training set
    python benchmarks/long_text.py --max-train-samples 3000         # a stated stratified subsample
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = ["truncate", "head_tail", "chunks"]


def train_way(way: str, args: argparse.Namespace, seed: int, extra: list[str]) -> dict[str, Any]:
    mode = "chunks" if way.startswith("chunks") else way
    out = args.workdir / way / f"seed-{seed}"
    cmd = ["train", "--data", args.data, "--model", args.model, "--output", str(out), "--overwrite",
           "--quiet", f"train.seed={seed}", f"data.long_text={mode}", *extra]
    if args.max_train_samples is not None:
        cmd += ["--max-train-samples", str(args.max_train_samples)]
    print("$ tunetext " + " ".join(cmd), flush=True)
    watch = CpuWatch()
    code = subprocess.call([sys.executable, "-m", "tunetext.cli", *cmd], stdout=subprocess.DEVNULL)
    quiet = watch.stop()
    result: dict[str, Any] = {"way": way, "seed": seed, "command": "tunetext " + " ".join(cmd),
                              "wall_seconds": quiet["wall_seconds"], "quiet": quiet,
                              "times_indicative": verdict([quiet])[0]}
    if code != 0:
        return result | {"error": f"tunetext train exited with code {code}"}
    m = json.loads((out / "metrics.json").read_text())
    t = m["training"]
    return result | {
        "val_accuracy": m["val"]["accuracy"], "val_macro_f1": m["val"]["macro_f1"],
        "test_accuracy": m["test"]["accuracy"], "test_macro_f1": m["test"]["macro_f1"],
        "train_seconds": t["train_seconds"], "steps": t["steps"], "epochs_completed": t["epochs_completed"],
        "epochs": _epochs(out), "stopped_early": t["stopped_early"], "lengths": t.get("lengths"),
        "choices": t.get("choices", [])}


def _epochs(run_dir: Path) -> int:
    """The epochs the run was set to (its resolved config), not those it completed before stopping."""
    import yaml

    return int(yaml.safe_load((run_dir / "tunetext.yaml").read_text())["train"]["epochs"])


def _steps_per_epoch(result: dict[str, Any]) -> float:
    return result["steps"] / max(1, result["epochs_completed"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="20newsgroups", help="built-in dataset or CSV file")
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--seed", type=int, default=42, help="training seed (the split is data.seed's)")
    parser.add_argument("--max-train-samples", type=int, help="stratified training subsample")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every way (recorded in the result)")
    parser.add_argument("--output", type=Path, default=RESULTS / "long_text.json")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-long-text"))
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "machine": machine_info(), "data": args.data,
                              "model": args.model, "max_train_samples": args.max_train_samples,
                              "seed": args.seed, "overrides": args.set, "ways": {}, "complete": False}

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")

    for way in WAYS:
        report["ways"][way] = train_way(way, args, args.seed, args.set)
        save()
    truncate, chunks = report["ways"]["truncate"], report["ways"]["chunks"]
    if "error" not in truncate and "error" not in chunks:
        # Same budget: as many optimizer steps as truncate's schedule, in whole epochs of chunks.
        budget = truncate["epochs"] * _steps_per_epoch(truncate)
        epochs = max(1, round(budget / _steps_per_epoch(chunks)))
        report["ways"]["chunks_same_steps"] = train_way("chunks_same_steps", args, args.seed,
                                                        [*args.set, f"train.epochs={epochs}"])
    done = {w: r for w, r in report["ways"].items() if w in WAYS and "error" not in r}
    if done:
        best = max(done, key=lambda w: (done[w]["val_macro_f1"], done[w]["val_accuracy"]))
        report["chosen_on_validation"] = best
    # Scores do not depend on other load; the seconds do.
    report["indicative"] = any(r.get("times_indicative", True) for r in report["ways"].values())
    report["complete"] = True
    save()
    for way, r in report["ways"].items():
        if "error" in r:
            print(f"{way:<18} {r['error']}")
            continue
        print(f"{way:<18} val acc {r['val_accuracy']:.4f} macro-F1 {r['val_macro_f1']:.4f} | test acc "
              f"{r['test_accuracy']:.4f} macro-F1 {r['test_macro_f1']:.4f} | {r['steps']} steps "
              f"{r['train_seconds']:.0f} s train, {r['wall_seconds']:.0f} s wall")
    print(f"chosen on validation: {report.get('chosen_on_validation')}")


if __name__ == "__main__":
    main()
