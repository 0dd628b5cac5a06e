"""Prompt classification with a decoder: zero-shot and few-shot baselines for fine-tuning.

Each label has a verbalizer, the words the model should answer with (`spam` for the label `spam`). A text
is put into the prompt template, and each label is scored by the log-likelihood the language model gives
its verbalizer as the continuation: for an instruct model with a chat template the prompt is a user
message and the verbalizer the assistant's reply; for a plain decoder the verbalizer follows the prompt
after a space. Few-shot prompts put k labelled training examples first (as earlier user/assistant turns,
or inline). The label scores go through the same metrics as `tunetext.evaluate`, so zero-shot, few-shot
and a fine-tuned run read side by side (`prompt_story`).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from tunetext import runs
from tunetext.batches import LongText, collate, format_inputs, sorted_batches
from tunetext.config import DataConfig, check_template
from tunetext.data import load_dataset
from tunetext.data.splits import subsample
from tunetext.errors import UsageError
from tunetext.evaluate import MetricAccumulator, evaluate_split
from tunetext.models import load_causal_lm
from tunetext.predict import Classifier

Scoring = Literal["sum", "mean"]


@dataclass
class PromptModel:
    """A decoder loaded as a language model, with its tokenizer."""

    name: str
    model: Any
    tokenizer: Any

    @property
    def chat(self) -> bool:
        """Whether prompts go through the tokenizer's chat template (instruct models)."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def max_length(self) -> int:
        return int(self.model.config.max_position_embeddings)  # GPT-2's n_positions answers to it too


def load_prompt_model(name: str, attention: str = "sdpa") -> PromptModel:
    """Load a decoder (catalogue name, local folder or hub id) for prompt classification. Scoring runs no
    backward pass, so the fused attention kernel is the fast one here, on CPU too."""
    model, tokenizer = load_causal_lm(name, attention=attention)
    return PromptModel(name, model, tokenizer)


# --- prompts ------------------------------------------------------------------------------------------------

def pick_shots(labels: list[int], k: int, seed: int) -> list[int]:
    """Indices of `k` examples, balanced across labels (label by label in turn, each label's examples
    in a seeded random order), then shuffled with the same seed so no label always comes last."""
    if k < 0:
        raise UsageError(f"shots must be 0 or more, got {k}")
    rng = random.Random(seed)
    pools: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        pools.setdefault(label, []).append(i)
    for label in sorted(pools):
        rng.shuffle(pools[label])
    chosen: list[int] = []
    while len(chosen) < k and any(pools.values()):
        for label in sorted(pools):
            if pools[label] and len(chosen) < k:
                chosen.append(pools[label].pop())
    if len(chosen) < k:
        raise UsageError(f"asked for {k} shots but the training split has only {len(labels)} examples")
    rng.shuffle(chosen)
    return chosen


def build_contexts(texts: list[str], template: str, shots: list[tuple[str, str]], tokenizer,
                   chat: bool) -> list[str]:
    """The prompt for each text, up to where the verbalizer starts.

    `shots` are `(text, verbalizer)` pairs. With `chat`, each shot is a user turn (its text in the
    template) answered by an assistant turn (its verbalizer), and the text's own user turn ends with the
    assistant's generation prompt. Without, shots are inline, `prompt verbalizer` blocks separated by
    blank lines.
    """
    prompts = format_inputs(texts, template)
    shot_prompts = format_inputs([t for t, _ in shots], template)
    if chat:
        turns: list[dict[str, str]] = []
        for prompt, (_, verbalizer) in zip(shot_prompts, shots, strict=True):
            turns += [{"role": "user", "content": prompt}, {"role": "assistant", "content": verbalizer}]
        return [tokenizer.apply_chat_template(turns + [{"role": "user", "content": p}], tokenize=False,
                                              add_generation_prompt=True) for p in prompts]
    head = "".join(f"{p}{_separator(p)}{v}\n\n" for p, (_, v) in zip(shot_prompts, shots, strict=True))
    return [head + p for p in prompts]


