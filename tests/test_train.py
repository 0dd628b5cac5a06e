"""End to end with tiny models: train -> run directory -> evaluate -> load -> predict; output-directory
safety; interrupt and resume; class weights; gradient accumulation."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tunetext
from tunetext import Classifier, TrainingInterrupted, adaptive, load_config, runs, train
from tunetext.data import load_dataset
from tunetext.errors import UsageError
from tunetext.runs import RunError, has_checkpoint, is_finished

train_module = importlib.import_module("tunetext.train")  # `tunetext.train` is also the function

# Enough steps for the tiny random models to learn the tiny data: measured with these seeds, test
# accuracy 1.0 (BERT) and 0.82 (GPT-2) on the 11 test texts, from 0.45 and 0.27 before fine-tuning.
LEARN = {"epochs": 10, "learning_rate": 3e-3}


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def learned_run(request, tmp_path_factory, tiny_bert, tiny_gpt2, tiny_config):
    model = {"bert": tiny_bert, "gpt2": tiny_gpt2}[request.param]
    config = tiny_config(model, **LEARN)
    out = tmp_path_factory.mktemp("learned") / request.param
    run = train(config, out, progress=False)
    return run, config


def test_run_directory_is_complete(learned_run):
    run, config = learned_run
    out = run.run_dir
    assert is_finished(out) and not has_checkpoint(out) and not (out / "checkpoint").exists()
    assert (out / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt"))
    hf_config = json.loads((out / "config.json").read_text())
    assert hf_config["id2label"] == {"0": "ham", "1": "spam"}
    assert hf_config["label2id"] == {"ham": 0, "spam": 1}
    assert adaptive.same_run(load_config(out / "tunetext.yaml"), config)

    metrics = json.loads((out / "metrics.json").read_text())
    for part in (metrics["val"], metrics["test"], metrics["before_finetune"]["val"],
                 metrics["before_finetune"]["test"]):
        assert 0 <= part["accuracy"] <= 1 and 0 <= part["macro_f1"] <= 1
    assert metrics["test"]["n"] == 11 and metrics["val"]["n"] == 5
    steps = metrics["training"]["steps"]
    assert steps == 5 * LEARN["epochs"]  # 36 training texts in batches of 8

    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train_lines = [e for e in log if e["event"] == "train"]
    evals = [e for e in log if e["event"] == "eval"]
    assert [e["step"] for e in train_lines] == sorted(e["step"] for e in train_lines)
    assert train_lines[-1]["step"] == steps
    assert train_lines[-1]["lr"] == 0.0  # the linear schedule ends exactly at the last step
    assert all(e["loss"] > 0 for e in train_lines)
    assert [e["epoch"] for e in evals] == list(range(1, LEARN["epochs"] + 1))

    data = json.loads((out / "data.json").read_text())
    dataset = load_dataset(config.data)
    assert data["label_names"] == ["ham", "spam"]
    for name, split in dataset.splits().items():
        assert data[name]["sha256"] == split.fingerprint()
        assert data[name]["size"] == len(split)
    assert sum(data[name]["size"] for name in ("train", "val", "test")) == 52

    info = json.loads((out / "run.json").read_text())
    assert info["label_names"] == ["ham", "spam"]
    assert info["tunetext_version"] == tunetext.__version__
    assert str(out) in (out / "README.md").read_text()


def test_tiny_model_learns_the_tiny_data(learned_run):
    run, _ = learned_run
    test, before = run.metrics["test"], run.metrics["before_finetune"]["test"]
    assert test["accuracy"] >= 0.8, test
    assert test["accuracy"] > before["accuracy"] + 0.2
    assert run.metrics["val"]["accuracy"] == 1.0


def test_evaluate_reproduces_the_test_scores(learned_run):
    run, _ = learned_run
    stored = json.loads((run.run_dir / "metrics.json").read_text())["test"]
    again = tunetext.evaluate(run.run_dir)
    assert again["split"] == "test"
    assert again["confusion_matrix"] == stored["confusion_matrix"]
    for key in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall"):
        assert again[key] == pytest.approx(stored[key], abs=1e-12), key


def test_bad_arguments_to_evaluate_and_predict_are_usage_errors(learned_run):
    run, _ = learned_run
    with pytest.raises(UsageError, match="split must be train, val, test or all; got 'dev'"):
        tunetext.evaluate(run.run_dir, split="dev")
    with pytest.raises(UsageError, match=r"position\(s\) 1$"):
        Classifier.load(run.run_dir).predict_proba(["ok", " "])


def test_classifier_predicts_label_names_and_batching_changes_nothing(learned_run, tiny_texts):
    run, _ = learned_run
    clf = Classifier.load(run.run_dir)
    assert clf.label_names == ["ham", "spam"]
    texts = tiny_texts[:13] + ["WINNER! claim your prize now", "ok"]
    one_batch = clf.predict(texts, batch_size=64)
    small_batches = clf.predict(texts, batch_size=2)
    alone = [clf.predict(t) for t in texts]
    assert clf.predict([]) == []
    for p, q, r in zip(one_batch, small_batches, alone, strict=True):
        assert p.label in ("ham", "spam")
        assert set(p.probabilities) == {"ham", "spam"}
        assert sum(p.probabilities.values()) == pytest.approx(1, abs=1e-6)
        assert p.score == p.probabilities[p.label] == max(p.probabilities.values())
        assert p.label == q.label == r.label
        for name in ("ham", "spam"):
            assert p.probabilities[name] == pytest.approx(q.probabilities[name], abs=1e-5)
            assert p.probabilities[name] == pytest.approx(r.probabilities[name], abs=1e-5)


def test_predictions_agree_with_the_test_accuracy(learned_run):
    run, config = learned_run
    test = load_dataset(config.data).test
    preds = Classifier.load(run.run_dir).predict(test.texts)
    names = ["ham", "spam"]
    correct = sum(p.label == names[y] for p, y in zip(preds, test.labels, strict=True))
    assert correct / len(test) == pytest.approx(run.metrics["test"]["accuracy"])


# --- output directory safety --------------------------------------------------------------------------


def test_finished_run_is_not_overwritten_without_asking(trained_run, tiny_bert, tiny_config):
    before = (trained_run / "model.safetensors").read_bytes()
    with pytest.raises(RunError, match="finished run.*--overwrite"):
        train(tiny_config(tiny_bert), trained_run, progress=False)
    assert is_finished(trained_run)
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_foreign_non_empty_directory_is_refused(tmp_path, tiny_bert, tiny_config):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(RunError, match="not a tunetext run"):
        train(tiny_config(tiny_bert), tmp_path, progress=False)
    with pytest.raises(RunError, match="not a tunetext run"):
        train(tiny_config(tiny_bert), tmp_path, overwrite=True, progress=False)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_resume_without_checkpoint_is_refused(tmp_path, tiny_bert, tiny_config):
    with pytest.raises(RunError, match="no checkpoint"):
        train(tiny_config(tiny_bert), tmp_path / "new", resume=True, progress=False)


# --- interrupt and resume -----------------------------------------------------------------------------


def test_interrupt_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_bert, monkeypatch, interrupt_after,
                                                           tiny_config):
    config = tiny_config(tiny_bert)  # fp32: 3 epochs of 5 steps, dropout on
    reference = train(config, tmp_path / "straight", progress=False)

    out = tmp_path / "interrupted"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 7)  # mid-way through the second epoch
        with pytest.raises(TrainingInterrupted) as info:
            train(config, out, progress=False)
    assert "--resume" in str(info.value)
    assert has_checkpoint(out) and not is_finished(out)
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=False)
    assert (state["step"], state["epoch"], state["batch"]) == (7, 1, 2)

    with pytest.raises(RunError, match="unfinished|not a finished") as load_info:
        Classifier.load(out)
    assert "interrupted" in str(load_info.value) and "--resume" in str(load_info.value)
    with pytest.raises(RunError, match="interrupted run"):
        train(config, out, progress=False)  # neither resume nor overwrite
    with pytest.raises(RunError, match="different configuration"):
        train(tiny_config(tiny_bert, learning_rate=5e-4), out, resume=True, progress=False)

    resumed = train(config, out, resume=True, progress=False)
    assert is_finished(out) and not has_checkpoint(out)
    assert resumed.metrics["training"]["steps"] == reference.metrics["training"]["steps"] == 15
    # The defaults' choices, made when the run started, survive the interruption.
    assert resumed.metrics["training"]["choices"] == reference.metrics["training"]["choices"] != []
    got, want = load_file(out / "model.safetensors"), load_file(reference.run_dir / "model.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    assert resumed.metrics["test"]["confusion_matrix"] == reference.metrics["test"]["confusion_matrix"]
    assert resumed.metrics["before_finetune"] == reference.metrics["before_finetune"]
    evals = [e for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())
             if e["event"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2, 3]  # no evaluation lost or repeated


def test_unfinished_directory_without_checkpoint_cannot_be_loaded(tmp_path, tiny_bert, tiny_config):
    out = tmp_path / "crashed"
    out.mkdir()
    (out / "tunetext.yaml").write_text("train:\n  epochs: 1\n")  # a run that died before its first step
    (out / runs.OWNER).write_text("")
    with pytest.raises(RunError, match=r"not a finished tunetext run \(no run.json\)"):
        Classifier.load(out)
    with pytest.raises(RunError, match="unfinished run.*--overwrite"):
        train(tiny_config(tiny_bert), out, progress=False)


# --- class weights, gradient accumulation -------------------------------------------------------------


def test_balanced_class_weights_are_the_inverse_class_frequencies(tmp_path, tiny_bert, monkeypatch,
                                                                  tiny_config):
    from sklearn.utils.class_weight import compute_class_weight

    seen = []
    real = torch.nn.CrossEntropyLoss

    def spy(*args, weight=None, **kwargs):
        seen.append(weight)
        return real(*args, weight=weight, **kwargs)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", spy)
    out = tmp_path / "weighted"
    out.mkdir()
    (out / "tunetext.yaml").write_text("train:\n  epochs: 1\n")  # an earlier unfinished run, replaced
    (out / runs.OWNER).write_text("")
    config = tiny_config(tiny_bert, class_weights="balanced", epochs=1)
    run = train(config, out, overwrite=True, progress=False)
    assert is_finished(out) and adaptive.same_run(load_config(out / "tunetext.yaml"), config)

    train_labels = load_dataset(config.data).train.labels
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array(train_labels))
    weights = [w for w in seen if w is not None]
    assert len(weights) == 1
    torch.testing.assert_close(weights[0].cpu().double(), torch.tensor(expected), rtol=1e-6, atol=1e-6)
    assert weights[0][0] < 1 < weights[0][1]  # 19 ham, 17 spam in train: spam weighs more
    assert run.metrics["training"]["steps"] == 5


def _accumulation_run(folder, model, tiny_config, batch_size, accumulate):
    """Two epochs on 12 training texts, no warmup: one optimizer step per epoch when 12 texts make a step."""
    config = tiny_config(model, epochs=2, batch_size=batch_size, gradient_accumulation_steps=accumulate,
                         warmup_ratio=0, log_every=1)
    data = config.data.model_copy(update={name: str(folder.parent / f"{name}.csv")
                                          for name in ("source", "validation", "test")})
    return train(config.model_copy(update={"data": data}), folder, progress=False)


def test_accumulating_micro_batches_equals_one_big_batch(tmp_path, tiny_bert, tiny_csv, tiny_config):
    from transformers import AutoModel, AutoTokenizer

    # The tiny BERT without dropout, so that 3 micro-batches and one batch draw no different masks.
    model = tmp_path / "no-dropout"
    AutoModel.from_pretrained(tiny_bert, hidden_dropout_prob=0.0,
                              attention_probs_dropout_prob=0.0).save_pretrained(model)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(model)
    lines = tiny_csv.read_text().splitlines()
    for name, rows in (("source", lines[1:13]), ("validation", lines[13:25]), ("test", lines[25:37])):
        (tmp_path / f"{name}.csv").write_text("\n".join([lines[0], *rows]) + "\n")

    accumulated = _accumulation_run(tmp_path / "accumulated", model, tiny_config, 4, 3)
    big = _accumulation_run(tmp_path / "big", model, tiny_config, 12, 1)
    control = _accumulation_run(tmp_path / "control", model, tiny_config, 4, 1)  # a step per micro-batch
    assert len(load_dataset(big.config.data).train) == 12
    assert [r.metrics["training"]["steps"] for r in (accumulated, big, control)] == [2, 2, 6]
    start = AutoModel.from_pretrained(model).state_dict()
    weights = [load_file(r.run_dir / "model.safetensors") for r in (accumulated, big, control)]
    moved = {k for k, t in weights[1].items() if k.removeprefix("bert.") in start
             and not torch.equal(t, start[k.removeprefix("bert.")])}
    assert len(moved) > 20  # the steps changed the model (no warmup step at learning rate 0)
    for name, tensor in weights[1].items():
        # 1e-5 is 1% of what one step moves a weight (about the learning rate, 1e-3); measured: 3e-7.
        torch.testing.assert_close(weights[0][name], tensor, rtol=0, atol=1e-5, msg=name)
    differs = max((weights[2][k] - weights[1][k]).abs().max().item() for k in moved)
    assert differs > 1e-3  # stepping after each micro-batch is another optimisation
    assert _losses(accumulated.run_dir) == pytest.approx(_losses(big.run_dir), abs=1e-5)


def _losses(run_dir):
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [e["loss"] for e in log if e["event"] == "train"]


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, tiny_gpt2, tiny_config):
    config = tiny_config(tiny_gpt2, batch_size=4, gradient_accumulation_steps=3, epochs=2, log_every=1)
    run = train(config, tmp_path / "accumulated", progress=False)
    # 36 texts in micro-batches of 4: 9 per epoch, stepping after 3, 6 and 9 -> 3 steps per epoch
    assert run.metrics["training"]["steps"] == 6
    log = [json.loads(line) for line in (run.run_dir / "train_log.jsonl").read_text().splitlines()]
    train_lines = [e for e in log if e["event"] == "train"]
    assert [e["step"] for e in train_lines] == [1, 2, 3, 4, 5, 6]
    assert train_lines[-1]["lr"] == 0.0
    assert is_finished(run.run_dir)



def test_a_data_error_leaves_no_output_folder(tmp_path, tiny_bert):
    config = load_config(overrides={"data.source": str(tiny_bert.parent / "missing.csv"),
                                    "model.name": str(tiny_bert)})
    with pytest.raises(ValueError):
        train(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # so retrying needs no --overwrite


def test_runs_in_one_process_may_differ_in_precision():
    """accelerate refuses a second Accelerator with another mixed precision; `fresh_accelerator` is the one
    place tunetext resets its private state, and this fails if an accelerate upgrade removes the reset."""
    from tunetext.train import fresh_accelerator

    assert fresh_accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"
    assert fresh_accelerator(cpu=True, mixed_precision="no").mixed_precision == "no"
    assert fresh_accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"


def test_the_python_api_draws_no_transformers_progress_bars(tiny_bert, tmp_path, tiny_config, capfd):
    """transformers draws bars while it loads and writes weights; the CLI turns them off for the process,
    and the API hides them around its own loads and saves only, leaving the user's setting as it was."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.enable_progress_bar()  # as in a fresh Python session (the CLI tests turn it off)
    try:
        train(tiny_config(tiny_bert), tmp_path / "run", progress=False)
        Classifier.load(tmp_path / "run").predict(["hello"])
        assert transformers_logging.is_progress_bar_enabled()
    finally:
        if not was_enabled:
            transformers_logging.disable_progress_bar()
    err = capfd.readouterr().err
    assert "Loading weights" not in err
    assert "Writing model shards" not in err
