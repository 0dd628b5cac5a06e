"""Fine-tuning: one loop, read top to bottom.

`train(config, output_dir)` builds the data, model, optimizer and schedule, then runs a plain `for`
loop with explicit blocks for logging, evaluation, early stopping and checkpoints. `accelerate` wraps
that same loop for several processes or GPUs (`accelerate launch -m tunetext.cli train ...`).
"""

from __future__ import annotations

import logging
import random
import resource
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm

from tunetext import adaptive, checkpoints, hub, prefix_cache, runs, tracking
from tunetext.batches import (
    LongText,
    collate,
    length_grouped_batches,
    shuffled_batches,
    text_room,
    token_lengths,
    tokenize_windows,
)
from tunetext.checkpoints import StopFlag, TrainingInterrupted
from tunetext.compare import aggregate_seeds
from tunetext.config import ConfigError, RunConfig, TrainConfig, load_config
from tunetext.data import Dataset, Split, load_dataset
from tunetext.evaluate import TaskRecord, calibrated_scores, evaluate_split, multi_hot
from tunetext.lengths import describe, length_report
from tunetext.models import (
    Family,
    Parent,
    fold_temperature,
    load_classifier,
    load_parent,
    plan_parent,
    train_mode,
    truncate_blocks,
    with_parent_model,
)
from tunetext.precision import use_bf16
from tunetext.strategies import (
    compare_with_teacher,
    distill_loss,
    load_teacher,
    setup_strategy,
    teacher_log_probs,
    train_features_head,
)
from tunetext.task_metrics import headline
from tunetext.version import __version__

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A finished run: where it is, what made it, and how it scored."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    label_names: list[str]
    model: Any = field(default=None, repr=False)  # the trained model in memory, as saved; None when read back




