"""How fast tunetext fine-tunes on a CPU, against transformers' `Trainer` used two ways.

The same model (`minilm-l6`), the same prepared split (tunetext's default `sms_spam` preparation) and
the same number of epochs, trained three ways:

  A  `Trainer` as the common tutorials write it: `padding="max_length"` (256), batch 8, lr 5e-5, fp32.
  B  `Trainer` done well: A, but tokenised without padding, `DataCollatorWithPadding` and
     `train_sampling_strategy="group_by_length"`. Only the padding and batching change.
  C  `tunetext.train` with its default config (only the epochs set).

Each way runs in its own fresh process, in the fixed order A, B, C; this process collects their results,
prints a table and writes JSON (see benchmarks/README.md for the fields).

    python benchmarks/train_speed.py                          # the full benchmark (about 55 minutes)
    python benchmarks/train_speed.py --only B,C --epochs 1
    python benchmarks/train_speed.py --max-train-samples 300 --epochs 1 --output /tmp/ts_smoke.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WAYS = {
    "A": "Trainer, tutorial style (pad to 256, batch 8)",
    "B": "Trainer done well (dynamic padding, group_by_length)",
    "C": "tunetext defaults",
}
MODEL = "minilm-l6"
MAX_LENGTH = 256  # the tutorials' padding length; also tunetext's default truncation
TRAINER_BATCH_SIZE = 8
TRAINER_LR = 5e-5
TARGETS = {"A_over_C": 8.0, "B_over_C": 1.3}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "train_speed.json"


# --- one way, inside a worker process -----------------------------------------------------------------


def _config(epochs: int, max_train_samples: int | None):
    """tunetext's default config with only the epochs (and an optional subsample) changed."""
    from tunetext import load_config

    overrides: dict[str, Any] = {"train.epochs": epochs}
    if max_train_samples is not None:
        overrides["data.max_train_samples"] = max_train_samples
    return load_config(overrides=overrides)


def _split_summary(dataset) -> dict[str, Any]:
    summary = dataset.summary()
    return {name: {"size": summary[name]["size"], "sha256": summary[name]["sha256"]}
            for name in ("train", "val", "test")}


def run_trainer(way: str, epochs: int, max_train_samples: int | None) -> dict[str, Any]:
    """Way A or B: transformers' `Trainer` on tunetext's prepared split."""
    import numpy as np
    from datasets import Dataset as HFDataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tunetext.data import load_dataset
    from tunetext.evaluate import compute_metrics
    from tunetext.models import resolve

    setup_start = time.perf_counter()
    config = _config(epochs, max_train_samples)
    data = load_dataset(config.data, config.train.seed)
    names = data.label_names
    path = resolve(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def tokenize(batch):
        if way == "A":
            return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=MAX_LENGTH)
        return tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH)

    def hf_split(split):
        return HFDataset.from_dict({"text": split.texts, "label": split.labels}).map(tokenize, batched=True)

    train_ds, val_ds, test_ds = hf_split(data.train), hf_split(data.val), hf_split(data.test)
    set_seed(config.train.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})

    def accuracy(eval_pred):
        logits, labels = eval_pred
        return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}

    with tempfile.TemporaryDirectory(prefix=f"train_speed_{way}_") as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=TRAINER_BATCH_SIZE,
            per_device_eval_batch_size=TRAINER_BATCH_SIZE,
            learning_rate=TRAINER_LR,
            num_train_epochs=epochs,
            eval_strategy="epoch",
            save_strategy="no",  # keep checkpoint IO out of the timing
            report_to="none",
            seed=config.train.seed,
            train_sampling_strategy="group_by_length" if way == "B" else "random",
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=train_ds, eval_dataset=val_ds,
            processing_class=tokenizer, compute_metrics=accuracy,
            data_collator=DataCollatorWithPadding(tokenizer) if way == "B" else None,
        )
        setup_seconds = time.perf_counter() - setup_start

        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start

        start = time.perf_counter()
        predicted = trainer.predict(test_ds)
        predict_seconds = time.perf_counter() - start

    eval_seconds = sum(e["eval_runtime"] for e in trainer.state.log_history if "eval_runtime" in e)
    steps = trainer.state.global_step
    # Under group_by_length, transformers 5 also length-groups the evaluation and prediction batches, so
    # the predictions come in another order than data.test: score them against the labels returned with
    # them (the same multiset, checked), never against data.test.labels by position.
    labels = predicted.label_ids
    assert sorted(labels.tolist()) == sorted(data.test.labels), "predict returned other examples than test"
    test = compute_metrics(labels.tolist(), np.argmax(predicted.predictions, axis=-1), names)
    return {
        "wall_seconds": wall,
        "cpu_seconds": cpu,  # CPU time of all the process's threads: far less sensitive to a busy machine
        "loop_seconds": wall - eval_seconds,  # trainer.train() minus its per-epoch evaluations
        "eval_seconds": eval_seconds,
        "setup_seconds": setup_seconds,
        "predict_seconds": predict_seconds,
        "epochs_completed": epochs,
        "steps": steps,
        "batch_size": TRAINER_BATCH_SIZE,
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        "train_examples": len(data.train),
        "splits": _split_summary(data),
    }


