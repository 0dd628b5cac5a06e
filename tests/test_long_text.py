"""Texts longer than the window (`data.long_text`): head and tail, overlapping chunks, pooling their
windows in evaluation, prediction and serving, and the token-length report."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from tunetext import Classifier, train
from tunetext.batches import (
    LongText,
    chunk_starts,
    special_counts,
    token_lengths,
    tokenize,
    tokenize_windows,
    tokenize_windows_marking_cuts,
)
from tunetext.cli import main
from tunetext.data import load_dataset
from tunetext.errors import UsageError
from tunetext.evaluate import evaluate, evaluate_split
from tunetext.inference import pool_windows, predict_log_probs, softmax_with_temperature
from tunetext.lengths import describe, length_report
from tunetext.models import load_tokenizer
from tunetext.serve import ServeSettings, create_app

LONG = " ".join(["see you at 8 then"] * 8)  # about 40 tokens for either tiny tokenizer
SHORT = "ok see you"
TEMPLATE = "Message: {text} Spam?"
WINDOW = 12  # the tiny runs' model.max_length: most tiny texts are longer


def long_text(mode: str, head_fraction: float = 0.25, chunk_overlap: float = 0.25,
              max_chunks: int = 8) -> LongText:
    return LongText(mode, head_fraction, chunk_overlap, max_chunks)


def with_data(config, max_length: int = WINDOW, **data):
    """`config` with model.max_length and data settings changed, validated as a loaded config is."""
    return config.model_validate({**config.model_dump(), "model": {**config.model.model_dump(),
                                                                   "max_length": max_length},
                                  "data": {**config.data.model_dump(), **data}})


@pytest.fixture(scope="module")
def chunk_run(tmp_path_factory, tiny_bert, tiny_config):
    """The tiny BERT trained one epoch with data.long_text=chunks and a window of 12 tokens."""
    out = tmp_path_factory.mktemp("runs") / "chunks"
    run = train(with_data(tiny_config(tiny_bert, epochs=1), long_text="chunks", max_chunks=3), out,
                progress=False)
    return run


# ---- head and tail --------------------------------------------------------------------------------------

def test_head_tail_keeps_exactly_the_first_and_last_tokens_between_the_special_tokens(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    whole = tok(LONG)["input_ids"]
    lead, trail = special_counts(tok)
    assert (lead, trail) == ((1, 1) if tok.cls_token_id is not None else (0, 0))  # BERT [CLS] [SEP]; GPT-2
    text = whole[lead:len(whole) - trail]
    room = 16 - lead - trail
    head = round(0.25 * room)
    [[window]], [cut] = tokenize_windows_marking_cuts(tok, [LONG], 16, long_text=long_text("head_tail"))
    assert cut and len(window) == 16
    tail = text[len(text) - (room - head):]
    assert window == whole[:lead] + text[:head] + tail + whole[len(whole) - trail:]
    if lead:  # the encoder's window still starts with [CLS] and ends with [SEP]
        assert window[0] == tok.cls_token_id and window[-1] == tok.sep_token_id
    # all head, all tail
    [[first]] = tokenize_windows(tok, [LONG], 16, long_text=long_text("head_tail", head_fraction=1.0))
    assert first == tokenize(tok, [LONG], 16)[0]
    [[last]] = tokenize_windows(tok, [LONG], 16, long_text=long_text("head_tail", head_fraction=0.0))
    assert last[lead:16 - trail] == text[-room:]


def test_head_tail_keeps_the_template_whole_around_the_kept_text(tiny_bert):
    tok = load_tokenizer(str(tiny_bert))
    whole = tok(TEMPLATE.replace("{text}", LONG))["input_ids"]
    before = tok(TEMPLATE.split("{text}")[0].strip())["input_ids"][:-1]  # [CLS] message :
    after = tok(TEMPLATE.split("{text}")[1].strip())["input_ids"][1:]  # spam ? [SEP]
    text = tok(LONG)["input_ids"][1:-1]
    assert whole == before + text + after
    [[window]] = tokenize_windows(tok, [LONG], 20, TEMPLATE, long_text("head_tail"))
    room = 20 - len(before) - len(after)
    assert window == before + text[:round(room / 4)] + text[len(text) - (room - round(room / 4)):] + after


class _SlowTokenizer:
    """The tokenizer, answering as a pure-Python one does: no character offsets."""

    is_fast = False

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, *args, return_offsets_mapping=False, **kwargs):
        assert not return_offsets_mapping, "a slow tokenizer raises NotImplementedError here"
        return self.tokenizer(*args, **kwargs)


def test_without_offsets_head_tail_cuts_the_filled_in_template_between_the_special_tokens(tiny_bert):
    tok = load_tokenizer(str(tiny_bert))
    whole = tok(TEMPLATE.replace("{text}", LONG))["input_ids"]
    content = whole[1:-1]
    [[window]] = tokenize_windows(_SlowTokenizer(tok), [LONG], 20, TEMPLATE, long_text("head_tail"))
    assert window == whole[:1] + content[:round(18 / 4)] + content[len(content) - (18 - round(18 / 4)):] + \
        whole[-1:]
    [[offsets]] = tokenize_windows(tok, [LONG], 20, TEMPLATE, long_text("head_tail"))
    assert offsets != window  # with offsets the template's "spam ?" is kept instead


@pytest.mark.parametrize("mode", ["head_tail", "chunks"])
def test_a_text_that_fits_is_tokenised_exactly_as_truncation_does(tiny_model, tiny_texts, mode):
    tok = load_tokenizer(str(tiny_model))
    for template in (None, TEMPLATE):
        fits = tokenize(tok, tiny_texts, 64, template)
        assert tokenize_windows(tok, tiny_texts, 64, template, long_text(mode)) == [[ids] for ids in fits]
        truncated = tokenize(tok, tiny_texts, 8, template)
        assert tokenize_windows(tok, tiny_texts, 8, template, None) == [[ids] for ids in truncated]


# ---- chunks ------------------------------------------------------------------------------------------

def test_chunk_starts_step_by_the_overlap_end_at_the_end_and_spread_past_the_cap():
    assert chunk_starts(40, 10, 0.25, 8) == [0, 8, 16, 24, 30]  # stride 10 - 2; the last ends at 40
    assert chunk_starts(40, 10, 0.0, 8) == [0, 10, 20, 30]
    assert chunk_starts(11, 10, 0.5, 8) == [0, 1]
    assert chunk_starts(100, 10, 0.25, 3) == [0, 45, 90]  # 12 needed: 3 spread from start to end
    assert chunk_starts(100, 10, 0.25, 1) == [0]


def test_chunks_cover_the_text_with_the_stated_overlap_and_cap(tiny_model):
    tok = load_tokenizer(str(tiny_model))
    whole = tok(LONG)["input_ids"]
    lead, trail = special_counts(tok)
    text = whole[lead:len(whole) - trail]
    room = 16 - lead - trail
    windows, [cut] = tokenize_windows_marking_cuts(tok, [LONG], 16, long_text=long_text("chunks"))
    [windows] = windows
    assert not cut and all(len(w) == 16 for w in windows)
    starts = chunk_starts(len(text), room, 0.25, 8)
    assert len(windows) == len(starts) > 2
    for w, s in zip(windows, starts, strict=True):
        assert w == whole[:lead] + text[s:s + room] + whole[len(whole) - trail:]
    for earlier, later in zip(starts, starts[1:-1], strict=False):  # the stated overlap, the last more
        assert earlier + room - later == round(0.25 * room)
    assert starts[0] == 0 and starts[-1] + room == len(text)  # first and last tokens are in
    capped, [cut] = tokenize_windows_marking_cuts(tok, [LONG], 16,
                                                  long_text=long_text("chunks", max_chunks=2))
    assert len(capped[0]) == 2 and cut  # the middle is skipped, and said to be
    assert capped[0] == [windows[0], windows[-1]]


# ---- pooling, training, evaluation ------------------------------------------------------------------

def test_pooling_is_the_softmax_of_the_mean_of_the_windows_logits():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0], [0.5, 0.5]], dtype=np.float32)
    log_probs = torch.log_softmax(torch.tensor(logits), -1).numpy()
    pooled = pool_windows(log_probs, [2, 1, 1])
    expected_first = torch.log_softmax(torch.tensor(logits[:2].mean(0)), -1).numpy()
    assert pooled.shape == (3, 2)
    np.testing.assert_allclose(pooled[0], expected_first, atol=1e-6)
    # mean logits [1, 0.5]: p = sigmoid(0.5), not the mean of the windows' probabilities (0.5827...)
    np.testing.assert_allclose(np.exp(pooled[0]), [0.6224593, 0.3775407], atol=1e-6)
    assert pooled[1].tolist() == log_probs[2].tolist() and pooled[2].tolist() == log_probs[3].tolist()


def test_training_with_chunks_trains_on_every_window_and_scores_one_answer_per_text(chunk_run, tiny_bert):
    config = chunk_run.config
    tok = load_tokenizer(str(tiny_bert))
    dataset = load_dataset(config.data)
    windows = tokenize_windows(tok, dataset.train.texts, WINDOW, None, LongText.of(config.data))
    lengths = chunk_run.metrics["training"]["lengths"]
    assert lengths["training_examples"] == sum(map(len, windows)) > len(dataset.train)
    assert lengths["texts"] == len(dataset.train) and lengths["long_text"] == "chunks"
    assert lengths["longer"] == sum(n > WINDOW for n in token_lengths(tok, dataset.train.texts))
    assert chunk_run.metrics["test"]["n"] == len(dataset.test)  # pooled: one prediction per text
    assert chunk_run.metrics["val"]["n"] == len(dataset.val)
    assert evaluate(chunk_run.run_dir)["n"] == len(dataset.test)


@pytest.mark.parametrize("strategy", ["features", "last_n", "distill"])
def test_every_strategy_trains_on_the_windows(strategy, chunk_run, tiny_bert, tiny_config, tmp_path):
    settings = {"strategy": strategy, "epochs": 1}
    if strategy == "distill":  # a chunked teacher: its pooled answer per text, repeated for each window
        settings.update(distill_teacher=str(chunk_run.run_dir), student_layers=1)
    run = train(with_data(tiny_config(tiny_bert, **settings), long_text="chunks", max_chunks=3),
                tmp_path / strategy, progress=False)
    lengths = run.metrics["training"]["lengths"]
    assert lengths["training_examples"] == chunk_run.metrics["training"]["lengths"]["training_examples"]
    assert lengths["training_examples"] > lengths["texts"]
    assert run.metrics["test"]["n"] == chunk_run.metrics["test"]["n"]


def test_evaluation_pools_each_texts_windows(chunk_run):
    clf = Classifier.load(chunk_run.run_dir)
    texts, labels = [LONG, SHORT, LONG + " late"], [0, 1, 1]
    lt = LongText.of(clf.config.data)
    metrics = evaluate_split(clf.model, clf.tokenizer, texts, labels, clf.label_names, WINDOW, 4,
                             long_text=lt)
    assert metrics["n"] == 3
    windows = tokenize_windows(clf.tokenizer, texts, WINDOW, None, lt)
    per_text = [predict_log_probs(clf.model, w, clf.tokenizer.pad_token_id, 4) for w in windows]
    expected = np.array([torch.log_softmax(torch.tensor(lp).mean(0), -1).numpy() for lp in per_text])
    confusion = np.zeros((2, 2), dtype=int)
    np.add.at(confusion, (labels, expected.argmax(1)), 1)
    assert metrics["confusion_matrix"] == confusion.tolist()
    probs = clf.predict_proba(texts)
    np.testing.assert_allclose(probs, softmax_with_temperature(expected, clf.temperature), atol=1e-5)


# ---- prediction and serving say what happened --------------------------------------------------------

def test_prediction_reports_chunks_and_truncation(chunk_run):
    clf = Classifier.load(chunk_run.run_dir)
    long, short = clf.predict([LONG, SHORT])
    n = len(tokenize_windows(clf.tokenizer, [LONG], WINDOW, None, LongText.of(clf.config.data))[0])
    assert (long.chunks, long.truncated) == (3, True)  # max_chunks 3 of the more it needed: spread
    assert n == 3 and (short.chunks, short.truncated) == (1, False)
    clf.config.data.max_chunks = 50
    assert clf.predict(LONG).chunks > 3 and not clf.predict(LONG).truncated
    clf.config.data.long_text = "head_tail"
    head_tail = clf.predict([LONG, SHORT])
    assert [(p.truncated, p.chunks) for p in head_tail] == [(True, None), (False, None)]
    [[ids]] = tokenize_windows(clf.tokenizer, [LONG], WINDOW, None, long_text("head_tail"))
    assert clf.probabilities([ids])[0].tolist() == pytest.approx(list(head_tail[0].probabilities.values()))


def test_the_service_says_how_many_windows_it_pooled(chunk_run):
    clf = Classifier.load(chunk_run.run_dir)
    expected = clf.predict([LONG, SHORT])
    with TestClient(create_app(chunk_run.run_dir, ServeSettings(precision="fp32"))) as client:
        answers = client.post("/predict", content=json.dumps({"texts": [LONG, SHORT]}),
                              headers={"Content-Type": "application/json"}).json()
    assert [(a["chunks"], a["truncated"]) for a in answers] == [(3, True), (1, False)]
    for a, p in zip(answers, expected, strict=True):
        assert a["score"] == pytest.approx(p.score, abs=1e-5) and a["label"] == p.label


def test_cli_predict_carries_chunks_in_json_csv_and_the_table(chunk_run, capsys, tmp_path):
    assert main(["predict", str(chunk_run.run_dir), LONG, SHORT, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["chunks"], r["truncated"]) for r in rows] == [(3, True), (1, False)]
    out = tmp_path / "p.csv"
    assert main(["predict", str(chunk_run.run_dir), LONG, SHORT, "--output", str(out)]) == 0
    with open(out, newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["chunks"], r["truncated"]) for r in table] == [("3", "true"), ("1", "false")]
    assert main(["predict", str(chunk_run.run_dir), LONG, SHORT]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(3 windows)  (cut: only part of it was read)") and lines[1].endswith(SHORT)


def test_a_template_that_leaves_no_room_for_the_text_is_an_error(tiny_bert):
    tok = load_tokenizer(str(tiny_bert))
    with pytest.raises(UsageError, match="leaving no room for the text"):
        tokenize_windows(tok, [LONG], 8, "see you at 8 see you at 8 {text}", long_text("chunks"))


# ---- the length report ------------------------------------------------------------------------------

def test_length_report_numbers():
    report = length_report([10, 20, 30, 40, 300], 256)
    assert {k: report[k] for k in ("texts", "min", "median", "p90", "p95", "max", "longer")} == {
        "texts": 5, "min": 10, "median": 30.0, "p90": 196.0, "p95": 248.0, "max": 300, "longer": 1}
    assert report["longer_share"] == 0.2 and report["max_length"] == 256
    assert describe(report, long_text("head_tail"), 254) == (
        "median 30, p95 248, max 300 tokens; 20% of training texts (1 of 5) are longer than max_length "
        "256 -> data.long_text=head_tail keeps the first 64 + last 190 tokens of each")
    assert describe(length_report([5, 6], 256), long_text("chunks"), 254).endswith("max_length 256")
    assert length_report([], 8)["texts"] == 0


def test_data_show_prints_token_lengths_with_a_local_tokenizer(capsys, tiny_csv, tiny_bert):
    assert main(["data", "show", str(tiny_csv), f"model.name={tiny_bert}", "model.max_length=12",
                 "data.long_text=chunks"]) == 0
    out = capsys.readouterr().out
    assert f"token lengths in {tiny_bert}'s tokens" in out
    train_line = next(line for line in out.splitlines() if line.startswith("  train min"))
    assert "of 36 (" in train_line and "longer than max_length" in train_line
    assert "longer texts: data.long_text=chunks splits each into windows of 10 text tokens" in out


def test_data_show_skips_token_lengths_without_a_download(capsys, tiny_csv):
    assert main(["data", "show", str(tiny_csv)]) == 0  # minilm-l6 is not in the test's empty cache
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("token lengths")]
    assert lines == [lines[0]] and "skipped" in lines[0] and "minilm-l6" in lines[0]
