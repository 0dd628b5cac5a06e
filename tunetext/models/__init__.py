"""Models for classification: loading them, the facts of each model family, and running a classifier
as a frozen prefix and a top.

- `loading`: the catalogue, local folders and hub ids; tokenizers; classifiers, causal LMs, PEFT runs.
- `families`: every difference between model families (blocks, head, pooling, freezing modes).
- `prefix`: the frozen prefix and the top run separately, for the frozen-prefix cache.
- `gpt`: GPT-2 written from scratch (`model.implementation=scratch`).
- `init_from`: starting from a finished run's weights, its head mapped onto new labels (`model.init_from`).

Dependencies point down: `init_from` uses `loading`, which uses `gpt` and `families`; `prefix` and `gpt`
use `families`.
"""

from tunetext.models.families import (
    FAMILIES,
    Family,
    ModelError,
    blocks,
    family_of,
    final_norm,
    fold_temperature,
    frozen_prefix_modules,
    head_linear,
    head_modules,
    head_parameter_names,
    pooled_positions,
    train_mode,
    truncate_blocks,
    unwrap_peft,
)
from tunetext.models.gpt import GPT2Classifier
from tunetext.models.init_from import Parent, load_parent, plan_parent, remap_head, with_parent_model
from tunetext.models.loading import (
    ADAPTER_CONFIG,
    CATALOGUE,
    LOAD_ERRORS,
    PROBLEM_TYPES,
    CatalogueModel,
    attention_kernel,
    converted_gguf,
    load_adapter_classifier,
    load_causal_lm,
    load_classifier,
    load_tokenizer,
    resolve,
    task_of,
)
from tunetext.models.prefix import PrefixCacheUnsupported, encode_prefix, forward_top, prefix_split

__all__ = [
    "ADAPTER_CONFIG", "CATALOGUE", "FAMILIES", "LOAD_ERRORS", "PROBLEM_TYPES", "CatalogueModel", "Family",
    "GPT2Classifier",
    "ModelError", "Parent", "PrefixCacheUnsupported", "attention_kernel", "blocks", "converted_gguf",
    "encode_prefix", "family_of", "final_norm", "fold_temperature", "forward_top", "frozen_prefix_modules",
    "head_linear",
    "head_modules", "head_parameter_names", "load_adapter_classifier", "load_causal_lm", "load_classifier",
    "load_parent", "load_tokenizer", "plan_parent", "pooled_positions", "prefix_split", "remap_head",
    "resolve", "task_of", "train_mode", "truncate_blocks", "unwrap_peft", "with_parent_model",
]
