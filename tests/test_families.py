"""Every model family README promises, loaded as a tiny random model: the family table agrees with README,
each loads for classification with the pad token and padding side tunetext uses, pools the position its
family pools, trains exactly the last blocks and the head under `last_n`, takes LoRA on its declared
targets, and caches its frozen prefix only where a prefix/top split exists.

What each family should train or adapt is written out below by hand from transformers' module structure,
not read from `tunetext.models.families`, so a wrong entry in the family table fails here."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tunetext import Classifier, load_config, train
from tunetext.batches import collate, tokenize
from tunetext.inference import predict_probabilities
from tunetext.models import (
    FAMILIES,
    PrefixCacheUnsupported,
    blocks,
    frozen_prefix_modules,
    head_linear,
    head_modules,
    load_classifier,
    train_mode,
)
from tunetext.prefix_cache import decide
from tunetext.strategies import apply_strategy, setup_strategy

LABELS = ["ham", "spam"]
README = Path(__file__).parent.parent / "README.md"
# Words of the tiny data (the tiny tokenizers know them), of several lengths.
TEXTS = ["Ok", "Congratulations you won 1000 pounds, txt CLAIM to 85991", "see you at 6",
         "Thanks for coffee yesterday, it was lovely", "WINNER! You have won a 500 prize, call 89551 now"]


@dataclass(frozen=True)
class Expected:
    model_class: str
    blocks: str  # parameter-name prefix of the block list
    trained_with_head: tuple[str, ...]  # under last_n, besides the last blocks: final norm, pooler, head
    lora_adapted: tuple[str, ...]  # module paths inside a block that LoRA wraps
    head: tuple[str, ...]  # modules saved with a peft adapter
    pad_token: str


_BERT_QV = ("attention.self.query", "attention.self.value")
_DECODER_QV = ("self_attn.q_proj", "self_attn.v_proj")
EXPECTED = {
    "bert": Expected("BertForSequenceClassification", "bert.encoder.layer.", ("bert.pooler.", "classifier."),
                     _BERT_QV, ("classifier", "pooler"), "[PAD]"),
    # RoBERTa-style classifiers have no pooler: their head is classifier.dense -> classifier.out_proj.
    "roberta": Expected("RobertaForSequenceClassification", "roberta.encoder.layer.", ("classifier.",),
                        _BERT_QV, ("classifier",), "<pad>"),
    "xlm-roberta": Expected("XLMRobertaForSequenceClassification", "roberta.encoder.layer.", ("classifier.",),
                            _BERT_QV, ("classifier",), "<pad>"),
    # MPNet's relative position bias sits in the encoder beside the blocks and stays frozen.
    "mpnet": Expected("MPNetForSequenceClassification", "mpnet.encoder.layer.", ("classifier.",),
                      ("attention.attn.q", "attention.attn.v"), ("classifier",), "<pad>"),
    "electra": Expected("ElectraForSequenceClassification", "electra.encoder.layer.", ("classifier.",),
                        _BERT_QV, ("classifier",), "[PAD]"),
    "distilbert": Expected("DistilBertForSequenceClassification", "distilbert.transformer.layer.",
                           ("pre_classifier.", "classifier."), ("attention.q_lin", "attention.v_lin"),
                           ("pre_classifier", "classifier"), "[PAD]"),
    # Decoders without a pad token of their own pad with their end-of-text token.
    "gpt2": Expected("GPT2ForSequenceClassification", "transformer.h.", ("transformer.ln_f.", "score."),
                     ("attn.c_attn",), ("score",), "<|endoftext|>"),
    "llama": Expected("LlamaForSequenceClassification", "model.layers.", ("model.norm.", "score."),
                      _DECODER_QV, ("score",), "<|endoftext|>"),
    # The tiny Qwen2 pads with its own <|endoftext|>, not its end-of-turn <|im_end|>, as Qwen2-Instruct.
    "qwen2": Expected("Qwen2ForSequenceClassification", "model.layers.", ("model.norm.", "score."),
                      _DECODER_QV, ("score",), "<|endoftext|>"),
    "mistral": Expected("MistralForSequenceClassification", "model.layers.", ("model.norm.", "score."),
                        _DECODER_QV, ("score",), "<|endoftext|>"),
}
# Model classes that run from cached hidden states (`tunetext.models.prefix`); the rest run uncached.
CACHED = {"BertForSequenceClassification", "GPT2ForSequenceClassification", "LlamaForSequenceClassification"}
NAMES = sorted(EXPECTED)


def readme_families() -> set[str]:
    """The model types README's Models table promises for a local folder ("BERT, ..., GPT-2 ... families")."""
    row = next(line for line in README.read_text().splitlines() if line.startswith("| a local folder |"))
    listed = re.fullmatch(r"(.*) families", row.strip(" |").split("|")[-1].strip()).group(1)
    return {name.strip().lower().replace("gpt-2", "gpt2") for name in listed.split(",")}


