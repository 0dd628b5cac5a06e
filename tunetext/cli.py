"""The `tunetext` command: a thin table over the Python API.

    tunetext train --data sms_spam --model minilm-l6 --output runs/spam
    tunetext evaluate runs/spam
    tunetext predict runs/spam "WINNER! claim your prize" "see you at 8?"
    tunetext data show sms_spam
    tunetext prompt-eval --model smollm2-135m --data sms_spam --template "SMS: {text}" --shots 4
    tunetext report runs/spam
    tunetext serve runs/spam --port 8000
    tunetext search --config configs/search_sms_spam.yaml --output runs/search --trials 10
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, get_args

from tunetext.config import TrainConfig
from tunetext.version import __version__

EXAMPLES = {
    "spam": "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
    "ham": "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
}


def _train(args: argparse.Namespace) -> int:
    from tunetext.compare import compare, format_table
    from tunetext.config import ConfigError, load_config, parse_overrides
    from tunetext.evaluate import format_metrics
    from tunetext.runs import CONFIG
    from tunetext.train import train, train_seeds

    overrides: dict[str, Any] = {}
    for key, value in (("data.source", args.data), ("model.name", args.model), ("train.epochs", args.epochs),
                       ("train.strategy", args.strategy), ("data.text_column", args.text_column),
                       ("data.label_column", args.label_column),
                       ("data.max_train_samples", args.max_train_samples), ("data.template", args.template)):
        if value is not None:
            overrides[key] = value
    config_file = args.config
    if args.resume and config_file is None:
        config_file = Path(args.output) / CONFIG
    problems: list[str] = []
    overrides.update(parse_overrides(args.overrides, problems))
    try:
        config = load_config(config_file, overrides)
    except ConfigError as exc:  # report malformed items with every other problem, not first and alone
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    if args.seeds is not None:
        if args.resume:
            raise ConfigError(["--seeds and --resume: resume one seed's run with --output DIR/seed-N"])
        results, summary = train_seeds(config, args.output, args.seeds, overwrite=args.overwrite,
                                       progress=not args.quiet)
        print(f"\n{len(results)} runs under {args.output}; mean and std in {args.output}/seeds.json\n")
        print(format_table(compare([r.run_dir for r in results])))
        print(f"\n{'test':<10}{'mean':>10}{'std':>10}")
        for key, value in summary["test"].items():
            print(f"{key:<16}{value['mean']:>10.4f}{value['std']:>10.4f}")
        return 0
    run = train(config, args.output, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`, one process reports
        return 0

    m = run.metrics
    print(f"\nrun written to {run.run_dir}")
    print(f"fine-tuning took {m['training']['train_seconds']:.1f} s ({m['training']['steps']} steps, "
          f"{m['training']['trainable_parameters'] / 1e6:.1f}M trainable parameters)\n")
    print(format_metrics(m["val"], "validation"))
    print()
    print(format_metrics(m["test"], "test"))
    before = m["before_finetune"]["test"]
    print("\nbefore vs after fine-tuning (test):")
    print(f"  {'':<10}{'accuracy':>10}{'macro-F1':>10}")
    print(f"  {'before':<10}{before['accuracy']:>10.4f}{before['macro_f1']:>10.4f}")
    print(f"  {'after':<10}{m['test']['accuracy']:>10.4f}{m['test']['macro_f1']:>10.4f}")
    return 0


def _search(args: argparse.Namespace) -> int:
    import optuna

    from tunetext.config import load_config
    from tunetext.search import search

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunetext logs each trial itself
    config = load_config(args.config, args.overrides)
    result = search(config, args.output, trials=args.trials, timeout=args.timeout, storage=args.storage)
    keys = list(config.search.space)
    print(f"\n{'trial':>5}  {'state':<8}{'val ' + result.metric:>14}{'seconds':>9}  params")
    for t in result.trials:
        value = f"{t['value']:.4f}" if t["value"] is not None else "-"
        seconds = f"{t['duration_s']:.0f}" if t["duration_s"] is not None else "-"
        params = ", ".join(f"{k.split('.')[-1]}={_short(t['params'][k])}" for k in keys if k in t["params"])
        mark = " (config as written)" if t["default"] else ""
        print(f"{t['number']:>5}  {t['state']:<8}{value:>14}{seconds:>9}  {params}{mark}")
    default = f"{result.default_value:.4f}" if result.default_value is not None else "did not complete"
    print(f"\n{result.complete} complete, {result.pruned} pruned, {result.failed} failed")
    print(f"best: trial {result.best_trial}, val {result.metric} {result.best_value:.4f} "
          f"(the config as written: {default})")
    for key, value in result.best_params.items():
        print(f"  {key} = {_short(value)}")
    print(f"best config: {result.best_config_path}  (its trial run: {result.best_run_dir})")
    print(f"train it: tunetext train --config {result.best_config_path} --output "
          f"{Path(args.output) / 'best'}")
    return 0


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _evaluate(args: argparse.Namespace) -> int:
    from tunetext.evaluate import evaluate, format_metrics

    metrics = evaluate(args.run_dir, args.data, args.split, args.text_column, args.label_column)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    for line in metrics["report"]:
        print(f"data: {line}")
    print(format_metrics(metrics, f"{args.run_dir} on {args.data or 'its own data'} ({metrics['split']})"))
    return 0


def _read_inputs(path: Path, text_column: str) -> list[str]:
    from tunetext.data.sources import FILE_SUFFIXES, DataError, read_file

    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix in FILE_SUFFIXES and suffix != ".txt":  # the formats training reads (.json is JSON lines)
        # Reuse the readers; the label column is not needed, so point it at the text column.
        split = read_file(path, text_column, text_column)
        return [str(t) if t is not None else "" for t in split.texts]
    return path.read_text(encoding="utf-8").splitlines()


def _predict(args: argparse.Namespace) -> int:
    from tunetext.predict import Classifier

    texts = list(args.texts)
    if args.input:
        texts += _read_inputs(Path(args.input), args.text_column)
    if not texts:
        print("error: give texts to classify, or --input FILE", file=sys.stderr)
        return 2
    clf = Classifier.load(args.run_dir)
    predictions = clf.predict(texts, batch_size=args.batch_size)
    rows = [{"text": t, "label": p.label, "score": p.score, "probabilities": p.probabilities}
            for t, p in zip(texts, predictions, strict=True)]
    if args.output:
        out = Path(args.output)
        if out.suffix.lower() == ".csv":
            with open(out, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["text", "label", "score"] + [f"p_{n}" for n in clf.label_names])
                for r in rows:
                    writer.writerow([r["text"], r["label"], f"{r['score']:.6f}"]
                                    + [f"{r['probabilities'][n]:.6f}" for n in clf.label_names])
        else:
            out.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} predictions to {out}", file=sys.stderr)
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            text = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
            print(f"{r['label']:<12} {r['score']:.4f}  {text}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from tunetext.serve import serve

    serve(args.run_dir, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
          max_batch_size=args.max_batch_size, pass_size=args.pass_size, max_wait_ms=args.max_wait_ms,
          max_texts=args.max_texts, max_body_bytes=args.max_body_bytes,
          max_request_tokens=args.max_request_tokens, header_timeout_s=args.header_timeout,
          body_timeout_s=args.body_timeout, max_header_bytes=args.max_header_bytes,
          max_concurrency=args.max_concurrency, precision=args.precision, log_level=args.log_level)
    return 0


def _port(text: str) -> int:
    """A TCP port to listen on, for argparse: a usage error, not a traceback, when it is not one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 65535, got {text!r}")
    return port


