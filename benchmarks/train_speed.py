"""How fast tunetext fine-tunes on a CPU, against transformers' `Trainer` set up three ways.

The same model (`minilm-l6`), the same prepared split (tunetext's default `sms_spam` preparation), the same
number of epochs and the same weight selection (the epoch with the best validation macro-F1), four ways:

  A   `Trainer` as the common tutorials write it: `padding="max_length"` (256), batch 8, lr 5e-5, fp32.
  B   A typical good `Trainer` setup: A, but tokenised without padding, `DataCollatorWithPadding` and
      `train_sampling_strategy="group_by_length"`.
  Bp  (B') `Trainer` configured as well as it can be for this job: B with tunetext's batch size, learning
      rate, warm-up, decay, clipping and early stopping, bf16 exactly where tunetext uses it, eager
      attention as tunetext picks on CPU, and the fused AdamW.
  C   `tunetext.train` with its default config (only the epochs and the seed set).

B' and C run once per seed (`--seeds`, default 3), in rounds that alternate which goes first; then B and
A once each, A last. Each run is a fresh process; this process collects the results, prints a table and
rewrites the JSON after every run (fields: benchmarks/README.md; `complete` is false until all are
done). Two times are compared, and every ratio says which it divides: `loop` is the training steps alone
(epoch start to epoch end, no evaluation or checkpoint); `wall` is `trainer.train()` for the Trainer ways
and the whole `tunetext.train()` call for C.

    python benchmarks/train_speed.py                          # the full benchmark (about 75 minutes)
    python benchmarks/train_speed.py --only Bp,C --epochs 1 --seeds 1
    python benchmarks/train_speed.py --model PATH --data FILE.csv --max-train-samples 40 --epochs 1 \
        --seeds 1 --output /tmp/ts_smoke.json                 # a smoke run on any model and data
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

WAYS = {
    "A": "Trainer, tutorial style (pad to 256, batch 8)",
    "B": "Trainer, a typical good setup (dynamic padding, group_by_length, batch 8)",
    "Bp": "Trainer configured as tunetext trains (batch, lr, schedule, precision, eager attention)",
    "C": "tunetext defaults",
}
SEEDED = ("Bp", "C")  # run once per seed; the others once, with the first seed
MODEL = "minilm-l6"
MAX_LENGTH = 256  # the tutorials' padding length; also tunetext's default truncation
TUTORIAL = {"batch_size": 8, "learning_rate": 5e-5}  # A and B: the tutorials' settings, Trainer defaults else
TARGETS = {"A_over_C_wall": 8.0, "Bp_over_C": 1.3}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "train_speed.json"
RATIOS = {
    "wall": "the Trainer way's trainer.train() wall time over the whole tunetext.train() call's (C also "
            "prepares the data, loads the model, scores val and test before and after training, calibrates "
            "and writes the run)",
    "loop": "training steps alone (epoch start to epoch end, no evaluation, no checkpoint), the Trainer "
            "way's over C's",
}


# --- one way, inside a worker process -----------------------------------------------------------------


def _config(args: argparse.Namespace, seed: int):
    """tunetext's default config with only the epochs, the training seed, and optionally the model, the
    data and a subsample changed."""
    from tunetext import load_config

    overrides: dict[str, Any] = {"train.epochs": args.epochs, "train.seed": seed, "model.name": args.model}
    if args.data is not None:
        overrides["data.source"] = args.data
    if args.max_train_samples is not None:
        overrides["data.max_train_samples"] = args.max_train_samples
    return load_config(overrides=overrides)


def _split_summary(dataset) -> dict[str, Any]:
    summary = dataset.summary()
    return {name: {"size": summary[name]["size"], "sha256": summary[name]["sha256"]}
            for name in ("train", "val", "test")}


def trainer_settings(way: str, config) -> dict[str, Any]:
    """What each Trainer way sets; everything else is the Trainer's default."""
    import torch

    from tunetext.models.loading import attention_kernel
    from tunetext.precision import use_bf16

    tc = config.train
    selection = {"metric_for_best_model": tc.metric, "load_best_model_at_end": True}
    if way in ("A", "B"):
        return {"padding": "max_length" if way == "A" else "dynamic",
                "train_sampling_strategy": "random" if way == "A" else "group_by_length",
                "per_device_train_batch_size": TUTORIAL["batch_size"],
                "per_device_eval_batch_size": TUTORIAL["batch_size"],
                "learning_rate": TUTORIAL["learning_rate"], "attention": "transformers' default (sdpa)",
                "bf16": False, **selection}
    cpu = torch.device("cpu")
    return {"padding": "dynamic", "train_sampling_strategy": "group_by_length",
            "per_device_train_batch_size": tc.batch_size, "per_device_eval_batch_size": tc.eval_batch_size,
            "learning_rate": tc.learning_rate, "weight_decay": tc.weight_decay,
            "warmup_steps": tc.warmup_ratio,  # a float below 1 is a share of the steps
            "lr_scheduler_type": "linear", "max_grad_norm": tc.max_grad_norm, "optim": "adamw_torch_fused",
            "bf16": use_bf16(tc.precision, cpu), "attention": attention_kernel(config.model.attention, cpu),
            "early_stopping_patience": tc.early_stopping_patience, **selection}


