"""Starting a run from a finished run's weights (`model.init_from`), to continue training it on new data.

The parent run's model, body and head, loads as it was saved, with its tokenizer; then its head's final
linear layer (`Family.head_linear`) is rebuilt for the new run's labels: the parent's labels first, in
their order, then the data's new labels in the data's order. A label the parent and the data share keeps
its row (weights and bias), a new label gets a row initialised as the family initialises a head, and with
`model.init_labels=drop` the parent's labels the data lacks lose theirs (with `keep` they stay, so the
model can still predict them).

The order matters beyond the head: label ids are positions in that list, so the data is prepared with it
(`load_dataset(..., label_names=Parent.labels)`), as `evaluate` prepares a run's data again later.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunetext.config import ModelConfig, RunConfig
from tunetext.models.families import Family, ModelError, family_of, fold_temperature, head_linear
from tunetext.models.loading import ADAPTER_CONFIG, load_adapter_classifier, load_classifier
from tunetext.runs import RunError, read_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parent:
    """The finished run a new run starts from, and what becomes of its labels."""

    run_dir: Path
    config: RunConfig  # the parent run's own configuration
    label_names: list[str]  # the parent's labels, in the order of its head's rows
    labels: list[str]  # the new run's labels: the parent's (less `dropped`), then `new`
    kept: list[str]  # the parent's labels the data lacks, kept (init_labels=keep)
    dropped: list[str]  # the parent's labels the data lacks, removed (init_labels=drop)
    new: list[str]  # the data's labels the parent lacks: fresh head rows

    @property
    def carried(self) -> list[str]:
        """The labels whose head rows come from the parent."""
        return [name for name in self.labels if name in self.label_names]

    def record(self) -> dict[str, Any]:
        """What the new run's `run.json` says of its parent (under "parent")."""
        return {"run_dir": str(self.run_dir), "model": self.config.model.name,
                "label_names": self.label_names, "carried": self.carried, "kept": self.kept,
                "dropped": self.dropped, "new": self.new}

    def summary(self) -> str:
        """One log line: how many labels were carried over, which are new, which were dropped or kept."""
        def named(names: list[str]) -> str:
            return f" ({', '.join(names)})" if names else ""

        kept = f" ({len(self.kept)} not in the data, kept: {', '.join(self.kept)})" if self.kept else ""
        return (f"init from {self.run_dir}: {len(self.carried)} labels carried over{kept}, {len(self.new)} "
                f"new{named(self.new)}, {len(self.dropped)} dropped{named(self.dropped)}")


def _read_parent(run_dir: str) -> tuple[RunConfig, dict[str, Any]]:
    """The config and run info of the finished run `model.init_from` names; a `RunError` saying so when it
    is none."""
    try:
        config, _, info = read_run(run_dir)
    except RunError as exc:
        raise RunError(f"model.init_from: {exc} init_from takes a finished run directory written by "
                       "`tunetext train`") from exc
    return config, info


def with_parent_model(config: RunConfig) -> RunConfig:
    """`config` with `model.name` taken from the run `model.init_from` names (as it is without init_from).

    The model, its family and tokenizer are the parent run's; a `model.name` given that is neither the
    default nor the parent's is an error rather than silently ignored. Done before the run directory is
    checked and written, so the saved config repeats the run and a `--resume` compares equal.
    """
    init_from = config.model.init_from
    if init_from is None:
        return config
    parent_config, _ = _read_parent(init_from)
    base, asked = parent_config.model.name, config.model.name
    if asked not in (base, ModelConfig.model_fields["name"].default):
        kind = _model_type(Path(init_from))
        raise ModelError(f"model.name is {asked!r} but model.init_from {init_from} was fine-tuned from "
                         f"{base!r}{kind}: with init_from the model, its family and tokenizer are the run's. "
                         f"Leave model.name out (or set it to {base!r}), or drop init_from to start from "
                         f"{asked!r}")
    return config.model_copy(update={"model": config.model.model_copy(update={"name": base})})


