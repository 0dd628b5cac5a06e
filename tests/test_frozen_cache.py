"""Frozen-prefix caching under `last_n`: the top of the model run from cached hidden states gives the whole
model's logits, a cached run ends where an uncached one does, and only the top learns."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunetext import train
from tunetext.batches import collate, tokenize
from tunetext.models import (
    PrefixCacheUnsupported,
    blocks,
    encode_prefix,
    forward_top,
    frozen_prefix_modules,
    load_classifier,
    train_mode,
)
from tunetext.prefix_cache import build, collate_hidden, decide
from tunetext.strategies import apply_strategy, trainable_parameter_names
from tunetext.train import TrainingInterrupted

LABELS = ["ham", "spam"]


@pytest.fixture
def folders(tiny_bert, tiny_gpt2, tiny_llama) -> dict[str, Path]:
    return {"bert": tiny_bert, "gpt2": tiny_gpt2, "llama": tiny_llama()}


def padded_batch(tokenizer, tiny_texts):
    texts = ["hi", "Congratulations you won 1000 pounds, txt CLAIM to 85991 now", "see you at 6",
             *tiny_texts[:5]]
    ids = tokenize(tokenizer, texts, 64)
    assert len({len(x) for x in ids[:3]}) == 3  # really padded
    return ids, collate(ids, tokenizer.pad_token_id)


def head(model) -> torch.nn.Linear:
    return model.classifier if hasattr(model, "classifier") else model.score


def perturb(model, matrices_std: float | None = None) -> None:
    """Biases and norms away from their initial 0 and 1, so that every term counts; with `matrices_std`,
    every weight matrix redrawn at that scale too."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 1:
                param.add_(torch.randn_like(param), alpha=0.1)
            elif matrices_std is not None:
                param.normal_(std=matrices_std)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("family_name", ["bert", "gpt2", "llama"])
def test_top_from_prefix_gives_the_whole_models_logits(family_name, attention, folders, tiny_texts):
    model, tokenizer, _ = load_classifier(str(folders[family_name]), LABELS, attention=attention)
    model.eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(head(model).weight, std=1.0)  # logits of order 1, not a fresh head's 0.01
    perturb(model)
    ids, batch = padded_batch(tokenizer, tiny_texts)
    mask = batch["attention_mask"]
    with torch.no_grad():
        whole = model(**batch).logits
        assert whole.abs().max() > 0.1
        for n_frozen in (0, 1, 2):
            # The prefix of the padded batch, and of each text alone at its own length as the cache holds
            # it, right-padded with zeros.
            hidden = encode_prefix(model, batch["input_ids"], mask, n_frozen)
            alone = [encode_prefix(model, torch.tensor([x]), torch.ones(1, len(x), dtype=torch.long),
                                   n_frozen)[0] for x in ids]
            from_batch = forward_top(model, hidden, batch["input_ids"], mask, n_frozen)
            from_cache = forward_top(model, collate_hidden(alone), batch["input_ids"], mask, n_frozen)
            torch.testing.assert_close(from_batch, whole, atol=1e-5, rtol=0)
            torch.testing.assert_close(from_cache, whole, atol=1e-5, rtol=0)
            print(f"{family_name} {attention} n_frozen={n_frozen}: max |diff| padded batch "
                  f"{(from_batch - whole).abs().max():.1e}, per-text cache "
                  f"{(from_cache - whole).abs().max():.1e}")
            # Controls, 100 times the tolerance: a block run twice, or pooling at the wrong token.
            if n_frozen:
                twice = forward_top(model, hidden, batch["input_ids"], mask, n_frozen - 1)
                assert (twice - whole).abs().max() > 1e-3
            if family_name != "bert":  # decoders pool the last non-pad token; BERT pools [CLS]
                no_pad_ids = torch.where(mask.bool(), batch["input_ids"], batch["input_ids"][0, 0])
                pooled_wrong = forward_top(model, hidden, no_pad_ids, mask, n_frozen)
                assert (pooled_wrong[:3] - whole[:3]).abs().max() > 1e-3


