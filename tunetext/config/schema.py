"""The configuration tree: the sections `data`, `model`, `train`, `search` and `audit` and every default.

Defaults live here and nowhere else; each field's description is its documentation. `tunetext.config.load`
reads a tree from YAML and command-line overrides and reports every problem at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from pydantic.functional_validators import field_validator

from tunetext.errors import TunetextError, UsageError


class ConfigError(TunetextError, ValueError):
    """A configuration that cannot be used; the message lists every problem found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


TEXT_FIELD = "{text}"  # where a prompt template puts the text


def check_template(template: str) -> str:
    """`template` if it has a `{text}` field, else a UsageError (a ValueError, for pydantic's validators)
    saying how to write one."""
    if TEXT_FIELD not in template:
        raise UsageError(f"a template must contain {TEXT_FIELD} where the text goes, e.g. "
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
    label_column: str = Field("label", description="Column holding the label: a string or integer (single "
                              "label), a list or a delimited string (multi-label), a number (regression).")
    label_columns: list[str] | None = Field(
        None, description="Multi-label data as several 0/1 columns, one per label (e.g. `[billing, "
        "shipping]`, or `--label-columns billing,shipping`): a row has every label whose column is 1. "
        "Replaces label_column and implies task multi_label.")
    task: Literal["auto", "single_label", "multi_label", "regression"] = Field(
        "auto", description="What a label is: one class per text (`single_label`), a set of labels per text, "
        "possibly empty (`multi_label`), or a number (`regression`). `auto` infers it when unambiguous: list "
        "labels (or label_columns) are multi-label, numbers with a fraction part and many distinct values "
        "are regression, anything else is single-label; labels that only look multi-label (delimited "
        "strings) or numeric (many distinct integers) stop with an error asking to set it.")
    label_separator: str = Field(
        ",", min_length=1, description="task multi_label: what separates the labels in a label written as "
        "one string (a CSV cell `billing,shipping`); an empty cell is a text with no label.")
    template: str | None = Field(
        None, description="Prompt template the model sees instead of the bare text, with `{text}` where the "
        "text goes, e.g. \"Classify the sentiment of the following movie review: '{text}'\". Applied in "
        "training, evaluation and prediction alike (`tunetext.batches.format_inputs`).")
    long_text: Literal["auto", "truncate", "head_tail", "chunks"] = Field(
        "auto", description="What happens to a text longer than model.max_length tokens, in training, "
        "evaluation, prediction and serving alike. `auto` chooses from the training texts "
        "(tunetext.adaptive): `truncate` when none is longer, else the way that scored best on "
        "20newsgroups' validation split (benchmarks/long_text.py). `truncate` keeps its first "
        "max_length tokens. "
        "`head_tail` keeps its first and last tokens (data.head_fraction of the room the window leaves "
        "for the text go to the head, the rest to the tail). `chunks` cuts it into overlapping windows "
        "of max_length tokens (data.chunk_overlap, at most data.max_chunks): in training each window is "
        "an example with the text's label; in evaluation, prediction and serving every window is scored "
        "and the text's answer is the softmax of the mean of its windows' logits. A template "
        "(data.template) stays whole around the kept text in every window (with a slow tokenizer, one "
        "without offsets, head and tail are taken from the filled-in template). See docs/long_texts.md.")
    head_fraction: float = Field(
        0.25, ge=0, le=1, description="data.long_text=head_tail: the share of the window's room for text "
        "(max_length less the special tokens and the template) given to the text's first tokens; the "
        "rest goes to its last tokens. 0.25 is the split Sun et al. (2019) found best for BERT on long "
        "reviews (head 128 + tail 382 of 510).")
    chunk_overlap: float = Field(
        0.25, ge=0, lt=1, description="data.long_text=chunks: the share of each window's text tokens that "
        "the next window repeats, so a sentence cut by one window's edge is whole in the next. The last "
        "window ends at the text's end (it may overlap its neighbour more).")
    max_chunks: int = Field(
        8, ge=1, le=256, description="data.long_text=chunks: most windows per text, so one giant text "
        "cannot take the memory and time of thousands. A text that needs more gets this many windows "
        "spread evenly from its start to its end (its first and last windows are kept; tokens between "
        "spread windows are skipped, and prediction reports it as truncated).")
    val_fraction: float = Field(0.1, gt=0, lt=1, description="Share of the data for validation when "
                                "no validation split is given.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of the data for test when no test "
                                 "split is given.")
    max_train_samples: int | None = Field(None, gt=0, description="Stratified subsample of the training "
                                          "split, for quick runs.")
    rare_class_min: int = Field(5, ge=1, description="A class with fewer training examples than this is "
                                "named in a warning in the data report (its scores rest on too few "
                                "examples to trust).")
    seed: int = Field(42, description="Seed for splitting and subsampling; kept apart from train.seed so "
                      "runs with different training seeds share one test split.")
    dedupe: bool = Field(True, description="Drop exact duplicate texts (after cleaning) before splitting, so "
                         "that no text is in two splits. false keeps them, as some published protocols do; "
                         "copies of a test text may then sit in train, and the report says how many.")
    lowercase: bool = Field(False, description="Lowercase every text, in every split and at prediction "
                            "time; texts that then coincide are de-duplicated.")
    strip_urls: bool = Field(False, description="Remove URLs (http://, https://, ftp://, www.) from every "
                             "text, in every split and at prediction time.")
    strip_markup: bool = Field(False, description="Remove HTML tags, comments and script/style blocks and "
                               "decode entities (`&amp;` -> `&`), in every split and at prediction time.")
    similar_labels: Literal["error", "keep"] = Field(
        "error", description="Labels that differ only in letter case or spaces (`Billing`, `billing`, "
        "`bill ing`) are usually one class written two ways: `error` refuses the data, naming them with "
        "counts and rows; `keep` keeps them as separate classes and says so in the report. (Spellings of "
        "one number, `1`, `1.0`, `\" 1 \"`, are always one label, and the report says which were merged.)")
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
    drop_flagged: str | None = Field(
        None, min_length=1, description="A findings file of `tunetext data audit` (findings.csv or "
        "findings.jsonl) in which rows were marked in the `action` column: training and validation rows "
        "marked `drop` are left out, rows marked `relabel` take the label in `new_label` (several labels "
        "of a multi-label row separated by `|`), `keep` and an empty action change nothing. Rows are found "
        "by split and text (the prepared text, as the file shows it), after splitting, so the test split "
        "stays the one every run is scored on; a marked test row is an error (fix the source file "
        "instead), as is a marked row that matches nothing. See docs/audit.md.")

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

    @model_validator(mode="after")
    def _label_columns_are_multi_label(self) -> DataConfig:
        if self.label_columns is not None and not self.label_columns:
            raise ValueError("label_columns is empty; name the 0/1 label columns, or drop it to use "
                             "label_column")
        repeated = sorted({c for c in self.label_columns or [] if (self.label_columns or []).count(c) > 1})
        if repeated:
            raise ValueError(f"label_columns names {', '.join(map(repr, repeated))} more than once; name "
                             "each label column once")
        if self.label_columns and self.task in ("single_label", "regression"):
            raise ValueError(f"label_columns gives each text a set of labels, but task is {self.task}; set "
                             "task to multi_label (or auto), or use label_column")
        return self


class ModelConfig(_Section):
    """Which pretrained model to fine-tune."""

    name: str = Field("minilm-l6", description="Catalogue name (see `tunetext.models.CATALOGUE`), a local "
                      "Hugging Face model folder, or a hub id.")
    max_length: int = Field(256, ge=8, le=8192, description="Texts are truncated to this many tokens.")
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="Attention kernel. `auto` picks eager on CPU, where PyTorch's fused kernel "
        "measured no faster for training on short texts (benchmarks/attention.py), and sdpa on GPU.")
    implementation: Literal["transformers", "scratch"] = Field(
        "transformers", description="`scratch` builds tunetext.models.gpt's readable from-scratch GPT-2 "
        "(same outputs and saved format as transformers'); only for GPT-2 checkpoints, any other model type "
        "is an error naming it.")
    init_from: str | None = Field(
        None, min_length=1, description="A finished run directory whose weights, body and head, start this "
        "run, to continue training it on new data; model.name is then taken from it (a name other than the "
        "default that differs from the run's is an error). Labels the data and the run share keep their "
        "head rows, new labels get fresh rows; see init_labels for the run's labels the data lacks. Its "
        "tokenizer comes along; its data and training settings do not.")
    init_labels: Literal["keep", "drop"] = Field(
        "keep", description="With init_from, what happens to the run's labels that the new data lacks: "
        "`keep` keeps their head rows, so the model can still predict them and they stay in label_names "
        "(with no examples in the new data, they are left out of its macro scores); `drop` removes "
        "their rows.")

    @model_validator(mode="after")
    def _init_labels_need_init_from(self) -> ModelConfig:
        if self.init_from is None and self.init_labels != "keep":
            raise ValueError(f"model.init_labels={self.init_labels} says what to do with the labels of "
                             "model.init_from's run, but init_from is not set; set model.init_from to a "
                             "finished run directory or leave init_labels out")
        return self


