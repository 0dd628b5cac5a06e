"""Fine-tuning: one loop, read top to bottom.

`train(config, output_dir)` builds the data, model, optimizer and schedule, then runs a plain `for`
loop with explicit blocks for logging, evaluation, early stopping and checkpoints. `accelerate` wraps
that same loop for several processes or GPUs (`accelerate launch -m tunetext.cli train ...`).
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import re
import resource
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from safetensors import SafetensorError
from tqdm.auto import tqdm

from tunetext import __version__, prefix_cache, runs
from tunetext.batches import collate, length_grouped_batches, shuffled_batches, tokenize
from tunetext.config import RunConfig, dump_config, load_config
from tunetext.data import load_dataset
from tunetext.evaluate import MetricAccumulator, evaluate_split, fit_temperature, iter_log_probs
from tunetext.models import (
    blocks,
    encode_prefix,
    forward_top,
    load_classifier,
    train_mode,
    truncate_blocks,
)
from tunetext.strategies import (
    compare_with_teacher,
    distill_loss,
    load_teacher,
    setup_strategy,
    teacher_log_probs,
    train_features_head,
)

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C or SIGTERM: after saving a resumable checkpoint, or while data and
    model loaded, before anything was written (`saved=False`)."""

    def __init__(self, run_dir: Path, saved: bool = True, resuming: bool = False):
        self.run_dir = run_dir
        if saved:
            message = (f"training interrupted; a checkpoint is saved in {run_dir / runs.CHECKPOINT}. "
                       f"Continue with: tunetext train --resume --output {run_dir}")
        elif resuming:
            message = (f"training interrupted before it resumed; the checkpoint in "
                       f"{run_dir / runs.CHECKPOINT} is as it was")
        else:
            message = f"training interrupted before it started; nothing was written to {run_dir}"
        super().__init__(message)


@dataclass
class Run:
    """A finished run: where it is, what made it, and how it scored."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    label_names: list[str]
    model: Any = field(default=None, repr=False)  # the trained model in memory, as saved; None when read back


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    # bf16 autocast only pays off on CPUs with native bf16 matrix units (AMX / AVX512-BF16).
    return device.type == "cpu" and torch.cpu._is_amx_tile_supported()


class _StopFlag:
    """Turns the first Ctrl-C or SIGTERM into a request to checkpoint and stop; a second one kills.

    While `before_start` is set (data and model loading, which may take minutes), the first signal raises
    it at once instead: there is nothing to save yet."""

    def __init__(self):
        self.requested = False
        self.before_start: TrainingInterrupted | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.before_start is not None:
            raise self.before_start
        self.requested = True
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        print("\ntunetext: stopping at the next safe point, saving a checkpoint if training has begun "
              "(again to kill now)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=num_labels).astype(float)
    return torch.tensor(len(labels) / (num_labels * np.maximum(counts, 1)), dtype=torch.float32)


def _rng_state() -> dict[str, Any]:
    """The random generators' states as tensors and plain numbers: what `torch.load(weights_only=True)`
    reads back without unpickling any other type."""
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # ("MT19937", keys, pos, ...)
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": {"key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


CHECKPOINT_KEYS = frozenset({"model", "optimizer", "scheduler", "best_weights", "rng", "step", "epoch",
                             "batch", "log_bytes"})


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write the checkpoint beside the previous one and swap it in, so a failed write loses nothing."""
    path.mkdir(exist_ok=True)
    tmp = path / "state.pt.tmp"
    try:
        torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = "the previous one is kept: " if (path / "state.pt").is_file() else ""
        raise runs.RunError(f"could not write a checkpoint into {path} ({str(exc).splitlines()[0]}); "
                            f"{kept}{_after_a_failed_write(path.parent)}") from exc
    tmp.replace(path / "state.pt")