def run_tunetext(epochs: int, max_train_samples: int | None) -> dict[str, Any]:
    """Way C: `tunetext.train` with the default config."""
    import tunetext

    config = _config(epochs, max_train_samples)
    with tempfile.TemporaryDirectory(prefix="train_speed_C_") as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        run = tunetext.train(config, Path(out) / "run", progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        splits = json.loads((run.run_dir / "data.json").read_text())
    training = run.metrics["training"]
    return {
        # The whole call: data preparation, model loading, the before-fine-tuning and final evaluations,
        # per-epoch checkpoints and saving the run. The ratios use this one.
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "loop_seconds": training["train_seconds"],  # the training loop alone, as tunetext measures it
        "epochs_completed": training["epochs_completed"],
        "steps": training["steps"],
        "batch_size": config.train.batch_size,
        "bf16": training["bf16"],
        "test_accuracy": run.metrics["test"]["accuracy"],
        "test_macro_f1": run.metrics["test"]["macro_f1"],
        "train_examples": splits["train"]["size"],
        "splits": {name: {"size": splits[name]["size"], "sha256": splits[name]["sha256"]}
                   for name in ("train", "val", "test")},
        "config": config.model_dump(mode="json"),
    }


def run_worker(way: str, epochs: int, max_train_samples: int | None, result_path: Path) -> None:
    import torch

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("tunetext").setLevel(logging.INFO)
    threads = torch.get_num_threads()  # torch's default, the same in every worker; nobody sets it
    load_before = os.getloadavg()[0]
    if way == "C":
        result = run_tunetext(epochs, max_train_samples)
    else:
        result = run_trainer(way, epochs, max_train_samples)
    epochs_done = max(1, result["epochs_completed"])
    result.update(
        way=way,
        description=WAYS[way],
        seconds_per_epoch=result["wall_seconds"] / epochs_done,
        loop_seconds_per_step=result["loop_seconds"] / max(1, result["steps"]),
        loop_examples_per_second=result["train_examples"] * epochs_done / result["loop_seconds"],
        torch_threads={"before": threads, "after": torch.get_num_threads()},
        loadavg_1min={"before": load_before, "after": os.getloadavg()[0]},
    )
    result_path.write_text(json.dumps(result, indent=2))


# --- the parent: run each way in a fresh process, compare ---------------------------------------------


def machine_info() -> dict[str, Any]:
    import accelerate
    import torch
    import transformers

    import tunetext

    cpuinfo: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpuinfo.setdefault(key.strip(), value.strip())  # the first core's entry
    except OSError:
        pass
    cpu = cpuinfo.get("model name") or platform.processor() or platform.machine()
    flags = cpuinfo.get("flags", "")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "amx_bf16": "amx_bf16" in flags.split(),  # what precision=auto's bf16 needs (Intel AMX)
        "avx512_bf16": "avx512_bf16" in flags.split(),  # bf16 dot products without AMX (e.g. AMD Zen 4)
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "tunetext": tunetext.__version__,
    }


