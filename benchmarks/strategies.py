"""From prompt to fine-tune on one split: every way tunetext has to classify SMS spam, side by side.

The data follow the balanced protocol of "Build a Large Language Model (From Scratch)", chapter 6: every
spam message and as many ham messages drawn at random, split 70/10/20 (stratified here). One difference,
on purpose: tunetext de-duplicates before splitting, so the pool is the 642 unique spam texts (of 747) and
642 of the 4,518 unique ham texts; the book keeps duplicates, which lets copies of a test text sit in its
training set.

On that one split, in this order, each in its own process (wall time and peak memory are the process's):

  zero-shot, few-shot   SmolLM2-135M-Instruct prompted (`tunetext prompt-eval`), nothing trained
  features              frozen MiniLM-L6 features, logistic-regression head
  last_n cached         the last block, pooler and head trained 5 epochs on the cached frozen prefix
  last_n uncached       the same with `train.cache_frozen=off`: the frozen prefix runs at every step
  lora                  LoRA r=8 on query/value and the head
  full                  every weight
  full seeds            the same with seeds 42, 43 and 44 (`--seeds 3`): how much one seed says
  full book             `full` on the issue's (and the book's) own protocol, duplicates kept: all 747 spam
                        messages and 747 of the 4,827 ham, `data.dedupe=false`, its own 70/10/20 split
  distill               a 3-block student cut from MiniLM-L6, taught by the `full` run
  mpnet full            all-mpnet-base-v2 (110M), every weight: a stronger teacher
  distill mpnet         the whole MiniLM-L6 (6 blocks) taught by `mpnet full`
  smollm2 last_n        (with --smollm2) SmolLM2-135M's last block and final norm, cached and uncached

The trained methods all run 5 epochs with tunetext's defaults otherwise (early stopping on validation
macro-F1 keeps the best epoch, except for the `last_n` pairs, which run all 5 so that their times
compare). It writes JSON and a Markdown table and checks the issue's targets.

    python benchmarks/strategies.py                      # about 25 minutes on 2 cores
    python benchmarks/strategies.py --smollm2            # adds SmolLM2-135M last_n, about 6 minutes
    python benchmarks/strategies.py --only features,full --output /tmp/s.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
EPOCHS = 5
BALANCE_SEED = 123  # the book's sampling seed
TEMPLATE = 'Is the following SMS message spam? Answer yes or no.\n\nSMS: "{text}"'
VERBALIZERS = "ham=no,spam=yes"
SHOTS = 4
SEEDS = 3
BOOK_CSV = "sms_spam_balanced_with_duplicates.csv"
TARGETS = {"accuracy_above": 0.977, "cache_speedup": 3.0, "lora_gap_points": 1.0}
ALL = ["zero_shot", "few_shot", "features", "last_n_cached", "last_n_uncached", "lora", "full", "full_seeds",
       "full_book", "distill", "mpnet_full", "distill_mpnet",
       "smollm2_last_n_cached", "smollm2_last_n_uncached"]
MINILM = ["features", "last_n_cached", "last_n_uncached", "lora", "full", "distill", "distill_mpnet"]
TEACHERS = {"distill": "full", "distill_mpnet": "mpnet_full"}
SMOLLM2 = [k for k in ALL if k.startswith("smollm2")]
CACHE_PAIRS = {"minilm-l6": ("last_n_cached", "last_n_uncached"),
               "smollm2-135m": ("smollm2_last_n_cached", "smollm2_last_n_uncached")}


def _train(data: Path, out: Path, model: str, strategy: str, *overrides: str,
           epochs: int = EPOCHS) -> list[str]:
    return ["train", "--data", str(data), "--model", model, "--strategy", strategy, "--epochs", str(epochs),
            "--output", str(out), "--overwrite", "--quiet", *overrides]


def _prompt(data: Path, shots: int, decoder: str) -> list[str]:
    return ["prompt-eval", "--model", decoder, "--data", str(data), "--template", TEMPLATE,
            "--labels", VERBALIZERS, "--shots", str(shots), "--json"]


def methods(data: Path, work: Path, smollm2_last_n: int = 1, models: dict[str, str] | None = None,
            epochs: int = EPOCHS) -> dict[str, tuple[str, list[str]]]:
    """Each method: a description and its `tunetext` command line. `models` swaps the catalogue models
    (keys `encoder`, `big_encoder`, `decoder`) for others, e.g. tiny ones in the smoke test."""
    m = {"encoder": "minilm-l6", "big_encoder": "mpnet-base", "decoder": "smollm2-135m", **(models or {})}
    whole_5 = ["train.early_stopping_patience=null"]

    def train(out: Path, model: str, strategy: str, *overrides: str, source: Path = data) -> list[str]:
        return _train(source, out, m[model], strategy, *overrides, epochs=epochs)

    return {
        "zero_shot": ("SmolLM2-135M-Instruct, zero-shot prompt", _prompt(data, 0, m["decoder"])),
        "few_shot": (f"SmolLM2-135M-Instruct, {SHOTS}-shot prompt", _prompt(data, SHOTS, m["decoder"])),
        "features": ("MiniLM-L6 frozen features + logistic head",
                     train(work / "features", "encoder", "features")),
        "last_n_cached": ("MiniLM-L6 last_n=1, frozen prefix cached",
                          train(work / "last_n_cached", "encoder", "last_n", "train.last_n=1",
                                 "train.cache_frozen=on", *whole_5)),
        "last_n_uncached": ("MiniLM-L6 last_n=1, prefix run every step",
                            train(work / "last_n_uncached", "encoder", "last_n", "train.last_n=1",
                                   "train.cache_frozen=off", *whole_5)),
        "lora": ("MiniLM-L6 LoRA r=8 (lr 1e-3)",
                 train(work / "lora", "encoder", "lora", "train.learning_rate=1e-3")),
        "full": ("MiniLM-L6 full fine-tuning", train(work / "full", "encoder", "full")),
        "full_seeds": (f"MiniLM-L6 full fine-tuning, mean of seeds 42-{41 + SEEDS}",
                       train(work / "full_seeds", "encoder", "full", "--seeds", str(SEEDS))),
        "full_book": ("MiniLM-L6 full fine-tuning, the book's data: duplicates kept (another split)",
                      train(work / "full_book", "encoder", "full", "data.dedupe=false",
                            source=work / BOOK_CSV)),
        "distill": ("3-block MiniLM student taught by `full`",
                    train(work / "distill", "encoder", "distill", "train.student_layers=3",
                           f"train.distill_teacher={work / 'full'}")),
        "mpnet_full": ("all-mpnet-base-v2 full fine-tuning", train(work / "mpnet_full", "big_encoder",
                                                                    "full")),
        "distill_mpnet": ("MiniLM-L6 (6 blocks) taught by `mpnet full`",
                          train(work / "distill_mpnet", "encoder", "distill",
                                 f"train.distill_teacher={work / 'mpnet_full'}")),
        "smollm2_last_n_cached": (f"SmolLM2-135M last_n={smollm2_last_n}, frozen prefix cached",
                                  train(work / "smollm2_last_n_cached", "decoder", "last_n",
                                         f"train.last_n={smollm2_last_n}", "train.cache_frozen=on",
                                         *whole_5)),
        "smollm2_last_n_uncached": (f"SmolLM2-135M last_n={smollm2_last_n}, prefix run every step",
                                    train(work / "smollm2_last_n_uncached", "decoder", "last_n",
                                           f"train.last_n={smollm2_last_n}", "train.cache_frozen=off",
                                           *whole_5)),
    }


def balanced_csv(path: Path, dedupe: bool = True, source: str = "sms_spam") -> dict[str, int]:
    """Write the balanced data set to `path`: every unique spam text and as many unique ham texts; with
    `dedupe` false, every spam message and as many ham messages, duplicates and all, as the book does."""
    from tunetext.config import DataConfig
    from tunetext.data.prepare import load_all

    names = ["ham", "spam"]
    pool, _ = load_all(DataConfig(source=source, dedupe=dedupe), names)
    by_label = {name: [t for t, y in zip(pool.texts, pool.labels, strict=True) if y == i]
                for i, name in enumerate(names)}
    n = len(by_label["spam"])
    rows = [(t, "spam") for t in by_label["spam"]]
    rows += [(t, "ham") for t in random.Random(BALANCE_SEED).sample(by_label["ham"], n)]
    random.Random(BALANCE_SEED).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    unique = "unique_" if dedupe else ""
    return {f"{unique}spam": n, f"{unique}ham_available": len(by_label["ham"]), "rows": len(rows)}


def run_process(args: list[str]) -> tuple[int, str, float, float]:
    """Run `tunetext ARGS`; its exit code, stdout, wall seconds and peak resident memory in MiB."""
    command = [sys.executable, "-m", "tunetext.cli", *args]
    print("$ tunetext " + " ".join(args), flush=True)
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, out, time.perf_counter() - start, usage.ru_maxrss / 1024


def _scores(m: dict[str, Any]) -> dict[str, Any]:
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "confusion_matrix": m["confusion_matrix"]}


def run_method(key: str, description: str, args: list[str], work: Path) -> dict[str, Any]:
    watch = CpuWatch()
    code, out, wall, peak = run_process(args)
    result: dict[str, Any] = {"method": key, "description": description,
                              "command": "tunetext " + " ".join(args),
                              "exit_code": code, "wall_seconds": wall, "peak_memory_mb": peak,
                              "quiet": watch.stop()}
    if code != 0:
        result["error"] = f"exited with code {code}"
        return result
    if args[0] == "prompt-eval":
        metrics = json.loads(out[out.index("{"):])  # --json prints the metrics last, as one object
        result.update(_scores(metrics), trainable_parameters=0, train_seconds=0.0)
        return result
    if "--seeds" in args:
        return result | _seeds_result(work / key)
    metrics = json.loads((work / key / "metrics.json").read_text())
    training = metrics["training"]
    result.update(_scores(metrics["test"]), val_accuracy=metrics["val"]["accuracy"],
                  val_macro_f1=metrics["val"]["macro_f1"], train_seconds=training["train_seconds"],
                  cache_seconds=training.get("cache_seconds"), prefix_cached=training.get("prefix_cached"),
                  epochs_completed=training["epochs_completed"],
                  trainable_parameters=training["trainable_parameters"],
                  total_parameters=training["total_parameters"], val_history=_val_history(work / key),
                  **_seconds_logged(work / key))
    return result


def _seeds_result(out: Path) -> dict[str, Any]:
    """A `--seeds` run: test scores and train time as means over the seeds, and each seed's test scores."""
    summary = json.loads((out / "seeds.json").read_text())
    test = summary["test"]
    runs = {seed: json.loads((out / f"seed-{seed}" / "metrics.json").read_text())
            for seed in summary["seeds"]}
    training = next(iter(runs.values()))["training"]
    return {"accuracy": test["accuracy"]["mean"], "accuracy_std": test["accuracy"]["std"],
            "macro_f1": test["macro_f1"]["mean"], "train_seconds": summary["train_seconds"]["mean"],
            "trainable_parameters": training["trainable_parameters"],
            "total_parameters": training["total_parameters"],
            "per_seed": {seed: _scores(m["test"]) for seed, m in runs.items()}}


