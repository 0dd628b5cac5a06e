"""The one typed configuration tree of tunetext.

Defaults live here and nowhere else. Precedence is fixed: defaults, then a YAML file, then command-line
``key=value`` overrides. Every problem is reported at once, each naming the field, the value it got and
what to do about it.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.functional_validators import field_validator


class ConfigError(ValueError):
    """A configuration that cannot be used; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


TEXT_FIELD = "{text}"  # where a prompt template puts the text


def check_template(template: str) -> str:
    """`template` if it has a `{text}` field, else a ValueError saying how to write one."""
    if TEXT_FIELD not in template:
        raise ValueError(f"a template must contain {TEXT_FIELD} where the text goes, e.g. "
                         f"\"Classify the sentiment of the following movie review: '{TEXT_FIELD}'\"")
    return template


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the labelled text comes from and how it is split."""

    source: str = Field(
        "sms_spam",
        description="Built-in dataset name, a CSV/TSV/JSONL/Parquet file, a Hugging Face dataset name "
        "or a local `datasets` folder.",
    )
    validation: str | None = Field(None, description="Optional separate validation file.")
    test: str | None = Field(None, description="Optional separate test file.")
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label (string or integer).")
    template: str | None = Field(
        None, description="Prompt template the model sees instead of the bare text, with `{text}` where the "
        "text goes, e.g. \"Classify the sentiment of the following movie review: '{text}'\". Applied in "
        "training, evaluation and prediction alike (`tunetext.batches.format_inputs`).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of the data for validation when "
                                "no validation split is given.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the data for test when no test "
                                 "split is given.")
    max_train_samples: int | None = Field(None, gt=0, description="Stratified subsample of the training "
                                          "split, for quick runs.")
    seed: int = Field(42, description="Seed for splitting and subsampling; kept apart from train.seed so "
                      "runs with different training seeds share one test split.")
    lowercase: bool = Field(False, description="Lowercase every text, in every split and at prediction "
                            "time; texts that then coincide are de-duplicated.")
    strip_urls: bool = Field(False, description="Remove URLs (http://, https://, ftp://, www.) from every "
                             "text, in every split and at prediction time.")
    strip_markup: bool = Field(False, description="Remove HTML tags, comments and script/style blocks and "
                               "decode entities (`&amp;` -> `&`), in every split and at prediction time.")
    balance: Literal["none", "undersample"] = Field(
        "none", description="`undersample` drops training examples of the larger classes (seeded) until "
        "every class has as many as the smallest; validation and test are untouched. For loss weights "
        "instead see train.class_weights.")
    augment: int = Field(0, ge=0, le=20, description="Extra augmented copies of every training text (0: "
                         "none); validation and test are never augmented.")
    augment_ops: list[Literal["swap", "delete", "insert"]] = Field(
        ["swap", "delete", "insert"], min_length=1, description="Operations each augmented copy draws one "
        "of: `swap` two words, `delete` words, `insert` a copy of a word of the text at a random place.")
    augment_prob: float = Field(0.1, gt=0, le=0.5, description="Share of a text's words an augmentation "
                                "touches (at least one).")

    @field_validator("template")
    @classmethod
    def _template_has_text(cls, value: str | None) -> str | None:
        return None if value is None else check_template(value)

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:.2f} leaves "
                "under 10% for training; lower them"
            )
        return self


class ModelConfig(_Section):
    """Which pretrained model to fine-tune."""

    name: str = Field("minilm-l6", description="Catalogue name (see `tunetext.models.CATALOGUE`), a local "
                      "Hugging Face model folder, or a hub id.")
    max_length: int = Field(256, ge=8, le=8192, description="Texts are truncated to this many tokens.")
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="Attention kernel. `auto` picks eager on CPU, where PyTorch's fused attention "
        "backward is slower for short texts, and sdpa on GPU.")
    implementation: Literal["transformers", "scratch"] = Field(
        "transformers", description="`scratch` builds tunetext.gpt's readable from-scratch GPT-2 (same "
        "outputs and saved format as transformers'); only for GPT-2 checkpoints, any other model type is "
        "an error naming it.")


class TrainConfig(_Section):
    """How the model is fine-tuned."""

    strategy: Literal["full", "last_n"] = Field(
        "full", description="`full` trains every weight; `last_n` freezes all but the last N blocks, "
        "the final norm and the head.")
    last_n: int = Field(1, ge=1, description="Blocks left trainable with strategy `last_n`.")
    cache_frozen: Literal["auto", "on", "off"] = Field(
        "auto", description="With strategy `last_n`, compute the frozen prefix's output (embeddings and "
        "frozen blocks, run without dropout) once per training text and train the top blocks from that "
        "cache every epoch: same results, a fraction of the time. `auto` caches when the model family "
        "supports it (BERT, GPT-2, Llama), training runs in one process and the cache fits in half the free "
        "memory; `on` insists (an error where it cannot); `off` runs the whole model every step.")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step (per process), before "
                            "gradient accumulation.")
    eval_batch_size: int = Field(128, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of optimizer steps with a linear "
                                "warmup; the rest decays linearly to zero.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null turns it off.")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="`balanced` weights the loss by inverse class frequency.")
    eval_every: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps; null means "
                                   "once per epoch.")
    log_every: int = Field(10, ge=1, description="Optimizer steps between log lines.")
    metric: Literal["macro_f1", "accuracy", "weighted_f1"] = Field(
        "macro_f1", description="Validation metric for early stopping and picking the best weights.")
    early_stopping_patience: int | None = Field(
        2, ge=1, description="Stop after this many evaluations without improvement; null never stops early.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="`auto` uses bf16 autocast where the hardware runs it fast, else fp32.")
    group_by_length: bool = Field(True, description="Batch texts of similar length to cut padding.")
    seed: int = Field(42, description="Seed for initialisation, batch order and dropout.")
    checkpoint_every_epoch: bool = Field(True, description="Keep a resumable checkpoint after each epoch.")
    num_threads: int | None = Field(None, ge=1, description="Torch CPU threads; null uses all cores.")

    @model_validator(mode="before")
    @classmethod
    def _cache_frozen_from_yaml_bool(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML, and so command-line values) reads a bare on/off as true/false.
        if isinstance(data, dict) and isinstance(data.get("cache_frozen"), bool):
            data = {**data, "cache_frozen": "on" if data["cache_frozen"] else "off"}
        return data

    @model_validator(mode="after")
    def _cache_frozen_needs_last_n(self) -> TrainConfig:
        if self.cache_frozen == "on" and self.strategy != "last_n":
            raise ValueError(f"cache_frozen=on caches the frozen prefix of strategy last_n, but strategy is "
                             f"{self.strategy!r}; set train.strategy=last_n or train.cache_frozen=auto")
        return self


class RunConfig(_Section):
    """Everything one training run needs; written to every run directory as `config.yaml`."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


