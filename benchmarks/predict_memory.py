"""Peak memory of streaming batch prediction: `tunetext predict --input big.csv --output out.csv` should use
no more memory for 200,000 rows than for 20,000 (within 10%).

For each size a generated CSV (an id and a text of 3 to 30 words) is predicted by `predict_file` in a fresh
Python process, which reports its peak resident set (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after
loading the model and after predicting. `ratio` is the largest size's peak over the smallest's; the target
is at most `TARGET_RATIO`. Without `--run-dir` the model is a tiny random BERT (2 layers, hidden 32, built
like the tests' `build_tiny_bert`), so the run takes minutes and the memory measured is the pipeline's,
not the model's; with `--run-dir`, a finished run's.

    python benchmarks/predict_memory.py                        # tiny random BERT, 20,000 and 200,000 rows
    python benchmarks/predict_memory.py --run-dir runs/demo    # a real run
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.10
WORDS = ("free", "entry", "win", "prize", "call", "now", "claim", "cash", "text", "reply", "ok", "see", "you",
         "later", "lunch", "are", "we", "still", "on", "for", "sorry", "i", "missed", "your", "meeting",
         "tomorrow", "at", "the", "office", "thanks", "coffee", "it", "was", "lovely")


def build_tiny_bert(path: Path) -> Path:
    """A tiny random BERT with a two-label head and its tokenizer, saved to `path`."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(WORDS))]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "ham", 1: "spam"}, label2id={"ham": 0, "spam": 1})
    BertForSequenceClassification(config).save_pretrained(path)
    return path


def write_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """`rows` rows of id and text, written as they are generated (the parent holds none in memory)."""
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(rows):
            writer.writerow([i, " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))])
    return path


def peak_kib() -> int:
    """This process's peak resident set so far, in KiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args: argparse.Namespace) -> None:
    """One measurement, in a fresh process: load, note the peak, predict the file, note the peak again."""
    import torch

    from tunetext.batch_predict import predict_file
    from tunetext.config import load_config
    from tunetext.models import load_classifier
    from tunetext.predict import Classifier

    torch.set_num_threads(args.threads)
    if args.run_dir:
        clf = Classifier.load(args.run_dir)
    else:
        model, tokenizer, _ = load_classifier(args.model_dir, device=torch.device("cpu"))
        config = load_config(overrides={"model.name": args.model_dir, "model.max_length": 64})
        clf = Classifier(model, tokenizer, config)
    loaded = peak_kib()
    summary = predict_file(clf, args.input, args.out, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
                           progress=False)
    print(json.dumps({"rows": summary["rows"], "seconds": summary["seconds"], "peak_after_load_kib": loaded,
                      "peak_kib": peak_kib()}))


def measure(args: argparse.Namespace, model_dir: Path | None, rows: int, work: Path) -> dict[str, Any]:
    source = write_csv(work / f"in_{rows}.csv", rows)
    out = work / f"out_{rows}.csv"
    command = [sys.executable, __file__, "--child", "--input", str(source), "--out", str(out),
               "--batch-size", str(args.batch_size), "--chunk-rows", str(args.chunk_rows),
               "--threads", str(args.threads)]
    command += ["--run-dir", str(args.run_dir)] if args.run_dir else ["--model-dir", str(model_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    source.unlink()
    out.unlink()
    return {"size": rows, **result, "peak_mib": round(result["peak_kib"] / 1024, 1),
            "rows_per_second": round(result["rows"] / max(result["seconds"], 1e-9), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, help="a finished run (default: a tiny random BERT)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--chunk-rows", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in the measured process")
    parser.add_argument("--output", type=Path, default=RESULTS / "predict_memory.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    result: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "machine": machine_info(),
                              "run_dir": str(args.run_dir) if args.run_dir else "tiny random BERT",
                              "batch_size": args.batch_size, "chunk_rows": args.chunk_rows,
                              "threads": args.threads, "target_ratio": TARGET_RATIO}
    watch = CpuWatch()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = None if args.run_dir else build_tiny_bert(work / "tiny-bert")
        sizes = [measure(args, model_dir, rows, work) for rows in sorted(args.sizes)]
    quiet = watch.stop()
    ratio = sizes[-1]["peak_kib"] / sizes[0]["peak_kib"]
    result.update(sizes=sizes, ratio=round(ratio, 4), met=ratio <= TARGET_RATIO, quiet=quiet)
    result["indicative"], result["warnings"] = verdict([quiet])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    shown = ", ".join(f"{s['size']} rows {s['peak_mib']} MiB" for s in sizes)
    print(f"peak RSS: {shown}; ratio {ratio:.3f} (target <= {TARGET_RATIO})")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
