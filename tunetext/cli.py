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
import inspect
import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from tunetext.compare import compare, format_table
from tunetext.config import ConfigError, DataConfig, ModelConfig, TrainConfig, load_config, parse_overrides
from tunetext.data import BUILTIN, load_dataset
from tunetext.data.sources import FILE_SUFFIXES, DataError, read_file
from tunetext.errors import TunetextError, UsageError
from tunetext.evaluate import evaluate, format_metrics
from tunetext.predict import Classifier
from tunetext.prompting import Scoring, format_story, prompt_eval, prompt_story
from tunetext.report import report
from tunetext.runs import CONFIG, read_run
from tunetext.search import search
from tunetext.train import TrainingInterrupted, train, train_seeds
from tunetext.version import __version__

# The few imports inside functions below (accelerate, optuna, transformers, tunetext.serve with fastapi and
# uvicorn) are third-party libraries only one command needs: importing them here would add their seconds
# to every command and to `--help`. `import tunetext` already brings in torch and the rest of tunetext.

EXAMPLES = {
    "spam": "You are a winner you have been specially selected to receive $1000 cash or a $2000 award.",
    "ham": "Hey, just wanted to check if we're still on for dinner tonight? Let me know!",
}


# ---- defaults: declared once, in the API ------------------------------------------------------------------

def default_of(owner: Any, name: str) -> Any:
    """The default `owner` declares for `name`: a pydantic model's field, or a function's parameter."""
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        return owner.model_fields[name].get_default(call_default_factory=True)
    return inspect.signature(owner).parameters[name].default


class Shown:
    """An option's default as its help shows it (`%(api_default)s`): `read()` returns the default of the
    API the option feeds (a list of them, for a `form` with several places), and is called only when the
    help is printed, so building the parser imports nothing slow."""

    def __init__(self, read: Callable[[], Any], form: str = "{}"):
        self.read = read
        self.form = form

    def __str__(self) -> str:
        value = self.read()
        values = value if isinstance(value, list) else [value]
        return self.form.format(*(str(v).lower() if isinstance(v, bool) else v for v in values))


def _default(owner: Any, name: str, form: str = "{}") -> Shown:
    return Shown(lambda: default_of(owner, name), form)


def _serve_default(name: str, form: str = "{}") -> Shown:
    def read() -> Any:
        from tunetext.serve import ServeSettings, serve  # fastapi and uvicorn: only for `serve` and its help

        return default_of(ServeSettings if name in ServeSettings.model_fields else serve, name)

    return Shown(read, form)


def _add(parser: argparse.ArgumentParser, *flags: str, shown: Shown | None = None, help: str = "",
         **kwargs: Any) -> argparse.Action:
    """`parser.add_argument`, with `shown`, the default of the API it feeds, at the end of the help."""
    if shown is not None and help.endswith(")"):  # "(data.source)" -> "(data.source; default: sms_spam)"
        help = f"{help[:-1]}; default: %(api_default)s)"
    elif shown is not None:
        help = f"{help} (default: %(api_default)s)"
    action = parser.add_argument(*flags, help=help, **kwargs)
    action.api_default = shown  # type: ignore[attr-defined]  # read by argparse's %(...)s expansion
    return action


def _given(**values: Any) -> dict[str, Any]:
    """The options given on the command line; the ones left out take the API's own defaults."""
    return {k: v for k, v in values.items() if v is not None}


# ---- commands ---------------------------------------------------------------------------------------------