def _log(run_dir: Path) -> list[dict[str, Any]]:
    log = run_dir / "train_log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def _val_history(run_dir: Path) -> list[float]:
    """Validation macro-F1 after each evaluation, from the run's log."""
    return [e["val_macro_f1"] for e in _log(run_dir) if e.get("event") == "eval"]


def _seconds_logged(run_dir: Path) -> dict[str, list[float]]:
    """Each epoch's training seconds and the cache build's, from the run's log."""
    entries = _log(run_dir)
    return {"epoch_seconds": [e["seconds"] for e in entries if e.get("event") == "epoch"],
            "cache_build_seconds": [e["seconds"] for e in entries if e.get("event") == "cache"]}


def student_speedup(teacher: Path, student: Path, texts: list[str], rounds: int = 3) -> dict[str, Any]:
    """Prediction throughput of teacher and student on `texts`, alternating, best of `rounds` each."""
    from tunetext import Classifier

    models = {"teacher": Classifier.load(teacher), "student": Classifier.load(student)}
    best = {name: float("inf") for name in models}
    watch = CpuWatch()
    for _ in range(rounds):
        for name, clf in models.items():
            start = time.perf_counter()
            clf.predict_proba(texts)
            best[name] = min(best[name], time.perf_counter() - start)
    return {"texts": len(texts), "teacher_seconds": best["teacher"], "student_seconds": best["student"],
            "speedup": best["teacher"] / best["student"], "quiet": watch.stop()}