def _optimizer(model, config: RunConfig) -> torch.optim.Optimizer:
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for _name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)  # no decay on biases and norms
    groups = [{"params": decay, "weight_decay": config.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    device = next(model.parameters()).device
    # The fused kernel is several times faster than the per-tensor loop on CPU as on GPU.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=config.train.learning_rate, fused=fused)


def _linear_schedule(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _class_weights(labels: list[int], num_labels: int, mode: str) -> torch.Tensor | None:
    """Loss weights per class, `balanced` (1/count) or `sqrt` (1/sqrt(count)), scaled so that the average
    weight over the training examples is 1 and the learning rate keeps its meaning."""
    if mode == "none":
        return None
    counts = np.maximum(np.bincount(labels, minlength=num_labels).astype(float), 1)
    weights = 1 / counts if mode == "balanced" else 1 / np.sqrt(counts)
    return torch.tensor(weights * len(labels) / (weights * counts).sum(), dtype=torch.float32)


def _positive_weights(truth: np.ndarray, mode: str) -> torch.Tensor | None:
    """Multi-label: a weight on each label's positive examples in the binary cross-entropy (`truth`: the
    training examples' 0/1 rows), negatives over positives (`balanced`) or its square root (`sqrt`); a
    label without training positives keeps 1."""
    if mode == "none":
        return None
    positives = truth.sum(axis=0).astype(float)
    ratio = np.where(positives > 0, (len(truth) - positives) / np.maximum(positives, 1), 1.0)
    return torch.tensor(ratio if mode == "balanced" else np.sqrt(ratio), dtype=torch.float32)


@dataclass
class Objective:
    """What the model learns for the run's task: the training targets (one row per training example), the
    loss, and the task record that reads the model's scores back (`tunetext.evaluate.TaskRecord`)."""

    targets: torch.Tensor
    loss: torch.nn.Module
    task: TaskRecord
    weights: torch.Tensor | None = None  # single-label class weights, for the features head's own fit


def _objective(task: str, labels: list[Any], num_labels: int, tc: TrainConfig,
               device: torch.device) -> Objective:
    """Single-label: cross-entropy over class indices, weighted per class (train.class_weights).
    Multi-label: binary cross-entropy over 0/1 rows, with per-label positive weights. Regression: mean
    squared error (or Huber, train.regression_loss) on the targets standardised by the training mean and
    standard deviation, which the task record keeps to map the model's output back."""
    if task == "multi_label":
        truth = multi_hot(labels, num_labels)
        weights = _positive_weights(truth, tc.class_weights)
        return Objective(torch.from_numpy(truth.astype(np.float32)),
                         torch.nn.BCEWithLogitsLoss(
                             pos_weight=None if weights is None else weights.to(device)),
                         {"type": task})
    if task == "regression":
        values = np.asarray(labels, dtype=np.float64)
        mean, std = float(values.mean()), float(values.std())
        loss = torch.nn.HuberLoss(delta=1.0) if tc.regression_loss == "huber" else torch.nn.MSELoss()
        return Objective(torch.tensor((values - mean) / std, dtype=torch.float32)[:, None], loss,
                         {"type": task, "target_mean": mean, "target_std": std})
    weights = _class_weights(labels, num_labels, tc.class_weights)
    return Objective(torch.tensor(labels, dtype=torch.long),
                     torch.nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None),
                     {"type": task}, weights)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_output_dir(config: RunConfig) -> Path:
    """`runs/<data>-<model>-<timestamp>` for runs started without an output directory."""
    data, model = Path(config.data.source).stem, Path(config.model.name.rstrip("/")).name
    return Path("runs") / f"{data}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def fresh_accelerator(cpu: bool, mixed_precision: str) -> Accelerator:
    """An `Accelerator` with this run's precision.

    accelerate keeps one process-wide state and refuses a second `Accelerator` whose mixed precision
    differs from the first (a search, or `train_seeds` after a bf16 run). It has no public way to start
    over, so this is the one place tunetext calls its private `AcceleratorState._reset_state`; the process
    group (`PartialState`) stays. tests/test_train.py fails if an accelerate upgrade removes it."""
    AcceleratorState._reset_state()
    return Accelerator(cpu=cpu, mixed_precision=mixed_precision)


def train(config: RunConfig, output_dir: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True,
          on_evaluate: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Fine-tune `config.model.name` on `config.data` and write a finished run to `output_dir`
    (default: a new folder under `runs/`, see `default_output_dir`).

    With `resume=True`, continue the interrupted run in `output_dir` from its checkpoint (the config
    must be the one it was started with). Ctrl-C or SIGTERM saves a checkpoint and raises
    `TrainingInterrupted` (before the run folder is made, it saves nothing). `on_evaluate`, if given,
    sees every validation result (`step`, `epoch`, the task's headline scores as `val_<name>`, such as
    `val_accuracy` and `val_macro_f1`, and `val_<metric>`); an
    exception it raises (such as a hyperparameter search pruning the trial) ends training there.
    """
    tracking.require_packages(config.train.report_to)  # before anything is loaded or written
    # from the start: a signal while data and model load is answered too; a run that raises ends its tracking
    with StopFlag() as flag, tracking.Tracking() as tracker:
        return _fine_tune(config, output_dir, resume, overwrite, progress, on_evaluate, flag, tracker)


def _fine_tune(config: RunConfig, output_dir: str | Path | None, resume: bool, overwrite: bool,
               progress: bool, on_evaluate: Callable[[dict[str, Any]], None] | None, flag: StopFlag,
               tracker: tracking.Tracking) -> Run:
    """`train`'s story, under its signal handler: set up, then the loop, then the final scores and files."""
    config = with_parent_model(config)  # model.init_from: model.name is the parent run's
    tc = config.train
    started = time.perf_counter()
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    on_cpu = not torch.cuda.is_available()
    bf16 = use_bf16(tc.precision, torch.device("cpu" if on_cpu else "cuda"))
    accelerator = fresh_accelerator(cpu=on_cpu, mixed_precision="bf16" if bf16 else "no")
    device, main = accelerator.device, accelerator.is_main_process
    run_dir = _checked_run_dir(config, output_dir, resume, overwrite, flag)
    if resume:  # the saved config, resolved when the run started, is the schedule its checkpoint follows
        config = _saved_config(run_dir)
    _seed_everything(tc.seed)

    # --- data and model: only once both have loaded is the run directory made (or emptied) -------------
    dataset, model, tokenizer, family, trainable, parent = _load_data_and_model(config, device)
    lengths = length_report(token_lengths(tokenizer, dataset.train.texts, config.data.template),
                            config.model.max_length)
    shape = adaptive.DataShape.of(dataset.train.labels, lengths["longer"], dataset.task, dataset.task_reason)
    config, choices = adaptive.resolve(config, shape, accelerator.num_processes)
    tc = config.train
    for choice in choices:
        log.info("default: %s", choice)
    total_params = sum(p.numel() for p in model.parameters())
    flag.before_start = None  # from here on a signal asks for a checkpoint
    if main:
        runs.prepare_output(run_dir, resume, overwrite)
        if not resume:
            runs.write_config(run_dir, config)
    accelerator.wait_for_everyone()
    tracker.start(config, run_dir, main)  # train.report_to: nothing unless asked, on the main process only
    on_evaluate = tracker.evaluations(on_evaluate)
    labels, template, pad_id = dataset.label_names, config.data.template, tokenizer.pad_token_id
    train_ids, train_labels, train_docs = _windows_and_labels(tokenizer, dataset.train, config)
    lengths = _log_lengths(lengths, tokenizer, config, len(dataset.train), len(train_ids))
    objective = _objective(dataset.task, train_labels, len(labels), tc, device)
    score = partial(_score, tokenizer=tokenizer, config=config, label_names=labels, bf16=bf16,
                    task=objective.task)

    # --- optimizer, schedule and loss -------------------------------------------------------------------
    # Every process must run the same number of batches, or the gradient all-reduce waits forever.
    micro_per_epoch = max(1, -(-len(train_ids) // tc.batch_size) // accelerator.num_processes)
    steps_per_epoch = adaptive.steps_per_epoch(len(train_ids), tc.batch_size, tc.gradient_accumulation_steps,
                                               accelerator.num_processes)
    assert tc.epochs is not None  # resolved from the data by adaptive.resolve above
    total_steps = steps_per_epoch * tc.epochs
    optimizer = _optimizer(model, config)
    scheduler = _linear_schedule(optimizer, round(tc.warmup_ratio * total_steps), total_steps)
    teacher, soft_targets, teacher_seconds = _teacher_targets(tc, labels, dataset.train.texts, device)
    if soft_targets is not None and len(train_docs) != len(soft_targets):  # a text's soft labels, per window
        soft_targets = soft_targets[torch.tensor(train_docs)]

    # --- state, fresh or resumed ------------------------------------------------------------------------
    checkpoint_dir = run_dir / runs.CHECKPOINT
    if resume:
        state, best_weights = checkpoints.restore(run_dir, model, optimizer, scheduler, main)
        log.info("resuming at epoch %d, step %d", state["epoch"] + 1, state["step"])
    else:
        best_weights = None
        state = {"step": 0, "epoch": 0, "batch": 0, "best_score": None, "best_step": 0, "bad_evals": 0,
                 "evals": [], "train_seconds": 0.0, "stopped_early": False,
                 "choices": [{"key": c.key, "value": c.value, "reason": c.reason} for c in choices],
                 "before_finetune": {"val": score(model, dataset.val), "test": score(model, dataset.test)}}
        log.info("before fine-tuning: test %s", _scores_line(state["before_finetune"]["test"]))
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)  # same weights; its forward keeps the autocast wrapper
    # Listed once: walking a mostly frozen model's parameters at every step costs about as much as
    # clipping the gradients of its small trained top.
    trained = [p for p in model.parameters() if p.requires_grad]

    def checkpoint() -> None:
        if main:
            log_file = run_dir / runs.LOG
            checkpoints.save(checkpoint_dir, {
                **state, "model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "best_weights": best_weights,
                "rng": checkpoints.rng_state(),
                "log_bytes": log_file.stat().st_size if log_file.is_file() else 0})

    def validate() -> bool:
        """Score validation, keep the best weights, and say whether to stop early."""
        nonlocal best_weights
        improved, stop = _validate(inner, family, score(inner, dataset.val), state, tc, run_dir, main, bar,
                                   on_evaluate)
        if improved:
            best_weights = {k: v.detach().clone() for k, v in inner.state_dict().items()}
        return stop

    def checkpoint_and_stop() -> NoReturn:
        """Answer a Ctrl-C or SIGTERM: save where training is, and stop."""
        accelerator.wait_for_everyone()
        checkpoint()
        accelerator.wait_for_everyone()  # a process that left first would have the launcher kill the writer
        bar.close()
        raise TrainingInterrupted(run_dir)

    # --- the forward pass: the whole model, or the top blocks from the frozen prefix's cached output -----
    # Under last_n the frozen prefix runs in eval mode (no dropout) cached or not, so caching is exact.
    train_mode(inner, family, tc.strategy, tc.last_n)
    forward, hidden_cache, cache_seconds = prefix_cache.choose_forward(model, inner, family, tc, accelerator,
                                                                       train_ids, pad_id, device)
    if hidden_cache is not None:
        runs.append_log(run_dir, main, {"event": "cache", "step": state["step"], "seconds": cache_seconds,
                                    "texts": len(train_ids)})
        state["train_seconds"] += cache_seconds  # a cost of training, like the uncached path's prefix passes

    # --- the loop ---------------------------------------------------------------------------------------
    bar = tqdm(total=total_steps, initial=state["step"], desc="fine-tuning", unit="step",
               disable=not (progress and main), dynamic_ncols=True)
    window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
    stop = False
    if tc.strategy == "features":
        # The frozen model encodes each training text once and only the head's final linear layer is
        # fitted, on those cached features, to convergence: that is all the training, so the loop below
        # has no epoch left to run, and the run finishes as any other.
        val_ids, val_labels, _ = _windows_and_labels(tokenizer, dataset.val, config)
        state["features"] = train_features_head(inner, family, train_ids, train_labels, val_ids,
                                                val_labels, labels, pad_id, tc, objective.weights)
        state.update(step=state["features"]["iterations"],
                     train_seconds=state["features"]["encode_seconds"] + state["features"]["fit_seconds"])
        stop = validate()
        state["epoch"] = tc.epochs
    if flag.requested:  # during the evaluation before fine-tuning, or while the cache was built
        checkpoint_and_stop()
    train_lengths = [len(x) for x in train_ids]
    while state["epoch"] < tc.epochs and not stop:
        epoch_seed = tc.seed + state["epoch"]
        batches = (length_grouped_batches(train_lengths, tc.batch_size, epoch_seed) if tc.group_by_length
                   else shuffled_batches(len(train_ids), tc.batch_size, epoch_seed))
        batches = batches[accelerator.process_index::accelerator.num_processes][:micro_per_epoch]
        epoch_start, first_batch = time.perf_counter(), state["batch"]
        for b in range(first_batch, len(batches)):
            idx = batches[b]
            sync = (b + 1) % tc.gradient_accumulation_steps == 0 or b + 1 == len(batches)
            batch = collate([train_ids[i] for i in idx], pad_id)
            batch["labels"] = objective.targets[idx]
            if hidden_cache is not None:
                batch["hidden"] = prefix_cache.collate_hidden([hidden_cache[i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            with nullcontext() if sync else accelerator.no_sync(model):
                logits = forward(batch).float()
                if soft_targets is None:
                    loss = objective.loss(logits, batch["labels"])
                else:
                    loss = distill_loss(logits, soft_targets[idx].to(device), batch["labels"],
                                        tc.distill_alpha, tc.distill_temperature, objective.loss)
                accelerator.backward(loss / tc.gradient_accumulation_steps)
            window_loss += loss.item() * len(idx)
            window_samples += len(idx)
            state["batch"] = b + 1
            if not sync:
                continue
            if tc.max_grad_norm is not None:
                accelerator.clip_grad_norm_(trained, tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            bar.update(1)

            if state["step"] % tc.log_every == 0 or b + 1 == len(batches):
                elapsed = time.perf_counter() - window_start
                entry = {"event": "train", "step": state["step"], "epoch": state["epoch"] + 1,
                         "loss": window_loss / window_samples, "lr": scheduler.get_last_lr()[0],
                         "samples_per_s": window_samples * accelerator.num_processes / elapsed}
                runs.append_log(run_dir, main, entry)
                tracker.log(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", samples_s=f"{entry['samples_per_s']:.0f}")
                window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
            if tc.eval_every is not None and state["step"] % tc.eval_every == 0:
                stop = validate()
            if stop or _anyone(accelerator, flag.requested):
                break
        epoch_seconds = time.perf_counter() - epoch_start
        state["train_seconds"] += epoch_seconds
        if state["batch"] > first_batch:  # not after a resume that found the epoch already done
            runs.append_log(run_dir, main, {
                "event": "epoch", "step": state["step"], "epoch": state["epoch"] + 1,
                "seconds": epoch_seconds, "batches": state["batch"] - first_batch,
                "complete": state["batch"] >= len(batches)})
        if _anyone(accelerator, flag.requested):
            checkpoint_and_stop()
        if state["batch"] >= len(batches):  # the epoch is complete
            if tc.eval_every is None:
                stop = validate()
            state["epoch"] += 1
            state["batch"] = 0
            if tc.checkpoint_every_epoch and not stop and state["epoch"] < tc.epochs:
                checkpoint()
    bar.close()
    state["stopped_early"] = stop

    # --- finish: best weights, final scores, artifacts --------------------------------------------------
    if tc.eval_every is not None and state["step"] != (state["evals"] or [{}])[-1].get("step"):
        validate()  # score the final weights too
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if best_weights is not None:
        model.load_state_dict(best_weights)
    if tc.strategy == "lora" and tc.lora_merge:
        model = model.merge_and_unload()  # a standard model folder, loaded and served like any run
    val_scores, test_scores, calibration = calibrated_scores(
        model, tokenizer, dataset.val, dataset.test, labels, config.model.max_length, tc.eval_batch_size,
        template, progress=progress and main, long_text=LongText.of(config.data), task=objective.task)
    if dataset.task == "single_label":
        # Into the saved head's weights, so that every loader of the run folder (transformers' pipeline, an
        # export) gives the calibrated probabilities, not tunetext alone; `Classifier` then applies none.
        fold_temperature(model, family, calibration["temperature"])
        calibration["folded"] = True
    metrics = {"val": val_scores, "test": test_scores, "before_finetune": state["before_finetune"],
               "calibration": calibration, "task": {**objective.task, **calibration}
               if dataset.task == "multi_label" else objective.task}
    metrics["training"] = {
        "train_seconds": state["train_seconds"], "total_seconds": time.perf_counter() - started,
        "steps": state["step"], "epochs_completed": state["epoch"], "best_step": state["best_step"],
        "stopped_early": state["stopped_early"], "best_val_" + tc.metric: state["best_score"],
        "task": dataset.task,
        "trainable_parameters": trainable, "total_parameters": total_params,
        "bf16": bf16, "processes": accelerator.num_processes,
        "choices": state.get("choices", []),  # made when the run started, kept across a resume
        "prefix_cached": hidden_cache is not None, "cache_seconds": cache_seconds,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    metrics["training"]["lengths"] = lengths
    if tc.strategy == "features":
        metrics["features"] = state["features"]
    if teacher is not None:
        test_ids = tokenize_windows(tokenizer, dataset.test.texts, config.model.max_length, template,
                                    LongText.of(config.data))
        metrics["distill"] = {
            "teacher": tc.distill_teacher, "teacher_model": teacher.config.model.name,
            "student_layers": tc.student_layers, "teacher_scoring_seconds": teacher_seconds,
            **compare_with_teacher(model, test_ids, pad_id, teacher, dataset.test.texts, dataset.test.labels,
                                   tc.eval_batch_size)}
    if main:
        data_summary = {"source": config.data.source, **dataset.summary(), "preparation": dataset.report}
        runs.write_run(run_dir, model, tokenizer, config, metrics, data_summary, labels, __version__,
                       parent=None if parent is None else parent.record(),
                       card=lambda folder: hub.front_matter(folder, config, metrics))
        tracker.finish(metrics, run_dir)
    accelerator.wait_for_everyone()
    return Run(run_dir, config, metrics, labels, model)


def _anyone(accelerator: Accelerator, requested: bool) -> bool:
    """Whether any process was asked to stop. A signal reaches each process at its own moment; they must
    agree on the step to stop after, or one waits in the next gradient all-reduce for a process that left."""
    if accelerator.num_processes == 1:
        return requested
    flag = torch.tensor([float(requested)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


# --- the steps `_fine_tune` takes, in the order it takes them ---------------------------------------------

def _checked_run_dir(config: RunConfig, output_dir: str | Path | None, resume: bool, overwrite: bool,
                     flag: StopFlag) -> Path:
    """The run directory, checked before anything slow happens (it is made only once data and model have
    loaded); from here until then a signal stops at once with nothing written."""
    if output_dir is None:
        if resume:
            raise runs.RunError("resume=True needs the output_dir of the interrupted run")
        output_dir = default_output_dir(config)
    run_dir = Path(output_dir)
    flag.before_start = TrainingInterrupted(run_dir, saved=False, resuming=resume)
    if flag.requested:  # signalled while accelerate started
        raise flag.before_start
    runs.check_output(run_dir, resume, overwrite)
    if resume:
        saved = load_config(run_dir / runs.CONFIG)
        if not adaptive.same_run(saved, config):
            raise runs.RunError(f"{run_dir} was started with a different configuration; resume with the "
                                f"saved one ({run_dir / runs.CONFIG}) or start a new run")
    return run_dir


def _saved_config(run_dir: Path) -> RunConfig:
    """An interrupted run's config as it started. One saved before data.long_text existed says `auto`
    there; those runs truncated."""
    saved = load_config(run_dir / runs.CONFIG)
    if saved.data.long_text == "auto":
        saved = saved.model_copy(update={"data": saved.data.model_copy(update={"long_text": "truncate"})})
    return saved


def _load_data_and_model(config: RunConfig, device: torch.device) -> tuple[Dataset, Any, Any, Family, int,
                                                                          Parent | None]:
    """The prepared data, and the model set up for the strategy: (dataset, model, tokenizer, family,
    trainable parameter count, the run it started from under model.init_from)."""
    tc = config.train
    dataset = load_dataset(config.data)
    parent = None if config.model.init_from is None else plan_parent(config.model, dataset.label_names)
    if parent is not None and parent.labels != dataset.label_names:
        # Label ids are positions in the parent-first list; prepared with it, as `evaluate` prepares it again
        dataset = load_dataset(config.data, label_names=parent.labels)
    for line in dataset.report:
        log.info("data: %s", line)
    log.info("data: %d train, %d val, %d test examples; %s %s", len(dataset.train), len(dataset.val),
             len(dataset.test), "target" if dataset.task == "regression" else "labels",
             ", ".join(dataset.label_names))
    _check_task_fits(dataset.task, config, parent)
    model, tokenizer, family = (
        load_classifier(config.model.name, dataset.label_names, config.model.attention, device,
                        config.model.implementation, dataset.task) if parent is None
        else load_parent(parent, config.model, device))
    if tc.student_layers is not None:
        truncate_blocks(model, family, tc.student_layers)
    model, trainable = setup_strategy(model, family, tc)  # lora and prompt_tuning wrap the model in peft's
    log.info("model: %s (%s, %s), %.1fM parameters, %.1fM trainable (%s)", config.model.name,
             model.config.model_type, family.kind, sum(p.numel() for p in model.parameters()) / 1e6,
             trainable / 1e6, tc.strategy)
    return dataset, model.to(device), tokenizer, family, trainable, parent


# Strategies whose loss is built on class distributions: a softmax teacher (distill), a softmax head fitted
# by L-BFGS on cached features (features).
SINGLE_LABEL_STRATEGIES = ("distill", "features")


def _check_task_fits(task: str, config: RunConfig, parent: Parent | None) -> None:
    """Multi-label and regression train with full, last_n, lora and prompt_tuning; the strategies built on
    class distributions, and starting from a run of another task, are refused with what to do instead."""
    if task != "single_label" and config.train.strategy in SINGLE_LABEL_STRATEGIES:
        raise ConfigError([f"train.strategy={config.train.strategy} works on single-label classes; for "
                           f"{task} data use full, last_n (with its frozen-prefix cache), lora or "
                           "prompt_tuning"])
    parent_task = None if parent is None else parent.config.data.task
    if parent is not None and (task != "single_label" or parent_task not in ("auto", "single_label")):
        raise ConfigError([f"model.init_from continues single-label runs; this data is {task} and "
                           f"{config.model.init_from} a {parent_task} run: start from its base model "
                           f"({parent.config.model.name!r}) with model.name instead"])


def _windows_and_labels(tokenizer: Any, split: Split, config: RunConfig
                        ) -> tuple[list[list[int]], list[int], list[int]]:
    """A split as training examples: each text's windows of token ids (one, or with data.long_text=chunks
    several), each window with its text's label, and the text each window came from."""
    windows = tokenize_windows(tokenizer, split.texts, config.model.max_length, config.data.template,
                               LongText.of(config.data))
    docs = [d for d, seqs in enumerate(windows) for _ in seqs]
    return [seq for seqs in windows for seq in seqs], [split.labels[d] for d in docs], docs


def _log_lengths(report: dict[str, Any], tokenizer: Any, config: RunConfig, texts: int,
                 examples: int) -> dict[str, Any]:
    """The training texts' token lengths (`tunetext.lengths.length_report`), logged in one line with what
    data.long_text makes of the long ones, for `metrics.json` (`training.lengths`)."""
    long_text = LongText.of(config.data)
    room = text_room(tokenizer, config.model.max_length, config.data.template)
    log.info("lengths: %s", describe(report, long_text, room))
    if examples != texts:
        log.info("lengths: %d training examples (windows) from %d texts", examples, texts)
    return {**report, "long_text": long_text.mode, "training_examples": examples}


def _score(model: Any, split: Split, tokenizer: Any, config: RunConfig, label_names: list[str],
           bf16: bool, task: TaskRecord) -> dict[str, Any]:
    """Metrics of `model` on a labelled split, as validation and the score before fine-tuning compute
    them (in the run's precision; multi-label at 0.5, before thresholds are tuned)."""
    return evaluate_split(model, tokenizer, split.texts, split.labels, label_names, config.model.max_length,
                          config.train.eval_batch_size, bf16=bf16, template=config.data.template,
                          long_text=LongText.of(config.data), task=task)


def _scores_line(metrics: dict[str, Any]) -> str:
    """The task's headline scores in a few words: `accuracy 0.9810, macro_f1 0.9512`."""
    return ", ".join(f"{name} {value:.4f}" for name, value in headline(metrics).items())


def _teacher_targets(tc: TrainConfig, label_names: list[str], texts: list[str],
                     device: torch.device) -> tuple[Any, torch.Tensor | None, float]:
    """Strategy distill: the teacher scores every training text once, with its own tokenizer, and the loss
    mixes its softened distribution with the true labels. Every other strategy trains on cross-entropy
    alone: (None, None, 0)."""
    if tc.distill_teacher is None:
        return None, None, 0.0
    teacher = load_teacher(tc.distill_teacher, label_names, device)
    start = time.perf_counter()
    soft_targets = teacher_log_probs(teacher, texts, tc.eval_batch_size)
    return teacher, soft_targets, time.perf_counter() - start


def _validate(inner: Any, family: Family, metrics: dict[str, Any], state: dict[str, Any], tc: TrainConfig,
              run_dir: Path, main: bool, bar: tqdm,
              on_evaluate: Callable[[dict[str, Any]], None] | None) -> tuple[bool, bool]:
    """Record a validation result in the state, the log, the progress bar and `on_evaluate`; return
    (whether it is the best so far, whether early stopping says stop)."""
    train_mode(inner, family, tc.strategy, tc.last_n)  # evaluation put the whole model in train mode
    score = metrics[tc.metric]
    entry = {"step": state["step"], "epoch": state["epoch"] + 1, "epochs": tc.epochs,
             **{f"val_{name}": value for name, value in headline(metrics).items()}, f"val_{tc.metric}": score}
    state["evals"].append(entry)
    runs.append_log(run_dir, main, {"event": "eval", **entry})
    if on_evaluate is not None:
        on_evaluate(entry)
    bar.write(f"step {state['step']} epoch {state['epoch'] + 1}: val {_scores_line(metrics)}")
    if state["best_score"] is None or score > state["best_score"]:
        state.update(best_score=score, best_step=state["step"], bad_evals=0)
        return True, False
    state["bad_evals"] += 1
    return False, tc.early_stopping_patience is not None and state["bad_evals"] >= tc.early_stopping_patience


def train_seeds(config: RunConfig, output_dir: str | Path, seeds: int | list[int], overwrite: bool = False,
                progress: bool = True) -> tuple[list[Run], dict[str, Any]]:
    """Train once per seed into `output_dir/seed-S` (the data split stays that of `data.seed`), and write
    `output_dir/seeds.json` with the mean and standard deviation of every headline metric."""
    seed_list = list(range(config.train.seed, config.train.seed + seeds)) if isinstance(seeds, int) else seeds
    if not seed_list:
        raise ValueError("seeds must name at least one seed")
    out = Path(output_dir)
    results = []
    for seed in seed_list:
        seeded = config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})
        run = train(seeded, out / f"seed-{seed}", overwrite=overwrite, progress=progress)
        run.model = None  # saved in its run directory; holding every seed's weights would only use memory
        results.append(run)
    summary = {"seeds": seed_list, **aggregate_seeds([r.metrics for r in results])}
    runs.write_json(out / "seeds.json", summary)
    return results, summary