def _separator(context: str) -> str:
    """What comes between a plain (non-chat) prompt and its verbalizer: a space, unless the prompt
    already ends in whitespace ("Answer:" -> "Answer: spam"; "Answer:\\n" -> "Answer:\\nspam")."""
    return "" if not context or context[-1].isspace() else " "


# --- scoring ------------------------------------------------------------------------------------------------

def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


def _repeat_cache(cache, repeats: int):
    """A copy of a key/value cache with each batch row repeated `repeats` times."""
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(repeats)
    return cache


@torch.no_grad()
def continuation_log_likelihoods(pm: PromptModel, contexts: list[str], continuations: list[list[int]],
                                 batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """`out[i, j]`: summed log-probability of the token ids `continuations[j]` following `contexts[i]`.

    Nothing is computed twice. The token prefix every context shares (system prompt, few-shot examples,
    the template's start) runs once and its key/value cache is reused; each batch of contexts (right
    padded) runs once, its last position scoring every continuation's first token; only the rest of
    multi-token continuations runs per label, on the contexts' cache. Contexts longer than the model's
    window lose tokens from the left.
    """
    model, tokenizer = pm.model, pm.tokenizer
    device = next(model.parameters()).device
    # A chat template writes its own special tokens; a plain prompt gets what the tokenizer adds (a BOS
    # for Llama-style tokenizers, nothing for GPT-2).
    ctx_ids = tokenizer(contexts, add_special_tokens=not pm.chat)["input_ids"]
    room = pm.max_length - max(len(c) for c in continuations)
    ctx_ids = [ids[-room:] if len(ids) > room else ids for ids in ctx_ids]
    shared = _common_prefix(ctx_ids) if len(ctx_ids) > 1 else 0
    shared = min(shared, min(len(c) for c in ctx_ids) - 1)  # every context keeps a token of its own
    prefix_cache = None
    if shared > 0:
        prefix = torch.tensor([ctx_ids[0][:shared]], device=device)
        prefix_cache = model(input_ids=prefix, use_cache=True).past_key_values
    base, head = model.base_model, model.get_output_embeddings()
    n_labels, rest = len(continuations), max(len(c) for c in continuations) - 1
    first = torch.tensor([c[0] for c in continuations], device=device)
    out = np.zeros((len(contexts), n_labels), dtype=np.float64)
    batches = sorted_batches([len(c) - shared for c in ctx_ids], batch_size)
    for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress, dynamic_ncols=True):
        seqs = [ctx_ids[i][shared:] for i in batch]
        lengths = torch.tensor([len(s) for s in seqs], device=device)
        input_ids = collate(seqs, tokenizer.pad_token_id)["input_ids"].to(device)
        mask = torch.cat([torch.ones(len(seqs), shared, dtype=torch.long, device=device),
                          (torch.arange(input_ids.shape[1], device=device) < lengths[:, None]).long()], dim=1)
        positions = shared + torch.arange(input_ids.shape[1], device=device).expand(len(seqs), -1)
        cache = _repeat_cache(prefix_cache, len(seqs)) if prefix_cache is not None else None
        ctx = base(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=rest > 0)
        # Only the positions that predict a continuation token go through the LM head: a 49k-word
        # vocabulary at every position would dwarf the model's own activations.
        last = ctx.last_hidden_state[torch.arange(len(seqs), device=device), lengths - 1]
        scores = torch.log_softmax(head(last).float(), dim=-1)[:, first].double()  # (texts, labels)
        if rest > 0:
            # Every label's remaining tokens after every context: rows (text, label), text-major, each
            # continuing its context's cache (a right-padded context's pads stay masked out).
            n = len(seqs)
            cont = torch.full((n_labels, rest), tokenizer.pad_token_id, dtype=torch.long, device=device)
            cont_mask = torch.zeros((n_labels, rest), dtype=torch.long, device=device)
            for j, c in enumerate(continuations):  # the last token is only predicted, never input
                cont[j, :len(c) - 1] = torch.tensor(c[:-1])
                cont_mask[j, :len(c) - 1] = 1
            tail_mask = torch.cat([mask.repeat_interleave(n_labels, dim=0), cont_mask.repeat(n, 1)], dim=1)
            tail_positions = (shared + lengths.repeat_interleave(n_labels)[:, None]
                              + torch.arange(rest, device=device))
            tail = base(input_ids=cont.repeat(n, 1), attention_mask=tail_mask, position_ids=tail_positions,
                        past_key_values=_repeat_cache(ctx.past_key_values, n_labels),
                        use_cache=False).last_hidden_state.view(n, n_labels, rest, -1)
            for j, c in enumerate(continuations):
                if len(c) > 1:  # the hidden state after token t predicts token t + 1
                    log_probs = torch.log_softmax(head(tail[:, j, :len(c) - 1]).float(), dim=-1)
                    targets = torch.tensor(c[1:], device=device).expand(n, -1)
                    scores[:, j] += log_probs.gather(-1, targets[..., None])[..., 0].double().sum(dim=1)
        out[batch] = scores.cpu().numpy()
    return out


