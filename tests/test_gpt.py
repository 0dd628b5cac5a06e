"""tunetext.models.gpt, the from-scratch GPT-2, against transformers' GPT-2 as reference implementation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tunetext.models import FAMILIES, ModelError, load_classifier
from tunetext.models.gpt import GPT2Classifier, read_checkpoint
from tunetext.strategies import apply_strategy

PAD = 0


def _reference(num_labels: int = 3):
    """A random transformers GPT-2 classifier (2 layers, hidden 32, 2 heads) and its config."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=2, n_head=2, num_labels=num_labels,
                        pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return GPT2ForSequenceClassification(config).eval(), config


def _right_padded_batch():
    torch.manual_seed(1)
    ids = torch.randint(1, 100, (4, 12))
    mask = torch.ones_like(ids)
    for row, length in ((1, 7), (2, 3)):  # rows 0 and 3 are full length
        ids[row, length:] = PAD
        mask[row, length:] = 0
    return ids, mask


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_outputs_match_transformers_gpt2(attention):
    reference, config = _reference()
    model = GPT2Classifier(config, attention).eval()
    assert {n: p.shape for n, p in model.named_parameters()} == \
        {n: p.shape for n, p in reference.named_parameters()}
    model.load_state_dict(reference.state_dict(), strict=True)
    ids, mask = _right_padded_batch()
    with torch.no_grad():
        for batch in ({"input_ids": ids}, {"input_ids": ids, "attention_mask": mask}):
            want = reference.transformer(**batch).last_hidden_state
            got = model.transformer(**batch)
            assert (got - want).abs().max() < 1e-5  # every position, pads included
        got = model(input_ids=ids, attention_mask=mask).logits
        want = reference(input_ids=ids, attention_mask=mask).logits
        assert got.shape == (4, 3)
        assert (got - want).abs().max() < 1e-5
        # Right padding changes nothing: a padded row scores as the same text alone, unpadded.
        alone = model(input_ids=ids[2:3, :3], attention_mask=mask[2:3, :3]).logits
        assert (alone - got[2]).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("bf16", [False, True])
def test_an_all_padding_row_gives_finite_outputs_and_gradients(attention, bf16):
    _, config = _reference()
    model = GPT2Classifier(config, attention)
    ids, mask = _right_padded_batch()
    ids[1], mask[1] = PAD, 0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # as training with precision=bf16
        logits = model(input_ids=ids, attention_mask=mask).logits
    logits.float().sum().backward()
    assert torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_loads_hugging_face_gpt2_checkpoints(tiny_gpt2, tmp_path):
    from transformers import GPT2Model

    reference = GPT2Model.from_pretrained(tiny_gpt2).eval()
    ids, mask = _right_padded_batch()
    with torch.no_grad():
        want = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    # The fixture's GPT2LMHeadModel checkpoint, then the same weights the way OpenAI-era checkpoints name
    # them: no `transformer.` prefix, causal-mask buffers, an LM head.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(tiny_gpt2 / "config.json", legacy)
    state = {k.removeprefix("transformer."): v for k, v in load_file(tiny_gpt2 / "model.safetensors").items()}
    state |= {"h.0.attn.bias": torch.ones(1, 1, 128, 128).tril(), "h.0.attn.masked_bias": torch.tensor(-1e4),
              "lm_head.weight": state["wte.weight"].clone()}
    save_file(state, legacy / "model.safetensors")
    for folder in (tiny_gpt2, legacy):
        model = GPT2Classifier.from_pretrained(folder, num_labels=2, pad_token_id=PAD).eval()
        with torch.no_grad():
            assert (model.transformer(ids, mask) - want).abs().max() < 1e-5

    # Weights that are not GPT-2's are an error naming them, not silently skipped.
    save_file({**state, "h.0.attn.q_attn.weight": torch.zeros(32, 32)}, legacy / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected \['transformer.h.0.attn.q_attn.weight'\]"):
        GPT2Classifier.from_pretrained(legacy, num_labels=2)


def test_last_n_recipe_trains_exactly_last_block_final_norm_and_head(tiny_gpt2, tiny_texts):
    model, tokenizer, family = load_classifier(str(tiny_gpt2), ["ham", "spam"], implementation="scratch")
    assert isinstance(model, GPT2Classifier) and family is FAMILIES["gpt2"]
    trainable = apply_strategy(model, family, "last_n", 1)
    expected = {n for n, _ in model.named_parameters()
                if n.startswith(("transformer.h.1.", "transformer.ln_f.")) or n == "score.weight"}
    assert len(expected) == 12 + 2 + 1  # the block's 4 norms and 8 Conv1D tensors, ln_f's 2, score
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)

    batch = tokenizer(tiny_texts[:4], padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([0, 1, 0, 1]))
    loss.backward()
    optimizer.step()
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected
    assert {n for n, p in model.named_parameters() if not torch.equal(p, before[n])} == expected


def test_train_with_scratch_gpt2_then_load_with_transformers(tiny_gpt2, tmp_path, tiny_config, tiny_texts):
    from transformers import GPT2ForSequenceClassification

    from tunetext import Classifier, train

    config = tiny_config(tiny_gpt2, strategy="last_n", epochs=1)
    config.model.implementation = "scratch"
    run = train(config, tmp_path / "run", progress=False)

    assert json.loads((run.run_dir / "config.json").read_text())["architectures"] == \
        ["GPT2ForSequenceClassification"]
    # The saved weights are the fine-tuned ones: the frozen first block as pretrained, the last one moved.
    saved, pretrained = read_checkpoint(run.run_dir), read_checkpoint(tiny_gpt2)
    first, last = "transformer.h.0.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.weight"
    assert torch.equal(saved[first], pretrained[first])
    assert not torch.equal(saved[last], pretrained[last])

    clf = Classifier.load(run.run_dir)  # transformers' AutoModelForSequenceClassification
    assert isinstance(clf.model, GPT2ForSequenceClassification)
    scratch, tokenizer, _ = load_classifier(str(run.run_dir), implementation="scratch")
    assert isinstance(scratch, GPT2Classifier)
    texts = tiny_texts
    want = Classifier(scratch, tokenizer, clf.config, clf.metrics).predict_proba(texts)  # same calibration
    got = clf.predict_proba(texts)
    assert abs(got - want).max() < 1e-5
    assert {p.label for p in clf.predict(texts)} <= {"ham", "spam"}


def test_scratch_implementation_refuses_other_model_types(tiny_bert):
    with pytest.raises(ModelError, match="is a 'bert' model"):
        load_classifier(str(tiny_bert), ["ham", "spam"], implementation="scratch")
