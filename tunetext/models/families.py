"""Every difference between model families, and the model parts the rest of tunetext reaches for.

Encoders (BERT family) and decoders (GPT-2, Llama families) differ in their pad token, which token pools
the sequence, and which modules are "the last blocks". All of that is decided here, from the family
table, and nowhere else: the loaders, the freezing strategies and the frozen-prefix split ask these
functions rather than looking inside a model themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from tunetext.errors import TunetextError


# Defined here, at the bottom of the package, so that every module of it (the loaders, the split, the
# from-scratch GPT-2) can raise it without importing a module above itself.
class ModelError(TunetextError, ValueError):
    """A model name or folder that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Family:
    """Where a model family keeps its parts, as attribute paths from the base model."""

    kind: Literal["encoder", "decoder"]
    blocks: str  # the list of transformer blocks
    final_norm: str | None = None  # a norm after the last block, if the family has one
    head_in_base: tuple[str, ...] = ()  # base-model modules that belong to the classification head
    # The head's final linear layer, from the classification model: strategy `features` trains only it,
    # on cached copies of its input.
    head_linear: str = "classifier"
    lora_targets: tuple[str, ...] = ()  # attention projections that strategy `lora` adapts


# Keyed by `config.model_type`. Decoders classify from the last non-pad token (`pooled_positions`, as
# transformers' *ForSequenceClassification does given `pad_token_id`); encoders from the first ([CLS]).
_QV = ("query", "value")
FAMILIES: dict[str, Family] = {
    "bert": Family("encoder", "encoder.layer", head_in_base=("pooler",), lora_targets=_QV),
    "roberta": Family("encoder", "encoder.layer", head_in_base=("pooler",), head_linear="classifier.out_proj",
                      lora_targets=_QV),
    "xlm-roberta": Family("encoder", "encoder.layer", head_in_base=("pooler",),
                          head_linear="classifier.out_proj", lora_targets=_QV),
    "mpnet": Family("encoder", "encoder.layer", head_in_base=("pooler",), head_linear="classifier.out_proj",
                    lora_targets=("q", "v")),
    "electra": Family("encoder", "encoder.layer", head_linear="classifier.out_proj", lora_targets=_QV),
    "distilbert": Family("encoder", "transformer.layer", lora_targets=("q_lin", "v_lin")),
    "gpt2": Family("decoder", "h", final_norm="ln_f", head_linear="score", lora_targets=("c_attn",)),
    "llama": Family("decoder", "layers", final_norm="norm", head_linear="score",
                    lora_targets=("q_proj", "v_proj")),
    "qwen2": Family("decoder", "layers", final_norm="norm", head_linear="score",
                    lora_targets=("q_proj", "v_proj")),
    "mistral": Family("decoder", "layers", final_norm="norm", head_linear="score",
                      lora_targets=("q_proj", "v_proj")),
}


def family_of(config) -> Family:
    """The family of a transformers config; unknown model types are an error naming the known ones."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ModelError(f"model type {config.model_type!r} is not supported yet; supported types are "
                         f"{', '.join(sorted(FAMILIES))}")
    return family


def pooled_positions(input_ids: torch.Tensor, pad_token_id: int | None) -> torch.Tensor:
    """The position a decoder classifies from in each row of `input_ids` `[batch, length]`: the rightmost
    token that is not `pad_token_id`, found exactly as transformers' *ForSequenceClassification finds it
    (an all-pad row pools position 0). Without a pad token nothing is padding, and each row pools its
    last position (transformers does so for a batch of one and refuses larger ones)."""
    if pad_token_id is None:
        return torch.full((input_ids.shape[0],), input_ids.shape[-1] - 1, device=input_ids.device)
    non_pad = (input_ids != pad_token_id).to(torch.int32)
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (positions * non_pad).argmax(-1)


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)  # type: ignore[assignment]
        if module is None:
            return None
    return module


def unwrap_peft(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper; any other model as it is."""
    get_base_model = getattr(model, "get_base_model", None)  # peft's PeftModel has it, transformers' not
    return get_base_model() if get_base_model is not None else model


def blocks(model: Any, family: Family) -> nn.ModuleList:
    found = _get(unwrap_peft(model).base_model, family.blocks)
    if not isinstance(found, nn.ModuleList):
        raise ModelError(f"{type(model).__name__} has no block list at '{family.blocks}'")
    return found