class TrainConfig(_Section):
    """How the model is fine-tuned."""

    strategy: Literal["full", "last_n", "lora", "prompt_tuning", "features", "distill"] = Field(
        "full", description="`full` trains every weight; `last_n` freezes all but the last N blocks, "
        "the final norm and the head; `lora` trains low-rank adapters and the head; `prompt_tuning` "
        "(encoders) trains virtual prompt tokens and the head; `features` encodes each text once with the "
        "frozen model and fits only the head's final linear layer; `distill` trains every weight of a "
        "student (see student_layers) on a fine-tuned teacher's soft labels. See docs/strategies.md.")
    last_n: int = Field(1, ge=1, description="Blocks left trainable with strategy `last_n`.")
    lora_r: int = Field(8, ge=1, description="Rank of the LoRA update matrices (strategy `lora`).")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling: the update is multiplied by "
                              "lora_alpha / lora_r.")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the input of the LoRA matrices.")
    lora_merge: bool = Field(True, description="Merge the trained LoRA update into the weights and save a "
                             "standard model folder (served like any run); false saves only the adapter and "
                             "the head (`adapter_config.json`, `adapter_model.safetensors`), applied to "
                             "model.name when the run is loaded.")
    prompt_tokens: int = Field(20, ge=1, description="Virtual tokens prepended to every input (strategy "
                               "`prompt_tuning`).")
    features_l2: list[Annotated[float, Field(ge=0)]] = Field(
        [1e-2, 1e-3, 1e-4, 1e-5, 1e-6], min_length=1, description="Strategy `features`: L2 penalties on the "
        "head's weights to try, strongest first, each fit (a logistic regression by L-BFGS on the cached "
        "features) starting from the previous one's weights; the one with the best validation train.metric "
        "is kept. A single number fixes the penalty.")
    features_max_iter: int = Field(500, ge=1, description="L-BFGS iterations per penalty for strategy "
                                   "`features`.")
    distill_teacher: str | None = Field(None, description="Strategy `distill`: a finished run directory "
                                        "whose model teaches; its label names must match the data's.")
    distill_alpha: float = Field(0.5, ge=0, le=1, description="Weight of the teacher's soft labels in the "
                                 "distillation loss; the rest goes to cross-entropy on the true labels.")
    distill_temperature: float = Field(2.0, gt=0, description="Softmax temperature of teacher and student "
                                       "in the distillation loss.")
    student_layers: int | None = Field(None, ge=1, description="Build the model from only the first N "
                                       "transformer blocks of model.name (a smaller, faster student); "
                                       "null keeps them all.")
    cache_frozen: Literal["auto", "on", "off"] = Field(
        "auto", description="With strategy `last_n`, compute the frozen prefix's output (embeddings and "
        "frozen blocks, run without dropout) once per training text and train the top blocks from that "
        "cache every epoch: same results, a fraction of the time. `auto` caches when the model family "
        "supports it (BERT, GPT-2, Llama), training runs in one process and the cache fits in half the free "
        "memory; `on` insists (an error where it cannot); `off` runs the whole model every step.")
    epochs: int | None = Field(None, ge=1, description="Passes over the training data; null chooses from "
                               "the data: enough for at least max(300, 40 x classes) optimizer steps, 3 to "
                               "20 epochs (tunetext.adaptive).")
    batch_size: int = Field(32, ge=1, description="Examples per optimizer step (per process), before "
                            "gradient accumulation.")
    eval_batch_size: int = Field(128, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of optimizer steps with a linear "
                                "warmup; the rest decays linearly to zero.")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping; null turns it off.")
    class_weights: Literal["auto", "none", "balanced", "sqrt"] = Field(
        "auto", description="Loss weights per class: `balanced` by inverse class frequency, `sqrt` by its "
        "square root (gentler with classes of a handful of examples); `auto` is `sqrt` when the largest "
        "training class is at least 10 times the rarest, else `none`. Multi-label: a positive weight per "
        "label, negatives/positives (`balanced`) or its square root (`sqrt`); `auto` is `none` there, as "
        "tuned thresholds answer the imbalance. Regression has no classes: `auto` or `none` only.")
    eval_every: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps; null means "
                                   "once per epoch.")
    log_every: int = Field(10, ge=1, description="Optimizer steps between log lines.")
    report_to: Literal["none", "tensorboard", "mlflow", "both"] = Field(
        "none", description="Experiment tracking (`pip install 'tunetext[tracking]'`), from the main process "
        "only: the resolved config as parameters, each log line's loss, lr and samples/s, each validation, "
        "the final metrics and (MLflow) the finished run folder as artifacts. TensorBoard writes to "
        "RUN_DIR/tensorboard (or tracking_dir/RUN_NAME); MLflow to MLFLOW_TRACKING_URI when set, else "
        "sqlite:///PARENT/mlflow.db with artifacts in PARENT/mlartifacts, PARENT being tracking_dir or the "
        "run folder's parent. A search's trials follow this setting, one tracked run per trial.")
    tracking_dir: str | None = Field(
        None, description="report_to: the folder for TensorBoard events (one subfolder per run, named as the "
        "run folder) and, without MLFLOW_TRACKING_URI, the MLflow store; null: TensorBoard in "
        "RUN_DIR/tensorboard, MLflow beside the run folder.")
    experiment_name: str | None = Field(
        None, description="report_to=mlflow: the MLflow experiment (MLFLOW_EXPERIMENT_NAME wins when set); "
        "null: the run folder's parent's name (`runs`, a seeds folder; a search's study name for its "
        "trials). Each run is named as its run folder.")
    metric: Literal["auto", "macro_f1", "accuracy", "weighted_f1", "micro_f1", "samples_f1",
                    "subset_accuracy", "r2", "pearson", "spearman", "neg_mae", "neg_rmse"] = Field(
        "auto", description="Validation metric for early stopping, picking the best weights and search "
        "(higher is better). `auto`: macro_f1 (single_label), micro_f1 (multi_label), r2 (regression). "
        "Single-label takes macro_f1, accuracy or weighted_f1; multi-label micro_f1, macro_f1, samples_f1, "
        "weighted_f1 or subset_accuracy (at 0.5, before thresholds are tuned); regression r2, pearson, "
        "spearman, neg_mae or neg_rmse.")
    regression_loss: Literal["mse", "huber"] = Field(
        "mse", description="task regression: the loss on standardised targets, mean squared error or Huber "
        "(delta 1 standard deviation: less pulled by outlying targets).")
    early_stopping_patience: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto", description="Stop after this many evaluations without improvement; null never stops early; "
        "`auto` is a quarter of the epochs (of the evaluations, with eval_every), at least 2.")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="`auto` uses bf16 autocast where the hardware runs it faster: a GPU with "
        "bf16, a CPU with AMX, or a CPU with AVX512-BF16 where a one-off probe (`tunetext.precision`) "
        "measures bf16 at least 1.15x the speed of fp32; else fp32.")
    group_by_length: bool = Field(True, description="Batch texts of similar length to cut padding.")
    seed: int = Field(42, description="Seed for initialisation, batch order and dropout.")
    checkpoint_every_epoch: bool = Field(True, description="Keep a resumable checkpoint after each epoch.")
    num_threads: int | None = Field(None, ge=1, description="Torch CPU threads; null uses all cores.")

    @field_validator("features_l2", mode="before")
    @classmethod
    def _one_penalty_is_a_list_of_one(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _distill_has_a_teacher(self) -> TrainConfig:
        if self.strategy == "distill" and self.distill_teacher is None:
            raise ValueError("strategy distill needs a teacher: set train.distill_teacher to a finished run "
                             "directory (fine-tune one first, e.g. with strategy full)")
        if self.strategy != "distill" and self.distill_teacher is not None:
            raise ValueError(f"train.distill_teacher is set ({self.distill_teacher!r}) but strategy is "
                             f"{self.strategy!r}; set train.strategy=distill or drop the teacher")
        return self

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


class _Param(_Section):
    when: dict[str, Any] | None = Field(
        None, description="Sample this parameter only when these other keys have these values in the "
        "trial (sampled earlier in the space, or set in the config), e.g. `{train.strategy: last_n}`.")


class FloatParam(_Param):
    """A real number in [low, high]; `log: true` samples evenly in log space (learning rates)."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0, description="Discretise to low + k * step.")

    @model_validator(mode="after")
    def _valid_range(self) -> FloatParam:
        _check_range(self.low, self.high, self.log, self.step)
        return self


class IntParam(_Param):
    """An integer in [low, high] (both included), every `step`."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _valid_range(self) -> IntParam:
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self


class CategoricalParam(_Param):
    """One of `choices`."""

    type: Literal["categorical"]
    choices: list[str | bool | int | float | None] = Field(min_length=1)


def _check_range(low: float, high: float, log: bool, step: float | None) -> None:
    if low > high:
        raise ValueError(f"low {low} is above high {high}; swap them")
    if log and low <= 0:
        raise ValueError(f"log: true needs low > 0, got low {low}")
    if log and step is not None:
        raise ValueError("log: true and step cannot be combined; drop one")


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]
PARAM_SPEC: TypeAdapter[Any] = TypeAdapter(ParamSpec)
PARAM_TYPES: dict[str, type[_Param]] = {"float": FloatParam, "int": IntParam,
                                         "categorical": CategoricalParam}