def verbalizer_ids(pm: PromptModel, verbalizers: list[str], separator: str) -> list[list[int]]:
    """Token ids of each verbalizer as it follows the prompt; an empty one is an error naming it."""
    ids = [pm.tokenizer(separator + v, add_special_tokens=False)["input_ids"] for v in verbalizers]
    empty = [v for v, i in zip(verbalizers, ids, strict=True) if not i]
    if empty:
        raise UsageError(f"verbalizer(s) {', '.join(map(repr, empty))} become no tokens; give each label "
                         "a word or phrase")
    return ids


def resolve_verbalizers(label_names: list[str], labels: dict[str, str] | None) -> list[str]:
    """The verbalizer of each label, in label order; by default the label name itself."""
    if labels is None:
        return list(label_names)
    unknown = sorted(set(labels) - set(label_names))
    missing = [n for n in label_names if n not in labels]
    problems = []
    if unknown:
        problems.append(f"unknown label(s) {', '.join(map(repr, unknown))}")
    if missing:
        problems.append(f"no verbalizer for label(s) {', '.join(map(repr, missing))}")
    if problems:
        raise UsageError(f"{'; '.join(problems)}: the data's labels are {', '.join(label_names)}; give "
                         "NAME=WORDS for each, e.g. " + ",".join(f"{n}={n}" for n in label_names))
    verbalizers = [labels[n].strip() for n in label_names]
    if len(set(verbalizers)) < len(verbalizers) or not all(verbalizers):
        raise UsageError(f"verbalizers must be distinct and non-empty, got {labels}")
    return verbalizers


CONTENT_FREE = "N/A"  # the input contextual calibration measures the prompt's own label bias with


def _normalise(scores: np.ndarray) -> np.ndarray:
    return scores - np.logaddexp.reduce(scores, axis=-1, keepdims=True)


