"""What each `tunetext` subcommand does with its parsed arguments: call one public function of the
Python API with the same argument names, and print its result. Options left out are not passed, so the
API's own defaults apply (`given`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from accelerate import PartialState

from tunetext.adaptive import long_text_mode
from tunetext.assets import fetched
from tunetext.audit import audit, findings_table
from tunetext.batch_predict import predict_file, prediction_row, read_texts
from tunetext.batches import LongText, text_room, token_lengths
from tunetext.compare import compare, format_table
from tunetext.config import ConfigError, RunConfig, load_config, parse_overrides
from tunetext.data import BUILTIN, load_dataset
from tunetext.errors import TunetextError, UsageError
from tunetext.evaluate import evaluate, format_metrics, warning_lines
from tunetext.export import export
from tunetext.hub import push
from tunetext.lengths import length_report, what_long_text_does
from tunetext.models import CATALOGUE, load_tokenizer, resolve
from tunetext.predict import Classifier
from tunetext.prompting import format_story, prompt_eval, prompt_story
from tunetext.ray_predict import predict_with_ray
from tunetext.report import report
from tunetext.runs import CONFIG, read_run
from tunetext.search import search
from tunetext.task_metrics import headline
from tunetext.train import train, train_seeds

# The two imports inside functions below (optuna; tunetext.serve, which brings fastapi and uvicorn) are
# libraries only one command needs: importing them here would add their second or so to every command and
# to `--help`. `import tunetext` already brings in torch, transformers and accelerate.

def given(**values: Any) -> dict[str, Any]:
    """The options given on the command line; the ones left out take the API's own defaults."""
    return {k: v for k, v in values.items() if v is not None}


# ---- commands ---------------------------------------------------------------------------------------------

