"""Llama-family decoders (pad token either way, right padding, last-token pooling) and catalogue models
that ship as GGUF files, converted once to a safetensors folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tunetext.assets import PackagedAsset
from tunetext.batches import collate, tokenize
from tunetext.models import CATALOGUE, CatalogueModel, load_classifier, load_tokenizer, resolve

LABELS = ["ham", "spam"]


@pytest.mark.parametrize("own_pad", [True, False])
def test_llama_pads_right_with_its_pad_token_and_pools_the_last_real_token(tiny_llama, own_pad):
    path = tiny_llama(own_pad)
    model, tokenizer, family = load_classifier(str(path), LABELS)
    assert (family.kind, model.config.model_type) == ("decoder", "llama")
    expected_pad = "<|pad|>" if own_pad else "<|endoftext|>"  # kept if defined, else end-of-text
    assert tokenizer.pad_token == expected_pad and model.config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer.padding_side == "right"

    model.eval()
    texts = ["hi", "Congratulations you won 1000 pounds, txt CLAIM to 85991 now", "see you at 6"]
    ids = tokenize(tokenizer, texts, 64)
    assert len({len(x) for x in ids}) == 3
    batch = collate(ids, tokenizer.pad_token_id)
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat([model(input_ids=torch.tensor([x])).logits for x in ids])
        model.config.pad_token_id = None  # control: pooling the last position, a pad for short texts
        wrong = model(input_ids=batch["input_ids"][:1]).logits
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(wrong, alone[:1], atol=1e-4)


@pytest.fixture
def gguf_entry(monkeypatch, tmp_path, tiny_llama):
    """A catalogue entry whose asset holds a GGUF file; reading the GGUF is replaced by a tiny Llama, and
    `calls` counts the reads."""
    import tunetext.models.loading as models

    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))  # this test's own, empty cache
    source = tiny_llama()
    asset_dir = tmp_path / "asset"
    asset_dir.mkdir()
    calls: list[tuple[Path, str]] = []

    def read_gguf(folder, gguf_file):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        calls.append((folder, gguf_file))
        return AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)

    entry = CatalogueModel(PackagedAsset("tiny-gguf-0.1", "tiny-gguf==0.1", "0" * 64, "tiny/"), "tiny",
                           gguf_file="tiny.Q4_1.gguf")
    monkeypatch.setitem(CATALOGUE, "tiny-gguf", entry)
    monkeypatch.setattr(models, "fetch", lambda asset: asset_dir)
    monkeypatch.setattr(models, "_read_gguf", read_gguf)
    return calls, asset_dir


def test_gguf_entry_is_converted_once_into_the_cache(gguf_entry):
    from tunetext.assets import cache_dir

    calls, asset_dir = gguf_entry
    folder = Path(resolve("tiny-gguf"))
    assert folder == cache_dir() / "models" / "tiny-gguf"
    assert calls == [(asset_dir, "tiny.Q4_1.gguf")]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "llama"
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert Path(resolve("tiny-gguf")) == folder and len(calls) == 1  # later loads read the folder
    model, tokenizer, family = load_classifier("tiny-gguf", LABELS)
    assert family.kind == "decoder" and model.config.num_labels == 2
    assert load_tokenizer(str(folder)).pad_token == "<|endoftext|>"


def test_interrupted_gguf_conversion_leaves_nothing_that_looks_finished(gguf_entry, monkeypatch):
    from transformers import LlamaForCausalLM

    from tunetext.assets import cache_dir

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", crash)
    with pytest.raises(KeyboardInterrupt):
        resolve("tiny-gguf")
    models_dir = cache_dir() / "models"
    assert not (models_dir / "tiny-gguf").exists() and list(models_dir.iterdir()) == []


@pytest.mark.slow
def test_smollm2_converts_to_float32_llama_that_answers_and_scores_sms_zero_shot():
    from safetensors import safe_open

    from tunetext.prompting import (
        build_contexts,
        continuation_log_likelihoods,
        load_prompt_model,
        prompt_eval,
    )

    folder = Path(resolve("smollm2-135m"))
    assert (folder / ".complete").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    with safe_open(folder / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # noqa: SIM118 (not iterable)

    pm = load_prompt_model("smollm2-135m")
    assert pm.chat and pm.tokenizer.pad_token == "<|im_end|>"
    # A broken dequantization still loads; it does not know the capital of France.
    [prompt] = build_contexts(["What is the capital of France?"], "{text}", [], pm.tokenizer, chat=True)
    ids = pm.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    answer = pm.model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].shape[1]:]
    assert "Paris" in pm.tokenizer.decode(answer)

    # The cached, batched scorer on the real Llama and chat template equals one plain forward pass.
    template = 'Is the following SMS message spam? Answer yes or no.\n\nSMS: "{text}"'
    texts = ["WINNER!! Claim your 1000 GBP prize, call 09061701461 now", "ok see you at 8 then"]
    contexts = build_contexts(texts, template, [("Are you home yet?", "no")], pm.tokenizer, chat=True)
    conts = [pm.tokenizer(v, add_special_tokens=False)["input_ids"] for v in ("no", "yes", "spam")]
    scores = continuation_log_likelihoods(pm, contexts, conts, batch_size=2)
    for i, context in enumerate(contexts):
        for j, cont in enumerate(conts):
            seq = pm.tokenizer(context, add_special_tokens=False)["input_ids"] + cont
            with torch.no_grad():
                log_probs = torch.log_softmax(pm.model(torch.tensor([seq])).logits[0].double(), dim=-1)
            start = len(seq) - len(cont)
            expected = sum(log_probs[start + t - 1, tok].item() for t, tok in enumerate(cont))
            assert abs(scores[i, j] - expected) < 1e-3

    metrics = prompt_eval(pm, "sms_spam", template, {"ham": "no", "spam": "yes"}, max_examples=16)
    assert metrics["n"] == 16 and metrics["prompt"]["chat"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 16