def _train(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = _given(**{
        "data.source": args.data, "model.name": args.model, "train.epochs": args.epochs,
        "train.strategy": args.strategy, "data.text_column": args.text_column,
        "data.label_column": args.label_column, "data.max_train_samples": args.max_train_samples,
        "data.template": args.template})
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
    import optuna  # a second or so: only this command needs it

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tunetext logs each trial itself
    config = load_config(args.config, args.overrides)
    result = search(config, args.output, **_given(trials=args.trials, timeout=args.timeout,
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


def _evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate(args.run_dir, **_given(data=args.data, split=args.split, text_column=args.text_column,
                                              label_column=args.label_column))
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    for line in metrics["report"]:
        print(f"data: {line}")
    print(format_metrics(metrics, f"{args.run_dir} on {args.data or 'its own data'} ({metrics['split']})"))
    return 0


def _read_inputs(path: Path, text_column: str) -> list[str]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if suffix in FILE_SUFFIXES and suffix != ".txt":  # the formats training reads (.json is JSON lines)
        # Reuse the readers; the label column is not needed, so point it at the text column.
        split = read_file(path, text_column, text_column)
        return [str(t) if t is not None else "" for t in split.texts]
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc}); re-encode the file as UTF-8, or give a CSV, TSV, "
                        "JSONL or Parquet file") from None


