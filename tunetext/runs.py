"""The run directory: a complete, self-describing artifact, written so that a crash never leaves a
directory that looks finished.

Layout: a standard Hugging Face model folder (`model.safetensors`, `config.json` with the label names,
tokenizer files) plus `tunetext.yaml` (the resolved config), `metrics.json`, `train_log.jsonl`,
`data.json` (split sizes, label counts, fingerprints) and `README.md`. `run.json` is written last, in
one rename; a directory without it is unfinished. While training, `checkpoint/` holds the resumable
state; it is removed when the run finishes, after `run.json` is written.

tunetext deletes only what it wrote: a folder counts as a run only with one of tunetext's markers
(`run.json`, a checkpoint, or the `.tunetext-run` file written when the folder is made), and replacing a
run (`--overwrite`) removes only the run's own files, refusing while anything else is in it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from tunetext.config import RunConfig, dump_config, load_config
from tunetext.errors import TunetextError
from tunetext.quiet import library_bars_hidden

MARKER = "run.json"
CONFIG = "tunetext.yaml"
METRICS = "metrics.json"
LOG = "train_log.jsonl"
DATA = "data.json"
CHECKPOINT = "checkpoint"
OWNER = ".tunetext-run"  # written first into every run folder tunetext makes
REPORT = "report"  # `tunetext report`'s default output folder

# What a run folder may hold that tunetext wrote: its own files, plus what `save_pretrained` writes for a
# model, tokenizer or PEFT adapter (a finished run also lists the latter in run.json's "files").
OWN_FILES = frozenset({MARKER, CONFIG, METRICS, LOG, DATA, "README.md", OWNER})
OWN_FOLDERS = {CHECKPOINT: re.compile(r"state\.pt(\.tmp)?"),
               REPORT: re.compile(r"\.?[\w.-]+\.(html|png)(\.tmp)?"),
               # `tunetext export`'s folder (tunetext.backends.onnx.FOLDER, a layer above)
               "onnx": re.compile(r"model(\.int8|\.fused)?\.onnx|export\.json(\.tmp)?"),
               # train.report_to's TensorBoard events (tunetext.tracking.TENSORBOARD, a layer beside)
               "tensorboard": re.compile(r"events\.out\.tfevents\..+")}
MODEL_FILES = re.compile(
    r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|vocab|"
    r"adapter_config)\.json|model(-\d+-of-\d+)?\.safetensors(\.index\.json)?|adapter_model\.safetensors|"
    r"vocab\.txt|merges\.txt|chat_template\.jinja|tokenizer\.model|spiece\.model|sentencepiece\.bpe\.model")
TEMP_FILE = re.compile(r"\..+\.tmp")  # write_json's and write_config's half-written files


class RunError(TunetextError, ValueError):
    """A run directory that cannot be used as asked."""


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def append_log(run_dir: Path, main: bool, entry: dict[str, Any]) -> None:
    """One line of the run's `train_log.jsonl`; only the main process (`main`) writes it."""
    if main:
        with open(run_dir / LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file of a run, or a `RunError` naming it when it is not JSON (truncated or edited)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); it was cut short or edited after tunetext wrote "
                       "it. Restore it, or train the run again") from exc


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MARKER).is_file()


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT / "state.pt").is_file()


def is_run(run_dir: str | Path) -> bool:
    """Whether tunetext made `run_dir`: it carries one of tunetext's markers. A `tunetext.yaml` alone is
    not one (a project folder may keep its config under that name)."""
    path = Path(run_dir)
    return is_finished(path) or has_checkpoint(path) or (path / OWNER).is_file()


