"""Long documents: `data.long_text` = truncate, head_tail and chunks on 20newsgroups, in one run.

Every way trains `minilm-l6` with the default settings on the same split, and differs only in what it
does with a text longer than `model.max_length`:

- `truncate`: the first tokens only;
- `head_tail`: the first and the last tokens (Sun et al., 2019);
- `chunks`: overlapping windows, each a training example with the document's label; evaluation pools the
  windows' logits into one answer per document. Each epoch has more steps than the others', so chunks
  also runs once at the others' budget: `chunks_same_steps`, with its epochs cut so that its optimizer
  steps match truncate's (rounded to whole epochs).

The way a default should use is chosen on validation macro-F1 (then accuracy) among the ways run
(`chosen_mode`: chunks for either chunks way); test scores are reported for all and choose nothing.
Train and wall seconds say what each way costs.

    python benchmarks/long_text.py                                  # full 20newsgroups training set
    python benchmarks/long_text.py --subsample 1000,1000            # stated stratified subsamples

With `--subsample TRAIN,TEST`, stratified subsamples (seeded) of the official training split (validation
included) and test split are written as CSV files and every way trains on those: validation is then
carved from the training subsample (data.val_fraction). A 2-core CPU scores 20newsgroups' 7,521 test
texts in minutes per pass, several passes a way.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
WAYS = ["truncate", "head_tail", "chunks"]


def subsampled(args: argparse.Namespace) -> dict[str, Any]:
    """Stratified subsamples of the official training (with validation) and test splits as CSV files:
    their paths and sizes."""
    from tunetext.config import load_config
    from tunetext.data import Split, load_dataset
    from tunetext.data.splits import subsample

    n_train, n_test = (int(n) for n in args.subsample.split(","))
    data = load_dataset(load_config(overrides={"data.source": args.data}).data)
    seed = 0  # the subsample's own seed, apart from data.seed's split and the training seed
    train = subsample(Split(data.train.texts + data.val.texts, data.train.labels + data.val.labels),
                      n_train, seed)
    test = subsample(data.test, n_test, seed)
    paths = {}
    for name, split in (("train", train), ("test", test)):
        paths[name] = args.workdir / f"{Path(args.data).stem}-{name}-{len(split)}.csv"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        with paths[name].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((t, data.label_names[y]) for t, y in zip(split.texts, split.labels, strict=True))
    return {"train_csv": str(paths["train"]), "test_csv": str(paths["test"]), "train_and_val": len(train),
            "test": len(test), "seed": seed}


def train_way(way: str, args: argparse.Namespace, seed: int, extra: list[str]) -> dict[str, Any]:
    mode = "chunks" if way.startswith("chunks") else way
    out = args.workdir / way / f"seed-{seed}"
    source = args.data if args.sample is None else args.sample["train_csv"]
    cmd = ["train", "--data", source, "--model", args.model, "--output", str(out), "--overwrite",
           "--quiet", f"train.seed={seed}", f"data.long_text={mode}", *extra]
    if args.sample is not None:
        cmd.append(f"data.test={args.sample['test_csv']}")
    print("$ tunetext " + " ".join(cmd), flush=True)
    watch = CpuWatch()
    code = subprocess.call([sys.executable, "-m", "tunetext.cli", *cmd], stdout=subprocess.DEVNULL)
    quiet = watch.stop()
    result: dict[str, Any] = {"way": way, "seed": seed, "command": "tunetext " + " ".join(cmd),
                              "run_dir": str(out),
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


def _windows_per_epoch(truncate: dict[str, Any]) -> int:
    """Training examples chunks makes of the truncate run's training texts, counted with its tokenizer
    and settings before any chunks run trains."""
    from tunetext.batches import LongText, tokenize_windows
    from tunetext.config import load_config
    from tunetext.data import load_dataset
    from tunetext.models import load_tokenizer, resolve

    saved = load_config(Path(truncate["run_dir"]) / "tunetext.yaml")
    data = load_dataset(saved.data)
    tokenizer = load_tokenizer(resolve(saved.model.name))
    chunked = LongText.of(saved.data.model_copy(update={"long_text": "chunks"}))
    windows = tokenize_windows(tokenizer, data.train.texts, saved.model.max_length, saved.data.template,
                               chunked)
    return sum(len(w) for w in windows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="20newsgroups", help="built-in dataset or CSV file")
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--seed", type=int, default=42, help="training seed (the split is data.seed's)")
    parser.add_argument("--subsample", metavar="TRAIN,TEST", help="stratified subsamples of the official "
                        "training (validation included) and test splits, e.g. 1000,1000")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every way (recorded in the result)")
    parser.add_argument("--output", type=Path, default=RESULTS / "long_text.json")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-long-text"))
    parser.add_argument("--ways", default="truncate,head_tail,chunks,chunks_same_steps",
                        help="which ways to run, of truncate, head_tail, chunks, chunks_same_steps")
    args = parser.parse_args(argv)
    ways = args.ways.split(",")

    report: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "machine": machine_info(), "data": args.data,
                              "model": args.model,
                              "seed": args.seed, "overrides": args.set, "ways": {}, "complete": False}

    def save() -> None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")

    args.sample = subsampled(args) if args.subsample else None
    report["subsample"] = args.sample
    for way in (w for w in WAYS if w in ways):
        report["ways"][way] = train_way(way, args, args.seed, args.set)
        save()
    truncate = report["ways"].get("truncate", {})
    if "chunks_same_steps" in ways and "steps" in truncate:
        # Same budget: as many optimizer steps as truncate's schedule, in whole epochs of chunks; the
        # windows per epoch are counted before training (lengths.training_examples).
        windows = _windows_per_epoch(truncate)
        epochs = max(1, round(truncate["epochs"] * truncate["lengths"]["texts"] / windows))
        report["ways"]["chunks_same_steps"] = train_way("chunks_same_steps", args, args.seed,
                                                        [*args.set, f"train.epochs={epochs}"])
        report["ways"]["chunks_same_steps"]["windows_per_epoch"] = windows
    done = {w: r for w, r in report["ways"].items() if "error" not in r}
    if done:
        best = max(done, key=lambda w: (done[w]["val_macro_f1"], done[w]["val_accuracy"]))
        report["chosen_on_validation"] = best
        report["chosen_mode"] = "chunks" if best.startswith("chunks") else best
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
