"""`model.init_from`: a new run starts from a finished run's weights, its head mapped onto the new data's
labels (shared rows copied, new rows fresh, the parent's missing labels kept or dropped), and records its
parent. The parent here is the tiny BERT's `trained_run` (labels ham, spam); the new data keeps `ham`,
renames `spam` to `offer`: one shared label, one new, one the data lacks."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch

from tunetext import Classifier, load_config, train
from tunetext.cli import commands as handlers
from tunetext.cli import main
from tunetext.config import ConfigError, ModelConfig
from tunetext.data import load_dataset
from tunetext.models import (
    FAMILIES,
    ModelError,
    head_linear,
    load_classifier,
    load_parent,
    plan_parent,
    remap_head,
    with_parent_model,
)
from tunetext.runs import DATA, MARKER, RunError, check_output


@pytest.fixture(scope="module")
def offer_csv(tmp_path_factory, tiny_csv) -> Path:
    """The tiny data with `spam` renamed `offer`."""
    path = tmp_path_factory.mktemp("offer") / "offer.csv"
    with open(tiny_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": "offer" if r["label"] == "spam" else r["label"]}
                         for r in rows)
    return path


def _head(model, model_type: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    linear = head_linear(model, FAMILIES[model_type])
    return linear.weight.detach().clone(), None if linear.bias is None else linear.bias.detach().clone()


def _parent_head(run_dir: Path, model_type: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A finished run's head as trained: the saved one times the temperature folded into it
    (`calibration.folded`), which `load_parent` takes out again."""
    w, b = _head(load_classifier(str(run_dir))[0], model_type)
    t = Classifier.load(run_dir).folded_temperature
    return w * t, None if b is None else b * t


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the rounding of dividing by the folded temperature and multiplying back."""
    return torch.allclose(a, b, rtol=1e-6, atol=1e-7)


def test_keep_carries_every_parent_row_and_adds_a_fresh_one(trained_run):
    parent_model, _, _ = load_classifier(str(trained_run))
    old_w, old_b = _parent_head(trained_run, "bert")
    parent = plan_parent(ModelConfig(init_from=str(trained_run)), ["ham", "offer"])
    assert (parent.labels, parent.kept, parent.dropped, parent.new) == (
        ["ham", "spam", "offer"], ["spam"], [], ["offer"])

    model, _, _ = load_parent(parent, ModelConfig(init_from=str(trained_run)))
    w, b = _head(model, "bert")
    assert w.shape == (3, old_w.shape[1]) and b is not None and old_b is not None
    assert _same(w[:2], old_w) and _same(b[:2], old_b)  # ham and spam, before any step
    assert b[2] == 0 and not any(torch.allclose(w[2], row) for row in old_w)  # offer: a fresh row
    assert 0.005 < w[2].std().item() < 0.05  # normal(0, initializer_range = 0.02)
    assert model.config.num_labels == 3 and model.num_labels == 3
    assert model.config.id2label == {0: "ham", 1: "spam", 2: "offer"}
    assert model.config.label2id == {"ham": 0, "spam": 1, "offer": 2}
    body = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(model.state_dict()[body], parent_model.state_dict()[body])
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[2, 7, 3]])).logits.shape == (1, 3)


def test_drop_removes_the_missing_labels_row(trained_run):
    old_w, _ = _parent_head(trained_run, "bert")
    config = ModelConfig(init_from=str(trained_run), init_labels="drop")
    parent = plan_parent(config, ["offer", "ham"])
    assert (parent.labels, parent.kept, parent.dropped, parent.new) == (["ham", "offer"], [], ["spam"],
                                                                        ["offer"])
    model, _, _ = load_parent(parent, config)
    w, _ = _head(model, "bert")
    assert w.shape[0] == 2 and _same(w[0], old_w[0]) and not torch.allclose(w[1], old_w[1])
    assert model.config.id2label == {0: "ham", 1: "offer"}


def test_a_trained_run_names_its_parent_and_keeps_its_labels(tmp_path, trained_run, offer_csv, tiny_config,
                                                             tiny_bert, caplog):
    config = tiny_config(tiny_bert, epochs=1).model_copy(deep=True)
    config.data.source = str(offer_csv)
    config.model.init_from = str(trained_run)
    with caplog.at_level(logging.INFO, logger="tunetext"):
        run = train(config, tmp_path / "child", progress=False)
    assert f"init from {trained_run}: 2 labels carried over (1 not in the data, kept: spam), 1 new " \
           "(offer), 0 dropped" in caplog.text
    assert run.label_names == ["ham", "spam", "offer"]
    info = json.loads((run.run_dir / MARKER).read_text())
    assert info["parent"] == {"run_dir": str(trained_run), "model": str(tiny_bert),
                              "label_names": ["ham", "spam"], "carried": ["ham", "spam"], "kept": ["spam"],
                              "dropped": [], "new": ["offer"]}
    clf = Classifier.load(run.run_dir)
    assert clf.label_names == ["ham", "spam", "offer"] and clf.config.model.name == str(tiny_bert)
    # `evaluate` prepares the run's data again with its labels: the same test split as training used
    data = json.loads((run.run_dir / DATA).read_text())
    again = load_dataset(clf.config.data, label_names=clf.label_names)
    assert again.test.fingerprint() == data["test"]["sha256"]
    assert data["train"]["label_counts"]["spam"] == 0 and data["train"]["label_counts"]["offer"] > 0


def test_a_decoder_parent_maps_its_score_rows(tmp_path, tiny_gpt2, tiny_csv, offer_csv, tiny_config):
    parent_dir = tmp_path / "gpt2-parent"
    train(tiny_config(tiny_gpt2, epochs=1), parent_dir, progress=False)
    old_w, _ = _parent_head(parent_dir, "gpt2")
    config = tiny_config(tiny_gpt2, epochs=1).model_copy(deep=True)
    config.data.source = str(offer_csv)
    config.model.init_from, config.model.init_labels = str(parent_dir), "drop"
    parent = plan_parent(config.model, ["ham", "offer"])
    w, b = _head(load_parent(parent, config.model)[0], "gpt2")
    assert b is None and w.shape[0] == 2 and _same(w[0], old_w[0])  # GPT-2's score has no bias
    scratch = config.model.model_copy(update={"implementation": "scratch"})  # tunetext's own GPT-2
    w, _ = _head(load_parent(parent, scratch)[0], "gpt2")
    assert w.shape[0] == 2 and _same(w[0], old_w[0])
    run = train(config, tmp_path / "gpt2-child", progress=False)
    assert Classifier.load(run.run_dir).label_names == ["ham", "offer"]
    assert json.loads((run.run_dir / MARKER).read_text())["parent"]["dropped"] == ["spam"]


def test_a_lora_adapter_parent_is_merged(tmp_path, tiny_bert, tiny_config):
    parent_dir = tmp_path / "lora-parent"
    train(tiny_config(tiny_bert, epochs=1, strategy="lora", lora_merge=False), parent_dir, progress=False)
    config = ModelConfig(init_from=str(parent_dir))
    model, tokenizer, _ = load_parent(plan_parent(config, ["ham", "spam"]), config)
    reference = Classifier.load(parent_dir)
    ids = torch.tensor([tokenizer("see you at 8")["input_ids"]])
    with torch.no_grad():
        as_trained = reference.model(input_ids=ids).logits * reference.folded_temperature
        assert torch.allclose(model.eval()(input_ids=ids).logits, as_trained, atol=1e-5)
    assert not hasattr(model, "peft_config")  # a plain model: saved whole, as init_from's runs must be


def test_model_name_is_taken_from_the_parent(trained_run, tiny_bert, tiny_gpt2):
    resolved = with_parent_model(load_config(overrides={"model.init_from": str(trained_run)}))
    assert resolved.model.name == str(tiny_bert)
    with pytest.raises(ModelError, match=r"fine-tuned from .*tiny-bert.* \(a bert model\).*Leave model.name"):
        with_parent_model(load_config(overrides={"model.init_from": str(trained_run),
                                                 "model.name": str(tiny_gpt2)}))


def test_a_bad_parent_is_a_clear_error(tmp_path, trained_run):
    with pytest.raises(RunError, match="model.init_from: .*missing is not a directory"):
        with_parent_model(load_config(overrides={"model.init_from": str(tmp_path / "missing")}))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / ".tunetext-run").write_text("")
    with pytest.raises(RunError, match="not a finished tunetext run"):
        plan_parent(ModelConfig(init_from=str(unfinished)), ["ham", "spam"])
    with pytest.raises(ModelError, match=r"--init-from"):  # a run as model.name, with other labels
        load_classifier(str(trained_run), ["ham", "offer"])


def test_the_schema_checks_what_it_can(tmp_path):
    with pytest.raises(ConfigError, match="init_labels=drop .* init_from is not set"):
        load_config(overrides={"model.init_labels": "drop"})
    with pytest.raises(ConfigError, match="prompt_tuning saves only an adapter"):
        load_config(overrides={"model.init_from": "runs/a", "train.strategy": "prompt_tuning"})
    with pytest.raises(ConfigError, match="lora with lora_merge=false"):
        load_config(overrides={"model.init_from": "runs/a", "train.strategy": "lora",
                               "train.lora_merge": False})
    with pytest.raises(ConfigError, match="model.init_from"):
        load_config(overrides={"model.init_from": ""})


def test_resuming_a_finished_run_points_at_init_from(trained_run):
    with pytest.raises(RunError, match=f"finished run.*--init-from {trained_run}"):
        check_output(trained_run, resume=True, overwrite=False)


def test_the_cli_options_map_to_the_config(monkeypatch, tmp_path, trained_run):
    seen = {}

    def record(config, *args, **kwargs):
        seen["config"] = config
        raise SystemExit(0)

    monkeypatch.setattr(handlers, "train", record)
    with pytest.raises(SystemExit):
        main(["train", "--init-from", str(trained_run), "--init-labels", "drop", "--output", str(tmp_path)])
    assert (seen["config"].model.init_from, seen["config"].model.init_labels) == (str(trained_run), "drop")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_maps_its_head_where_the_family_table_says(name, tiny_family):
    """The head's final linear layer is BERT's `classifier`, RoBERTa's `classifier.out_proj`, GPT-2's
    `score`, ...: `remap_head` finds it through the family table, so every family maps its rows."""
    model, tokenizer, family = load_classifier(str(tiny_family(name)), ["a", "b", "c"])
    old_w, old_b = _head(model, name)
    remap_head(model, family, ["a", "b", "c"], ["c", "a", "d"])
    w, b = _head(model, name)
    assert torch.equal(w[0], old_w[2]) and torch.equal(w[1], old_w[0]) and w.shape[0] == 3
    if b is not None:
        assert old_b is not None and b[0] == old_b[2] and b[2] == 0
    ids = torch.tensor([tokenizer("see you at 8")["input_ids"]])
    with torch.no_grad():
        assert model.eval()(input_ids=ids).logits.shape == (1, 3)
    assert model.config.id2label == {0: "c", 1: "a", 2: "d"}