def _parse_labels(text: str | None) -> dict[str, str] | None:
    """`"ham=ham,spam=junk mail"` -> `{"ham": "ham", "spam": "junk mail"}`."""
    if text is None:
        return None
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    bad = [name + sep + value for name, sep, value in pairs if not sep or not name.strip()]
    if bad:
        raise ValueError(f"--labels takes NAME=WORDS pairs separated by commas, e.g. ham=ham,spam=spam; "
                         f"got {', '.join(map(repr, bad))}")
    return {name.strip(): value for name, _, value in pairs}


def _prompt_eval(args: argparse.Namespace) -> int:
    from tunetext.config import DataConfig
    from tunetext.evaluate import format_metrics
    from tunetext.prompting import format_story, prompt_eval, prompt_story
    from tunetext.runs import read_run

    labels = _parse_labels(args.labels)
    options: dict[str, Any] = {"labels": labels, "seed": args.seed, "max_examples": args.max_examples,
                               "score": args.score, "batch_size": args.batch_size,
                               "calibrate": args.calibrate, "progress": True}  # tqdm writes to stderr
    if args.run is not None:
        source = read_run(args.run)[0].data.source
        if args.data is not None and args.data != source:
            raise ValueError(f"{args.run} was trained on {source!r}, not {args.data!r}; the story compares "
                             "on one test split, so leave out --data or give the run's own")
        if args.split != "test":
            raise ValueError("--run compares test scores; leave out --split")
        story = prompt_story(args.run, args.model, args.template, shots=args.shots, **options)
        if args.json:
            print(json.dumps(story, indent=2))
            return 0
        for key in ("zero_shot", "few_shot"):
            if key in story:
                m = story[key]
                print(format_metrics(m, f"{m['prompt']['shots']}-shot prompt, {args.model} on {source} "
                                        f"(test)"))
                print()
        print(f"zero-shot -> few-shot -> fine-tuned, on the test split of {source} (stored in "
              f"{Path(args.run) / 'metrics.json'} under prompt_baselines):")
        print(format_story(story))
        return 0
    if args.data is None:
        raise ValueError("give --data (a dataset), or --run RUN_DIR to use a fine-tuned run's data")
    data = DataConfig(source=args.data, text_column=args.text_column, label_column=args.label_column)
    metrics = prompt_eval(args.model, data, args.template, shots=args.shots, split=args.split, **options)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(format_metrics(metrics, f"{args.shots}-shot prompt, {args.model} on {args.data} ({args.split})"))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from tunetext.compare import compare, format_table

    rows = compare(args.run_dirs)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def _report(args: argparse.Namespace) -> int:
    from tunetext.report import report

    print(f"report written to {report(args.run_dir, args.output)}")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    from tunetext.config import ConfigError, load_config, parse_overrides
    from tunetext.data import BUILTIN, load_dataset

    problems: list[str] = []
    given = parse_overrides(args.overrides, problems)
    problems += [f"{key}: tunetext data show takes data settings only (data.KEY=VALUE)"
                 for key in given if not key.startswith("data.")]
    overrides = {**given, "data.source": args.source, "data.text_column": args.text_column,
                 "data.label_column": args.label_column}
    if problems:
        raise ConfigError(problems)
    config = load_config(overrides=overrides).data  # only the data settings matter here
    dataset = load_dataset(config, args.seed)
    card = BUILTIN[args.source].card if args.source in BUILTIN else None
    for line in card.lines() if card is not None else []:
        print(line)
    print(f"{args.source}: {len(dataset.label_names)} labels: {', '.join(dataset.label_names)}")
    for line in dataset.report:
        print(f"  preparation: {line}")
    for name, split in dataset.splits().items():
        counts = Counter(split.labels)
        lengths = sorted(len(t.split()) for t in split.texts)
        per = ", ".join(f"{dataset.label_names[i]} {counts[i]}" for i in range(len(dataset.label_names)))
        print(f"  {name:<5} {len(split):>6} examples ({per}); words per text: median "
              f"{lengths[len(lengths) // 2]}, max {lengths[-1]}")
    print(f"examples (up to {args.examples} per label, from train):")
    shown: Counter[int] = Counter()
    for text, label in zip(dataset.train.texts, dataset.train.labels, strict=True):
        if shown[label] < args.examples:
            shown[label] += 1
            print(f"  [{dataset.label_names[label]}] {text[:100]}{'...' if len(text) > 100 else ''}")
    return 0