SECTIONS = ("data", "model", "train")


def _format_errors(err: ValidationError, raw: dict[str, Any]) -> list[str]:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        value = _lookup(raw, e["loc"])
        if e["type"] == "extra_forbidden":
            section = str(e["loc"][0]) if len(e["loc"]) > 1 else None
            known = _known_keys(section)
            problems.append(f"{where}: unknown key (value {value!r}){_did_you_mean(str(e['loc'][-1]))}; "
                            f"known keys here are {', '.join(known)}")
            continue
        problems.append(f"{where}: got {value!r}: {e['msg']}")
    return problems


def _known_keys(section: str | None) -> list[str]:
    if section in SECTIONS:
        return list(RunConfig.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]
    return list(SECTIONS)


def _did_you_mean(name: str) -> str:
    """`"; did you mean train.epochs?"` for a misspelt or misplaced key, else `""`."""
    dotted = {k: f"{s}.{k}" for s in SECTIONS for k in _known_keys(s)}
    close = difflib.get_close_matches(name, list(dotted), n=1)
    return f"; did you mean {dotted[close[0]]}?" if close else ""


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        else:
            return "<missing>"
    return raw


# Only the numbers YAML 1.1 misses; "nan" or "inf" stay strings, as YAML reads them.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str) -> Any:
    """Parse a command-line value the way YAML would (`3` -> 3, `null` -> None, `1e-4` -> 0.0001)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value):
        return float(value)  # YAML 1.1 reads "1e-4" as a string; YAML 1.2 and people read a number
    return value


def parse_overrides(items: list[str], problems: list[str]) -> dict[str, Any]:
    """`["train.epochs=5", ...]` -> `{"train.epochs": 5, ...}`; malformed items go to `problems`."""
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"{item!r}: overrides are written key=value, e.g. train.epochs=5")
            continue
        pairs[key.strip()] = parse_value(text.strip())
    return pairs


def _set_override(tree: dict[str, Any], key: str, value: Any, problems: list[str]) -> None:
    parts = key.split(".")
    if len(parts) == 1:
        owners = [s for s in SECTIONS if key in _known_keys(s)]
        if len(owners) != 1:
            hint = f"write {' or '.join(f'{s}.{key}' for s in owners)}" if owners else \
                f"keys are SECTION.NAME with SECTION one of {', '.join(SECTIONS)}"
            what = "ambiguous key" if owners else f"unknown key (value {value!r}){_did_you_mean(key)}"
            problems.append(f"{key}: {what}; {hint}")
            return
        parts = [owners[0], key]
    if len(parts) != 2 or parts[0] not in SECTIONS:
        problems.append(f"{key}: unknown key; keys are SECTION.NAME with SECTION one of "
                        f"{', '.join(SECTIONS)}")
        return
    tree.setdefault(parts[0], {})
    if not isinstance(tree[parts[0]], dict):
        problems.append(f"{parts[0]}: expected a mapping, got {tree[parts[0]]!r}")
        return
    tree[parts[0]][parts[1]] = value


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> RunConfig:
    """Build the run configuration: defaults, then the YAML file at `path`, then `overrides`.

    `overrides` maps dotted keys (`train.epochs`) or unambiguous bare keys (`epochs`) to values, or is a
    list of `key=value` strings as given on the command line.
    """
    problems: list[str] = []
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file {path} does not exist"])
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path} is not valid YAML: {exc}"]) from exc
        if not isinstance(loaded, dict):
            raise ConfigError([f"{path} must hold a mapping with sections {', '.join(SECTIONS)}"])
        tree = loaded
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides, problems)
    for key, value in (overrides or {}).items():
        _set_override(tree, key, value, problems)
    try:
        config = RunConfig.model_validate(tree)
    except ValidationError as err:
        problems.extend(_format_errors(err, tree))
        config = None
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML, ready to be loaded again with `load_config`."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