def _model_type(run_dir: Path) -> str:
    """`" (a bert model)"` from the run's config.json, or `""` where it has none (a PEFT adapter)."""
    try:
        return f" (a {json.loads((run_dir / 'config.json').read_text())['model_type']} model)"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def plan_parent(model_config: ModelConfig, data_labels: list[str]) -> Parent:
    """The parent run of `model_config.init_from` and the new run's label list for data with labels
    `data_labels` (in the data's order), as `model_config.init_labels` says."""
    assert model_config.init_from is not None
    config, info = _read_parent(model_config.init_from)
    parent_labels = list(info["label_names"])
    absent = [name for name in parent_labels if name not in data_labels]
    new = [name for name in data_labels if name not in parent_labels]
    kept, dropped = (absent, []) if model_config.init_labels == "keep" else ([], absent)
    labels = [name for name in parent_labels if name not in dropped] + new
    return Parent(Path(model_config.init_from), config, parent_labels, labels, kept, dropped, new)


def load_parent(parent: Parent, model_config: ModelConfig, device: torch.device | None = None):
    """`(model, tokenizer, family)`: the parent run's model with its head rebuilt for `parent.labels`
    (`remap_head`). A LoRA run saved as an adapter (`train.lora_merge=false`) is loaded onto its base model
    and merged; a prompt-tuning adapter cannot be merged into weights and is an error."""
    run_dir, parent_train = parent.run_dir, parent.config.train
    if (run_dir / ADAPTER_CONFIG).is_file():
        if parent_train.strategy != "lora":
            raise ModelError(f"model.init_from {run_dir} is a {parent_train.strategy} run saved as a PEFT "
                             "adapter, whose virtual tokens cannot be merged into the model's weights; start "
                             "from a run saved as a whole model (strategy full, last_n, lora, ...)")
        if model_config.implementation == "scratch":
            raise ModelError(f"model.init_from {run_dir} is a LoRA adapter, merged into transformers' model "
                             "on loading; use model.implementation=transformers")
        peft_model, tokenizer = load_adapter_classifier(
            run_dir, parent.config.model.name, parent.label_names, parent_train.student_layers,
            model_config.attention, device)
        model = peft_model.merge_and_unload()  # from here the run is a whole model, as any other
        family = family_of(model.config)
    else:
        weights = ("model.safetensors", "model.safetensors.index.json")  # so no pickled .bin is tried
        if not any((run_dir / name).is_file() for name in weights):
            raise RunError(f"model.init_from {run_dir} has no model.safetensors: the run's weights were "
                           "removed or never finished writing; train it again")
        model, tokenizer, family = load_classifier(str(run_dir), attention=model_config.attention,
                                                   device=device, implementation=model_config.implementation)
    saved = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if saved != parent.label_names:
        raise RunError(f"model.init_from {run_dir}: its run.json names labels {parent.label_names} but its "
                       f"model's config.json {saved}; one was edited after training. Train it again")
    # A parent whose calibration temperature is folded into its head (`calibration.folded`) gives its head
    # as trained: the new run fits a temperature of its own.
    calibration = read_run(run_dir)[1].get("calibration", {})
    if calibration.get("folded"):
        fold_temperature(model, family, 1 / calibration["temperature"])
    remap_head(model, family, parent.label_names, parent.labels)
    log.info("%s", parent.summary())
    return model, tokenizer, family


def remap_head(model: Any, family: Family, old: list[str], new: list[str]) -> None:
    """Rebuild the head's final linear layer, whose rows are labels `old`, for labels `new`: a label in
    both keeps its row (weights and bias), any other starts as the family initialises a head (normal with
    the config's `initializer_range`, zero bias), and the model's config takes the new labels."""
    linear: nn.Linear = head_linear(model, family)
    std = getattr(model.config, "initializer_range", 0.02)  # transformers' default for a config without one
    weight = torch.empty(len(new), linear.in_features, dtype=linear.weight.dtype, device=linear.weight.device)
    weight.normal_(0.0, std)
    bias = None if linear.bias is None else torch.zeros(len(new), dtype=linear.bias.dtype,
                                                        device=linear.bias.device)
    with torch.no_grad():
        for row, name in enumerate(new):
            if name in old:
                weight[row] = linear.weight[old.index(name)]
                if bias is not None:
                    bias[row] = linear.bias[old.index(name)]
    linear.weight = nn.Parameter(weight)
    if bias is not None:
        linear.bias = nn.Parameter(bias)
    linear.out_features = len(new)
    config = model.config
    config.num_labels = len(new)
    config.id2label = dict(enumerate(new))
    config.label2id = {name: i for i, name in enumerate(new)}
    if hasattr(model, "num_labels"):  # transformers' *ForSequenceClassification keep their own copy
        model.num_labels = len(new)