def check_targets(results: dict[str, dict[str, Any]], book: dict[str, Any]) -> dict[str, Any]:
    ok = {k: r for k, r in results.items() if "error" not in r}
    checks: dict[str, Any] = {}
    # The best MiniLM method is chosen on validation (macro-F1, then accuracy; a tie goes to the method
    # listed first), and its test score is the one reported: choosing on test would flatter it.
    minilm = [k for k in MINILM if k in ok]
    if minilm:
        def on_val(k: str) -> tuple[float, float]:
            return ok[k]["val_macro_f1"], ok[k]["val_accuracy"]

        best = max(minilm, key=on_val)
        checks["accuracy"] = {"best_minilm_method_on_validation": best,
                              "val_macro_f1": ok[best]["val_macro_f1"], "accuracy": ok[best]["accuracy"],
                              "tied_on_validation": {k: ok[k]["accuracy"] for k in minilm
                                                     if on_val(k) == on_val(best)},
                              "target": f"test accuracy > {TARGETS['accuracy_above']}",
                              "met": ok[best]["accuracy"] > TARGETS["accuracy_above"],
                              "full_met": ok.get("full", {}).get("accuracy", 0) > TARGETS["accuracy_above"]}
    if "full_seeds" in ok:
        seeds = ok["full_seeds"]
        checks["accuracy over seeds"] = {"full_mean": seeds["accuracy"], "full_std": seeds["accuracy_std"],
                                         "per_seed": {s: r["accuracy"] for s, r in seeds["per_seed"].items()},
                                         "met": seeds["accuracy"] > TARGETS["accuracy_above"]}
    if "full_book" in ok:
        checks["accuracy, the book's data"] = {
            "full_accuracy": ok["full_book"]["accuracy"], "test": book["test"],
            "test_texts_also_in_train": book["test_texts_also_in_train"],
            "met": ok["full_book"]["accuracy"] > TARGETS["accuracy_above"]}
    for model, (cached, uncached) in CACHE_PAIRS.items():
        if cached not in ok or uncached not in ok:
            continue
        on, off = ok[cached], ok[uncached]
        loop = off["train_seconds"] / on["train_seconds"]
        same = all(on[m] == off[m] for m in ("accuracy", "macro_f1", "confusion_matrix"))
        checks[f"cache {model}"] = {"uncached_train_seconds": off["train_seconds"],
                                    "cached_train_seconds": on["train_seconds"],
                                    "of_which_cache_build": on["cache_seconds"],
                                    "loop_speedup": loop,  # training loop (cache build included)
                                    "wall_speedup": off["wall_seconds"] / on["wall_seconds"],  # whole command
                                    "identical_test_metrics": same,
                                    "target": f"loop >= {TARGETS['cache_speedup']}x, identical",
                                    "met": loop >= TARGETS["cache_speedup"] and same}
    if "lora" in ok and "full" in ok:
        gap = 100 * (ok["full"]["accuracy"] - ok["lora"]["accuracy"])
        checks["lora"] = {"full_minus_lora_points": gap, "target": f"<= {TARGETS['lora_gap_points']} point",
                          "met": gap <= TARGETS["lora_gap_points"]}
    return checks


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "-"
    return "0" if n == 0 else f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# Strategies on balanced sms_spam ({report['data']['rows']} texts; test "
             f"{report['data']['test']})", "",
             "| method | val macro-F1 | test accuracy | test macro-F1 | train s | wall s | trainable "
             "| peak MiB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["results"].values():
        if "error" in r:
            lines.append(f"| {r['description']} | {r['error']} | | | | | | |")
            continue
        val = f"{r['val_macro_f1']:.4f}" if "val_macro_f1" in r else "-"
        lines.append(f"| {r['description']} | {val} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{r['train_seconds']:.1f} | {r['wall_seconds']:.1f} | "
                     f"{_fmt_params(r['trainable_parameters'])} | {r['peak_memory_mb']:.0f} |")
    lines.append("")
    for name, check in report["targets"].items():
        lines.append(f"- **{name}**: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in check.items()))
    lines += [f"- **warning**: {w}" for w in report.get("warnings", [])]
    for student, s in report.get("student_speedup", {}).items():
        lines.append(f"- **{student} student**: predicts the {s['texts']} test texts in "
                     f"{s['student_seconds']:.2f} s against the teacher's {s['teacher_seconds']:.2f} s "
                     f"({s['speedup']:.2f}x)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=RESULTS / "strategies.json",
                        help="JSON result; the Markdown table goes next to it (.md)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-strategies"),
                        help="where the runs and the balanced CSV are written")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--smollm2-last-n", type=int, default=1,
                        help="blocks SmolLM2 trains under last_n (default 1: the last block and final norm)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"epochs of every trained method "
                        f"(default {EPOCHS})")
    parser.add_argument("--source", default="sms_spam", help="the ham/spam data the balanced set is "
                        "drawn from (default the built-in sms_spam; a CSV with text and label columns for a "
                        "smoke run)")
    swaps = (("--encoder", "minilm-l6"), ("--big-encoder", "mpnet-base"), ("--decoder", "smollm2-135m"))
    for flag, name in swaps:
        parser.add_argument(flag, default=name, help=f"model in place of {name} (default {name})")
    parser.add_argument("--smollm2", action="store_true",
                        help="also fine-tune SmolLM2-135M (last_n, cached and uncached)")
    args = parser.parse_args(argv)

    chosen = args.only.split(",") if args.only else [k for k in ALL if k not in SMOLLM2 or args.smollm2]
    unknown = set(chosen) - set(ALL)
    if unknown:
        parser.error(f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    for student, teacher in TEACHERS.items():
        finished = (args.workdir / teacher / "run.json").is_file()
        if student in chosen and teacher not in chosen and not finished:
            parser.error(f"{student} needs the {teacher} run as its teacher: include {teacher}, or run it "
                         "first")

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    machine = machine_info()
    data = args.workdir / "sms_spam_balanced.csv"
    counts = balanced_csv(data, source=args.source)
    from tunetext.config import DataConfig
    from tunetext.data.prepare import load_dataset

    split = load_dataset(DataConfig(source=str(data)))
    counts.update(train=len(split.train), val=len(split.val), test=len(split.test))
    print(f"balanced data: {counts}", flush=True)

    book: dict[str, Any] = {}
    if "full_book" in chosen:
        book = balanced_csv(args.workdir / BOOK_CSV, dedupe=False, source=args.source)
        book_split = load_dataset(DataConfig(source=str(args.workdir / BOOK_CSV), dedupe=False))
        in_train = set(book_split.train.texts)
        book.update(train=len(book_split.train), val=len(book_split.val), test=len(book_split.test),
                    test_texts_also_in_train=sum(t in in_train for t in book_split.test.texts))
        print(f"the book's data, duplicates kept: {book}", flush=True)

    models = {"encoder": args.encoder, "big_encoder": args.big_encoder, "decoder": args.decoder}
    specs = methods(data, args.workdir, args.smollm2_last_n, models, args.epochs)
    results = {}
    for key in chosen:
        description, command = specs[key]
        results[key] = run_method(key, description, command, args.workdir)
        r = results[key]
        summary = r.get("error") or (f"accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, "
                                     f"{r['wall_seconds']:.0f} s")
        print(f"  {key}: {summary}", flush=True)

    report: dict[str, Any] = {
        "benchmark": "strategies",
        "what": "Test accuracy, macro-F1, time, trainable parameters and peak memory of every tunetext "
                "classification method on one balanced sms_spam split (see the module docstring)",
        "command": "python benchmarks/strategies.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": started,
        "machine": machine,
        "data": counts,
        "data_with_duplicates": book,
        "epochs": args.epochs,
        "models": models,
        "prompt": {"template": TEMPLATE, "verbalizers": VERBALIZERS, "shots": SHOTS},
        "results": results,
        "targets": check_targets(results, book),
    }
    report["student_speedup"] = {
        student: student_speedup(args.workdir / teacher, args.workdir / student, split.test.texts)
        for student, teacher in TEACHERS.items()
        if all(k in results and "error" not in results[k] for k in (student, teacher))}
    stretches = [r["quiet"] for r in results.values()]
    stretches += [s["quiet"] for s in report["student_speedup"].values()]
    report["indicative"], report["warnings"] = verdict(stretches)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    args.output.with_suffix(".md").write_text(markdown(report))
    print("\n" + markdown(report))


if __name__ == "__main__":
    main()
