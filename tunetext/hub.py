"""A run on the Hugging Face Hub: the model card metadata of its README, and `push`, which uploads it.

The run's README.md starts with YAML metadata (base model, datasets, task, test metrics as a
`model-index`, license) that `huggingface_hub.ModelCard.load` reads and the Hub shows; the prose below
it is the README tunetext always wrote. `push` uploads the files a model repo needs, never a checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunetext.config import RunConfig
from tunetext.data.builtin import BUILTIN
from tunetext.data.sources import FILE_SUFFIXES
from tunetext.errors import TunetextError
from tunetext.models import CATALOGUE
from tunetext.runs import CONFIG, DATA, LOG, MARKER, METRICS, OWNER, read_json, read_run

README = "README.md"
# metrics.json "test" key -> (model-index metric type, its name on the card, its arguments)
CARD_METRICS: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "accuracy": ("accuracy", "accuracy", None),
    "macro_f1": ("f1", "macro F1", {"average": "macro"}),
    "micro_f1": ("f1", "micro F1", {"average": "micro"}),
    "r2": ("r_squared", "R²", None),
    "mae": ("mae", "MAE", None),
    "pearson": ("pearsonr", "Pearson", None),
}
# Run files a model repo has no use for: the training log, the data summary (it names local files), the
# finished marker (it holds the config's local paths too) and the folder's owner mark.
NOT_PUSHED = frozenset({LOG, DATA, MARKER, OWNER})


class PushError(TunetextError, RuntimeError):
    """A run that could not be uploaded to the Hugging Face Hub."""


def base_model(name: str) -> str | None:
    """The hub id `model.name` stands for: a catalogue model's, or the hub id given; None for a local
    folder, whose origin tunetext cannot know."""
    if name in CATALOGUE:
        return CATALOGUE[name].hub_id
    return None if _local(name) else name


def dataset_id(source: str) -> str | None:
    """What the card names `data.source` by: a built-in dataset's name or a hub dataset's id; None for a
    local file or folder."""
    if source in BUILTIN:
        return source
    return None if Path(source).suffix.lower() in FILE_SUFFIXES or _local(source) else source


def _local(name: str) -> bool:
    """Whether a model or data name is a path on this machine rather than a hub id."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def card_data(run_dir: str | Path, config: RunConfig, metrics: dict[str, Any],
              license: str | None = None) -> Any:
    """The run's `huggingface_hub.ModelCardData`: base model, dataset, task tags, test metrics."""
    from huggingface_hub import EvalResult, ModelCardData  # its import costs every command a fraction

    task = metrics.get("task", {}).get("type", "single_label")
    dataset = dataset_id(config.data.source)
    shown_data = dataset or Path(config.data.source).name
    results = [EvalResult(task_type="text-classification", dataset_type=dataset or "local",
                          dataset_name=shown_data, dataset_split="test", metric_type=kind,
                          metric_name=name, metric_args=args, metric_value=float(metrics["test"][key]))
               for key, (kind, name, args) in CARD_METRICS.items() if key in metrics.get("test", {})]
    adapter = (Path(run_dir) / "adapter_config.json").is_file()
    return ModelCardData(
        base_model=base_model(config.model.name), datasets=None if dataset is None else [dataset],
        pipeline_tag="text-classification", library_name="peft" if adapter else "transformers",
        tags=["tunetext", task.replace("_", "-"), config.train.strategy], license=license,
        model_name=Path(run_dir).name, eval_results=results or None)


def front_matter(run_dir: str | Path, config: RunConfig, metrics: dict[str, Any]) -> str:
    """The README's YAML metadata block, `---` lines included."""
    return f"---\n{card_data(run_dir, config, metrics).to_yaml()}\n---\n\n"


def pushed_files(run_dir: Path) -> list[str]:
    """The files of a finished run a model repo needs: those run.json lists (model, tokenizer, README,
    metrics, config) less `NOT_PUSHED`, and the ONNX export's folder if there is one."""
    listed = read_json(run_dir / MARKER).get("files") or [README, METRICS, CONFIG]
    files = [name for name in listed if name not in NOT_PUSHED and (run_dir / name).is_file()]
    return files + (["onnx/*"] if (run_dir / "onnx").is_dir() else [])


def push(run_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None,
         license: str | None = None) -> str:
    """Upload a finished run to the Hugging Face Hub model repo `repo_id` (created if missing); the URL.

    `token` defaults to the HF_TOKEN environment variable, else the `hf auth login` token. `license`
    (a Hub licence id such as apache-2.0) is written into the run's README metadata first."""
    from huggingface_hub import HfApi, ModelCard

    path = Path(run_dir)
    read_run(path)  # a RunError for a folder that is not a finished run
    if license is not None:
        card = ModelCard.load(path / README)
        card.data.license = license
        card.save(path / README)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.upload_folder(repo_id=repo_id, folder_path=path, repo_type="model",
                                   allow_patterns=pushed_files(path),
                                   ignore_patterns=["checkpoint/*", "**/checkpoint/*"],
                                   commit_message=f"Upload tunetext run {path.name}")
    except Exception as exc:
        if not _network_error(exc):
            raise
        raise PushError(f"could not upload {path} to the Hugging Face Hub repo {repo_id} ({exc}); check "
                        "the connection and that the token (HF_TOKEN or --token) may write to that repo, "
                        "then run tunetext push again") from exc
    return str(getattr(commit, "repo_url", f"https://huggingface.co/{repo_id}"))


def _network_error(exc: BaseException) -> bool:
    """An error of the Hub or the connection to it: huggingface_hub's HTTP errors are OSErrors, its
    HTTP client's transport errors are that client's own types."""
    return isinstance(exc, OSError) or any(kind.__module__.split(".")[0] in {"httpx", "httpx2", "requests"}
                                           for kind in type(exc).__mro__)