class SearchConfig(_Section):
    """Hyperparameter search (`tunetext search`); `tunetext train` ignores this section.

    Every trial maximises the validation `train.metric`. The first trial of a study is the config as
    written (the space's keys at their configured values), so the best trial is never worse than it.
    """

    space: dict[str, ParamSpec] = Field(
        default_factory=dict, description="Dotted config key (`train.learning_rate`) -> how to sample it: "
        "`{type: float, low, high, log}`, `{type: int, low, high, step}` or `{type: categorical, "
        "choices: [...]}`. `data.*` keys and `train.metric` cannot be searched: trials must be scored "
        "on the same data by the same metric to be comparable.")
    trials: int = Field(20, ge=1, description="Trials wanted in the study in all, counting complete and "
                        "pruned trials already in it (a resumed study runs only the missing ones).")
    timeout: float | None = Field(None, gt=0, description="Start no new trial after this many seconds.")
    storage: str | None = Field(None, description="Optuna storage URL; null means "
                                "`sqlite:///<output>/study.db`. A shared database (postgresql://...) lets "
                                "several machines work on one study.")
    study_name: str = Field("tunetext", min_length=1, description="Study in the storage; the same name "
                            "continues it.")
    sampler_seed: int = Field(0, description="Seed of the TPE sampler, plus the number of trials already "
                              "in the study, so a resumed or joining worker draws anew.")
    startup_trials: int = Field(5, ge=0, description="Trials sampled at random, the default trial "
                                "included, before TPE models the results.")
    pruner: Literal["median", "none"] = Field(
        "median", description="`median` stops a trial whose validation score after an epoch is below the "
        "median of earlier trials' at that epoch.")
    pruner_startup_trials: int = Field(3, ge=0, description="Complete trials before any trial is pruned.")
    pruner_warmup_epochs: int = Field(0, ge=0, description="Epochs of each trial that are never pruned.")