def final_norm(model: Any, family: Family) -> nn.Module | None:
    """The norm after the last block (`Family.final_norm`), or None where the family or model has none."""
    return _get(model.base_model, family.final_norm) if family.final_norm is not None else None


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


def head_linear(model: Any, family: Family) -> nn.Linear:
    """The classification head's final linear layer (`Family.head_linear`)."""
    found = _get(unwrap_peft(model), family.head_linear)
    if not isinstance(found, nn.Linear):
        raise ModelError(f"{type(unwrap_peft(model)).__name__} has no linear layer at '{family.head_linear}'")
    return found


def _running_copy(module: nn.Module) -> nn.Module:
    """The copy of `module` that runs and is saved: a PEFT run's head is wrapped by peft
    (`ModulesToSaveWrapper`), which trains and saves its own copy under the active adapter; any other
    module is itself."""
    copies = getattr(module, "modules_to_save", None)
    if not isinstance(copies, nn.ModuleDict):
        return module
    active = list(getattr(module, "active_adapters", []))
    if len(active) != 1:
        raise ModelError(f"the classification head has {len(active)} active adapters; one was expected")
    return copies[active[0]]


@torch.no_grad()
def fold_temperature(model: Any, family: Family, temperature: float) -> None:
    """Divide the classification head's final linear layer (`Family.head_linear`: its weight, and its
    bias where it has one) by `temperature`, so that the model's own logits are the temperature-scaled
    ones: softmax(z / T) is then what any loader computes (exact in arithmetic, equal up to rounding).
    Under peft (`lora` kept as an adapter, `prompt_tuning`), it is the head's trained copy that is divided,
    the one saved with the adapter."""
    module: Any = unwrap_peft(model)
    for part in family.head_linear.split("."):
        module = _running_copy(getattr(module, part))
    if not isinstance(module, nn.Linear):
        raise ModelError(f"{type(unwrap_peft(model)).__name__} has no linear layer at '{family.head_linear}'")
    module.weight.div_(temperature)
    if module.bias is not None:
        module.bias.div_(temperature)


def head_modules(model: Any, family: Family) -> list[str]:
    """Names of the modules that make up the classification head, for peft's `modules_to_save`: the
    children outside the base model that hold weights, and the family's `head_in_base` parts."""
    names = [n for n, m in model.named_children()
             if n != model.base_model_prefix and any(True for _ in m.parameters())]
    return names + [part for part in family.head_in_base if _get(model.base_model, part) is not None]


def frozen_prefix_modules(model: Any, family: Family, n_frozen: int) -> list[nn.Module]:
    """The modules that run before block `n_frozen`: the base model's embedding side (every child that
    is not the block list, the final norm or part of the head) and the first `n_frozen` blocks."""
    skip = {family.blocks.split(".")[0], family.final_norm, *family.head_in_base}
    embedding_side = [m for name, m in model.base_model.named_children() if name not in skip]
    return embedding_side + list(blocks(model, family))[:n_frozen]


def train_mode(model: Any, family: Family, strategy: str, last_n: int) -> None:
    """`model.train()`, except that under `last_n` the frozen prefix (embeddings and frozen blocks) stays
    in eval mode: no dropout where nothing learns. Dropout there would only add noise to the features the
    top blocks learn from, and without it the prefix is deterministic, which is what makes caching its
    output (`train.cache_frozen`) exact. Call it wherever `model.train()` would be called."""
    model.train()
    if strategy == "last_n":
        for module in frozen_prefix_modules(model, family, len(blocks(model, family)) - last_n):
            module.eval()


def truncate_blocks(model: Any, family: Family, n: int) -> None:
    """Keep only the first `n` transformer blocks, in the model and its config (a distillation student)."""
    layer_list = blocks(model, family)
    if n > len(layer_list):
        raise ModelError(f"train.student_layers={n} but the model has only {len(layer_list)} blocks")
    del layer_list[n:]
    config = unwrap_peft(model).config
    config.num_hidden_layers = n  # transformers maps it to each family's key (GPT-2's n_layer, ...)
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (Qwen2)
        config.layer_types = config.layer_types[:n]
