"""The run directory: a complete, self-describing artifact, written so that a crash never leaves a
directory that looks finished.

Layout: a standard Hugging Face model folder (`model.safetensors`, `config.json` with the label names,
tokenizer files) plus `tunetext.yaml` (the resolved config), `metrics.json`, `train_log.jsonl`,
`data.json` (split sizes, label counts, fingerprints) and `README.md`. `run.json` is written last, in
one rename; a directory without it is unfinished. While training, `checkpoint/` holds the resumable
state; it is removed when the run finishes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from tunetext.config import RunConfig, dump_config, load_config

MARKER = "run.json"
CONFIG = "tunetext.yaml"
METRICS = "metrics.json"
LOG = "train_log.jsonl"
DATA = "data.json"
CHECKPOINT = "checkpoint"


class RunError(ValueError):
    """A run directory that cannot be used as asked."""


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / MARKER).is_file()


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT / "state.pt").is_file()


def check_output(run_dir: str | Path, resume: bool, overwrite: bool) -> None:
    """Raise `RunError` unless `run_dir` may be written as asked; changes nothing."""
    path = Path(run_dir)
    if resume:
        if not has_checkpoint(path):
            raise RunError(f"{path} has no checkpoint to resume from; train without --resume")
        return
    if path.exists() and any(path.iterdir()):
        ours = is_finished(path) or has_checkpoint(path) or (path / CONFIG).is_file()
        if not ours:
            raise RunError(f"{path} exists and is not a tunetext run; choose an empty or new --output")
        if not overwrite:
            what = ("a finished run" if is_finished(path) else
                    "an interrupted run (continue it with --resume)" if has_checkpoint(path) else
                    "an unfinished run")
            raise RunError(f"{path} already holds {what}; pass --overwrite to replace it")


def prepare_output(run_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Check that `run_dir` may be written as asked, and make it (emptied when overwriting)."""
    path = Path(run_dir)
    check_output(path, resume, overwrite)
    if not resume and path.exists() and any(path.iterdir()):
        (path / MARKER).unlink(missing_ok=True)  # first, so a crash mid-delete leaves no finished look
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(run_dir: Path, config: RunConfig) -> None:
    tmp = run_dir / f".{CONFIG}.tmp"
    tmp.write_text(dump_config(config))
    os.replace(tmp, run_dir / CONFIG)


def finish(run_dir: Path, info: dict[str, Any]) -> None:
    """Mark a run finished: drop the checkpoint, then write `run.json` last."""
    shutil.rmtree(run_dir / CHECKPOINT, ignore_errors=True)
    write_json(run_dir / MARKER, info)


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
    metrics = json.loads((path / METRICS).read_text()) if (path / METRICS).is_file() else {}
    return config, metrics, json.loads((path / MARKER).read_text())


README_TEMPLATE = """# tunetext run

Fine-tuned `{model}` on `{data}` ({strategy} strategy), labels: {labels}.
Test accuracy {accuracy:.4f}, macro-F1 {macro_f1:.4f}.

Use it:

```python
from tunetext import Classifier
clf = Classifier.load("{path}")
clf.predict(["some text"])
```

or `tunetext predict {path} "some text"`. {loading}
Files: `tunetext.yaml` (the config that made it; `tunetext train --config tunetext.yaml` repeats it),
`metrics.json`, `train_log.jsonl`, `data.json` (split sizes and fingerprints).
"""


def loading_note(run_dir: Path, base_model: str) -> str:
    """The README's word on loading the weights other than with tunetext: a standard Hugging Face model
    folder, or a PEFT adapter (`adapter_config.json`) that needs its base model."""
    if (run_dir / "adapter_config.json").is_file():
        return ("The weights are a PEFT adapter with the trained classification head\n"
                f"(`adapter_config.json`, `adapter_model.safetensors`) for the base model `{base_model}`, "
                "which `Classifier.load`\nloads first; peft's `PeftModel.from_pretrained` does the same.")
    return ("The folder is also a standard Hugging Face model:\n"
            f'`transformers.pipeline("text-classification", model="{run_dir}")` loads it.')