def config_variant(name: str, tiny_llama_config):
    """Tiny models whose configs change what the last block computes: GPT-2's layer-scaled, upcast
    attention; the tiny Llama with biases everywhere, a head size that is not hidden / heads, and scaled
    rotary."""
    from transformers import GPT2Config, GPT2ForSequenceClassification, LlamaForSequenceClassification

    torch.manual_seed(0)
    if name == "gpt2-scaled":
        return GPT2ForSequenceClassification(GPT2Config(
            vocab_size=40, n_embd=32, n_layer=2, n_head=4, n_positions=32, pad_token_id=0, num_labels=2,
            scale_attn_by_inverse_layer_idx=True, reorder_and_upcast_attn=True, attn_implementation="eager"))
    return LlamaForSequenceClassification(tiny_llama_config(
        vocab_size=40, head_dim=16, attention_bias=True, mlp_bias=True, pad_token_id=0, num_labels=2,
        rope_scaling={"rope_type": "linear", "factor": 2.0}, attn_implementation="eager"))


@pytest.mark.parametrize("name", ["gpt2-scaled", "llama-biased"])
def test_top_follows_config_variants(name, tiny_llama_config):
    model = config_variant(name, tiny_llama_config).eval()
    perturb(model, matrices_std=0.3)  # weights large enough for attention to be peaked and logits of order 1
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14], [15, 16, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        whole = model(input_ids=ids, attention_mask=mask).logits
        for n_frozen in (0, 1):
            top = forward_top(model, encode_prefix(model, ids, mask, n_frozen), ids, mask, n_frozen)
            torch.testing.assert_close(top, whole, atol=1e-5, rtol=0)


def fixed_dropout(x, p=0.5, training=True, inplace=False):
    """A deterministic stand-in for dropout: a factor that depends only on the position in the last
    dimension, so that the whole model and `forward_top` must apply it at the same places to agree."""
    if not training or p == 0:
        return x
    return x * (0.5 + 0.4 * (torch.arange(x.shape[-1], dtype=x.dtype) % 3))


@pytest.mark.parametrize("family_name", ["bert", "gpt2", "llama"])
def test_top_in_training_mode_applies_dropout_where_the_model_does(family_name, folders, monkeypatch,
                                                                   tiny_texts):
    """Training mode, every dropout of the top replaced by `fixed_dropout`: the top from the prefix still
    gives the whole model's logits, so each dropout sits where transformers puts it (where attention
    dropout zeroes weights, the value bias counts less, which the eval-mode test cannot see)."""
    model, tokenizer, family = load_classifier(str(folders[family_name]), LABELS, attention="eager")
    monkeypatch.setattr(torch.nn.functional, "dropout", fixed_dropout)
    torch.manual_seed(0)
    torch.nn.init.normal_(head(model).weight, std=1.0)
    perturb(model)
    _, batch = padded_batch(tokenizer, tiny_texts)
    mask = batch["attention_mask"]
    train_mode(model, family, "last_n", 1)  # the prefix in eval mode, the top block and head training
    with torch.no_grad():
        whole = model(**batch).logits
        hidden = encode_prefix(model, batch["input_ids"], mask, 1)
        top = forward_top(model, hidden, batch["input_ids"], mask, 1)
        torch.testing.assert_close(top, whole, atol=1e-5, rtol=0)
        model.eval()  # control: the stand-in really changes the logits
        assert (model(**batch).logits - whole).abs().max() > 1e-3


@pytest.mark.parametrize("family_name", ["bert", "gpt2", "llama"])
def test_last_n_runs_its_frozen_prefix_without_dropout(family_name, folders, tiny_texts):
    model, tokenizer, family = load_classifier(str(folders[family_name]), LABELS)
    _, batch = padded_batch(tokenizer, tiny_texts)
    apply_strategy(model, family, "last_n", 1)
    train_mode(model, family, "last_n", 1)
    prefix = frozen_prefix_modules(model, family, 1)
    assert prefix[-1] is blocks(model, family)[0]
    assert not any(m.training for p in prefix for m in p.modules())
    assert all(m.training for m in blocks(model, family)[1].modules())
    assert model.training and head(model).training
    args = (batch["input_ids"], batch["attention_mask"], 1)
    with torch.no_grad():
        torch.testing.assert_close(encode_prefix(model, *args), encode_prefix(model, *args), atol=0, rtol=0)
        model.train()  # control: with dropout the prefix is not deterministic, and caching would not be exact
        assert not torch.equal(encode_prefix(model, *args), encode_prefix(model, *args))
    train_mode(model, family, "full", 1)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("family_name", ["bert", "gpt2", "llama"])
def test_cached_path_gives_gradients_to_exactly_the_top(family_name, folders, tiny_texts):
    model, tokenizer, family = load_classifier(str(folders[family_name]), LABELS)
    ids, batch = padded_batch(tokenizer, tiny_texts)
    apply_strategy(model, family, "last_n", 1)
    train_mode(model, family, "last_n", 1)
    cache = build(model, family, ids, tokenizer.pad_token_id, 1, 4, torch.device("cpu"))
    logits = forward_top(model, collate_hidden(cache), batch["input_ids"], batch["attention_mask"], 1)
    torch.nn.functional.cross_entropy(logits, torch.tensor([i % 2 for i in range(len(ids))])).backward()

    base, layer = {"bert": ("bert.", "bert.encoder.layer.1."), "gpt2": ("transformer.", "transformer.h.1."),
                   "llama": ("model.", "model.layers.1.")}[family_name]
    expected = {n for n, _ in model.named_parameters()
                if n.startswith(layer) or not n.startswith(base)
                or n.startswith(("bert.pooler.", "transformer.ln_f.", "model.norm."))}
    assert expected == trainable_parameter_names(model, family, "last_n", 1)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == expected
    assert all(p.grad is None for n, p in model.named_parameters() if n not in expected)


def run_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def assert_same_run(a: Path, b: Path) -> float:
    """Same test and validation scores and predictions, weights equal to 1e-5; the largest weight diff."""
    ma, mb = run_metrics(a), run_metrics(b)
    for split in ("val", "test"):
        for key in ("accuracy", "macro_f1", "confusion_matrix"):
            assert ma[split][key] == mb[split][key], (split, key)
        assert ma[split]["log_loss"] == pytest.approx(mb[split]["log_loss"], abs=1e-5)
    assert ma["training"]["best_step"] == mb["training"]["best_step"]
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    worst = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    assert worst < 1e-5
    return worst


@pytest.fixture(scope="module")
def cached_and_uncached(tmp_path_factory, tiny_bert, tiny_gpt2, cache_config):
    """`runs(family)`: a cached and an uncached run of the same last_n config (2 epochs), made once."""
    made: dict[str, dict[str, Path]] = {}
    folders = {"bert": tiny_bert, "gpt2": tiny_gpt2}

    def runs(family_name: str) -> dict[str, Path]:
        if family_name not in made:
            out = tmp_path_factory.mktemp(f"cache-{family_name}")
            made[family_name] = {cache: out / cache for cache in ("auto", "off")}
            for cache, run_dir in made[family_name].items():
                train(cache_config(folders[family_name], cache), run_dir, progress=False)
        return made[family_name]

    return runs


@pytest.fixture(scope="module")
def cache_config(tiny_config):
    """`cache_config(folder, cache)`: the tiny last_n run config, 2 epochs, with `train.cache_frozen`."""

    def config(folder: Path, cache: str):
        return tiny_config(folder, strategy="last_n", last_n=1, cache_frozen=cache, epochs=2)

    return config


@pytest.mark.parametrize("family_name", ["bert", "gpt2"])
def test_cached_run_ends_where_the_uncached_run_does(family_name, cached_and_uncached):
    runs = cached_and_uncached(family_name)
    cached, uncached = run_metrics(runs["auto"]), run_metrics(runs["off"])
    assert cached["training"]["prefix_cached"] is True  # auto chose the cache
    assert uncached["training"]["prefix_cached"] is False
    # Training moved the weights (so equal weights below are not just both untouched).
    assert cached["val"]["log_loss"] != pytest.approx(cached["before_finetune"]["val"]["log_loss"], abs=1e-3)
    worst = assert_same_run(runs["auto"], runs["off"])
    print(f"{family_name}: cached vs uncached run, max |weight diff| {worst:.2e}")


def test_resumed_cached_run_rebuilds_the_cache_and_ends_as_an_uninterrupted_one(tiny_bert, tmp_path,
                                                                                 cached_and_uncached,
                                                                                 cache_config):
    config = cache_config(tiny_bert, "auto")

    def interrupt_after_first_evaluation(entry):
        if entry["epoch"] == 1:
            signal.raise_signal(signal.SIGINT)  # as Ctrl-C: checkpoint after the next step, then stop

    with pytest.raises(TrainingInterrupted):
        train(config, tmp_path / "resumed", progress=False, on_evaluate=interrupt_after_first_evaluation)
    state = torch.load(tmp_path / "resumed" / "checkpoint" / "state.pt", weights_only=False)
    assert (state["epoch"], state["batch"]) == (1, 1)  # stopped inside the second epoch
    resumed = train(config, tmp_path / "resumed", resume=True, progress=False)
    assert resumed.metrics["training"]["prefix_cached"] is True
    assert_same_run(cached_and_uncached("bert")["auto"], tmp_path / "resumed")


def test_auto_falls_back_and_on_insists(tiny_gpt2, tiny_bert):
    cpu = torch.device("cpu")
    bert, _, _ = load_classifier(str(tiny_bert), LABELS)
    assert decide("auto", "last_n", bert, 1, [10] * 50, cpu)[0] is True
    assert decide("off", "last_n", bert, 1, [10] * 50, cpu)[0] is False
    assert decide("auto", "full", bert, 1, [10] * 50, cpu)[0] is False
    # Several processes: the top would bypass DistributedDataParallel.
    cached, why = decide("auto", "last_n", bert, 2, [10] * 50, cpu)
    assert not cached and "2 processes" in why
    with pytest.raises(PrefixCacheUnsupported, match="2 processes"):
        decide("on", "last_n", bert, 2, [10] * 50, cpu)
    # A cache larger than the free memory: auto declines, on caches anyway.
    huge = [10**9] * 10**4
    cached, why = decide("auto", "last_n", bert, 1, huge, cpu)
    assert not cached and "more than half" in why
    assert decide("on", "last_n", bert, 1, huge, cpu)[0] is True
    # tunetext's scratch GPT-2 has no prefix/top split.
    scratch, _, _ = load_classifier(str(tiny_gpt2), LABELS, implementation="scratch")
    cached, why = decide("auto", "last_n", scratch, 1, [10] * 50, cpu)
    assert not cached and "GPT2Classifier" in why and "uncached" in why
    with pytest.raises(PrefixCacheUnsupported, match="train.cache_frozen=on: GPT2Classifier"):
        decide("on", "last_n", scratch, 1, [10] * 50, cpu)


def test_cache_frozen_config():
    from tunetext import ConfigError, load_config

    # YAML 1.1 reads a bare on/off as a boolean; they still mean "on" and "off".
    on = load_config(overrides=["train.strategy=last_n", "train.cache_frozen=on"])
    assert on.train.cache_frozen == "on"
    assert load_config(overrides=["train.cache_frozen=off"]).train.cache_frozen == "off"
    assert load_config().train.cache_frozen == "auto"
    with pytest.raises(ConfigError, match="cache_frozen=on caches the frozen prefix of strategy last_n"):
        load_config(overrides=["train.strategy=full", "train.cache_frozen=on"])
    with pytest.raises(ConfigError, match="train.cache_frozen: got 'sometimes'"):
        load_config(overrides=["train.cache_frozen=sometimes"])