def run_trainer(way: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Way A, B or B': transformers' `Trainer` on tunetext's prepared split."""
    import numpy as np
    from datasets import Dataset as HFDataset
    from transformers import (
        AutoConfig,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        EarlyStoppingCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    from tunetext.data import load_dataset
    from tunetext.evaluate import compute_metrics
    from tunetext.models import resolve

    class EpochTimer(TrainerCallback):
        """Time from each epoch's start to its end: the training steps, before its evaluation and save."""

        def __init__(self) -> None:
            self.seconds, self._start = 0.0, 0.0

        def on_epoch_begin(self, *_args, **_kwargs):
            self._start = time.perf_counter()

        def on_epoch_end(self, *_args, **_kwargs):
            self.seconds += time.perf_counter() - self._start

    setup_start = time.perf_counter()
    from tunetext.adaptive import DataShape
    from tunetext.adaptive import resolve as resolve_defaults

    config = _config(args, seed)
    data = load_dataset(config.data)  # the split of data.seed, the same whatever the training seed
    config, _ = resolve_defaults(config, DataShape.of(data.train.labels))  # settings chosen from the data
    settings = trainer_settings(way, config)
    names = data.label_names
    path = resolve(config.model.name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # 256, or less for a model with fewer positions (the tiny models of the smoke test)
    max_length = min(MAX_LENGTH, AutoConfig.from_pretrained(path).max_position_embeddings)
    padding = {"padding": "max_length"} if settings["padding"] == "max_length" else {}

    def tokenize(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length, **padding)

    def hf_split(split):
        return HFDataset.from_dict({"text": split.texts, "label": split.labels}).map(tokenize, batched=True)

    train_ds, val_ds, test_ds = hf_split(data.train), hf_split(data.val), hf_split(data.test)
    set_seed(seed)
    attention = {} if way in ("A", "B") else {"attn_implementation": settings["attention"]}
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, **attention)

    def scores(eval_pred):
        logits, labels = eval_pred
        return compute_metrics(labels.tolist(), np.argmax(logits, axis=-1), names)

    timer = EpochTimer()
    callbacks: list[Any] = [timer]
    if settings.get("early_stopping_patience") is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings["early_stopping_patience"]))
    ours = ("padding", "attention", "early_stopping_patience")  # applied above, not TrainingArguments
    passed = {k: v for k, v in settings.items() if k not in ours}
    with tempfile.TemporaryDirectory(prefix=f"train_speed_{way}_") as out:
        training_args = TrainingArguments(
            output_dir=out, num_train_epochs=args.epochs, eval_strategy="epoch", save_strategy="epoch",
            save_total_limit=1, report_to="none", seed=seed, **passed)
        trainer = Trainer(
            model=model, args=training_args, train_dataset=train_ds, eval_dataset=val_ds,
            processing_class=tokenizer, compute_metrics=scores, callbacks=callbacks,
            data_collator=DataCollatorWithPadding(tokenizer) if settings["padding"] == "dynamic" else None)
        setup_seconds = time.perf_counter() - setup_start

        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start

        start = time.perf_counter()
        predicted = trainer.predict(test_ds)
        predict_seconds = time.perf_counter() - start

    evals = [e for e in trainer.state.log_history if "eval_runtime" in e]
    # Under group_by_length, transformers 5 also length-groups the evaluation and prediction batches, so
    # the predictions come in another order than data.test: score them against the labels returned with
    # them (the same multiset, checked), never against data.test.labels by position.
    labels = predicted.label_ids
    assert sorted(labels.tolist()) == sorted(data.test.labels), "predict returned other examples than test"
    test = compute_metrics(labels.tolist(), np.argmax(predicted.predictions, axis=-1), names)
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,  # CPU time of all the process's threads
        "loop_seconds": timer.seconds,
        "eval_seconds": sum(e["eval_runtime"] for e in evals),
        "setup_seconds": setup_seconds,
        "predict_seconds": predict_seconds,
        "epochs_completed": round(trainer.state.epoch or 0),
        "steps": trainer.state.global_step,
        "batch_size": settings["per_device_train_batch_size"],
        "best_checkpoint_step": int(Path(trainer.state.best_model_checkpoint or "-0").name.split("-")[-1]),
        "val_macro_f1_per_epoch": [e.get(f"eval_{config.train.metric}") for e in evals],
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "train_examples": len(data.train),
        "splits": _split_summary(data),
        "settings": {**settings, "max_length": max_length},
    }