def _predict(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if args.input:
        texts += _read_inputs(Path(args.input), args.text_column)
    if not texts:
        raise UsageError(f"{args.input} holds no texts" if args.input else
                         "give texts to classify, or --input FILE")
    clf = Classifier.load(args.run_dir)
    predictions = clf.predict(texts, **_given(batch_size=args.batch_size))
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
    from tunetext.serve import serve  # fastapi and uvicorn: only this command needs them

    serve(args.run_dir, **_given(
        host=args.host, port=args.port, log_level=args.log_level, workers=args.workers,
        threads=args.threads, max_batch_size=args.max_batch_size, pass_size=args.pass_size,
        max_wait_ms=args.max_wait_ms, max_texts=args.max_texts, max_body_bytes=args.max_body_bytes,
        max_request_tokens=args.max_request_tokens, header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout, max_header_bytes=args.max_header_bytes,
        max_concurrency=args.max_concurrency, precision=args.precision))
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


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `low` (a batch size of 0 would be a bug's traceback)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {low}, got {text!r}")
        return value

    parse.__name__ = f"a whole number of at least {low}"  # how argparse names the type in its errors
    return parse


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


def _prompt_eval(args: argparse.Namespace) -> int:
    options = _given(labels=_parse_labels(args.labels), shots=args.shots, seed=args.seed,
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
    data = load_config(overrides=_given(**{"data.source": args.data, "data.text_column": args.text_column,
                                           "data.label_column": args.label_column})).data
    metrics = prompt_eval(args.model, data, args.template, **_given(split=args.split), **options)
    if args.json:
        print(json.dumps(metrics, indent=2))
        return 0
    print(format_metrics(metrics, f"{metrics['prompt']['shots']}-shot prompt, {args.model} on {args.data} "
                                  f"({metrics['split']})"))
    return 0


def _compare(args: argparse.Namespace) -> int:
    rows = compare(args.run_dirs)
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def _report(args: argparse.Namespace) -> int:
    print(f"report written to {report(args.run_dir, args.output)}")
    return 0


def _data_show(args: argparse.Namespace) -> int:
    problems: list[str] = []
    given = parse_overrides(args.overrides, problems)
    problems += [f"{key}: tunetext data show takes data settings only (data.KEY=VALUE)"
                 for key in given if not key.startswith("data.")]
    overrides = {**given, **_given(**{"data.source": args.source, "data.text_column": args.text_column,
                                      "data.label_column": args.label_column, "data.seed": args.seed})}
    if problems:
        raise ConfigError(problems)
    config = load_config(overrides=overrides).data  # only the data settings matter here
    dataset = load_dataset(config)
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
    width = max(map(len, BUILTIN))
    for name, ds in BUILTIN.items():
        print(f"{name:<{width}}  {ds.description}")
    return 0


def quiet_libraries(verbose: bool = False) -> None:
    """Keep the libraries' load reports and per-file progress bars out of tunetext's output."""
    import transformers  # a second or more: not for `--help`, which never gets here

    for noisy in ("transformers", "accelerate", "datasets", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    transformers.logging.set_verbosity_warning() if verbose else transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


# ---- the parser -------------------------------------------------------------------------------------------

class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand's parser that takes options among its positional arguments (`predict RUN "a" --json
    "b"`). argparse's `parse_intermixed_args` refuses a parser with subcommands, so the top-level parser
    parses as usual and each subcommand's own parser mixes (a parser with subcommands of its own, `data`,
    leaves it to them)."""

    _mixing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._mixing or any(a.nargs == argparse.PARSER for a in self._actions):
            return super().parse_known_args(args, namespace)
        self._mixing = True  # parse_known_intermixed_args calls this method for its two passes
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunetext", description="Fine-tune, evaluate and use transformer "
                                     "text classifiers.")
    parser.add_argument("--version", action="version", version=f"tunetext {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_IntermixedParser)

    p = sub.add_parser("train", help="fine-tune a model", description="Fine-tune a model. Settings come from "
                       "the defaults, then --config, then the options and KEY=VALUE overrides here (an "
                       "option's default below is the built-in one; --config's value takes its place).")
    _add(p, "--data", shown=_default(DataConfig, "source"), help="built-in dataset name, a "
         "CSV/TSV/JSONL/Parquet file, or a Hugging Face dataset (data.source)")
    _add(p, "--model", shown=_default(ModelConfig, "name"), help="catalogue name, local model folder or hub "
         "id (model.name)")
    p.add_argument("--output", required=True, help="run directory to write: a new or empty folder, or a run "
                   "to continue (--resume) or replace (--overwrite)")
    _add(p, "--epochs", type=int, shown=_default(TrainConfig, "epochs"), help="passes over the training "
         "data (train.epochs)")
    _add(p, "--strategy", choices=list(get_args(TrainConfig.model_fields["strategy"].annotation)),
         shown=_default(TrainConfig, "strategy"), help="how to fine-tune (docs/strategies.md); its settings "
         "are train.* overrides")
    p.add_argument("--config", help="YAML file with data/model/train sections (default: none, the built-in "
                   "defaults)")
    _add(p, "--text-column", shown=_default(DataConfig, "text_column"), help="column holding the text "
         "(data.text_column)")
    _add(p, "--label-column", shown=_default(DataConfig, "label_column"), help="column holding the label "
         "(data.label_column)")
    p.add_argument("--max-train-samples", type=int, help="stratified subsample of the training split, for "
                   "quick runs (data.max_train_samples; default: all of it)")
    p.add_argument("--template", help="prompt template with {text} where the text goes, applied in training, "
                   "evaluation and prediction (data.template; default: none, the bare text)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output, deleting only its "
                   "own files (refused if the folder holds anything else)")
    p.add_argument("--seeds", type=_at_least(1), help="train N times with seeds train.seed, train.seed+1, "
                   "... into OUTPUT/seed-S and report mean and std of every metric (same data split; "
                   "default: train once)")
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
    p.add_argument("--trials", type=_at_least(1), help="finished trials wanted in the study in all, counting "
                   "those already in it (default: the config's search.trials)")
    p.add_argument("--timeout", type=float, help="start no new trial after this many seconds (default: the "
                   "config's search.timeout, none unless set)")
    p.add_argument("--storage", help="Optuna storage URL shared by several workers, e.g. "
                   "postgresql://user@host/db (default: search.storage, else sqlite:///OUTPUT/study.db)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. search.study_name=lr-sweep train.epochs=1")
    p.set_defaults(func=_search)

    p = sub.add_parser("evaluate", help="score a finished run on data", description="Score a finished run "
                       "on a split of its own data, or on other labelled data, through the run's own "
                       "preparation: accuracy, macro-F1, per-class scores, calibration and the confusion "
                       "matrix.")
    p.add_argument("run_dir")
    p.add_argument("--data", help="data to evaluate on (default: the run's own data)")
    p.add_argument("--split", choices=["train", "val", "test", "all"],
                   help="default: test for the run's own data, all for other data")
    p.add_argument("--text-column", help="text column of --data (default: the run's data.text_column)")
    p.add_argument("--label-column", help="label column of --data (default: the run's data.label_column)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="classify texts with a finished run", description="Classify texts "
                       "with a finished run: each gets its label and calibrated probabilities. Texts come "
                       "from the command line, --input, or both; options may come before, between or after "
                       "them.")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--input", help="file of texts: .txt (one per line), or CSV/TSV/JSONL/Parquet (default: "
                   "none, only the texts given)")
    # Not the run's own column: --input is any table; the name training assumes is the natural guess.
    _add(p, "--text-column", default=default_of(DataConfig, "text_column"),
         shown=_default(DataConfig, "text_column"), help="text column of --input tables")
    p.add_argument("--output", help="write predictions to a .jsonl or .csv file (default: print them)")
    p.add_argument("--json", action="store_true", help="print predictions as JSON")
    _add(p, "--batch-size", type=_at_least(1), shown=_default(Classifier.predict, "batch_size"),
         help="texts per forward pass")
    p.set_defaults(func=_predict)

    p = sub.add_parser("serve", help="serve a finished run over HTTP", description="Serve a finished run: "
                       "POST /predict, GET /health /ready /info /metrics /docs, and a page at /. Set "
                       "TUNETEXT_API_KEY to require 'Authorization: Bearer <key>'. See docs/serving.md.")
    p.add_argument("run_dir")
    # Every default below is read from `tunetext.serve.serve` or `ServeSettings` (listed in docs/serving.md).
    _add(p, "--host", shown=_serve_default("host", "{}, loopback only"), help="address to bind; 0.0.0.0 "
         "for every interface")
    _add(p, "--port", type=_port, shown=_serve_default("port"), help="TCP port, 1-65535")
    _add(p, "--workers", type=int, shown=_serve_default("workers"), help="processes, each with its own copy "
         "of the model")
    p.add_argument("--threads", type=int, help="inference threads per worker, each running its own batch on "
                   "one torch thread (default: cores // workers)")
    _add(p, "--precision", choices=["auto", "fp32", "bf16"], shown=_serve_default("precision"),
         help="auto: bf16 on CPUs with AMX, else fp32")
    _add(p, "--max-batch-size", type=int, shown=_serve_default("max_batch_size"), help="most texts gathered "
         "into one batch")
    _add(p, "--pass-size", type=int, shown=_serve_default("pass_size"), help="texts per forward pass (a "
         "batch is sorted by length and run in passes of this many)")
    _add(p, "--max-wait-ms", type=float, shown=_serve_default("max_wait_ms"), help="longest a batch waits "
         "for more texts once it has one")
    _add(p, "--max-texts", type=int, shown=_serve_default("max_texts"), help="most texts in one request "
         "(more: 413)")
    _add(p, "--max-body-bytes", type=int, shown=_serve_default("max_body_bytes"), help="largest request body "
         "(more: 413)")
    _add(p, "--max-request-tokens", type=int, shown=_serve_default("max_request_tokens"), help="most tokens "
         "one request may cost, each text counted up to the model's max_length (more: 413)")
    _add(p, "--header-timeout", type=float, shown=_serve_default("header_timeout_s"), help="seconds a client "
         "has to send a request's line and headers (then 408)")
    _add(p, "--body-timeout", type=float, shown=_serve_default("body_timeout_s"), help="seconds a client has "
         "to send a request's body once its headers are in (then 408)")
    _add(p, "--max-header-bytes", type=int, shown=_serve_default("max_header_bytes"), help="largest request "
         "line plus headers (more: 431)")
    _add(p, "--max-concurrency", type=int, shown=_serve_default("max_concurrency"), help="most requests "
         "being answered at once (more: 503)")
    _add(p, "--log-level", choices=["critical", "error", "warning", "info", "debug"],
         shown=_serve_default("log_level"), help="uvicorn's log level")
    p.set_defaults(func=_serve)

    p = sub.add_parser("prompt-eval", help="zero- or few-shot prompt classification with a decoder",
                       description="Classify by prompting a decoder: each label is scored by the "
                       "log-likelihood of its verbalizer after the prompt (as the assistant's reply for "
                       "chat models). With --run, also score zero-shot, and print zero-shot -> few-shot -> "
                       "fine-tuned on the run's test split, storing the prompt scores in its metrics.json. "
                       "See docs/prompting.md.")
    p.add_argument("--model", required=True, help="decoder: catalogue name (smollm2-135m), folder or hub id")
    p.add_argument("--data", help="dataset, as for train (default: none; with --run, the run's own)")
    p.add_argument("--template", required=True, help="prompt with {text} where the text goes")
    p.add_argument("--labels", help="verbalizers, NAME=WORDS separated by commas, e.g. ham=ham,spam=spam "
                   "(default: the label names)")
    # Two functions, two defaults: alone, prompt_eval scores one prompt (zero-shot unless asked); with
    # --run, prompt_story adds a few-shot row to the zero-shot one.
    shots = Shown(lambda: [default_of(prompt_eval, "shots"), default_of(prompt_story, "shots")],
                  "{}; with --run, {}")
    _add(p, "--shots", type=int, shown=shots, help="training examples shown before each text")
    _add(p, "--split", choices=["train", "val", "test"], shown=_default(prompt_eval, "split"),
         help="split to score; --run always scores test")
    p.add_argument("--max-examples", type=_at_least(1), help="score a stratified subsample of this many "
                   "texts (default: the whole split)")
    _add(p, "--score", choices=list(get_args(Scoring)),
         shown=_default(prompt_eval, "score"), help="a verbalizer's summed or per-token mean log-likelihood")
    p.add_argument("--calibrate", action="store_true", help="contextual calibration: divide out the label "
                   "probabilities the prompt gives a content-free text ('N/A')")
    _add(p, "--seed", type=int, shown=_default(prompt_eval, "seed"), help="picks the few-shot examples and "
         "the subsample")
    _add(p, "--batch-size", type=_at_least(1), shown=_default(prompt_eval, "batch_size"),
         help="texts per forward pass")
    p.add_argument("--run", help="a fine-tuned run on the same data: print the story table and store the "
                   "prompt scores in its metrics.json (default: none, score the prompt alone)")
    _add(p, "--text-column", shown=_default(DataConfig, "text_column"), help="column of --data holding the "
         "text (not with --run, which reads the run's data)")
    _add(p, "--label-column", shown=_default(DataConfig, "label_column"), help="column of --data holding the "
         "label (not with --run)")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(func=_prompt_eval)

    p = sub.add_parser("compare", help="one table of finished runs", description="One table of finished "
                       "runs: model, strategy, data, test scores, size and speed, one row per run.")
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

    p = sub.add_parser("data", help="look at datasets", description="Look at datasets: the built-in ones, "
                       "or any source training takes, as training would prepare it.")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("show", help="sizes, label counts and examples of a dataset",
                            description="Sizes, label counts, text lengths and examples of each split of a "
                            "dataset, prepared and split as training would with the same data settings.")
    q.add_argument("source")
    q.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE",
                   help="preparation settings, as for train (e.g. data.lowercase=true "
                   "data.similar_labels=keep)")
    _add(q, "--text-column", shown=_default(DataConfig, "text_column"), help="column holding the text "
         "(data.text_column)")
    _add(q, "--label-column", shown=_default(DataConfig, "label_column"), help="column holding the label "
         "(data.label_column)")
    # Only this command prints examples, so the default lives here.
    q.add_argument("--examples", type=_at_least(0), default=2, help="examples shown per label (default: "
                   "%(default)s)")
    _add(q, "--seed", type=int, shown=_default(DataConfig, "seed"), help="split seed (data.seed)")
    q.set_defaults(func=_data_show)
    q = data_sub.add_parser("list", help="the built-in datasets", description="The built-in datasets, one "
                            "line each: name and what it is.")
    q.set_defaults(func=_data_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`tunetext ARGS...`: the exit status. A `TunetextError` (the input was wrong) is one line and 2, an
    `OSError` (a full disk, a path) one line and 1, Ctrl-C one line and 130; anything else is a bug and
    keeps its traceback."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s"
                            if not args.verbose else "%(levelname)s %(name)s: %(message)s")
        quiet_libraries(args.verbose)
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        print("\ninterrupted", file=sys.stderr)
        return 130
    except TunetextError as exc:
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
