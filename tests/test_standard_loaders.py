"""The run folder answers the same everywhere: a single-label run's calibration temperature is folded
into its saved head, and its truncation length is in the tokenizer's config, so that
`transformers.pipeline` on the folder gives `Classifier.predict`'s labels and probabilities; runs saved
before folding still have their temperature applied by tunetext."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunetext import Classifier, load_config, train
from tunetext.evaluate import evaluate
from tunetext.models import FAMILIES, family_of, fold_temperature, load_classifier
from tunetext.runs import _task_note
from tunetext.strategies import wrap_peft

ev = importlib.import_module("tunetext.evaluate")  # the module; `tunetext.evaluate` is the function
LABELS = ["ham", "spam"]
TEMPERATURE = 2.5
TEXTS = ["Ok see you at 8:30 then", "Congratulations you won 1000 pounds, txt CLAIM to 85991",
         "Thanks for coffee yesterday, it was lovely", "WINNER! You have won a 500 prize, call 89551 now"]
# Past the runs' model.max_length (64 tokens), within the tiny BERT's 128 positions: cut at 64 by tunetext and
# by pipeline(truncation=True), read whole by pipeline without it.
LONG = " ".join(["WINNER! You have won a 500 prize, call 89551 now"] * 4
                + ["Thanks for coffee yesterday, it was lovely"] * 5)


def _logits(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """The model's logits for `texts`, one at a time (no padding to reason about)."""
    with torch.no_grad():
        return torch.cat([model(**tokenizer(t, return_tensors="pt")).logits for t in texts])


