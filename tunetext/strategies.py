"""Setting up each training strategy on a loaded model, and the parts of `features` and `distill` that are
not the training loop.

Set-up (`setup_strategy`): `full` and `distill` train every weight; `last_n` freezes all but the last
blocks, the final norm and the head; `features` all but the head's final linear layer; `lora` and
`prompt_tuning` wrap the model in a peft adapter. Which modules those are comes from the family table
(`tunetext.models.families`).

`features`: the frozen model encodes every training text once, to the input of the head's final linear
layer (`Family.head_linear`), and that layer alone is fitted on the cached features as a logistic regression.
It goes back into the model, so the run is a standard model folder.

`distill`: a finished run (the teacher) scores every training text once; the loop in `tunetext.train`
then trains the student on `distill_loss`, which mixes the teacher's softened distribution with the true
labels. `compare_with_teacher` measures what the smaller student costs and gains.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunetext.batches import LongText, collate, sorted_batches, tokenize_windows
from tunetext.evaluate import compute_metrics
from tunetext.inference import predict_window_log_probs
from tunetext.models import (
    Family,
    ModelError,
    blocks,
    final_norm,
    head_linear,
    head_modules,
    head_parameter_names,
    pooled_positions,
)
from tunetext.predict import Classifier

# --- set-up: freezing, or a peft adapter ------------------------------------------------------------------

PEFT_STRATEGIES = ("lora", "prompt_tuning")


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
    norm = final_norm(model, family)
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


def wrap_peft(model: Any, family: Family, train: Any) -> Any:
    """`model` in a peft wrapper for `train.strategy` (`lora` or `prompt_tuning`): only the adapter and
    the classification head train, and the head is saved with the adapter (`modules_to_save`)."""
    # Here, not at the top: peft is slow to import and only the PEFT strategies need it.
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


# --- features ---------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_features(model: Any, family: Family, ids: list[list[int]], pad_id: int, batch_size: int,
                    device: torch.device | None = None) -> torch.Tensor:
    """What the head's final linear layer sees for each text, `[len(ids), in_features]`, in input order.

    Captured with a forward hook, in eval mode (no dropout): BERT's pooler output, RoBERTa's dense+tanh
    head output, a decoder's hidden state after the final norm at the last non-pad token.
    """
    linear = head_linear(model, family)
    device = device or linear.weight.device
    out = torch.zeros(len(ids), linear.in_features)
    seen: list[torch.Tensor] = []
    hook = linear.register_forward_hook(lambda _module, inputs, _output: seen.append(inputs[0]))
    was_training = model.training
    model.eval()
    try:
        for idx in sorted_batches([len(x) for x in ids], batch_size):
            batch = collate([ids[i] for i in idx], pad_id)
            input_ids = batch["input_ids"].to(device)
            seen.clear()
            model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device))
            features = seen[0]
            if features.dim() == 3:  # decoders score every position and pool the last non-pad one
                assert family.kind == "decoder", features.shape
                last = pooled_positions(input_ids, pad_id)
                features = features[torch.arange(len(idx), device=device), last]
            out[idx] = features.float().cpu()
    finally:
        hook.remove()
        model.train(was_training)
    return out


def fit_linear_head(linear: torch.nn.Linear, features: torch.Tensor, labels: list[int], l2: float,
                    max_iter: int, class_weights: torch.Tensor | None = None) -> dict[str, Any]:
    """Fit `linear` in place as a multinomial logistic regression on `features` (full-batch L-BFGS,
    mean cross-entropy plus `l2 / 2 * ||weight||^2`); return the final loss and the iterations run."""
    weight = linear.weight.detach().float().clone().requires_grad_(True)
    bias = linear.bias.detach().float().clone().requires_grad_(True) if linear.bias is not None else None
    params = [weight] + ([bias] if bias is not None else [])
    features = features.to(weight.device)
    y = torch.tensor(labels, dtype=torch.long, device=weight.device)
    class_weights = class_weights.to(weight.device) if class_weights is not None else None
    optimizer = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def penalised_loss() -> torch.Tensor:
        logits = F.linear(features, weight, bias)
        return F.cross_entropy(logits, y, weight=class_weights) + 0.5 * l2 * weight.pow(2).sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = penalised_loss()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
        final = penalised_loss().item()
    return {"loss": final, "iterations": optimizer.state[weight]["n_iter"]}


def train_features_head(model: Any, family: Family, train_ids: list[list[int]], train_labels: list[int],
                        val_ids: list[list[int]], val_labels: list[int], label_names: list[str], pad_id: int,
                        train_config: Any, class_weights: torch.Tensor | None = None) -> dict[str, Any]:
    """Strategy `features`: encode the training and validation texts once with the frozen model, fit the
    head's final linear layer on the cached training features for each penalty in
    `train_config.features_l2` (strongest first, each fit warm-started from the last), and leave in
    `model` the fit with the best validation `train_config.metric`. Returns timings, the penalty chosen,
    every penalty's validation score, the chosen fit's loss and the L-BFGS iterations run in all."""
    start = time.perf_counter()
    x_train = encode_features(model, family, train_ids, pad_id, train_config.eval_batch_size)
    x_val = encode_features(model, family, val_ids, pad_id, train_config.eval_batch_size)
    encoded = time.perf_counter()
    linear = head_linear(model, family)
    best: dict[str, Any] | None = None
    tried, iterations = [], 0
    for l2 in sorted(train_config.features_l2, reverse=True):
        fit = fit_linear_head(linear, x_train, train_labels, l2, train_config.features_max_iter,
                              class_weights)
        iterations += fit["iterations"]
        with torch.no_grad():
            preds = linear(x_val.to(linear.weight.device, linear.weight.dtype)).argmax(-1).cpu().numpy()
        score = compute_metrics(val_labels, preds, label_names)[train_config.metric]
        tried.append({"l2": l2, f"val_{train_config.metric}": score, "loss": fit["loss"]})
        if best is None or score > best["score"]:  # ties keep the stronger penalty
            best = {"score": score, "l2": l2, "loss": fit["loss"],
                    "weights": {k: v.detach().clone() for k, v in linear.state_dict().items()}}
    assert best is not None
    linear.load_state_dict(best["weights"])
    return {"encode_seconds": encoded - start, "fit_seconds": time.perf_counter() - encoded,
            "feature_dim": x_train.shape[1], "l2": best["l2"], "loss": best["loss"], "iterations": iterations,
            "tried": tried}


# --- distill ----------------------------------------------------------------------------------------------

def distill_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor, labels: torch.Tensor,
                 alpha: float, temperature: float,
                 cross_entropy: torch.nn.Module | None = None) -> torch.Tensor:
    """`alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels)`, where `_T` is the
    softmax at temperature T. `T^2` keeps the soft-label gradients on the scale of the hard-label ones
    (Hinton et al., 2015). `teacher_log_probs` may be the teacher's logits or log-probabilities: the
    softmax does not see the difference."""
    cross_entropy = cross_entropy or torch.nn.CrossEntropyLoss()
    hard = cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_log_probs / temperature, dim=-1),
                    log_target=True, reduction="batchmean")
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard


def load_teacher(run_dir: str | Path, label_names: list[str], device: torch.device | str = "cpu"):
    """The finished run at `run_dir` as a `Classifier`; its label names must be the student's, in order."""
    teacher = Classifier.load(run_dir, device=device, backend="torch")
    if teacher.task != "single_label":
        raise ModelError(f"the teacher {run_dir} is a {teacher.task} run; distillation learns from a "
                         "single-label teacher's class distribution")
    if teacher.label_names != label_names:
        raise ModelError(f"the teacher {run_dir} predicts labels {teacher.label_names} but the data has "
                         f"labels {label_names}; distill from a teacher trained on the same labels")
    return teacher