def padded(tokenizer, texts: list[str]):
    ids = tokenize(tokenizer, texts, 64)
    return ids, collate(ids, tokenizer.pad_token_id, [i % 2 for i in range(len(ids))])


def one_step(model, tokenizer) -> dict[str, torch.Tensor | None]:
    _, batch = padded(tokenizer, TEXTS[:4])
    model.train()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    F.cross_entropy(out, batch["labels"]).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_readme_the_family_table_and_these_tests_name_the_same_families():
    assert readme_families() == set(FAMILIES) == set(EXPECTED)


@pytest.mark.parametrize("name", NAMES)
def test_loads_for_classification_with_its_pad_token_on_the_right(name, tiny_family, caplog):
    with caplog.at_level(logging.DEBUG, logger="tunetext"):
        model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    expected = EXPECTED[name]
    assert type(model).__name__ == expected.model_class
    assert family is FAMILIES[name] and model.config.model_type == name
    assert model.config.id2label == {0: "ham", 1: "spam"}
    assert tokenizer.pad_token == expected.pad_token
    assert model.config.pad_token_id == tokenizer.pad_token_id is not None
    assert tokenizer.padding_side == "right"
    # Only the new head starts at random: nothing else the checkpoint holds went missing on the way.
    notes = [r for r in caplog.records if r.name == "tunetext.models.loading"]
    assert notes and all(r.levelno == logging.DEBUG for r in notes), [r.getMessage() for r in notes]
    ids, batch = padded(tokenizer, TEXTS)
    assert tokenizer.unk_token_id not in {i for x in ids for i in x}  # the tiny tokenizer knows the words
    assert len({len(x) for x in ids}) > 2
    assert batch["attention_mask"][0].tolist() == [1] * len(ids[0]) + [0] * (batch["input_ids"].shape[1]
                                                                               - len(ids[0]))
    with torch.no_grad():
        logits = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (len(TEXTS), 2) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_pools_the_first_token_of_an_encoder_and_the_last_real_token_of_a_decoder(name, tiny_family):
    """Noise added to the last block's output everywhere except the position the family pools leaves the
    logits as they were; noise at that position changes them. Encoders pool the first token; decoders the
    last token of each text, which right padding puts at its unpadded length - 1."""
    model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    model.eval()
    torch.manual_seed(0)
    torch.nn.init.normal_(head_linear(model, family).weight, std=1.0)
    ids, batch = padded(tokenizer, TEXTS)
    lengths = torch.tensor([len(x) for x in ids])
    pooled = torch.zeros_like(lengths) if family.kind == "encoder" else lengths - 1
    at_pooled = torch.zeros(batch["input_ids"].shape, dtype=torch.bool)
    at_pooled[torch.arange(len(ids)), pooled] = True
    noise = torch.randn(*batch["input_ids"].shape, model.config.hidden_size)

    def logits(where: torch.Tensor | None) -> torch.Tensor:
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + noise * where[..., None]
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = blocks(model, family)[-1].register_forward_hook(hook) if where is not None else None
        try:
            with torch.no_grad():
                return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        finally:
            if handle is not None:
                handle.remove()

    clean = logits(None)
    torch.testing.assert_close(logits(~at_pooled), clean, atol=1e-5, rtol=0)
    changed = (logits(at_pooled) - clean).abs().amax(-1)
    assert (changed > 1e-2).all(), changed
    # And padding changes nothing: each text alone gives the logits it gets in the padded batch.
    with torch.no_grad():
        alone = torch.cat([model(input_ids=torch.tensor([x])).logits for x in ids])
    torch.testing.assert_close(alone, clean, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("name", NAMES)
def test_last_n_trains_exactly_the_last_blocks_and_the_head(name, n, tiny_family):
    model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    expected = EXPECTED[name]
    last = tuple(f"{expected.blocks}{i}." for i in range(2 - n, 2))  # the tiny models have 2 blocks
    should_train = {p for p, _ in model.named_parameters() if p.startswith(last + expected.trained_with_head)}
    # The expectation itself: every block and head prefix names something, and the embeddings stay frozen.
    for prefix in last + expected.trained_with_head:
        assert any(p.startswith(prefix) for p in should_train), prefix
    assert any("embed" in p or p.startswith("transformer.w") for p, _ in model.named_parameters())
    assert not any("embed" in p or p.startswith("transformer.w") for p in should_train)

    trainable = apply_strategy(model, family, "last_n", n)
    grads = one_step(model, tokenizer)
    assert {p for p, g in grads.items() if g is not None and g.abs().sum() > 0} == should_train
    assert all(grads[p] is None for p in grads if p not in should_train)
    assert trainable == sum(p.numel() for name_, p in model.named_parameters() if name_ in should_train)


@pytest.mark.parametrize("name", NAMES)
def test_lora_wraps_the_declared_targets_and_trains_only_adapters_and_head(name, tiny_family):
    model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    expected = EXPECTED[name]
    modules = {n for n, _ in model.named_modules()}
    # Each declared target names one module in each of the 2 blocks, and these are the attention
    # projections expected, nothing else.
    targets = {n for n in modules if n.split(".")[-1] in family.lora_targets}
    assert targets == {f"{expected.blocks}{i}.{a}" for i in range(2) for a in expected.lora_adapted}
    assert head_modules(model, family) == list(expected.head)

    model, trainable = setup_strategy(model, family, load_config(overrides={"train.strategy": "lora"}).train)
    grads = one_step(model, tokenizer)
    adapted = {n for n in grads if ("lora_A" in n or "lora_B" in n)
               and any(f".{t}.lora_" in n for t in sorted(targets))}
    assert len(adapted) == 2 * len(targets)  # A and B of each
    saved = {n for n in grads if ".modules_to_save." in n
             and any(f".{h}.modules_to_save." in n or n.startswith(f"base_model.model.{h}.modules_to_save.")
                     for h in expected.head)}
    assert saved
    should_train = adapted | saved
    assert {n for n, g in grads.items() if g is not None} == should_train
    assert all(grads[n].abs().sum() > 0 for n in should_train if "lora_A" not in n)  # B starts at 0
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in should_train)