def foreign_entries(run_dir: Path) -> list[str]:
    """The names in `run_dir` that tunetext did not write there, sorted."""
    listed: set[str] = set()
    if is_finished(run_dir):
        with suppress(RunError):  # a damaged run.json lists nothing; the names tunetext uses still count
            with_files = read_json(run_dir / MARKER)
            listed = set(with_files.get("files", [])) if isinstance(with_files, dict) else set()
    foreign = []
    for entry in run_dir.iterdir():
        name = entry.name
        if entry.is_symlink():
            ours = False  # tunetext writes no links; deleting one could be mistaken for its target
        elif entry.is_dir():
            pattern = OWN_FOLDERS.get(name)
            ours = pattern is not None and all(
                f.is_file() and not f.is_symlink() and pattern.fullmatch(f.name) for f in entry.iterdir())
        else:
            ours = (name in OWN_FILES or name in listed or MODEL_FILES.fullmatch(name) is not None
                    or TEMP_FILE.fullmatch(name) is not None)
        if not ours:
            foreign.append(name + ("/" if entry.is_dir() else ""))
    return sorted(foreign)


def _never_deleted(path: Path) -> str | None:
    """Why `path` must never be emptied, whatever it holds: `/`, the home folder, the working folder or
    one of its parents."""
    resolved, cwd = path.resolve(), Path.cwd().resolve()
    if resolved == Path(resolved.anchor):
        return "the root of the file system"
    if resolved == Path.home().resolve():
        return "your home folder"
    if resolved == cwd:
        return "the current working folder"
    if resolved in cwd.parents:
        return "a parent of the current working folder"
    return None


def _check_writable(path: Path) -> None:
    """Fail before any data or model loads when `path` cannot become a folder tunetext may write in."""
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file, not a folder; choose another --output")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunError(f"cannot make {path}: {ancestor} is a file, not a folder; choose another --output")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunError(f"cannot write in {ancestor} (permission denied), so {path} cannot be written; "
                       "choose an --output you can write to, or change the folder's permissions")