def _data_list(args: argparse.Namespace) -> int:
    from tunetext.data import BUILTIN

    width = max(map(len, BUILTIN))
    for name, ds in BUILTIN.items():
        print(f"{name:<{width}}  {ds.description}")
    return 0


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the libraries' load reports and per-file progress bars out of tunetext's output."""
    import transformers

    for noisy in ("transformers", "accelerate", "datasets", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    transformers.logging.set_verbosity_warning() if verbose else transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunetext", description="Fine-tune, evaluate and use transformer "
                                     "text classifiers.")
    parser.add_argument("--version", action="version", version=f"tunetext {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="fine-tune a model", description="Fine-tune a model. Settings come from "
                       "the defaults, then --config, then the options and KEY=VALUE overrides here.")
    p.add_argument("--data", help="built-in dataset name, a CSV/TSV/JSONL/Parquet file, or a Hugging Face "
                   "dataset (default: sms_spam)")
    p.add_argument("--model", help="catalogue name, local model folder or hub id (default: minilm-l6)")
    p.add_argument("--output", required=True, help="run directory to write: a new or empty folder, or a run "
                   "to continue (--resume) or replace (--overwrite)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--strategy", choices=list(get_args(TrainConfig.model_fields["strategy"].annotation)),
                   help="how to fine-tune (docs/strategies.md); its settings are train.* overrides")
    p.add_argument("--config", help="YAML file with data/model/train sections")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--template", help="prompt template with {text} where the text goes, applied in training, "
                   "evaluation and prediction (data.template)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output, deleting only its "
                   "own files (refused if the folder holds anything else)")
    p.add_argument("--seeds", type=int, help="train N times with seeds train.seed, train.seed+1, ... into "
                   "OUTPUT/seed-S and report mean and std of every metric (same data split)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train.learning_rate=5e-5 train.batch_size=16")
    p.set_defaults(func=_train)

    p = sub.add_parser("search", help="search hyperparameters with Optuna", description="Search the "
                       "config's search.space with Optuna (TPE sampling, median pruning per epoch); the "
                       "first trial is the config as written. Writes OUTPUT/best_config.yaml, "
                       "OUTPUT/search.json and one run per trial under OUTPUT/trials. See docs/search.md.")
    p.add_argument("--config", required=True, help="YAML file with data/model/train/search sections")
    p.add_argument("--output", required=True, help="folder for the trials, the study and the best config")
    p.add_argument("--trials", type=int, help="finished trials wanted in the study in all, counting those "
                   "already in it (default: search.trials)")
    p.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    p.add_argument("--storage", help="Optuna storage URL shared by several workers, e.g. "
                   "postgresql://user@host/db (default: search.storage, else sqlite:///OUTPUT/study.db)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. search.study_name=lr-sweep train.epochs=1")
    p.set_defaults(func=_search)

    p = sub.add_parser("evaluate", help="score a finished run on data")
    p.add_argument("run_dir")
    p.add_argument("--data", help="data to evaluate on (default: the run's own data)")
    p.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="default: test for the run's own data, all for other data")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="classify texts with a finished run")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--input", help="file of texts: .txt (one per line), or CSV/TSV/JSONL/Parquet")
    p.add_argument("--text-column", default="text", help="text column of --input tables")
    p.add_argument("--output", help="write predictions to a .jsonl or .csv file")
    p.add_argument("--json", action="store_true", help="print predictions as JSON")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=_predict)

    p = sub.add_parser("serve", help="serve a finished run over HTTP", description="Serve a finished run: "
                       "POST /predict, GET /health /ready /info /metrics /docs, and a page at /. Set "
                       "TUNETEXT_API_KEY to require 'Authorization: Bearer <key>'. See docs/serving.md.")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only; "
                   "0.0.0.0 for every interface)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default: 8000)")
    p.add_argument("--workers", type=int, default=1, help="processes, each with its own copy of the model")
    # Unset limits take the defaults of `tunetext.serve.ServeSettings` (listed in docs/serving.md).
    p.add_argument("--threads", type=int, help="inference threads per worker, each running its own batch on "
                   "one torch thread (default: cores // workers)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], help="auto: bf16 on CPUs with AMX, else "
                   "fp32")
    p.add_argument("--max-batch-size", type=int, help="most texts gathered into one batch")
    p.add_argument("--pass-size", type=int, help="texts per forward pass (a batch is sorted by length and "
                   "run in passes of this many)")
    p.add_argument("--max-wait-ms", type=float, help="longest a batch waits for more texts once it has one")
    p.add_argument("--max-texts", type=int, help="most texts in one request (more: 413)")
    p.add_argument("--max-body-bytes", type=int, help="largest request body (more: 413)")
    p.add_argument("--max-request-tokens", type=int, help="most tokens one request may cost, each text "
                   "counted up to the model's max_length (more: 413)")
    p.add_argument("--header-timeout", type=float, help="seconds a client has to send a request's line and "
                   "headers (then 408)")
    p.add_argument("--body-timeout", type=float, help="seconds a client has to send a request's body once "
                   "its headers are in (then 408)")
    p.add_argument("--max-header-bytes", type=int, help="largest request line plus headers (more: 431)")
    p.add_argument("--max-concurrency", type=int, help="most requests being answered at once (more: 503)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=_serve)

    p = sub.add_parser("prompt-eval", help="zero- or few-shot prompt classification with a decoder",
                       description="Classify by prompting a decoder: each label is scored by the "
                       "log-likelihood of its verbalizer after the prompt (as the assistant's reply for "
                       "chat models). With --run, also score zero-shot, and print zero-shot -> few-shot -> "
                       "fine-tuned on the run's test split, storing the prompt scores in its metrics.json. "
                       "See docs/prompting.md.")
    p.add_argument("--model", required=True, help="decoder: catalogue name (smollm2-135m), folder or hub id")
    p.add_argument("--data", help="dataset, as for train (default with --run: the run's own)")
    p.add_argument("--template", required=True, help="prompt with {text} where the text goes")
    p.add_argument("--labels", help="verbalizers, NAME=WORDS separated by commas, e.g. ham=ham,spam=spam "
                   "(default: the label names)")
    p.add_argument("--shots", type=int, default=0, help="training examples shown before each text")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.add_argument("--max-examples", type=int, help="score a stratified subsample of this many texts")
    p.add_argument("--score", choices=["sum", "mean"], default="sum", help="a verbalizer's summed or "
                   "per-token mean log-likelihood")
    p.add_argument("--calibrate", action="store_true", help="contextual calibration: divide out the label "
                   "probabilities the prompt gives a content-free text ('N/A')")
    p.add_argument("--seed", type=int, default=42, help="picks the few-shot examples and the subsample")
    p.add_argument("--batch-size", type=int, default=8, help="texts per forward pass")
    p.add_argument("--run", help="a fine-tuned run on the same data: print the story table and store the "
                   "prompt scores in its metrics.json")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=_prompt_eval)

    p = sub.add_parser("compare", help="one table of finished runs")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=_compare)

    p = sub.add_parser("report", help="an HTML report of a finished run", description="Write a "
                       "self-contained HTML report of a finished run (figures inline, also saved as PNGs "
                       "next to it): learning curves, confusion matrix, per-class scores, calibration, the "
                       "most confident mistakes, before vs after fine-tuning, and the data. See "
                       "docs/report.md.")
    p.add_argument("run_dir")
    p.add_argument("--output", help="HTML file to write (default: RUN_DIR/report/report.html)")
    p.set_defaults(func=_report)

    p = sub.add_parser("data", help="look at datasets")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("show", help="sizes, label counts and examples of a dataset")
    q.add_argument("source")
    q.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE",
                   help="preparation settings, as for train (e.g. data.lowercase=true "
                   "data.similar_labels=keep)")
    q.add_argument("--text-column", default="text")
    q.add_argument("--label-column", default="label")
    q.add_argument("--examples", type=int, default=2)
    q.add_argument("--seed", type=int, help="split seed (default: data.seed's default, 42)")
    q.set_defaults(func=_data_show)
    q = data_sub.add_parser("list", help="the built-in datasets")
    q.set_defaults(func=_data_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tunetext.assets import FetchError
    from tunetext.config import ConfigError
    from tunetext.data.sources import DataError
    from tunetext.models import ModelError
    from tunetext.runs import RunError
    from tunetext.train import TrainingInterrupted

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s")
    quiet_libraries(args.verbose)
    try:
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print("\ninterrupted", file=sys.stderr)
        return 130
    except (ConfigError, DataError, ModelError, RunError, FetchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a folder without write permission, a path through a file
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1


OS_ERROR_FIXES = {
    errno.EACCES: "check the permissions of the path, or choose one you can write to",
    errno.EPERM: "check the permissions of the path, or choose one you can write to",
    errno.EROFS: "the file system is read-only; choose a path on a writable one",
    errno.ENOSPC: "free some disk space, or point --output or TUNETEXT_CACHE at a disk with room, and run "
                  "again (an interrupted training run continues with --resume)",
    errno.EDQUOT: "your disk quota is used up; free some space and run again",
    errno.ENOTDIR: "a part of the path is a file, not a folder; correct the path",
    errno.EISDIR: "a folder was found where a file was expected; correct the path",
    errno.ENOENT: "check that the path exists",
}


def describe_os_error(exc: OSError) -> str:
    """An `OSError` as one line for a user: what failed, on which path, and what to do."""
    where = f": {exc.filename}" if exc.filename is not None else ""
    fix = OS_ERROR_FIXES.get(exc.errno or 0, "check the path and try again")
    return f"{exc.strerror or exc}{where}; {fix}"


if __name__ == "__main__":
    sys.exit(main())