def train_command(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = given(**{
        "data.source": args.data, "model.name": args.model, "train.epochs": args.epochs,
        "train.strategy": args.strategy, "data.text_column": args.text_column,
        "data.label_column": args.label_column, "data.max_train_samples": args.max_train_samples,
        "data.template": args.template, "model.init_from": args.init_from,
        "model.init_labels": args.init_labels, "data.task": args.task,
        "data.label_columns": args.label_columns})
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
    if not PartialState().is_main_process:  # under `accelerate launch`, one process reports
        return 0

    m = run.metrics
    print(f"\nrun written to {run.run_dir}")
    print(f"fine-tuning took {m['training']['train_seconds']:.1f} s ({m['training']['steps']} steps, "
          f"{m['training']['trainable_parameters'] / 1e6:.1f}M trainable parameters)\n")
    print(format_metrics(m["val"], "validation"))
    print()
    print(format_metrics(m["test"], "test"))
    before, after = headline(m["before_finetune"]["test"]), headline(m["test"])
    print("\nbefore vs after fine-tuning (test):")
    print(f"  {'':<10}" + "".join(f"{name:>10}" for name in after))
    print(f"  {'before':<10}" + "".join(f"{before.get(name, float('nan')):>10.4f}" for name in after))
    print(f"  {'after':<10}" + "".join(f"{value:>10.4f}" for value in after.values()))
    _warn(warning_lines(m["val"], "validation") + warning_lines(m["test"], "test"))
    return 0


def _warn(lines: list[str]) -> None:
    """Degenerate-model warnings, last and on stderr, so that they are seen (and kept out of JSON)."""
    if lines:
        sys.stdout.flush()  # after the tables, not in the middle of them
        print("\n" + "\n".join(lines), file=sys.stderr)


def search_command(args: argparse.Namespace) -> int:
    import optuna  # a second or so: only this command needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunetext logs each trial itself
    config = load_config(args.config, args.overrides)
    result = search(config, args.output, **given(trials=args.trials, timeout=args.timeout,
                                                  storage=args.storage))
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


def evaluate_command(args: argparse.Namespace) -> int:
    metrics = evaluate(args.run_dir, **given(data=args.data, split=args.split, text_column=args.text_column,
                                              label_column=args.label_column))
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for line in metrics["report"]:
            print(f"data: {line}")
        where = f"{args.run_dir} on {args.data or 'its own data'} ({metrics['split']})"
        print(format_metrics(metrics, where))
    _warn(warning_lines(metrics, metrics.get("split", "evaluate")))
    return 0


def predict_command(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.output and args.input and texts:
        raise UsageError("give texts on the command line or --input FILE with --output, not both")
    if args.engine == "ray":  # Ray Data actors: a file or folder to a folder of Parquet files
        return _predict_on_ray(args, texts)
    if args.output:  # streamed: a file (or the texts given) to a file, a chunk at a time
        summary = predict_file(args.run_dir, args.input or texts, args.output, **given(
            text_column=args.text_column, batch_size=args.batch_size, chunk_rows=args.chunk_rows,
            on_bad_row=args.on_bad_row, input_format=args.input_format, output_format=args.output_format,
            backend=args.backend))
        skipped = (f"; skipped {summary['skipped']} bad row(s), at {summary['numbered_by']}(s) "
                   f"{', '.join(map(str, summary['skipped_lines'][:20]))}" if summary["skipped"] else "")
        print(f"wrote {summary['rows']} predictions to {args.output}{skipped}", file=sys.stderr)
        return 0
    if not texts and not args.input:
        raise UsageError("give texts to classify, or --input FILE")
    clf = Classifier.load(args.run_dir, **given(backend=args.backend))
    if args.input:  # printed: read whole, the bad rows named by line as predict_file names them
        texts += read_texts(clf, args.input, **given(text_column=args.text_column, on_bad_row=args.on_bad_row,
                                                      input_format=args.input_format))
    predictions = clf.predict(texts, **given(batch_size=args.batch_size))
    rows = [{"text": t, **prediction_row(p, clf.task)} for t, p in zip(texts, predictions, strict=True)]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            text = r["text"] if len(r["text"]) <= 70 else r["text"][:67] + "..."
            note = (f"  ({r['chunks']} windows)" if r.get("chunks", 1) > 1 else "") + \
                ("  (cut: only part of it was read)" if r["truncated"] else "")
            print(f"{_answer(r, clf.task)}  {text}{note}")
    return 0


def _predict_on_ray(args: argparse.Namespace, texts: list[str]) -> int:
    """`predict --engine ray`: `predict_with_ray` from --input to the --output folder."""
    if texts or not args.input or not args.output:
        raise UsageError("--engine ray predicts --input (a file or folder) into --output (a new folder); "
                         "texts on the command line are for --engine local")
    if args.on_bad_row == "skip" or args.output_format not in (None, "parquet"):
        raise UsageError("--engine ray writes Parquet and fails on a bad row; --on-bad-row skip and other "
                         "--output-format values are for --engine local")
    summary = predict_with_ray(args.run_dir, args.input, args.output, **given(
        text_column=args.text_column, num_workers=args.num_workers, batch_size=args.batch_size,
        chunk_rows=args.chunk_rows, address=args.ray_address, backend=args.backend,
        input_format=args.input_format))
    print(f"wrote {summary['rows']} predictions to {args.output}", file=sys.stderr)
    return 0


def _answer(row: dict[str, Any], task: str) -> str:
    """A prediction's answer for the terminal, in a column of its own."""
    if task == "regression":
        return f"{row['value']:>10.4f}"
    if task == "multi_label":
        labels = ", ".join(f"{n} {row['probabilities'][n]:.2f}" for n in row["labels"]) or "(no label)"
        return f"{labels:<30}"
    return f"{row['label']:<12} {row['score']:.4f}"


def serve_command(args: argparse.Namespace) -> int:
    from tunetext.serve import serve  # fastapi and uvicorn: only this command needs them

    serve(args.run_dir, **given(
        host=args.host, port=args.port, log_level=args.log_level, workers=args.workers,
        threads=args.threads, max_batch_size=args.max_batch_size, pass_size=args.pass_size,
        max_wait_ms=args.max_wait_ms, max_texts=args.max_texts, max_body_bytes=args.max_body_bytes,
        max_request_tokens=args.max_request_tokens, header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout, max_header_bytes=args.max_header_bytes,
        max_concurrency=args.max_concurrency, precision=args.precision, cache_size=args.cache_size,
        backend=args.backend))
    return 0




def _parse_labels(text: str | None) -> dict[str, str] | None:
    """`"ham=ham,spam=junk mail"` -> `{"ham": "ham", "spam": "junk mail"}`."""
    if text is None:
        return None
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    bad = [name + sep + value for name, sep, value in pairs if not sep or not name.strip()]
    if bad or not pairs:
        raise UsageError(f"--labels takes NAME=WORDS pairs separated by commas, e.g. ham=ham,spam=spam; "
                         f"got {', '.join(map(repr, bad or [text]))}")
    return {name.strip(): value for name, _, value in pairs}


def prompt_eval_command(args: argparse.Namespace) -> int:
    options = given(labels=_parse_labels(args.labels), shots=args.shots, seed=args.seed,
                     max_examples=args.max_examples, score=args.score, batch_size=args.batch_size)
    options.update(calibrate=args.calibrate, progress=True)  # tqdm writes to stderr
    if args.run is not None:
        source = read_run(args.run)[0].data.source
        if args.data is not None and args.data != source:
            raise UsageError(f"{args.run} was trained on {source!r}, not {args.data!r}; the story compares "
                             "on one test split, so leave out --data or give the run's own")
        if args.split not in (None, "test"):
            raise UsageError("--run compares test scores; leave out --split")
        if args.text_column is not None or args.label_column is not None:
            raise UsageError("--run reads the run's own data with its own columns; leave out --text-column "
                             "and --label-column")
        story = prompt_story(args.run, args.model, args.template, **options)
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
        raise UsageError("give --data (a dataset), or --run RUN_DIR to use a fine-tuned run's data")
    data = load_config(overrides=given(**{"data.source": args.data, "data.text_column": args.text_column,
                                           "data.label_column": args.label_column})).data
    metrics = prompt_eval(args.model, data, args.template, **given(split=args.split), **options)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(format_metrics(metrics, f"{metrics['prompt']['shots']}-shot prompt, {args.model} on {args.data} "
                                  f"({metrics['split']})"))
    return 0


def compare_command(args: argparse.Namespace) -> int:
    rows = compare(args.run_dirs)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def report_command(args: argparse.Namespace) -> int:
    print(f"report written to {report(args.run_dir, args.output)}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    record = export(args.run_dir, **given(format=args.format, quantize=args.quantize, gate=args.gate),
                    force=args.force)
    print(f"{args.run_dir}/onnx/{record['model']}: {record['chosen']}, used by --backend auto "
          f"({record['reason']})")
    return 0


def push_command(args: argparse.Namespace) -> int:
    url = push(args.run_dir, args.repo_id, **given(token=args.token, license=args.license),
               private=args.private)
    print(f"{args.run_dir} uploaded to {url}")
    return 0


def data_show_command(args: argparse.Namespace) -> int:
    problems: list[str] = []
    settings = parse_overrides(args.overrides, problems)
    problems += [f"{key}: tunetext data show takes data settings only (data.KEY=VALUE), and model.name and "
                 "model.max_length for the token lengths" for key in settings
                 if not key.startswith("data.") and key not in ("model.name", "model.max_length")]
    overrides = {**settings, **given(**{"data.source": args.source, "data.text_column": args.text_column,
                                      "data.label_column": args.label_column, "data.seed": args.seed,
                                      "data.task": args.task, "data.label_columns": args.label_columns})}
    if problems:
        raise ConfigError(problems)
    run_config = load_config(overrides=overrides)
    config = run_config.data  # the data settings, and the model's for token lengths
    dataset = load_dataset(config)
    card = BUILTIN[args.source].card if args.source in BUILTIN else None
    for line in card.lines() if card is not None else []:
        print(line)
    what = "target" if dataset.task == "regression" else f"{len(dataset.label_names)} labels"
    print(f"{args.source}: {dataset.task}, {what}: {', '.join(dataset.label_names)}")
    for line in dataset.report:
        print(f"  preparation: {line}")
    for name, split in dataset.splits().items():
        lengths = sorted(len(t.split()) for t in split.texts)
        print(f"  {name:<5} {len(split):>6} examples; words per text: median {lengths[len(lengths) // 2]}, "
              f"max {lengths[-1]}")
    print({"single_label": "per class: count (share of the split)",
           "multi_label": "per label: rows having it (share of the split)",
           "regression": "the target in each split"}[dataset.task])
    for line in dataset.class_table():
        print(f"  {line}")
    _print_examples(dataset, args.examples)
    _print_token_lengths(run_config, dataset.splits())
    return 0


def _print_examples(dataset: Any, per_label: int) -> None:
    """Up to `per_label` training examples of each label (regression: of the lowest, middle and highest
    targets), with their labels."""
    names, train = dataset.label_names, dataset.train
    if dataset.task == "regression":
        order = sorted(range(len(train)), key=lambda i: train.labels[i])
        picks = sorted({*order[:per_label], *order[len(order) // 2:][:per_label], *order[-per_label:]}
                       if per_label else set(), key=lambda i: train.labels[i])
        print(f"examples (lowest, middle and highest targets, {per_label} each, from train):")
        for i in picks:
            print(f"  [{train.labels[i]:g}] {_clip(train.texts[i])}")
        return
    print(f"examples (up to {per_label} per label, from train):")
    shown: Counter[int] = Counter()
    for text, label in zip(train.texts, train.labels, strict=True):
        ids = label if dataset.task == "multi_label" else (label,)
        if any(shown[i] < per_label for i in ids) or (not ids and shown[-1] < per_label):
            for i in ids or (-1,):
                shown[i] += 1
            print(f"  [{', '.join(names[i] for i in ids) or 'no label'}] {_clip(text)}")


def _clip(text: str, width: int = 100) -> str:
    return f"{text[:width]}{'...' if len(text) > width else ''}"


def _print_token_lengths(config: RunConfig, splits: dict[str, Any]) -> None:
    """Each split's lengths in model.name's tokens (`tunetext.lengths.length_report`) and what
    data.long_text does to the texts longer than model.max_length; one line instead when the tokenizer
    cannot be had without a download (a catalogue model not fetched yet) or at all (offline)."""
    name, max_length, template = config.model.name, config.model.max_length, config.data.template
    try:
        if name in CATALOGUE and not fetched(CATALOGUE[name].asset):
            raise UsageError(f"{name} is not downloaded yet (training fetches it once)")
        tokenizer = load_tokenizer(resolve(name))
    except (TunetextError, OSError) as exc:
        print(f"token lengths: skipped, no tokenizer for model.name={name}: {str(exc)[:200]}")
        return
    print(f"token lengths in {name}'s tokens (template and special tokens included), "
          f"model.max_length {max_length}:")
    longer = {}
    for split_name, split in splits.items():
        r = length_report(token_lengths(tokenizer, split.texts, template), max_length)
        longer[split_name] = r["longer"]
        print(f"  {split_name:<5} min {r['min']}, median {r['median']:.0f}, p90 {r['p90']:.0f}, "
              f"p95 {r['p95']:.0f}, max {r['max']}; {r['longer']} of {r['texts']} "
              f"({100 * r['longer_share']:.0f}%) longer than max_length")
    if any(longer.values()):
        # data.long_text=auto is resolved from the training texts, as training will resolve it.
        data = config.data.model_copy(update={"long_text": long_text_mode(config.data.long_text,
                                                                           longer.get("train", 0))})
        room = text_room(tokenizer, max_length, template)
        print(f"  longer texts: {what_long_text_does(LongText.of(data), room)}"
              + (" (data.long_text=auto)" if config.data.long_text == "auto" else ""))


def data_audit_command(args: argparse.Namespace) -> int:
    result = audit(args.source, **given(model=args.model, folds=args.folds, output=args.output),
                   overrides=args.overrides, drop_leaks=args.drop_leaks, progress=not args.quiet)
    print("\n".join(findings_table(result, result.summary["show"])))
    return 0


def data_list_command(args: argparse.Namespace) -> int:
    width = max(map(len, BUILTIN))
    for name, ds in BUILTIN.items():
        print(f"{name:<{width}}  {ds.description}")
    return 0
