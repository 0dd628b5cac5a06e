"""Prompt templates (one choke point for train, evaluate and predict) and prompt classification."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from tunetext import Classifier, evaluate, load_config, train
from tunetext.config import ConfigError, DataConfig
from tunetext.data import load_dataset
from tunetext.evaluate import format_metrics
from tunetext.models import ModelError
from tunetext.prompting import (
    build_contexts,
    continuation_log_likelihoods,
    format_story,
    load_prompt_model,
    pick_shots,
    prompt_eval,
    prompt_story,
    resolve_verbalizers,
    score_texts,
    verbalizer_ids,
)

TEMPLATE = "Message: {text} Label:"
LABELS = {"ham": "ham", "spam": "spam"}


@pytest.fixture(scope="module")
def gpt2_lm(tiny_gpt2):
    return load_prompt_model(str(tiny_gpt2))


def by_hand(pm, context: str, continuation: list[int]) -> float:
    """Summed log-probability of `continuation` after `context`: one unpadded forward pass, no cache."""
    ids = pm.tokenizer(context)["input_ids"] + continuation
    with torch.no_grad():
        log_probs = torch.log_softmax(pm.model(torch.tensor([ids])).logits[0].double(), dim=-1)
    start = len(ids) - len(continuation)
    return sum(log_probs[start + t - 1, token].item() for t, token in enumerate(continuation))


@pytest.mark.parametrize(("template", "shots"), [
    (TEMPLATE, []),
    (TEMPLATE, [("win cash now, call 81688", "spam"), ("see you at 6", "ham")]),
    ("{text} =>", []),  # no prefix shared by all contexts: nothing cached before the batch
])
def test_verbalizer_scores_equal_the_log_likelihood_by_hand(gpt2_lm, template, shots):
    # Texts of different lengths, scored two to a batch, and verbalizers of one to four tokens: padding,
    # the shared prefix (run once, its cache reused) and the contexts' cache reused for every label's
    # remaining tokens must not change a score.
    texts = ["Ok see you at 8:30 then", "Congratulations you won 1000 pounds, txt CLAIM to 85991", "hi"]
    contexts = build_contexts(texts, template, shots, gpt2_lm.tokenizer, chat=False)
    assert contexts[2].endswith(template.replace("{text}", "hi"))
    assert all(c.startswith("Message: win cash now") for c in contexts) == bool(shots)
    conts = verbalizer_ids(gpt2_lm, ["ham", "spam", "a", "spam and ham"], " ")
    assert sorted(map(len, conts))[0] == 1 and len(set(map(len, conts))) > 2
    scores = continuation_log_likelihoods(gpt2_lm, contexts, conts, batch_size=2)
    expected = [[by_hand(gpt2_lm, c, v) for v in conts] for c in contexts]
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_label_log_probs_normalise_sum_or_mean_scores(gpt2_lm):
    texts = ["Running late, see you at 6"]
    conts = verbalizer_ids(gpt2_lm, ["ham", "spam"], " ")
    contexts = build_contexts(texts, TEMPLATE, [], gpt2_lm.tokenizer, False)
    raw = continuation_log_likelihoods(gpt2_lm, contexts, conts)[0]
    for score, per_label in (("sum", raw), ("mean", raw / [len(c) for c in conts])):
        log_probs, content_free = score_texts(gpt2_lm, texts, TEMPLATE, ["ham", "spam"], score=score)
        expected = per_label - np.logaddexp.reduce(per_label)
        np.testing.assert_allclose(log_probs[0], expected, atol=1e-5)
        assert content_free is None
    assert len(conts[0]) != len(conts[1])  # otherwise sum and mean would rank alike and prove nothing


def test_contextual_calibration_divides_out_the_content_free_label_probabilities(gpt2_lm):
    texts = ["Running late, see you at 6", "WINNER!! txt CLAIM to 81688"]
    conts = verbalizer_ids(gpt2_lm, ["ham", "spam"], " ")
    shots = [("see you at 6", "ham")]
    raw = continuation_log_likelihoods(
        gpt2_lm, build_contexts([*texts, "N/A"], TEMPLATE, shots, gpt2_lm.tokenizer, False), conts)
    probs = np.exp(raw - np.logaddexp.reduce(raw, axis=1, keepdims=True))
    expected = probs[:2] / probs[2]
    expected /= expected.sum(axis=1, keepdims=True)
    log_probs, content_free = score_texts(gpt2_lm, texts, TEMPLATE, ["ham", "spam"], shots, calibrate=True)
    np.testing.assert_allclose(np.exp(log_probs), expected, atol=1e-5)
    np.testing.assert_allclose(content_free, probs[2], atol=1e-6)
    assert not np.allclose(expected, probs[:2], atol=1e-3)  # the calibration changed something


def test_chat_template_puts_prompt_in_user_turns_and_shots_as_replies(gpt2_lm):
    tokenizer = gpt2_lm.tokenizer
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</>{% endfor %}"
                               "{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        [context] = build_contexts(["hi"], TEMPLATE, [("win now", "spam")], tokenizer, chat=True)
    finally:
        tokenizer.chat_template = None
    assert context == ("<user>Message: win now Label:</><assistant>spam</>"
                       "<user>Message: hi Label:</><assistant>")


def test_few_shot_picks_balanced_examples_from_train_only_fixed_by_seed(gpt2_lm, tiny_csv):
    labels = [0] * 10 + [1] * 3
    assert Counter(labels[i] for i in pick_shots(labels, 6, seed=0)) == {0: 3, 1: 3}
    assert Counter(labels[i] for i in pick_shots(labels, 8, seed=0)) == {0: 5, 1: 3}  # 1 runs out
    assert pick_shots(labels, 6, seed=0) == pick_shots(labels, 6, seed=0)
    assert pick_shots(labels, 6, seed=0) != pick_shots(labels, 6, seed=1)
    with pytest.raises(ValueError, match="only 13 examples"):
        pick_shots(labels, 14, seed=0)

    dataset = load_dataset(DataConfig(source=str(tiny_csv)))
    runs = [prompt_eval(gpt2_lm, str(tiny_csv), TEMPLATE, LABELS, shots=4, seed=seed)["prompt"]
            for seed in (3, 3, 4)]
    shots = [[(s["text"], s["label"]) for s in r["shot_examples"]] for r in runs]
    train_pairs = {(t, dataset.label_names[y]) for t, y in zip(dataset.train.texts, dataset.train.labels,
                                                                strict=True)}
    assert len(shots[0]) == 4 and set(shots[0]) <= train_pairs
    assert Counter(label for _, label in shots[0]) == {"ham": 2, "spam": 2}
    assert shots[0] == shots[1] and shots[0] != shots[2]


def test_prompt_eval_returns_the_metrics_of_evaluate(gpt2_lm, trained_run, tiny_csv):
    metrics = prompt_eval(gpt2_lm, str(tiny_csv), TEMPLATE, LABELS, shots=2)
    reference = evaluate(trained_run)
    assert set(reference) <= set(metrics)
    test = load_dataset(DataConfig(source=str(tiny_csv))).test
    assert metrics["n"] == len(test) and metrics["split"] == "test"
    assert sum(map(sum, metrics["confusion_matrix"])) == len(test)
    assert metrics["prompt"]["verbalizers"] == LABELS and metrics["prompt"]["chat"] is False
    assert "macro-F1" in format_metrics(metrics)
    small = prompt_eval(gpt2_lm, str(tiny_csv), TEMPLATE, LABELS, max_examples=4)
    assert small["n"] == 4
    assert all(sum(row) >= 1 for row in small["confusion_matrix"])  # stratified: every label kept


def test_verbalizers_must_name_every_label_once():
    assert resolve_verbalizers(["ham", "spam"], None) == ["ham", "spam"]
    assert resolve_verbalizers(["ham", "spam"], {"spam": " junk ", "ham": "fine"}) == ["fine", "junk"]
    with pytest.raises(ValueError, match="no verbalizer for label\\(s\\) 'spam'.*ham=ham,spam=spam"):
        resolve_verbalizers(["ham", "spam"], {"ham": "ok"})
    with pytest.raises(ValueError, match="unknown label\\(s\\) 'junk'"):
        resolve_verbalizers(["ham", "spam"], {"ham": "ok", "spam": "bad", "junk": "x"})
    with pytest.raises(ValueError, match="distinct"):
        resolve_verbalizers(["ham", "spam"], {"ham": "x", "spam": "x"})


def test_prompt_eval_needs_a_decoder(tiny_bert):
    with pytest.raises(ModelError, match="encoder.*needs a decoder"):
        load_prompt_model(str(tiny_bert))


def test_template_without_text_field_is_a_clear_error(gpt2_lm, tiny_csv):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"data.template": "Classify this review", "train.epochs": 0})
    message = str(err.value)
    assert "data.template: got 'Classify this review'" in message and "{text}" in message
    assert "train.epochs" in message  # reported together with the other problems
    assert load_config(overrides={"data.template": "Review: {text}"}).data.template == "Review: {text}"
    with pytest.raises(ValueError, match="must contain \\{text\\}"):
        prompt_eval(gpt2_lm, str(tiny_csv), "Classify this message", LABELS)


@pytest.fixture
def tokenizer_calls(monkeypatch):
    """Every list of texts handed to any tokenizer, in order."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    calls: list[list[str]] = []
    original = PreTrainedTokenizerBase.__call__

    def spy(self, text=None, *args, **kwargs):
        calls.append([text] if isinstance(text, str) else list(text or []))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(PreTrainedTokenizerBase, "__call__", spy)
    return calls