def check_output(run_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Raise `RunError` unless `run_dir` may be written as asked; changes nothing."""
    path = Path(run_dir)
    _check_writable(path)
    if resume:
        if is_finished(path):  # before the checkpoint check: finishing removes the checkpoint
            raise RunError(f"{path} is a finished run; there is nothing to resume. To train it further on "
                           f"new data, start a new run from its weights: tunetext train --init-from {path} "
                           "--data DATA --output NEW_DIR (model.init_from)")
        if not has_checkpoint(path):
            raise RunError(f"{path} has no checkpoint to resume from; train without --resume")
        return
    if path.exists() and any(path.iterdir()):
        if not is_run(path):
            raise RunError(f"{path} exists and is not a tunetext run (it has none of {MARKER}, {CHECKPOINT}/ "
                           f"or {OWNER}); tunetext writes only into a new or empty folder and never deletes "
                           "files it did not write. Choose an empty or new --output")
        if not overwrite:
            what = ("a finished run" if is_finished(path) else
                    "an interrupted run (continue it with --resume)" if has_checkpoint(path) else
                    "an unfinished run")
            raise RunError(f"{path} already holds {what}; pass --overwrite to replace it")
        protected = _never_deleted(path)
        if protected is not None:
            raise RunError(f"refusing to overwrite {path}: it is {protected}. Write runs into a folder of "
                           "their own, e.g. --output runs/NAME")
        foreign = foreign_entries(path)
        if foreign:
            shown = ", ".join(foreign[:10]) + (f" and {len(foreign) - 10} more" if len(foreign) > 10 else "")
            raise RunError(f"{path} holds a run but also files tunetext did not write ({shown}); "
                           "--overwrite deletes only a run's own files, so move those out first or choose "
                           "another --output")


def prepare_output(run_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Check that `run_dir` may be written as asked, and make it (its run files removed when
    overwriting)."""
    path = Path(run_dir)
    check_output(path, resume, overwrite)
    if not resume and path.exists() and any(path.iterdir()):
        (path / MARKER).unlink(missing_ok=True)  # first, so a crash mid-delete leaves no finished look
        for entry in path.iterdir():  # check_output found nothing here but tunetext's own files
            if entry.name == OWNER:
                continue  # kept to the end: the folder stays recognisably tunetext's
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    path.mkdir(parents=True, exist_ok=True)
    (path / OWNER).write_text("This folder is a tunetext run directory; tunetext may replace the files it "
                              "wrote here.\n")
    return path


def after_a_failed_write(run_dir: Path) -> str:
    """What to do when a write into `run_dir` failed: from its checkpoint if it has one, else anew."""
    again = (f"continue with tunetext train --resume --output {run_dir}" if has_checkpoint(run_dir)
             else "train again with --overwrite")
    return f"make room (a full disk?) or fix the folder, then {again}"


def write_run(run_dir: Path, model: Any, tokenizer: Any, config: RunConfig, metrics: dict[str, Any],
              data: dict[str, Any], label_names: list[str], tunetext_version: str,
              parent: dict[str, Any] | None = None, card: Callable[[Path], str] | None = None) -> None:
    """A trained model's run files: weights, tokenizer, metrics, the data summary (`data`), the README, and
    last `run.json`, which marks the run finished (`finish`). `parent` is the run it started from
    (`model.init_from`) and what became of its labels; run.json keeps it under "parent". `card` gives the
    README's model card metadata (`tunetext.hub.front_matter`) once the weights are in the folder."""
    try:
        with library_bars_hidden():
            model.save_pretrained(run_dir)
    except SafetensorError as exc:  # safetensors reports a full disk or a write error as its own type
        raise RunError(f"could not write the model's weights into {run_dir} ({exc}); "
                       f"{after_a_failed_write(run_dir)}") from exc
    # Where standard loaders read the truncation length: `pipeline(..., truncation=True)` then cuts a text
    # where the run's model.max_length cut it.
    tokenizer.model_max_length = config.model.max_length
    tokenizer_files = tokenizer.save_pretrained(run_dir)
    write_json(run_dir / METRICS, metrics)
    write_json(run_dir / DATA, data)
    (run_dir / "README.md").write_text(("" if card is None else card(run_dir)) + README_TEMPLATE.format(
        model=config.model.name, data=config.data.source, strategy=config.train.strategy,
        labels=", ".join(label_names), scores=_test_scores(metrics["test"]), path=run_dir,
        loading=loading_note(run_dir, config.model.name),
        task_note=_task_note(metrics.get("task", {}), metrics.get("calibration", {}), config),
        parent="" if parent is None else f"Started from the weights of the run `{parent['run_dir']}`.\n"))
    lineage = {} if parent is None else {"parent": parent}
    finish(run_dir, {"tunetext_version": tunetext_version, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     "model": config.model.name, "data": config.data.source, "label_names": label_names,
                     **lineage, "config_yaml": dump_config(config)}, tokenizer_files)


def _test_scores(test: dict[str, Any]) -> str:
    """The headline test scores of any task, for the run's README: `accuracy 0.9810, macro-F1 0.9512`."""
    names = {"accuracy": "accuracy", "micro_f1": "micro-F1", "macro_f1": "macro-F1", "r2": "R²", "mae": "MAE",
             "pearson": "Pearson"}
    return ", ".join(f"{shown} {test[key]:.4f}" for key, shown in names.items() if key in test)


def write_config(run_dir: Path, config: RunConfig) -> None:
    tmp = run_dir / f".{CONFIG}.tmp"
    tmp.write_text(dump_config(config))
    os.replace(tmp, run_dir / CONFIG)


def finish(run_dir: Path, info: dict[str, Any], tokenizer_files: Iterable[str] = ()) -> None:
    """Mark a run finished: write `run.json`, listing the files tunetext wrote (its own, the model's, and
    `tokenizer_files`, as the tokenizer's `save_pretrained` returns them), then drop the checkpoint (in
    that order, so no crash between the two loses both). A file someone else put there is not listed."""
    files = sorted({p.name for p in run_dir.iterdir() if p.is_file() and p.name != MARKER
                    and (p.name in OWN_FILES or MODEL_FILES.fullmatch(p.name))}
                   | {Path(f).name for f in tokenizer_files})
    normal_permissions(run_dir)
    write_json(run_dir / MARKER, {**info, "files": files})
    shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)