@pytest.mark.parametrize("name", NAMES)
def test_last_n_prefix_is_deterministic_and_cached_only_where_a_split_exists(name, tiny_family):
    model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    apply_strategy(model, family, "last_n", 1)
    train_mode(model, family, "last_n", 1)
    prefix = frozen_prefix_modules(model, family, 1)
    assert prefix[-1] is blocks(model, family)[0]
    assert not any(m.training for p in prefix for m in p.modules())
    assert all(m.training for m in blocks(model, family)[1].modules())

    _, batch = padded(tokenizer, TEXTS)
    seen: list[torch.Tensor] = []
    handle = blocks(model, family)[0].register_forward_hook(
        lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        for mode in ("last_n", "last_n", "full", "full"):
            train_mode(model, family, mode, 1)
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    assert torch.equal(seen[0], seen[1])  # what a cache would hold is the same at every step
    assert not torch.equal(seen[2], seen[3])  # control: in training mode, dropout changes it

    cpu = torch.device("cpu")
    cached, why = decide("auto", "last_n", model, 1, [10] * 20, cpu)
    assert cached == (EXPECTED[name].model_class in CACHED), why
    if not cached:
        assert EXPECTED[name].model_class in why and "uncached" in why
        with pytest.raises(PrefixCacheUnsupported, match="train.cache_frozen=on"):
            decide("on", "last_n", model, 1, [10] * 20, cpu)


# Families whose LoRA runs are not trained end to end elsewhere (tests/test_strategies.py trains BERT's).
@pytest.mark.parametrize("name", [n for n in NAMES if n != "bert"])
def test_lora_run_trains_merges_and_reloads(name, tiny_family, tiny_config, tmp_path, tiny_texts):
    run = train(tiny_config(tiny_family(name), strategy="lora", lora_r=4, epochs=1, batch_size=16),
                tmp_path / "run", progress=False)
    assert run.metrics["calibration"]["folded"] is True  # the temperature is in the merged model's head
    # The adapter trained and was merged: a wrapped projection's saved weight moved from the pretrained one.
    adapted = f"{EXPECTED[name].blocks}0.{EXPECTED[name].lora_adapted[0]}.weight"
    pretrained = load_file(tiny_family(name) / "model.safetensors")
    before = next(v for k, v in pretrained.items() if k.endswith(adapted.split(".", 1)[1]))
    after = load_file(run.run_dir / "model.safetensors")[adapted]
    assert after.shape == before.shape and (after - before).abs().max() > 1e-6
    classifier = Classifier.load(run.run_dir)
    assert type(classifier.model).__name__ == EXPECTED[name].model_class  # merged: a standard model folder
    ids = tokenize(classifier.tokenizer, tiny_texts, run.config.model.max_length)
    # run.model is the model as saved, its temperature folded into the head: nothing left to apply
    in_memory = predict_probabilities(run.model.eval(), ids, classifier.tokenizer.pad_token_id, 16,
                                      temperature=classifier.temperature)
    np.testing.assert_allclose(classifier.predict_proba(tiny_texts), in_memory, atol=1e-5)