def test_training_evaluation_and_prediction_all_see_the_template(tiny_bert, tmp_path, tokenizer_calls,
                                                                 tiny_config):
    template = "review: {text} end"
    config = tiny_config(tiny_bert, epochs=1).model_copy(deep=True)
    config.data.template = template
    run_dir = tmp_path / "run"
    train(config, run_dir, progress=False)
    assert load_config(run_dir / "tunetext.yaml").data.template == template  # saved with the run
    dataset = load_dataset(config.data)
    seen = [t for call in tokenizer_calls for t in call]
    assert all(t.startswith("review: ") and t.endswith(" end") for t in seen)
    for split in (dataset.train, dataset.val, dataset.test):  # trained on, and evaluated on, templated
        assert {f"review: {t} end" for t in split.texts} <= set(seen)

    tokenizer_calls.clear()
    evaluate(run_dir)
    assert {t for call in tokenizer_calls for t in call} == {f"review: {t} end" for t in dataset.test.texts}
    tokenizer_calls.clear()
    Classifier.load(run_dir).predict(["see you at 8"])
    assert tokenizer_calls == [["review: see you at 8 end"]]


def test_a_templated_run_predicts_as_the_template_applied_by_hand(tiny_bert, tmp_path, tiny_config):
    config = tiny_config(tiny_bert, epochs=1).model_copy(deep=True)
    config.data.template = "is this spam? {text} answer"
    train(config, tmp_path / "run", progress=False)
    clf = Classifier.load(tmp_path / "run")
    texts = ["Congratulations you won, call now", "see you at the coffee place"]
    templated = clf.predict_proba(texts)
    clf.config.data.template = None
    by_hand = clf.predict_proba([f"is this spam? {t} answer" for t in texts])
    bare = clf.predict_proba(texts)
    np.testing.assert_array_equal(templated, by_hand)  # the very same inputs
    assert np.abs(templated - bare).max() > 1e-7  # a barely trained head, but other inputs