def _umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    with suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_permissions(run_dir: Path) -> None:
    """Give the files in `run_dir` the permissions the umask gives a new file (0644 under umask 022).

    Some writers (transformers' `save_pretrained`, through a temporary file) leave 0600, so another user,
    or the Docker image's non-root user reading a mounted run, could not load the model."""
    mode = 0o666 & ~_umask()
    for entry in run_dir.iterdir():
        if entry.is_file() and not entry.is_symlink() and entry.stat().st_mode & 0o777 != mode:
            entry.chmod(mode)


def read_run(run_dir: str | Path) -> tuple[RunConfig, dict[str, Any], dict[str, Any]]:
    """The config, metrics and run info of a finished run."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"{path} is not a directory; pass a run directory written by `tunetext train`")
    if not is_finished(path):
        hint = (" It was interrupted: continue it with `tunetext train --resume --output "
                f"{path}`." if has_checkpoint(path) else "")
        raise RunError(f"{path} is not a finished tunetext run (no {MARKER}).{hint}")
    config = load_config(path / CONFIG)
    metrics = read_json(path / METRICS) if (path / METRICS).is_file() else {}
    return config, metrics, read_json(path / MARKER)


README_TEMPLATE = """# tunetext run

Fine-tuned `{model}` on `{data}` ({strategy} strategy), labels: {labels}.
{parent}Test {scores}.

Use it:

```python
from tunetext import Classifier
clf = Classifier.load("{path}")
clf.predict(["some text"])
```

or `tunetext predict {path} "some text"`. {loading}{task_note}
Files: `tunetext.yaml` (the config that made it; `tunetext train --config tunetext.yaml` repeats it),
`metrics.json`, `train_log.jsonl`, `data.json` (split sizes and fingerprints).
"""


def _task_note(task: dict[str, Any], calibration: dict[str, Any] | None = None,
               config: RunConfig | None = None) -> str:
    """The README's word on what only tunetext applies to the model's outputs: for multi-label and
    regression runs, thresholds and scale; for single-label runs, what other loaders need to give
    tunetext's probabilities."""
    if task.get("type") == "multi_label":
        return ("\nEach label has its own decision threshold, tuned on validation (`task.thresholds` in "
                "`metrics.json`);\ntunetext applies them, other loaders give the per-label probabilities "
                "only.")
    if task.get("type") == "regression":
        return ("\nThe model's output is the standardised value: tunetext answers output x "
                "`task.target_std` + `task.target_mean`\n(`metrics.json`); other loaders give the output "
                "as it is.")
    if not (calibration or {}).get("folded") or config is None:
        return ""
    return ("\nThe calibration temperature is folded into the classification head's weights "
            "(`calibration.folded` in `metrics.json`),\nso other loaders give tunetext's probabilities; "
            f"the tokenizer's `model_max_length` is the run's `model.max_length` ({config.model.max_length}):"
            "\npass `truncation=True` to `pipeline` to cut long texts there too. " + _only_tunetext(config))


def _only_tunetext(config: RunConfig) -> str:
    """What tunetext does to a text before the model sees it that other loaders do not."""
    steps = ["normalise its whitespace"]
    if config.data.lowercase or config.data.strip_urls or config.data.strip_markup:
        steps.append("clean it as `data` in `tunetext.yaml` says")
    if config.data.template:
        steps.append("put it into `data.template`")
    if config.data.long_text not in ("truncate", "auto"):
        steps.append(f"read it, when long, as `data.long_text={config.data.long_text}` says")
    return f"What only tunetext does to a text first: {'; '.join(steps)}."


def loading_note(run_dir: Path, base_model: str) -> str:
    """The README's word on loading the weights other than with tunetext: a standard Hugging Face model
    folder, or a PEFT adapter (`adapter_config.json`) that needs its base model."""
    if (run_dir / "adapter_config.json").is_file():
        return ("The weights are a PEFT adapter with the trained classification head\n"
                f"(`adapter_config.json`, `adapter_model.safetensors`) for the base model `{base_model}`, "
                "which `Classifier.load`\nloads first; peft's `PeftModel.from_pretrained` does the same.")
    return ("The folder is also a standard Hugging Face model:\n"
            f'`transformers.pipeline("text-classification", model="{run_dir}")` loads it.')
