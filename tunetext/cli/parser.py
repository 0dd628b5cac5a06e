"""The `tunetext` argument parser: every subcommand, option and help text.

An option's default is the API's, read from the pydantic field or function parameter it feeds
(`default_of`) and shown in its help; the option itself defaults to None and is then not passed.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any, get_args

from pydantic import BaseModel

from tunetext.batch_predict import predict_file
from tunetext.cli import commands
from tunetext.config import AuditConfig, DataConfig, ModelConfig, TrainConfig
from tunetext.export import export
from tunetext.predict import Classifier
from tunetext.prompting import Scoring, prompt_eval, prompt_story
from tunetext.ray_predict import predict_with_ray
from tunetext.version import __version__

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


def _names(text: str) -> list[str]:
    """A comma-separated list of names (label columns)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one column, e.g. billing,shipping")
    return names


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
    _add(p, "--epochs", type=int, help="passes over the training data (train.epochs; default: chosen from "
         "the data, see docs/training.md)")
    _add(p, "--strategy", choices=list(get_args(TrainConfig.model_fields["strategy"].annotation)),
         shown=_default(TrainConfig, "strategy"), help="how to fine-tune (docs/strategies.md); its settings "
         "are train.* overrides")
    p.add_argument("--config", help="YAML file with data/model/train sections (default: none, the built-in "
                   "defaults)")
    _add(p, "--text-column", shown=_default(DataConfig, "text_column"), help="column holding the text "
         "(data.text_column)")
    _add(p, "--label-column", shown=_default(DataConfig, "label_column"), help="column holding the label "
         "(data.label_column)")
    _add(p, "--task", choices=list(get_args(DataConfig.model_fields["task"].annotation)),
         shown=_default(DataConfig, "task"), help="what a label is: one class, a set of labels, or a number "
         "(data.task)")
    p.add_argument("--label-columns", type=_names, metavar="A,B,...", help="multi-label data as 0/1 columns, "
                   "one per label (data.label_columns; default: none, the labels are in --label-column)")
    p.add_argument("--max-train-samples", type=int, help="stratified subsample of the training split, for "
                   "quick runs (data.max_train_samples; default: all of it)")
    p.add_argument("--template", help="prompt template with {text} where the text goes, applied in training, "
                   "evaluation and prediction (data.template; default: none, the bare text)")
    p.add_argument("--init-from", metavar="RUN_DIR", help="start from this finished run's weights, body and "
                   "head, to train it further on --data; new labels get fresh head rows (model.init_from; "
                   "default: none, start from --model)")
    _add(p, "--init-labels", choices=list(get_args(ModelConfig.model_fields["init_labels"].annotation)),
         shown=_default(ModelConfig, "init_labels"), help="with --init-from, the run's labels the data "
         "lacks: keep their head rows, or drop them (model.init_labels)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --output")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --output, deleting only its "
                   "own files (refused if the folder holds anything else)")
    p.add_argument("--seeds", type=_at_least(1), help="train N times with seeds train.seed, train.seed+1, "
                   "... into OUTPUT/seed-S and report mean and std of every metric (same data split; "
                   "default: train once)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. train.learning_rate=5e-5 train.batch_size=16")
    p.set_defaults(func=commands.train_command)

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
    p.set_defaults(func=commands.search_command)

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
    p.set_defaults(func=commands.evaluate_command)

    p = sub.add_parser("predict", help="classify texts with a finished run", description="Classify texts "
                       "with a finished run: each gets its label and calibrated probabilities. Texts come "
                       "from the command line, --input, or both; options may come before, between or after "
                       "them.")
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--input", help="file of texts: .txt (one per line), or CSV/TSV/JSONL/Parquet; '-' reads "
                   "text lines from stdin (default: none, only the texts given)")
    _add(p, "--text-column", shown=_default(predict_file, "text_column", "the run's data.text_column"),
         help="text column of --input tables")
    p.add_argument("--output", help="stream predictions into a .csv, .tsv, .jsonl or .parquet file, the "
                   "input's other columns kept beside them; '-' writes JSON lines to stdout (default: print "
                   "them)")
    p.add_argument("--json", action="store_true", help="print predictions as JSON")
    _add(p, "--batch-size", type=_at_least(1), shown=_default(Classifier.predict, "batch_size"),
         help="texts per forward pass")
    _add(p, "--input-format", choices=["csv", "tsv", "jsonl", "parquet", "txt"],
         shown=_default(predict_file, "input_format", "by the suffix; txt for -"),
         help="how to read --input, whatever its name")
    _add(p, "--output-format", choices=["csv", "tsv", "jsonl", "parquet"],
         shown=_default(predict_file, "output_format", "by the suffix; jsonl for -"),
         help="what to write to --output, whatever its name")
    _add(p, "--chunk-rows", type=_at_least(1), shown=_default(predict_file, "chunk_rows"),
         help="rows read, predicted and written at a time with --output (with --engine ray: rows an "
         "actor predicts a call)")
    _add(p, "--on-bad-row", choices=["fail", "skip"], shown=_default(predict_file, "on_bad_row"),
         help="a row of --input that cannot be classified (a blank line, a missing or non-string text) "
         "fails the run, naming its line, or is skipped and counted")
    _add(p, "--backend", choices=["auto", "torch", "onnx"], shown=_default(Classifier.load, "backend"),
         help="auto: the run's ONNX export when it passed its checks (tunetext export), else torch")
    p.add_argument("--engine", choices=["local", "ray"], help="local: this process, a chunk at a time; ray: "
                   "Ray Data actors over a Parquet/CSV/JSONL file or folder (local or a URI such as s3://), "
                   "--output a new folder of Parquet files, needs tunetext[ray]; see docs/prediction.md "
                   "(default: local)")
    _add(p, "--num-workers", type=_at_least(1), shown=_default(predict_with_ray, "num_workers"),
         help="with --engine ray: Ray actors, each holding the run")
    _add(p, "--ray-address", shown=_default(predict_with_ray, "address", "{}: a local Ray for this command"),
         help="with --engine ray: the cluster to join, 'auto' or ray://host:10001")
    p.set_defaults(func=commands.predict_command)

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
    _add(p, "--backend", choices=["auto", "torch", "onnx"], shown=_serve_default("backend"),
         help="auto: the run's ONNX export when it passed its checks (tunetext export), else torch")
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
    _add(p, "--cache-size", type=int, shown=_serve_default("cache_size"), help="texts whose model output "
         "the prediction cache keeps, least recently used dropped first (0: no cache)")
    _add(p, "--log-level", choices=["critical", "error", "warning", "info", "debug"],
         shown=_serve_default("log_level"), help="uvicorn's log level")
    p.set_defaults(func=commands.serve_command)

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
    p.set_defaults(func=commands.prompt_eval_command)

    p = sub.add_parser("compare", help="one table of finished runs", description="One table of finished "
                       "runs: model, strategy, data, test scores, size and speed, one row per run.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print rows as JSON")
    p.set_defaults(func=commands.compare_command)

    p = sub.add_parser("report", help="an HTML report of a finished run", description="Write a "
                       "self-contained HTML report of a finished run (figures inline, also saved as PNGs "
                       "next to it): learning curves, confusion matrix, per-class scores, calibration, the "
                       "most confident mistakes, before vs after fine-tuning, and the data. See "
                       "docs/report.md.")
    p.add_argument("run_dir")
    p.add_argument("--output", help="HTML file to write (default: RUN_DIR/report/report.html)")
    p.set_defaults(func=commands.report_command)

    p = sub.add_parser("export", help="export a finished run to ONNX for fast CPU inference",
                       description="Export a finished run's model to ONNX in RUN_DIR/onnx/, checked against "
                       "PyTorch on the validation split; with --quantize int8, also an int8 model, used only "
                       "if its validation metric stays within --gate of fp32's. The record of the checks is "
                       "RUN_DIR/onnx/export.json. See docs/export.md.")
    p.add_argument("run_dir")
    _add(p, "--format", choices=["onnx"], shown=_default(export, "format"), help="what to export to")
    _add(p, "--quantize", choices=["int8"], shown=_default(export, "quantize", "{}: fp32 only"),
         help="also quantize (dynamic int8, settings chosen for this CPU)")
    _add(p, "--gate", type=float, shown=_default(export, "gate"), help="largest drop in the validation main "
         "metric (train.metric), in points, for which int8 is used")
    p.add_argument("--force", action="store_true", help="use int8 even when it fails the gate")
    p.set_defaults(func=commands.export_command)

    p = sub.add_parser("push", help="upload a finished run to the Hugging Face Hub",
                       description="Upload a finished run to a Hugging Face Hub model repo (created if "
                       "missing): weights, tokenizer, config, README.md (its model card), metrics.json, "
                       "tunetext.yaml and onnx/ if exported; never a checkpoint. Needs the network and a "
                       "token with write access. See docs/export.md and the README's Hub section.")
    p.add_argument("run_dir")
    p.add_argument("--repo-id", required=True, help="the model repo, e.g. your-name/spam-minilm")
    p.add_argument("--private", action="store_true", help="create the repo private")
    _add(p, "--token", shown=Shown(lambda: "the HF_TOKEN environment variable, else the saved login"),
         help="Hugging Face token with write access")
    _add(p, "--license", shown=Shown(lambda: "none, no licence in the card"), help="licence id written into "
         "the model card's metadata, e.g. apache-2.0")
    p.set_defaults(func=commands.push_command)

    p = sub.add_parser("data", help="look at datasets", description="Look at datasets: the built-in ones, "
                       "or any source training takes, as training would prepare it.")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("show", help="sizes, label counts and examples of a dataset",
                            description="Sizes, label counts, text lengths and examples of each split of a "
                            "dataset, prepared and split as training would with the same data settings, and "
                            "its lengths in model.name's tokens against model.max_length (when the tokenizer "
                            "is at hand without a download).")
    q.add_argument("source")
    q.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE",
                   help="preparation settings, as for train (e.g. data.lowercase=true "
                   "data.similar_labels=keep); model.name and model.max_length choose the tokenizer and "
                   "window of the token lengths (default: the config defaults)")
    _add(q, "--text-column", shown=_default(DataConfig, "text_column"), help="column holding the text "
         "(data.text_column)")
    _add(q, "--label-column", shown=_default(DataConfig, "label_column"), help="column holding the label "
         "(data.label_column)")
    _add(q, "--task", choices=list(get_args(DataConfig.model_fields["task"].annotation)),
         shown=_default(DataConfig, "task"), help="what a label is: one class, a set of labels, or a number "
         "(data.task)")
    q.add_argument("--label-columns", type=_names, metavar="A,B,...", help="multi-label data as 0/1 columns, "
                   "one per label (data.label_columns; default: none, the labels are in --label-column)")
    # Only this command prints examples, so the default lives here.
    q.add_argument("--examples", type=_at_least(0), default=2, help="examples shown per label (default: "
                   "%(default)s)")
    _add(q, "--seed", type=int, shown=_default(DataConfig, "seed"), help="split seed (data.seed)")
    q.set_defaults(func=commands.data_show_command)
    q = data_sub.add_parser("audit", help="suspected label errors, near-duplicates, leakage and outliers",
                            description="Audit a dataset before training: read and split it as training "
                            "would, embed every text once with the frozen --model, then list suspected "
                            "label errors (cross-fitted linear head and confident learning, cleanlab), "
                            "near-duplicates and leakage across splits, and outliers. Writes findings.csv "
                            "and findings.jsonl (fill in their action column, then train with "
                            "data.drop_flagged=FILE), audit.json and audit.html into --output. Test labels "
                            "are never read. See docs/audit.md.")
    q.add_argument("source")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="settings, as for train: data.* (the data is prepared as training would), "
                   "model.max_length, audit.* (e.g. audit.near_duplicate_similarity=0.9) (default: the "
                   "config defaults)")
    _add(q, "--model", shown=_default(ModelConfig, "name"), help="the frozen model whose embeddings are "
         "audited: catalogue name, local model folder or hub id (model.name)")
    _add(q, "--folds", type=_at_least(2), shown=_default(AuditConfig, "folds"), help="cross-fitting folds "
         "for the out-of-sample probabilities (audit.folds)")
    _add(q, "--output", shown=Shown(lambda: "audit/<data name>"), help="folder for the findings: new, empty, "
         "or written by an earlier audit")
    q.add_argument("--drop-leaks", action="store_true", help="pre-fill action=drop in the findings for the "
                   "training copy of every near-duplicate that crosses into validation or test")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=commands.data_audit_command)
    q = data_sub.add_parser("list", help="the built-in datasets", description="The built-in datasets, one "
                            "line each: name and what it is.")
    q.set_defaults(func=commands.data_list_command)
    return parser