def test_story_records_prompt_baselines_in_the_run(gpt2_lm, trained_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    story = prompt_story(run_dir, gpt2_lm, TEMPLATE, LABELS, shots=2)
    stored = json.loads((run_dir / "metrics.json").read_text())
    assert set(stored["prompt_baselines"]) == {"zero_shot", "few_shot"}
    assert stored["test"] == json.loads((trained_run / "metrics.json").read_text())["test"]
    assert stored["prompt_baselines"]["few_shot"]["prompt"]["shots"] == 2
    assert stored["prompt_baselines"]["zero_shot"]["n"] == stored["test"]["n"]
    table = format_story(story).splitlines()
    assert [line.split("(")[0].strip() for line in table[1:]] == ["zero-shot prompt", "2-shot prompt",
                                                                  "fine-tuned"]
    assert f"{stored['test']['accuracy']:.4f}" in table[3]

    small = prompt_story(run_dir, gpt2_lm, TEMPLATE, LABELS, shots=0, max_examples=4, record=False)
    assert set(small) == {"zero_shot", "fine_tuned"} and small["zero_shot"]["n"] == 4
    assert small["fine_tuned"]["n"] == 4  # the run scored on the very subsample the prompt saw
    assert small["fine_tuned"]["full_test"]["accuracy"] == stored["test"]["accuracy"]
    assert "subsample" in format_story(small)

    from tunetext.cli import main

    code = main(["prompt-eval", "--model", gpt2_lm.name, "--run", str(run_dir), "--template", TEMPLATE,
                 "--labels", "ham=ham,spam=spam", "--shots", "2"])
    out = capsys.readouterr().out
    assert code == 0 and "2-shot prompt" in out and "fine-tuned" in out