class AuditConfig(_Section):
    """The data audit (`tunetext data audit`, docs/audit.md); `tunetext train` ignores this section.

    The audit embeds every text once with the frozen model.name, then: suspected label errors from
    out-of-sample probabilities of a linear head on those features (cross-fitted) and confident learning
    (cleanlab); near-duplicates and leakage across splits; outliers. It never reads the test labels.
    """

    folds: int = Field(5, ge=2, le=50, description="Folds of the cross-fitting: each training text is "
                       "scored by a linear head fitted on the other folds (stratified by class). Fewer "
                       "when the rarest class has fewer training texts than this (at least 2).")
    inner_folds: int = Field(3, ge=2, le=20, description="Folds of the inner cross-validation, on the "
                             "training folds only, that chooses the head's regularisation from "
                             "audit.inverse_l2.")
    inverse_l2: list[Annotated[float, Field(gt=0)]] = Field(
        [0.001, 0.01, 0.1, 1.0], min_length=1, description="Inverse L2 strengths (scikit-learn's C) of "
        "the logistic-regression head on standardised features to choose from by inner cross-validated "
        "log-loss; a single number fixes it.")
    max_iter: int = Field(300, ge=10, description="L-BFGS iterations per fit of the head.")
    near_duplicate_similarity: float = Field(
        0.95, gt=0, le=1, description="Texts whose embeddings have at least this cosine similarity are "
        "near-duplicates (texts equal after normalisation always are).")
    outliers: int = Field(50, ge=0, description="Most outliers listed (texts far from every class), "
                          "strangest first.")
    show: int = Field(10, ge=0, description="Findings of each kind printed in the terminal (the files "
                      "hold them all).")

    @field_validator("inverse_l2", mode="before")
    @classmethod
    def _one_strength_is_a_list_of_one(cls, value: Any) -> Any:
        return [value] if isinstance(value, int | float) and not isinstance(value, bool) else value


class RunConfig(_Section):
    """Everything one training run needs; written to every run directory as `config.yaml`."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    audit: AuditConfig = AuditConfig()

    @model_validator(mode="after")
    def _init_from_saves_a_whole_model(self) -> RunConfig:
        # An adapter is saved for model.name's weights and loaded onto them; a run started from another
        # run's weights must save them all, or loading it would apply the adapter to the wrong weights.
        adapter = ("prompt_tuning" if self.train.strategy == "prompt_tuning" else
                   "lora with lora_merge=false" if self.train.strategy == "lora" and not self.train.lora_merge
                   else None)
        if self.model.init_from is not None and adapter is not None:
            raise ValueError(f"model.init_from is set but train.strategy {adapter} saves only an adapter for "
                             "model.name's weights, not the weights init_from starts from; use another "
                             "strategy (lora with train.lora_merge=true saves a whole model)")
        return self