def run_tunetext(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """Way C: `tunetext.train` with the default config."""
    import tunetext

    config = _config(args, seed)
    with tempfile.TemporaryDirectory(prefix="train_speed_C_") as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        run = tunetext.train(config, Path(out) / "run", progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        splits = json.loads((run.run_dir / "data.json").read_text())
        log = (run.run_dir / "train_log.jsonl").read_text().splitlines()
    evals = [e for e in map(json.loads, log) if e.get("event") == "eval"]
    training = run.metrics["training"]
    return {
        "wall_seconds": wall,  # the whole call; see RATIOS["wall"]
        "cpu_seconds": cpu,
        "loop_seconds": training["train_seconds"],  # the epochs' training steps, as tunetext measures them
        "epochs_completed": training["epochs_completed"],
        "steps": training["steps"],
        "batch_size": config.train.batch_size,
        "bf16": training["bf16"],
        "best_checkpoint_step": training["best_step"],
        "val_macro_f1_per_epoch": [e.get("val_macro_f1") for e in evals],
        "test_accuracy": run.metrics["test"]["accuracy"],
        "test_macro_f1": run.metrics["test"]["macro_f1"],
        "train_examples": splits["train"]["size"],
        "splits": {name: {"size": splits[name]["size"], "sha256": splits[name]["sha256"]}
                   for name in ("train", "val", "test")},
        "config": config.model_dump(mode="json"),
    }


def run_worker(way: str, args: argparse.Namespace, seed: int, result_path: Path) -> None:
    import torch

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tunetext").setLevel(logging.INFO)
    threads = torch.get_num_threads()  # torch's default, the same in every worker; nobody sets it
    result = run_tunetext(args, seed) if way == "C" else run_trainer(way, args, seed)
    result.update(way=way, seed=seed, description=WAYS[way],
                  loop_examples_per_second=result["train_examples"] * max(1, result["epochs_completed"])
                  / result["loop_seconds"],
                  torch_threads={"before": threads, "after": torch.get_num_threads()})
    result_path.write_text(json.dumps(result, indent=2))


# --- the parent: run each way in a fresh process, compare ---------------------------------------------


def _run_way(way: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        result_path = Path(tmp) / f"{way}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--only", way, "--seed-of-worker",
                   str(seed), "--epochs", str(args.epochs), "--model", args.model,
                   "--worker-result", str(result_path)]
        for flag, value in (("--data", args.data), ("--max-train-samples", args.max_train_samples)):
            if value is not None:
                command += [flag, str(value)]
        print(f"\n=== {way} seed {seed}: {WAYS[way]} ===", flush=True)
        watch = CpuWatch()
        code = subprocess.call(command)
        quiet = watch.stop()
        if code != 0 or not result_path.is_file():
            return {"way": way, "seed": seed, "description": WAYS[way], "quiet": quiet,
                    "error": f"worker exited with code {code}"}
        result = json.loads(result_path.read_text())
        return {**result, "quiet": quiet, "process_seconds": quiet["wall_seconds"]}


def schedule(ways: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """One round per seed of the seeded ways, alternating their order so that neither always runs first;
    then the unseeded ways once, slowest (A) last, so that an interrupted run still holds the rest."""
    order: list[tuple[str, int]] = []
    seeded = [w for w in ways if w in SEEDED]
    for i, seed in enumerate(seeds):
        order += [(w, seed) for w in (seeded if i % 2 == 0 else seeded[::-1])]
    return order + [(w, seeds[0]) for w in reversed(ways) if w not in SEEDED]


def _spread(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "per_seed": values}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per way: mean (and standard deviation over seeds) of times and test scores."""
    ways: dict[str, Any] = {}
    for way in WAYS:
        done = [r for r in runs if r["way"] == way and "error" not in r]
        if not done:
            continue
        ways[way] = {
            "description": WAYS[way], "seeds": [r["seed"] for r in done],
            **{key: statistics.fmean(r[key] for r in done)
               for key in ("wall_seconds", "loop_seconds", "cpu_seconds", "loop_examples_per_second")},
            "test_accuracy": _spread([r["test_accuracy"] for r in done]),
            "test_macro_f1": _spread([r["test_macro_f1"] for r in done]),
            "steps": done[0]["steps"], "batch_size": done[0]["batch_size"],
            "epochs_completed": done[0]["epochs_completed"], "train_examples": done[0]["train_examples"],
        }
    return ways


def compare(ways: dict[str, Any], runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Ratios of mean times (each labelled loop or wall), per-seed paired ratios, and which targets are
    met (None where a way was not run)."""
    ratios: dict[str, Any] = {"definitions": RATIOS}
    met: dict[str, Any] = {}
    c = ways.get("C")
    for other in ("A", "B", "Bp"):
        o = ways.get(other)
        for kind in ("wall", "loop"):
            ratios[f"{other}_over_C_{kind}"] = (o[f"{kind}_seconds"] / c[f"{kind}_seconds"]
                                                if o and c else None)
        if other == "Bp" and o and c:
            by_seed = {r["seed"]: r for r in runs if r["way"] == "C" and "error" not in r}
            ratios["Bp_over_C_loop_per_seed"] = {
                str(r["seed"]): r["loop_seconds"] / by_seed[r["seed"]]["loop_seconds"]
                for r in runs if r["way"] == "Bp" and "error" not in r and r["seed"] in by_seed}
    if c and "A" in ways:
        met["speed_vs_A_wall"] = ratios["A_over_C_wall"] >= TARGETS["A_over_C_wall"]
        met["accuracy_vs_A"] = c["test_accuracy"]["mean"] >= ways["A"]["test_accuracy"]["mean"]
    if c and "Bp" in ways:
        bp = ways["Bp"]
        for kind in ("wall", "loop"):
            met[f"speed_vs_Bp_{kind}"] = ratios[f"Bp_over_C_{kind}"] >= TARGETS["Bp_over_C"]
        difference = c["test_accuracy"]["mean"] - bp["test_accuracy"]["mean"]
        noise = max(c["test_accuracy"]["std"], bp["test_accuracy"]["std"])
        met["accuracy_vs_Bp"] = {
            "C_minus_Bp_mean_test_accuracy": difference, "largest_std_over_seeds": noise,
            "equal_or_better": difference >= 0, "within_seed_spread": difference >= -noise}
    return ratios, met


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'way':<4}{'seeds':>6}{'wall s':>9}{'loop s':>9}{'steps':>7}{'test accuracy':>20}"
              f"{'test macro-F1':>20}  description")
    lines = [header, "-" * len(header)]
    for way, w in report["ways"].items():
        acc, f1 = w["test_accuracy"], w["test_macro_f1"]
        lines.append(f"{way:<4}{len(w['seeds']):>6}{w['wall_seconds']:>9.1f}{w['loop_seconds']:>9.1f}"
                     f"{w['steps']:>7d}{acc['mean']:>12.4f} ± {acc['std']:.4f}{f1['mean']:>12.4f} ± "
                     f"{f1['std']:.4f}  {w['description']}")
    lines.append("times are means over the seeds; " + "; ".join(f"{k}: {v}" for k, v in RATIOS.items()))
    for key, ratio in report["ratios"].items():
        if isinstance(ratio, float):
            lines.append(f"{key}: {ratio:.2f}x")
    lines.append(f"met: {json.dumps(report['met'])}")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def run_all(args: argparse.Namespace, ways: list[str], seeds: list[int]) -> int:
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    machine = machine_info()
    order = schedule(ways, seeds)
    runs: list[dict[str, Any]] = []
    for way, seed in order:
        runs.append(_run_way(way, seed, args))
        # Written after every run, so that an interrupted benchmark keeps what it measured.
        report = build_report(args, ways, seeds, runs, machine, started, complete=len(runs) == len(order))
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + format_table(report))
    print(f"\nwrote {output}")
    return 1 if any("error" in r for r in runs) else 0