def _head_randomised(model, seed: int = 0) -> None:
    """Every head weight drawn large, so logits are far from 0 and a missed or doubled fold shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if any(part in name for part in ("classifier", "score")):
                param.normal_(0, 3.0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_folding_divides_every_familys_logits_by_the_temperature(name, tiny_family):
    """softmax(z / T) of the model as trained equals the softmax of the folded model, for every family
    (heads with a bias and without: GPT-2 and Llama's `score` has none)."""
    model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    model.eval()
    _head_randomised(model)
    before = _logits(model, tokenizer, TEXTS)
    fold_temperature(model, family, TEMPERATURE)
    after = _logits(model, tokenizer, TEXTS)
    assert before.abs().max() > 0.5  # a fold that did nothing would fail below
    torch.testing.assert_close(after, before / TEMPERATURE, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(after.softmax(-1), (before / TEMPERATURE).softmax(-1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["bert", "roberta", "gpt2"])
def test_folding_reaches_the_trained_head_copy_of_a_peft_model(name, tiny_family):
    """Under peft the head runs (and is saved) as its trained copy in `modules_to_save`: that copy is the
    one divided, and the wrapped model's logits are divided by T."""
    model, tokenizer, family = load_classifier(str(tiny_family(name)), LABELS)
    settings = SimpleNamespace(strategy="lora", lora_r=4, lora_alpha=8, lora_dropout=0.0)
    wrapped = wrap_peft(model, family, settings).eval()
    _head_randomised(wrapped)
    before = _logits(wrapped, tokenizer, TEXTS)
    fold_temperature(wrapped, family, TEMPERATURE)
    torch.testing.assert_close(_logits(wrapped, tokenizer, TEXTS), before / TEMPERATURE, rtol=1e-5, atol=1e-6)


@pytest.fixture
def kept_temperature(monkeypatch):
    """Training keeps a temperature of `TEMPERATURE` whatever it fits: the tiny data is too small for the
    fit to be kept reliably, and these tests need one that is. Only the choice is replaced; scoring,
    folding and saving run as they do."""
    def choose(log_probs, labels, label_names):
        return {"temperature": TEMPERATURE, "fitted_temperature": TEMPERATURE, "kept": True,
                "val_ece_fitted": 0.0, "val_ece_uncalibrated": 0.0}

    monkeypatch.setattr(ev, "choose_temperature", choose)


def _train(tmp_path: Path, tiny_config, model: Path, **settings) -> Path:
    """A tiny BERT run trained long enough to learn the tiny data (answers far from 0.5, where a missing
    or doubled temperature shows), as conftest's `learned_bert_run`."""
    out = tmp_path / "run"
    train(tiny_config(model, **{"epochs": 10, "learning_rate": 3e-3, **settings}), out, progress=False)
    return out


def _pipeline_probabilities(run_dir: Path, texts: list[str]) -> list[dict[str, float]]:
    classify = transformers.pipeline("text-classification", model=str(run_dir), top_k=None, truncation=True,
                                     device="cpu")
    return [{d["label"]: d["score"] for d in answer} for answer in classify(texts)]


def test_pipeline_gives_classifier_labels_and_probabilities(tmp_path, tiny_config, tiny_bert,
                                                             kept_temperature):
    run_dir = _train(tmp_path, tiny_config, tiny_bert)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["calibration"]["folded"] is True and metrics["calibration"]["temperature"] == TEMPERATURE
    tokenizer_config = json.loads((run_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["model_max_length"] == 64

    clf = Classifier.load(run_dir)
    assert (clf.temperature, clf.folded_temperature) == (1.0, TEMPERATURE)
    texts = [*TEXTS, LONG]
    ours = clf.predict(texts)
    assert ours[-1].truncated and not any(p.truncated for p in ours[:-1])
    # The fold has teeth: the model as trained (logits T times these) answers every text otherwise.
    probs = np.array([[p.probabilities[name] for name in LABELS] for p in ours])
    unscaled = np.exp(TEMPERATURE * np.log(probs))
    assert (np.abs(unscaled / unscaled.sum(1, keepdims=True) - probs).max(1) > 1e-3).all()
    theirs = _pipeline_probabilities(run_dir, texts)
    for p, q in zip(ours, theirs, strict=True):
        assert max(q, key=q.__getitem__) == p.label
        np.testing.assert_allclose([q[name] for name in LABELS], [p.probabilities[name] for name in LABELS],
                                   rtol=0, atol=1e-5)
    # The long text matters: uncut (pipeline without truncation=True), the model answers it otherwise.
    whole = transformers.pipeline("text-classification", model=str(run_dir), top_k=None, device="cpu")
    uncut = whole([LONG])[0]
    assert abs({d["label"]: d["score"] for d in uncut}["spam"] - ours[-1].probabilities["spam"]) > 1e-3, uncut

    # The README says what was folded, and what other loaders need.
    readme = (run_dir / "README.md").read_text()
    assert "folded into the classification head" in readme and "truncation=True" in readme
    assert "model.max_length` (64)" in readme

    # evaluate() takes the temperature back out of the scores: the same numbers as training recorded.
    again = evaluate(run_dir, progress=False)
    for key in ("accuracy", "macro_f1", "temperature"):
        assert again[key] == metrics["test"][key], key
    for key in ("log_loss", "ece", "ece_uncalibrated"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-5), key
    assert again["ece_uncalibrated"] != pytest.approx(again["ece"], abs=1e-6)  # T=2.5 changes the bins


def test_a_run_saved_before_folding_still_has_its_temperature_applied(tmp_path, tiny_config, tiny_bert,
                                                                       kept_temperature):
    """An old-style run: the head as trained, `calibration` without `folded`. Classifier applies the
    metrics' temperature, and answers as the folded run does."""
    run_dir = _train(tmp_path, tiny_config, tiny_bert)
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    model = AutoModelForSequenceClassification.from_pretrained(old)
    fold_temperature(model, family_of(model.config), 1 / TEMPERATURE)  # the head as it was trained
    model.save_pretrained(old)
    metrics = json.loads((old / "metrics.json").read_text())
    del metrics["calibration"]["folded"]
    (old / "metrics.json").write_text(json.dumps(metrics))

    old_clf, new_clf = Classifier.load(old), Classifier.load(run_dir)
    assert (old_clf.temperature, old_clf.folded_temperature) == (TEMPERATURE, 1.0)
    texts = [*TEXTS, LONG]
    np.testing.assert_allclose(old_clf.predict_proba(texts), new_clf.predict_proba(texts), rtol=0, atol=1e-5)
    raw = _logits(old_clf.model, AutoTokenizer.from_pretrained(old), TEXTS)
    np.testing.assert_allclose(old_clf.predict_proba(TEXTS), (raw / TEMPERATURE).softmax(-1).numpy(),
                               rtol=0, atol=1e-5)
    for key in ("log_loss", "ece", "ece_uncalibrated", "temperature"):
        assert evaluate(old, progress=False)[key] == pytest.approx(metrics["test"][key], abs=1e-5), key


def test_an_adapter_run_folds_into_its_saved_head(tmp_path, tiny_config, tiny_bert, kept_temperature):
    """lora kept as an adapter (lora_merge=false): the head saved with the adapter is the folded one;
    Classifier applies no temperature again and evaluates to the numbers training recorded."""
    run_dir = _train(tmp_path, tiny_config, tiny_bert, strategy="lora", lora_merge=False)
    assert (run_dir / "adapter_config.json").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["calibration"]["folded"] is True
    clf = Classifier.load(run_dir)
    assert (clf.temperature, clf.folded_temperature) == (1.0, TEMPERATURE)
    again = evaluate(run_dir, progress=False)
    for key in ("log_loss", "ece", "ece_uncalibrated"):
        assert again[key] == pytest.approx(metrics["test"][key], abs=1e-5), key


def test_a_regression_run_folds_nothing(tmp_path, tiny_config, tiny_bert, tiny_csv, kept_temperature):
    """Only single-label runs have a temperature: a regression run's head is saved as trained."""
    rows = tiny_csv.read_text().splitlines()[1:]
    data = tmp_path / "reg.csv"
    data.write_text("text,score\n" + "".join(f"{r.rsplit(',', 1)[0]},{len(r) % 7}.5\n" for r in rows))
    config = tiny_config(tiny_bert, epochs=1)
    config = config.model_copy(update={"data": config.data.model_copy(update={"source": str(data),
                                                                            "label_column": "score",
                                                                            "task": "regression"})})
    run = train(config, tmp_path / "run", progress=False)
    assert run.metrics["task"]["type"] == "regression"
    assert "folded" not in run.metrics["calibration"]
    clf = Classifier.load(run.run_dir)
    assert (clf.temperature, clf.folded_temperature) == (1.0, 1.0)
    assert "folded" not in (run.run_dir / "README.md").read_text()


def test_the_readme_names_what_only_tunetext_does_to_a_text():
    """The run's README says which of its steps other loaders skip: only those the run's config turns on."""
    plain = load_config(overrides={"data.source": "x.csv", "model.max_length": 96,
                                   "data.long_text": "truncate"})
    note = _task_note({"type": "single_label"}, {"folded": True}, plain)
    assert "`model.max_length` (96)" in note and "normalise its whitespace." in note
    assert "template" not in note and "long_text" not in note and "clean it" not in note
    dressed = load_config(overrides={"data.source": "x.csv", "data.template": "Review: {text}",
                                     "data.long_text": "chunks", "data.strip_urls": True})
    note = _task_note({"type": "single_label"}, {"folded": True}, dressed)
    assert "clean it as `data`" in note and "`data.template`" in note and "`data.long_text=chunks`" in note
    assert _task_note({"type": "single_label"}, {"temperature": 2.0}, plain) == ""  # not folded: no claim