def teacher_inputs(teacher: Any, texts: list[str]) -> list[list[list[int]]]:
    """`texts` as the teacher's own cleaning, template, tokenizer and data.long_text make them, each
    text's windows, as `Classifier.predict` does (they may differ from the student's)."""
    return tokenize_windows(teacher.tokenizer, teacher.clean(texts), teacher.config.model.max_length,
                            teacher.config.data.template, LongText.of(teacher.config.data))


def teacher_log_probs(teacher: Any, texts: list[str], batch_size: int) -> torch.Tensor:
    """The teacher's log-probabilities for every text, `[len(texts), num_labels]`, computed once, as
    `Classifier.predict` computes them (a long text's windows pooled)."""
    return torch.from_numpy(predict_window_log_probs(teacher.model, teacher_inputs(teacher, texts),
                                                     teacher.tokenizer.pad_token_id, batch_size))


def _timed_log_probs(model: Any, windows: list[list[list[int]]], pad_id: int,
                     batch_size: int) -> tuple[np.ndarray, float]:
    predict_window_log_probs(model, windows[:batch_size], pad_id, batch_size)  # warm-up: first-call allocs
    start = time.perf_counter()
    log_probs = predict_window_log_probs(model, windows, pad_id, batch_size)
    return log_probs, len(windows) / (time.perf_counter() - start)


def compare_with_teacher(student: Any, student_windows: list[list[list[int]]], pad_id: int, teacher: Any,
                         texts: list[str], labels: list[int], batch_size: int) -> dict[str, Any]:
    """Accuracy and inference speed (texts per second, fp32, same batch size) of the student (given
    `texts` tokenised into windows, `student_windows`) and the teacher on the same texts, measured one
    after the other in this process."""
    student_lp, student_speed = _timed_log_probs(student, student_windows, pad_id, batch_size)
    teacher_lp, teacher_speed = _timed_log_probs(teacher.model, teacher_inputs(teacher, texts),
                                                 teacher.tokenizer.pad_token_id, batch_size)
    y = np.asarray(labels)
    student_acc = float((student_lp.argmax(1) == y).mean())
    teacher_acc = float((teacher_lp.argmax(1) == y).mean())

    def count(model: Any) -> int:
        return sum(p.numel() for p in model.parameters())

    return {"n": len(texts), "student_accuracy": student_acc, "teacher_accuracy": teacher_acc,
            "accuracy_difference": student_acc - teacher_acc,
            "student_examples_per_s": student_speed, "teacher_examples_per_s": teacher_speed,
            "speedup": student_speed / teacher_speed,
            "student_parameters": count(student), "teacher_parameters": count(teacher.model)}