def _after_a_failed_write(run_dir: Path) -> str:
    """What to do when a write into `run_dir` failed: from its checkpoint if it has one, else anew."""
    again = (f"continue with tunetext train --resume --output {run_dir}" if runs.has_checkpoint(run_dir)
             else "train again with --overwrite")
    return f"make room (a full disk?) or fix the folder, then {again}"


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's state, read with `weights_only=True`: tensors, numbers, strings and containers of
    them, never an object that runs code while it is unpickled (a run folder may be shared)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports a refused type, a damaged zip and a short file differently
        if isinstance(exc, pickle.UnpicklingError):  # torch's own text advises loading it unsafely
            refused = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(exc))
            what = f"an object of type {refused.group(1)}" if refused else "an object"
            why = f"it holds {what} other than tensors and numbers, which could run code when loaded"
        else:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        raise runs.RunError(
            f"{path} cannot be read as a tunetext checkpoint ({why}). It is damaged, or was not written by "
            "this version of tunetext: tunetext loads checkpoints with weights_only=True and never runs "
            "code from them. Start the run again with --overwrite"
        ) from exc
    missing = CHECKPOINT_KEYS - set(state) if isinstance(state, dict) else CHECKPOINT_KEYS
    if missing:
        raise runs.RunError(f"{path} is not a tunetext checkpoint (it lacks {', '.join(sorted(missing))}); "
                            "start the run again with --overwrite")
    return state


def _truncate_log(path: Path, size: int) -> None:
    """Cut the training log back to its length at the checkpoint: what a killed run logged after its last
    checkpoint is logged again when the resumed run repeats those steps."""
    if path.is_file() and path.stat().st_size > size:
        with open(path, "r+b") as f:
            f.truncate(size)


def default_output_dir(config: RunConfig) -> Path:
    """`runs/<data>-<model>-<timestamp>` for runs started without an output directory."""
    data, model = Path(config.data.source).stem, Path(config.model.name.rstrip("/")).name
    return Path("runs") / f"{data}-{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def train(config: RunConfig, output_dir: str | Path | None = None, resume: bool = False,
          overwrite: bool = False, progress: bool = True,
          on_evaluate: Callable[[dict[str, Any]], None] | None = None) -> Run:
    """Fine-tune `config.model.name` on `config.data` and write a finished run to `output_dir`
    (default: a new folder under `runs/`, see `default_output_dir`).

    With `resume=True`, continue the interrupted run in `output_dir` from its checkpoint (the config
    must be the one it was started with). Ctrl-C or SIGTERM saves a checkpoint and raises
    `TrainingInterrupted` (before the run folder is made, it saves nothing). `on_evaluate`, if given,
    sees every validation result (`step`, `epoch`, `val_accuracy`, `val_macro_f1`, `val_<metric>`); an
    exception it raises (such as a hyperparameter search pruning the trial) ends training there.
    """
    with _StopFlag() as flag:  # from the start: a signal while data and model load is answered too
        return _train(config, output_dir, resume, overwrite, progress, on_evaluate, flag)


