"""Model families: freezing strategies, pad tokens, pooling, and loading errors."""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
import torch

from tunetext.batches import collate, tokenize
from tunetext.models import ModelError, load_classifier, load_tokenizer
from tunetext.strategies import apply_strategy

LABELS = ["ham", "spam"]


def expected_trainable(model, family_name: str, strategy: str, n: int) -> set[str]:
    """The parameters a strategy should train, read off each family's module structure by hand."""
    if strategy == "full":
        return {name for name, _ in model.named_parameters()}
    if family_name == "bert":
        modules = [*model.bert.encoder.layer[-n:], model.bert.pooler, model.classifier]
    else:
        modules = [*model.transformer.h[-n:], model.transformer.ln_f, model.score]
    ids = {id(p) for m in modules for p in m.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def one_step(model, tokenizer, texts: list[str]) -> None:
    batch = collate(tokenize(tokenizer, texts[:8], 64), tokenizer.pad_token_id, [i % 2 for i in range(8)])
    model.train()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.nn.functional.cross_entropy(logits, batch["labels"]).backward()


@pytest.mark.parametrize(("strategy", "n"), [("full", 1), ("last_n", 1), ("last_n", 2)])
@pytest.mark.parametrize("family_name", ["bert", "gpt2"])
def test_exactly_the_intended_parameters_get_gradients(family_name, strategy, n, tiny_bert, tiny_gpt2,
                                                       tiny_texts):
    path = {"bert": tiny_bert, "gpt2": tiny_gpt2}[family_name]
    model, tokenizer, family = load_classifier(str(path), LABELS)
    expected = expected_trainable(model, family_name, strategy, n)
    all_names = {name for name, _ in model.named_parameters()}
    if strategy == "last_n":
        # Sanity of the expectation itself: something frozen (embeddings, first block), head included.
        first_block = "bert.encoder.layer.0." if family_name == "bert" else "transformer.h.0."
        assert any(name.startswith(first_block) for name in all_names - expected) == (n == 1)
        assert not any("embeddings" in name or name.startswith(("transformer.wte", "transformer.wpe"))
                       for name in expected)
        assert any(name.startswith(("classifier.", "score.")) for name in expected)

    trainable = apply_strategy(model, family, strategy, n)
    one_step(model, tokenizer, tiny_texts)

    with_grad = {name for name, p in model.named_parameters()
                 if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == expected
    for name, p in model.named_parameters():
        if name not in expected:
            assert p.grad is None and not p.requires_grad, name
    assert trainable == sum(p.numel() for name, p in model.named_parameters() if name in expected)


def test_tiny_tokenizers_know_the_tiny_words(tiny_model, tiny_texts):
    """Guards the fixtures: a tokenizer that maps words to unknown gives a model nothing to learn from."""
    tokenizer = load_tokenizer(str(tiny_model))
    for ids in tokenize(tokenizer, tiny_texts, 64):
        assert tokenizer.unk_token_id not in ids
        assert len(set(ids)) > 3


def test_last_n_larger_than_the_model_is_an_error(tiny_model):
    model, _, family = load_classifier(str(tiny_model), LABELS)
    with pytest.raises(ModelError, match=r"last_n=3 but the model has only 2 blocks"):
        apply_strategy(model, family, "last_n", 3)
    apply_strategy(model, family, "last_n", 2)  # all blocks is fine


def test_gpt2_gets_eos_as_pad_token_in_tokenizer_and_config(tiny_gpt2):
    model, tokenizer, family = load_classifier(str(tiny_gpt2), LABELS)
    assert family.kind == "decoder"
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.eos_token_id
    assert tokenizer.padding_side == "right"
    assert model.config.id2label == {0: "ham", 1: "spam"}


def test_bert_keeps_its_own_pad_token(tiny_bert):
    model, tokenizer, family = load_classifier(str(tiny_bert), LABELS)
    assert family.kind == "encoder"
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == 0
    assert model.config.pad_token_id == 0


def test_padded_batch_gives_the_logits_of_each_text_alone(tiny_model):
    """Decoders pool the last non-pad token and encoders mask padding, so right padding changes nothing."""
    model, tokenizer, family = load_classifier(str(tiny_model), LABELS)
    model.eval()
    texts = ["hi", "Congratulations you won 1000 pounds, txt CLAIM to 85991 now", "see you at 6"]
    ids = tokenize(tokenizer, texts, 64)
    assert len({len(x) for x in ids}) == 3  # really padded
    batch = collate(ids, tokenizer.pad_token_id)
    with torch.no_grad():
        together = model(**batch).logits
        alone = torch.cat([model(input_ids=torch.tensor([x])).logits for x in ids])
        # Control: pooling what the padding gives (a decoder's last position, an encoder attending to
        # pads) changes the logits, so the equality above is not trivial.
        if family.kind == "decoder":
            model.config.pad_token_id = None  # transformers then pools the last position
            wrong = model(input_ids=batch["input_ids"][:1]).logits
        else:
            wrong = model(input_ids=batch["input_ids"][:1]).logits  # no attention mask
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(wrong, alone[:1], atol=1e-4)


@pytest.fixture
def transformers_output(capfd):
    """transformers' log at its default verbosity, WARNING, written where `capfd` reads: an earlier test
    (the CLI's) may have silenced it, and its handler writes to the `sys.stderr` of when transformers was
    first imported, which may be an earlier test's capture."""
    import transformers

    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_warning()
    handlers = [h for h in logging.getLogger("transformers").handlers if type(h) is logging.StreamHandler]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.setStream(sys.stderr)
    yield capfd
    for handler, stream in zip(handlers, streams, strict=True):
        handler.setStream(stream)
    transformers.logging.set_verbosity(before)


def test_loading_from_python_prints_no_load_report(tiny_model, transformers_output, caplog):
    """transformers reports a new head's weights as MISSING in a "LOAD REPORT" table; the CLI silences the
    library, and the Python API is as quiet. A fresh head for the given labels is expected: DEBUG only."""
    transformers_output.readouterr()
    with caplog.at_level(logging.DEBUG, logger="tunetext"):
        model, _, _ = load_classifier(str(tiny_model), LABELS)
    out, err = transformers_output.readouterr()
    assert "LOAD REPORT" not in out + err + caplog.text and "MISSING" not in out + err
    head = "classifier.weight" if model.config.model_type == "bert" else "score.weight"
    notes = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "tunetext.models.loading"]
    assert len(notes) == 1 and notes[0][0] == logging.DEBUG and head in notes[0][1]


def test_weights_missing_outside_the_head_are_a_warning(tiny_bert, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_bert, tmp_path / "damaged")
    weights = tmp_path / "damaged" / "model.safetensors"
    state = load_file(weights)
    lost = next(k for k in state if "layer.1.output.dense.weight" in k)
    save_file({k: v for k, v in state.items() if k != lost}, weights, metadata={"format": "pt"})
    with caplog.at_level(logging.DEBUG, logger="tunetext"):
        load_classifier(str(tmp_path / "damaged"), LABELS)
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "tunetext.models.loading" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "encoder.layer.1.output.dense.weight" in warnings[0]
    assert "classifier" not in warnings[0]  # the new head is expected; it is named only at DEBUG


def test_a_load_that_fails_keeps_the_report_its_error_points_to(tiny_bert, tmp_path, transformers_output):
    model, tokenizer, _ = load_classifier(str(tiny_bert), LABELS)
    model.save_pretrained(tmp_path / "run")
    tokenizer.save_pretrained(tmp_path / "run")
    transformers_output.readouterr()
    with pytest.raises(RuntimeError, match="look at the above report"):  # a 2-label head for 3 labels
        load_classifier(str(tmp_path / "run"), ["a", "b", "c"])
    assert "LOAD REPORT" in transformers_output.readouterr().err


def test_unknown_catalogue_name_is_a_clear_error():
    with pytest.raises(ModelError) as info:
        load_classifier("minilm-l99", LABELS)
    message = str(info.value)
    assert "'minilm-l99'" in message and "not in the catalogue" in message and "minilm-l6" in message


@pytest.mark.parametrize("name", ["/no/such/model/folder", "./no-such-folder", "~/no-such-folder-tt"])
def test_missing_model_folder_is_a_clear_error(name):
    with pytest.raises(ModelError, match="does not exist"):
        load_classifier(name, LABELS)


def test_folder_without_config_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json"):
        load_classifier(str(tmp_path), LABELS)


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    from transformers import T5Config

    T5Config(d_model=8, num_layers=1, num_heads=1, d_kv=8, d_ff=8, vocab_size=16).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as info:
        load_classifier(str(tmp_path), LABELS)
    assert "'t5'" in str(info.value) and "bert" in str(info.value) and "gpt2" in str(info.value)