def build_report(args: argparse.Namespace, ways: list[str], seeds: list[int], runs: list[dict[str, Any]],
                 machine: dict[str, Any], started: str, complete: bool) -> dict[str, Any]:
    summary = summarise(runs)
    ratios, met = compare(summary, runs)
    indicative, warnings = verdict([r["quiet"] for r in runs])
    ok = [r for r in runs if "error" not in r]
    if len({json.dumps(r["splits"], sort_keys=True) for r in ok}) > 1:
        warnings.append("the ways did not train and test on the same splits (see each run's 'splits')")
    if len({t for r in ok for t in r["torch_threads"].values()}) > 1:
        warnings.append("torch thread counts differed between runs")
    warnings += [f"{r['way']} seed {r['seed']} failed: {r['error']}" for r in runs if "error" in r]
    from tunetext.models import resolve

    return {
        "benchmark": "train_speed",
        "command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "complete": complete,  # false while (or if interrupted before) every scheduled run is done
        "indicative": indicative,
        "machine": machine,
        "config": {"model": args.model, "model_path": resolve(args.model),
                   "data": args.data or "sms_spam, tunetext's default preparation (70/10/20 stratified, "
                                        "de-duplicated, data.seed 42)",
                   "epochs": args.epochs, "max_train_samples": args.max_train_samples, "seeds": seeds,
                   "ways_run": ways, "order": schedule(ways, seeds), "truncation": MAX_LENGTH,
                   "weight_selection": "every way: the epoch with the best validation macro-F1",
                   "trainer_common": {"eval_strategy": "epoch", "save_strategy": "epoch",
                                      "load_best_model_at_end": True}},
        "ways": summary,
        "ratios": ratios,
        "targets": {**{f"{k}_min": v for k, v in TARGETS.items()},
                    "accuracy": "C's mean test accuracy over seeds >= the other way's"},
        "met": met,
        "warnings": warnings,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs for every way (default 3; fixed so that every way trains as many "
                        "epochs, where tunetext would choose them from the data)")
    parser.add_argument("--only", default=",".join(WAYS), help="comma-separated subset of A,B,Bp,C "
                        "(default all)")
    parser.add_argument("--seeds", type=int, default=3,
                        help="training seeds for Bp and C, counting from 42 (default 3)")
    parser.add_argument("--model", default=MODEL, help=f"catalogue name or model folder (default {MODEL})")
    parser.add_argument("--data", help="data source instead of tunetext's default (sms_spam)")
    parser.add_argument("--max-train-samples", type=int, default=None,
                        help="stratified subsample of the training split, the same for every way "
                        "(for smoke runs)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="where to write the JSON results")
    parser.add_argument("--worker-result", type=Path, help=argparse.SUPPRESS)  # internal: run one way here
    parser.add_argument("--seed-of-worker", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    asked = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in asked if w not in WAYS]
    if unknown or not asked:
        parser.error(f"--only: got {args.only!r}; give a comma-separated subset of {','.join(WAYS)}")
    for flag, value in (("--epochs", args.epochs), ("--seeds", args.seeds),
                        ("--max-train-samples", args.max_train_samples)):
        if value is not None and value < 1:
            parser.error(f"{flag}: got {value}; give at least 1")
    ways = [w for w in WAYS if w in asked]  # always the fixed order A, B, Bp, C
    if args.worker_result is not None:
        if len(ways) != 1:
            parser.error("--worker-result runs exactly one way")
        run_worker(ways[0], args, args.seed_of_worker, args.worker_result)
        return 0
    return run_all(args, ways, list(range(42, 42 + args.seeds)))


if __name__ == "__main__":
    sys.exit(main())