def _train(config: RunConfig, output_dir: str | Path | None, resume: bool, overwrite: bool, progress: bool,
           on_evaluate: Callable[[dict[str, Any]], None] | None, flag: _StopFlag) -> Run:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    tc = config.train
    started = time.perf_counter()
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    on_cpu = not torch.cuda.is_available()
    bf16 = use_bf16(tc.precision, torch.device("cpu" if on_cpu else "cuda"))
    AcceleratorState._reset_state()  # the precision is per run; the process group (PartialState) stays
    accelerator = Accelerator(cpu=on_cpu, mixed_precision="bf16" if bf16 else "no")
    device = accelerator.device
    main = accelerator.is_main_process

    if output_dir is None:
        if resume:
            raise runs.RunError("resume=True needs the output_dir of the interrupted run")
        output_dir = default_output_dir(config)
    run_dir = Path(output_dir)
    flag.before_start = TrainingInterrupted(run_dir, saved=False, resuming=resume)
    if flag.requested:  # signalled while accelerate started
        raise flag.before_start
    runs.check_output(run_dir, resume, overwrite)  # fail fast; the folder is made once data and model load
    if resume:
        saved = load_config(run_dir / runs.CONFIG)
        if saved != config:
            raise runs.RunError(f"{run_dir} was started with a different configuration; resume with the "
                                f"saved one ({run_dir / runs.CONFIG}) or start a new run")
    _seed_everything(tc.seed)

    # --- data -------------------------------------------------------------------------------------------
    dataset = load_dataset(config.data)
    for line in dataset.report:
        log.info("data: %s", line)
    labels = dataset.label_names
    log.info("data: %d train, %d val, %d test examples; labels %s",
             len(dataset.train), len(dataset.val), len(dataset.test), ", ".join(labels))

    # --- model ------------------------------------------------------------------------------------------
    model, tokenizer, family = load_classifier(config.model.name, labels, config.model.attention, device,
                                               config.model.implementation)
    if tc.student_layers is not None:
        truncate_blocks(model, family, tc.student_layers)
    model, trainable = setup_strategy(model, family, tc)  # lora and prompt_tuning wrap the model in peft's
    total_params = sum(p.numel() for p in model.parameters())
    log.info("model: %s (%s, %s), %.1fM parameters, %.1fM trainable (%s)", config.model.name,
             model.config.model_type, family.kind, total_params / 1e6, trainable / 1e6, tc.strategy)
    model.to(device)
    flag.before_start = None  # from here on a signal asks for a checkpoint
    if main:  # data and model loaded: only now is the run directory made (or emptied)
        runs.prepare_output(run_dir, resume, overwrite)
        if not resume:
            runs.write_config(run_dir, config)
    accelerator.wait_for_everyone()
    template = config.data.template
    train_ids = tokenize(tokenizer, dataset.train.texts, config.model.max_length, template)
    train_lengths = [len(x) for x in train_ids]

    def evaluate_on(split, use_model) -> dict[str, Any]:
        return evaluate_split(use_model, tokenizer, split.texts, split.labels, labels,
                              config.model.max_length, tc.eval_batch_size, bf16=bf16, template=template)

    # --- optimizer and schedule -------------------------------------------------------------------------
    # Every process must run the same number of batches, or the gradient all-reduce waits forever.
    micro_per_epoch = max(1, -(-len(train_ids) // tc.batch_size) // accelerator.num_processes)
    steps_per_epoch = max(1, -(-micro_per_epoch // tc.gradient_accumulation_steps))
    total_steps = steps_per_epoch * tc.epochs
    optimizer = _optimizer(model, config)
    scheduler = _linear_schedule(optimizer, round(tc.warmup_ratio * total_steps), total_steps)
    weights = _class_weights(dataset.train.labels, len(labels), tc.class_weights)
    cross_entropy = torch.nn.CrossEntropyLoss(weight=weights.to(device) if weights is not None else None)
    # distill: the teacher scores every training text once, with its own tokenizer; the loss mixes its
    # softened distribution with the true labels. Every other strategy trains on cross-entropy alone.
    teacher = load_teacher(tc.distill_teacher, labels, device) if tc.distill_teacher is not None else None
    teacher_start = time.perf_counter()
    soft_targets = (teacher_log_probs(teacher, dataset.train.texts, tc.eval_batch_size)
                    if teacher is not None else None)
    teacher_seconds = time.perf_counter() - teacher_start

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, idx: list[int]) -> torch.Tensor:
        if soft_targets is None:
            return cross_entropy(logits, targets)
        return distill_loss(logits, soft_targets[idx].to(device), targets, tc.distill_alpha,
                            tc.distill_temperature, cross_entropy)

    # --- state, fresh or resumed ------------------------------------------------------------------------
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best_score": -1.0, "best_step": 0,
                             "bad_evals": 0, "evals": [], "train_seconds": 0.0, "stopped_early": False}
    best_weights: dict[str, torch.Tensor] | None = None
    checkpoint_dir = run_dir / runs.CHECKPOINT
    if resume:
        saved_state = _load_checkpoint(checkpoint_dir / "state.pt")
        model.load_state_dict(saved_state.pop("model"))
        optimizer.load_state_dict(saved_state.pop("optimizer"))
        scheduler.load_state_dict(saved_state.pop("scheduler"))
        best_weights = saved_state.pop("best_weights")
        _set_rng_state(saved_state.pop("rng"))
        if main:
            _truncate_log(run_dir / runs.LOG, saved_state.pop("log_bytes"))
        state = saved_state
        log.info("resuming at epoch %d, step %d", state["epoch"] + 1, state["step"])
    else:
        state["before_finetune"] = {"val": evaluate_on(dataset.val, model),
                                    "test": evaluate_on(dataset.test, model)}
        log.info("before fine-tuning: test accuracy %.4f, macro-F1 %.4f",
                 state["before_finetune"]["test"]["accuracy"], state["before_finetune"]["test"]["macro_f1"])
    model, optimizer = accelerator.prepare(model, optimizer)
    inner = accelerator.unwrap_model(model)  # same weights; its forward keeps the autocast wrapper
    # Listed once: walking a mostly frozen model's parameters at every step costs about as much as
    # clipping the gradients of its small trained top.
    trained = [p for p in model.parameters() if p.requires_grad]

    def checkpoint() -> None:
        if main:
            log_file = run_dir / runs.LOG
            _save_checkpoint(checkpoint_dir, {
                **state, "model": inner.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "best_weights": best_weights, "rng": _rng_state(),
                "log_bytes": log_file.stat().st_size if log_file.is_file() else 0})

    def checkpoint_and_stop() -> NoReturn:
        """Answer a Ctrl-C or SIGTERM: save where training is, and stop."""
        accelerator.wait_for_everyone()
        checkpoint()
        bar.close()
        raise TrainingInterrupted(run_dir)

    def write_log(entry: dict[str, Any]) -> None:
        if main:
            with open(run_dir / runs.LOG, "a") as f:
                f.write(json.dumps(entry) + "\n")

    def evaluate_and_maybe_stop() -> bool:
        """Score validation, keep the best weights, and say whether to stop early."""
        nonlocal best_weights
        metrics = evaluate_on(dataset.val, inner)
        train_mode(inner, family, tc.strategy, tc.last_n)  # evaluation put the whole model in train mode
        score = metrics[tc.metric]
        entry = {"step": state["step"], "epoch": state["epoch"] + 1, "val_accuracy": metrics["accuracy"],
                 "val_macro_f1": metrics["macro_f1"], f"val_{tc.metric}": score}
        state["evals"].append(entry)
        write_log({"event": "eval", **entry})
        if on_evaluate is not None:
            on_evaluate(entry)
        bar.write(f"step {state['step']} epoch {state['epoch'] + 1}: val accuracy {metrics['accuracy']:.4f}, "
                  f"macro-F1 {metrics['macro_f1']:.4f}")
        if score > state["best_score"]:
            state.update(best_score=score, best_step=state["step"], bad_evals=0)
            best_weights = {k: v.detach().clone() for k, v in inner.state_dict().items()}
            return False
        state["bad_evals"] += 1
        return tc.early_stopping_patience is not None and state["bad_evals"] >= tc.early_stopping_patience

    # --- the forward pass: the whole model, or the top blocks from the frozen prefix's cached output -----
    # Under last_n the frozen prefix runs in eval mode (no dropout) cached or not, so caching is exact.
    train_mode(inner, family, tc.strategy, tc.last_n)
    cached, why = prefix_cache.decide(tc.cache_frozen, tc.strategy, inner, accelerator.num_processes,
                                      train_lengths, device)
    log.info("frozen-prefix cache: %s", why)
    n_frozen = len(blocks(inner, family)) - tc.last_n
    hidden_cache: list[torch.Tensor] | None = None
    cache_seconds = 0.0
    if cached:  # recomputed on resume: one pass of the frozen layers over the training set
        cache_start = time.perf_counter()
        # In training-sized batches: on a CPU, batches of 128 took 30-60% longer than 32 for the same texts.
        with accelerator.autocast():
            hidden_cache = prefix_cache.build(inner, family, train_ids, tokenizer.pad_token_id, n_frozen,
                                              tc.batch_size, device)
        cache_seconds = time.perf_counter() - cache_start
        write_log({"event": "cache", "step": state["step"], "seconds": cache_seconds,
                   "texts": len(train_ids)})
        state["train_seconds"] += cache_seconds  # a cost of training, like the uncached path's prefix passes

    def full_forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def cached_forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with accelerator.autocast():
            return forward_top(inner, batch["hidden"], batch["input_ids"], batch["attention_mask"], n_frozen)

    def prefix_forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Uncached last_n: the frozen prefix at every step, then the very top the cached path runs, so
        the two take the same steps; the prefix needs no autograd graph."""
        with torch.no_grad(), accelerator.autocast():
            hidden = encode_prefix(inner, batch["input_ids"], batch["attention_mask"], n_frozen)
        return cached_forward(batch | {"hidden": hidden})

    forward = full_forward
    if hidden_cache is not None:
        forward = cached_forward
    elif tc.strategy == "last_n" and prefix_cache.why_not_split(inner, accelerator.num_processes) is None:
        forward = prefix_forward  # elsewhere the whole model runs, as transformers runs it

    # --- the loop ---------------------------------------------------------------------------------------
    bar = tqdm(total=total_steps, initial=state["step"], desc="fine-tuning", unit="step",
               disable=not (progress and main), dynamic_ncols=True)
    window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
    stop = False
    if tc.strategy == "features":
        # The frozen model encodes each training text once and only the head's final linear layer is
        # fitted, on those cached features, to convergence: that is all the training, so the loop below
        # has no epoch left to run, and the run finishes as any other.
        val_ids = tokenize(tokenizer, dataset.val.texts, config.model.max_length, template)
        state["features"] = train_features_head(inner, family, train_ids, dataset.train.labels, val_ids,
                                                dataset.val.labels, labels, tokenizer.pad_token_id, tc,
                                                weights)
        state.update(step=state["features"]["iterations"],
                     train_seconds=state["features"]["encode_seconds"] + state["features"]["fit_seconds"])
        stop = evaluate_and_maybe_stop()
        state["epoch"] = tc.epochs
    if flag.requested:  # during the evaluation before fine-tuning, or while the cache was built
        checkpoint_and_stop()
    while state["epoch"] < tc.epochs and not stop:
        epoch_seed = tc.seed + state["epoch"]
        batches = (length_grouped_batches(train_lengths, tc.batch_size, epoch_seed) if tc.group_by_length
                   else shuffled_batches(len(train_ids), tc.batch_size, epoch_seed))
        batches = batches[accelerator.process_index::accelerator.num_processes][:micro_per_epoch]
        epoch_start, first_batch = time.perf_counter(), state["batch"]
        for b in range(first_batch, len(batches)):
            idx = batches[b]
            sync = (b + 1) % tc.gradient_accumulation_steps == 0 or b + 1 == len(batches)
            batch = collate([train_ids[i] for i in idx], tokenizer.pad_token_id,
                            [dataset.train.labels[i] for i in idx])
            if hidden_cache is not None:
                batch["hidden"] = prefix_cache.collate_hidden([hidden_cache[i] for i in idx])
            batch = {k: v.to(device) for k, v in batch.items()}
            with nullcontext() if sync else accelerator.no_sync(model):
                logits = forward(batch)
                loss = loss_fn(logits.float(), batch["labels"], idx)
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
                write_log(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}", samples_s=f"{entry['samples_per_s']:.0f}")
                window_loss, window_samples, window_start = 0.0, 0, time.perf_counter()
            if tc.eval_every is not None and state["step"] % tc.eval_every == 0:
                stop = evaluate_and_maybe_stop()
            if stop or flag.requested:
                break
        epoch_seconds = time.perf_counter() - epoch_start
        state["train_seconds"] += epoch_seconds
        if state["batch"] > first_batch:  # not after a resume that found the epoch already done
            write_log({"event": "epoch", "step": state["step"], "epoch": state["epoch"] + 1,
                       "seconds": epoch_seconds, "batches": state["batch"] - first_batch,
                       "complete": state["batch"] >= len(batches)})
        if flag.requested:
            checkpoint_and_stop()
        if state["batch"] >= len(batches):  # the epoch is complete
            if tc.eval_every is None:
                stop = evaluate_and_maybe_stop()
            state["epoch"] += 1
            state["batch"] = 0
            if tc.checkpoint_every_epoch and not stop and state["epoch"] < tc.epochs:
                checkpoint()
    bar.close()
    state["stopped_early"] = stop

    # --- finish: best weights, final scores, artifacts --------------------------------------------------
    if tc.eval_every is not None and state["step"] != (state["evals"] or [{}])[-1].get("step"):
        evaluate_and_maybe_stop()  # score the final weights too
    model = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    if best_weights is not None:
        model.load_state_dict(best_weights)
    if tc.strategy == "lora" and tc.lora_merge:
        model = model.merge_and_unload()  # a standard model folder, loaded and served like any run
    # Final scores in fp32, as `Classifier.predict` computes them, with the temperature that calibrates
    # the probabilities on validation (argmax, and so accuracy and F1, are unchanged by it).
    val_log_probs = np.concatenate([lp for _, lp in iter_log_probs(
        model, tokenizer, dataset.val.texts, config.model.max_length, tc.eval_batch_size,
        template=template)])
    temperature = fit_temperature(val_log_probs, dataset.val.labels)

    val_scores = MetricAccumulator(labels, temperature)
    val_scores.update(val_log_probs, dataset.val.labels)
    metrics = {
        "val": val_scores.result(),
        "test": evaluate_split(model, tokenizer, dataset.test.texts, dataset.test.labels, labels,
                               config.model.max_length, tc.eval_batch_size, temperature=temperature,
                               template=template),
        "before_finetune": state["before_finetune"],
        "calibration": {"temperature": temperature},
        "training": {
            "train_seconds": state["train_seconds"], "total_seconds": time.perf_counter() - started,
            "steps": state["step"], "epochs_completed": state["epoch"], "best_step": state["best_step"],
            "stopped_early": state["stopped_early"], "best_val_" + tc.metric: state["best_score"],
            "trainable_parameters": trainable, "total_parameters": total_params,
            "bf16": bf16, "processes": accelerator.num_processes,
            "prefix_cached": hidden_cache is not None, "cache_seconds": cache_seconds,
            "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        },
    }
    if tc.strategy == "features":
        metrics["features"] = state["features"]
    if teacher is not None:
        test_ids = tokenize(tokenizer, dataset.test.texts, config.model.max_length, template)
        metrics["distill"] = {
            "teacher": tc.distill_teacher, "teacher_model": teacher.config.model.name,
            "student_layers": tc.student_layers, "teacher_scoring_seconds": teacher_seconds,
            **compare_with_teacher(model, test_ids, tokenizer.pad_token_id, teacher, dataset.test.texts,
                                   dataset.test.labels, tc.eval_batch_size)}
    if main:
        try:
            model.save_pretrained(run_dir)
        except SafetensorError as exc:  # safetensors reports a full disk or a write error as its own type
            raise runs.RunError(f"could not write the model's weights into {run_dir} ({exc}); "
                                f"{_after_a_failed_write(run_dir)}") from exc
        tokenizer_files = tokenizer.save_pretrained(run_dir)
        runs.write_json(run_dir / runs.METRICS, metrics)
        runs.write_json(run_dir / runs.DATA, {"source": config.data.source, **dataset.summary(),
                                              "preparation": dataset.report})
        (run_dir / "README.md").write_text(runs.README_TEMPLATE.format(
            model=config.model.name, data=config.data.source, strategy=tc.strategy,
            labels=", ".join(labels), accuracy=metrics["test"]["accuracy"],
            macro_f1=metrics["test"]["macro_f1"], path=run_dir,
            loading=runs.loading_note(run_dir, config.model.name)))
        runs.finish(run_dir, {"tunetext_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "model": config.model.name, "data": config.data.source,
                              "label_names": labels, "config_yaml": dump_config(config)}, tokenizer_files)
    accelerator.wait_for_everyone()
    return Run(run_dir, config, metrics, labels, model)


def train_seeds(config: RunConfig, output_dir: str | Path, seeds: int | list[int], overwrite: bool = False,
                progress: bool = True) -> tuple[list[Run], dict[str, Any]]:
    """Train once per seed into `output_dir/seed-S` (the data split stays that of `data.seed`), and write
    `output_dir/seeds.json` with the mean and standard deviation of every headline metric."""
    from tunetext.compare import aggregate_seeds

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