def _run_way(way: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="train_speed_") as tmp:
        result_path = Path(tmp) / f"{way}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--only", way, "--epochs", str(args.epochs),
                   "--worker-result", str(result_path)]
        if args.max_train_samples is not None:
            command += ["--max-train-samples", str(args.max_train_samples)]
        print(f"\n=== {way}: {WAYS[way]} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call(command)
        if code != 0 or not result_path.is_file():
            return {"way": way, "description": WAYS[way], "error": f"worker exited with code {code}",
                    "process_seconds": time.perf_counter() - start}
        result = json.loads(result_path.read_text())
        result["process_seconds"] = time.perf_counter() - start
        return result


def compare(results: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Ratios, which targets are met (None where a way was not run or failed), and warnings."""
    ok = {w: r for w, r in results.items() if "error" not in r}
    ratios: dict[str, float | None] = {}
    met: dict[str, bool | None] = {}
    for other in ("A", "B"):
        key = f"{other}_over_C"
        both = other in ok and "C" in ok
        ratios[key] = ok[other]["wall_seconds"] / ok["C"]["wall_seconds"] if both else None
        ratios[f"{key}_cpu_time"] = ok[other]["cpu_seconds"] / ok["C"]["cpu_seconds"] if both else None
        ratios[f"{key}_loop"] = ok[other]["loop_seconds"] / ok["C"]["loop_seconds"] if both else None
        met[f"speed_vs_{other}"] = ratios[key] >= TARGETS[key] if both else None  # type: ignore[operator]
        met[f"accuracy_vs_{other}"] = (ok["C"]["test_accuracy"] >= ok[other]["test_accuracy"]
                                       if both else None)
    met["all"] = all(met.values()) if None not in met.values() else None
    warnings = []
    if len({json.dumps(r["splits"], sort_keys=True) for r in ok.values()}) > 1:
        warnings.append("the ways did not train and test on the same splits (see each way's 'splits')")
    threads = {r["torch_threads"]["after"] for r in ok.values()} | {r["torch_threads"]["before"]
                                                                    for r in ok.values()}
    if len(threads) > 1:
        warnings.append(f"torch threads differed between ways: {sorted(threads)}")
    busy = [w for w, r in ok.items() if max(r["loadavg_1min"].values()) > (os.cpu_count() or 1) + 0.5]
    if busy:
        warnings.append(f"the machine was busy (1-minute load above the core count) during way(s) "
                        f"{', '.join(busy)}; timings are noisy")
    warnings += [f"way {w} failed: {r['error']}" for w, r in results.items() if "error" in r]
    return ratios, met, warnings


def format_table(report: dict[str, Any]) -> str:
    header = (f"{'way':<4}{'wall s':>9}{'s/epoch':>9}{'loop s':>9}{'s/step':>8}{'steps':>7}{'test acc':>10}"
              f"{'macro-F1':>10}{'train n':>9}  description")
    lines = [header, "-" * len(header)]
    for way, r in report["ways"].items():
        if "error" in r:
            lines.append(f"{way:<4}{'failed: ' + r['error']:>40}")
            continue
        lines.append(f"{way:<4}{r['wall_seconds']:>9.1f}{r['seconds_per_epoch']:>9.1f}{r['loop_seconds']:>9.1f}"
                     f"{r['loop_seconds_per_step']:>8.3f}{r['steps']:>7d}{r['test_accuracy']:>10.4f}"
                     f"{r['test_macro_f1']:>10.4f}{r['train_examples']:>9d}  {r['description']}")
    lines.append("wall s: A/B trainer.train() with its per-epoch evaluations; C the whole tunetext.train() "
                 "call (ratios use these). loop s: training steps only.")
    for key, ratio in report["ratios"].items():
        if ratio is not None and key.endswith("_cpu_time"):
            lines.append(f"{key}: {ratio:.2f}x (CPU time of the same region; less sensitive to other load)")
        elif ratio is not None and key.endswith("_loop"):
            lines.append(f"{key}: {ratio:.2f}x (training steps alone, evaluations and C's setup left out)")
        elif ratio is not None:
            other = key[0]
            speed, acc = report["met"][f"speed_vs_{other}"], report["met"][f"accuracy_vs_{other}"]
            lines.append(f"{key}: {ratio:.2f}x (target >= {TARGETS[key]}x: {'met' if speed else 'NOT met'}; "
                         f"accuracy C >= {other}: {'met' if acc else 'NOT met'})")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def run_all(args: argparse.Namespace, ways: list[str]) -> int:
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    results = {way: _run_way(way, args) for way in ways}
    ratios, met, warnings = compare(results)
    from tunetext.models import resolve

    report = {
        "benchmark": "train_speed",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info(),
        "config": {
            "model": MODEL,
            "model_path": resolve(MODEL),
            "data": "sms_spam, tunetext default preparation (70/10/20 stratified, de-duplicated, seed 42)",
            "epochs": args.epochs,
            "max_train_samples": args.max_train_samples,
            "ways_run": ways,
            "trainer": {"A": {"padding": f"max_length {MAX_LENGTH}", "sampling": "random"},
                        "B": {"padding": "dynamic (DataCollatorWithPadding)", "sampling": "group_by_length"},
                        "both": {"batch_size": TRAINER_BATCH_SIZE, "learning_rate": TRAINER_LR,
                                 "precision": "fp32", "eval_strategy": "epoch", "save_strategy": "no",
                                 "truncation": MAX_LENGTH}},
            "tunetext": "default config except train.epochs (and data.max_train_samples); see ways.C.config",
        },
        "ways": results,
        "ratios": ratios,
        "targets": {**{f"{k}_min": v for k, v in TARGETS.items()},
                    "accuracy": "C's test accuracy >= A's and >= B's"},
        "met": met,
        "warnings": warnings,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print("\n" + format_table(report))
    print(f"\nwrote {output}")
    return 1 if any("error" in r for r in results.values()) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3,
                        help="epochs for every way (default 3, tunetext's own default)")
    parser.add_argument("--only", default="A,B,C", help="comma-separated subset of A,B,C (default all)")
    parser.add_argument("--max-train-samples", type=int, default=None,
                        help="stratified subsample of the training split, the same for every way "
                        "(for smoke runs)")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help="where to write the JSON results")
    parser.add_argument("--worker-result", type=Path, help=argparse.SUPPRESS)  # internal: run one way here
    args = parser.parse_args(argv)

    asked = [w.strip().upper() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in asked if w not in WAYS]
    if unknown or not asked:
        parser.error(f"--only: got {args.only!r}; give a comma-separated subset of {','.join(WAYS)}")
    if args.epochs < 1:
        parser.error(f"--epochs: got {args.epochs}; give at least 1")
    if args.max_train_samples is not None and args.max_train_samples < 1:
        parser.error(f"--max-train-samples: got {args.max_train_samples}; give a positive number")
    ways = [w for w in WAYS if w in asked]  # always the fixed order A, B, C
    if args.worker_result is not None:
        if len(ways) != 1:
            parser.error("--worker-result runs exactly one way")
        run_worker(ways[0], args.epochs, args.max_train_samples, args.worker_result)
        return 0
    return run_all(args, ways)


if __name__ == "__main__":
    sys.exit(main())