def score_texts(pm: PromptModel, texts: list[str], template: str, verbalizers: list[str],
                shots: list[tuple[str, str]] | None = None, score: Scoring = "sum", batch_size: int = 8,
                progress: bool = False, calibrate: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Log-probabilities over the labels (rows: texts, columns: verbalizers), from each verbalizer's
    summed (`score="sum"`) or per-token mean (`"mean"`) log-likelihood, normalised over the labels; and
    the label probabilities of a content-free text (`"N/A"`) in the same prompt when `calibrate`, else None.

    `calibrate` applies contextual calibration (Zhao et al., 2021, "Calibrate before use"): each text's
    label probabilities are divided by the content-free ones and renormalised, which removes the bias a
    prompt has towards one answer whatever the text (small models often say "yes" to everything).
    """
    check_template(template)
    if score not in ("sum", "mean"):
        raise UsageError(f"score must be 'sum' or 'mean', got {score!r}")
    contexts = build_contexts(texts + [CONTENT_FREE] * calibrate, template, shots or [], pm.tokenizer,
                              pm.chat)
    separator = "" if pm.chat else _separator(format_inputs(["x"], template)[0])
    cont_ids = verbalizer_ids(pm, verbalizers, separator)
    ll = continuation_log_likelihoods(pm, contexts, cont_ids, batch_size, progress)
    if score == "mean":
        ll = ll / np.array([len(c) for c in cont_ids])
    log_probs = _normalise(ll)
    if not calibrate:
        return log_probs.astype(np.float32), None
    content_free = log_probs[-1]
    return _normalise(log_probs[:-1] - content_free).astype(np.float32), np.exp(content_free)


# --- evaluation ---------------------------------------------------------------------------------------------

def _load_examples(data: str | DataConfig, split: str, max_examples: int | None, seed: int):
    """The prepared dataset and the examples to score: a split, or its stratified seeded subsample."""
    if split not in ("train", "val", "test"):
        raise UsageError(f"split must be train, val or test; got {split!r}")
    dataset = load_dataset(data if isinstance(data, DataConfig) else DataConfig(source=data))
    if dataset.task != "single_label":
        raise UsageError(f"prompt classification picks one label per text, and this data is {dataset.task}; "
                         "fine-tune a model for it (tunetext train) instead")
    examples = dataset.splits()[split]
    if max_examples is not None and max_examples < len(examples):
        examples = subsample(examples, max_examples, seed)
    return dataset, examples


def prompt_eval(model: str | PromptModel, data: str | DataConfig, template: str,
                labels: dict[str, str] | None = None, shots: int = 0, seed: int = 42, split: str = "test",
                max_examples: int | None = None, score: Scoring = "sum", batch_size: int = 8,
                progress: bool = False, calibrate: bool = False) -> dict[str, Any]:
    """Metrics of prompt classification with a decoder on a split of `data`, as `tunetext.evaluate`
    returns them, plus a `prompt` entry (template, verbalizers, the few-shot examples, timing).
    `calibrate` applies contextual calibration (see `score_texts`).

    `labels` maps each label name to its verbalizer (default: the name itself). `shots` examples come
    from the train split, balanced across labels and fixed by `seed`. `data` is a source as for
    training, or a run's `DataConfig` (same preparation and seed, so the same test split).
    `max_examples` scores a stratified, seeded subsample of the split.
    """
    check_template(template)
    dataset, examples = _load_examples(data, split, max_examples, seed)
    verbalizers = resolve_verbalizers(dataset.label_names, labels)
    shot_idx = pick_shots(dataset.train.labels, shots, seed)
    shot_pairs = [(dataset.train.texts[i], verbalizers[dataset.train.labels[i]]) for i in shot_idx]
    pm = load_prompt_model(model) if isinstance(model, str) else model

    started = time.perf_counter()
    log_probs, content_free = score_texts(pm, examples.texts, template, verbalizers, shot_pairs, score,
                                          batch_size, progress, calibrate)
    seconds = time.perf_counter() - started
    acc = MetricAccumulator(dataset.label_names)
    acc.update(log_probs, examples.labels)
    metrics = {"task": "single_label", **acc.result()}  # as `tunetext.evaluate` returns single-label scores
    metrics["split"] = split
    metrics["report"] = dataset.report
    metrics["prompt"] = {
        "model": pm.name, "template": template, "chat": pm.chat,
        "verbalizers": dict(zip(dataset.label_names, verbalizers, strict=True)),
        "shots": shots, "seed": seed, "score": score,
        "shot_examples": [{"text": t, "label": dataset.label_names[dataset.train.labels[i]]}
                          for i, (t, _) in zip(shot_idx, shot_pairs, strict=True)],
        "max_examples": max_examples, "seconds": seconds, "calibrated": calibrate,
    }
    if content_free is not None:
        metrics["prompt"]["content_free_probabilities"] = dict(zip(dataset.label_names,
                                                                   content_free.tolist(), strict=True))
    return metrics


def prompt_story(run_dir: str | Path, model: str | PromptModel, template: str,
                 labels: dict[str, str] | None = None, shots: int = 4, seed: int = 42,
                 max_examples: int | None = None, score: Scoring = "sum", batch_size: int = 8,
                 progress: bool = False, record: bool = True, calibrate: bool = False) -> dict[str, Any]:
    """Zero-shot, `shots`-shot and fine-tuned scores on the test split of a finished run's data.

    The prompt results are scored on the run's own data configuration (same split); the fine-tuned
    scores are the run's `metrics.json` test scores, or, with `max_examples`, the run's scores on the
    same subsample the prompts saw (its full test scores kept under `full_test`). With `record`, the
    prompt results are stored in that file under `prompt_baselines` (`zero_shot`, `few_shot`).
    """
    config, metrics, _ = runs.read_run(run_dir)
    data = config.data.model_copy(update={"template": None})  # the run's own template is not the prompt's
    pm = load_prompt_model(model) if isinstance(model, str) else model
    common: dict[str, Any] = {"labels": labels, "seed": seed, "max_examples": max_examples, "score": score,
                              "batch_size": batch_size, "progress": progress, "calibrate": calibrate}
    baselines = {"zero_shot": prompt_eval(pm, data, template, shots=0, **common)}
    if shots > 0:
        baselines["few_shot"] = prompt_eval(pm, data, template, shots=shots, **common)
    for result in baselines.values():
        result.pop("report")
    if record:
        current = runs.read_run(run_dir)[1]  # read again: scoring took a while
        runs.write_json(Path(run_dir) / runs.METRICS, {**current, "prompt_baselines": baselines})
    fine_tuned = {**metrics["test"], "model": config.model.name}
    if max_examples is not None and max_examples < metrics["test"]["n"]:
        fine_tuned = {**_score_run_on(run_dir, data, max_examples, seed), "model": config.model.name,
                      "full_test": {k: metrics["test"][k] for k in ("accuracy", "macro_f1", "n")}}
    return {**baselines, "fine_tuned": fine_tuned}


def _score_run_on(run_dir: str | Path, data: DataConfig, max_examples: int, seed: int) -> dict[str, Any]:
    """A fine-tuned run's metrics on the test subsample `prompt_eval` scores with the same arguments."""
    _, examples = _load_examples(data, "test", max_examples, seed)
    clf = Classifier.load(run_dir, backend="torch")
    return evaluate_split(clf.model, clf.tokenizer, examples.texts, examples.labels, clf.label_names,
                          clf.config.model.max_length, 64, temperature=clf.temperature,
                          template=clf.config.data.template, long_text=LongText.of(clf.config.data))


def format_story(story: dict[str, Any]) -> str:
    """The story table: zero-shot prompt -> few-shot prompt -> fine-tuned, on one test split."""
    rows = [("zero-shot prompt", story["zero_shot"]["prompt"]["model"], story["zero_shot"])]
    if "few_shot" in story:
        few = story["few_shot"]
        rows.append((f"{few['prompt']['shots']}-shot prompt", few["prompt"]["model"], few))
    rows.append(("fine-tuned", story["fine_tuned"]["model"], story["fine_tuned"]))
    width = max(len(f"{what} ({model})") for what, model, _ in rows) + 2
    lines = [f"  {'':<{width}}{'accuracy':>10}{'macro-F1':>10}{'n':>8}"]
    for what, model, m in rows:
        lines.append(f"  {what + ' (' + model + ')':<{width}}{m['accuracy']:>10.4f}{m['macro_f1']:>10.4f}"
                     f"{m['n']:>8d}")
    full = story["fine_tuned"].get("full_test")
    if full is not None:
        lines.append(f"  (a stratified subsample of the test split, --max-examples; fine-tuned on all "
                     f"{full['n']} test texts: accuracy {full['accuracy']:.4f}, macro-F1 "
                     f"{full['macro_f1']:.4f})")
    return "\n".join(lines)
