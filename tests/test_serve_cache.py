"""The service's prediction cache: the same answers with and without it, LRU eviction within its size,
its counters in /metrics, and off with cache_size=0."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tunetext.serve import ServeSettings, create_app
from tunetext.serve.cache import PredictionCache, key_of

TEXTS = ["WINNER! claim your 1000 prize now", "see you at 7pm", "ok", "Call me when you get home"]


@contextmanager
def running(run_dir, **settings):
    with TestClient(create_app(run_dir, ServeSettings(precision="fp32", **settings))) as client:
        yield client


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} is not in /metrics"
    return float(match.group(1))


def _model_texts(client: TestClient) -> float:
    return _metric(client.get("/metrics").text, "tunetext_texts_total")


# ---- the table itself ------------------------------------------------------------------------------------

def test_lru_keeps_at_most_size_rows_dropping_the_least_recently_used():
    seen = []
    cache = PredictionCache(2, on_change=lambda *counts: seen.append(counts))
    cache.put_many(["a", "b"], [np.array([0.1, 0.9]), np.array([0.2, 0.8])])
    assert cache.get_many(["a"])[0] is not None  # "a" is now the most recently used
    cache.put_many(["c"], [np.array([0.3, 0.7])])
    rows = cache.get_many(["a", "b", "c"])
    assert len(cache) == 2
    assert rows[1] is None and rows[0].tolist() == [0.1, 0.9] and rows[2].tolist() == [0.3, 0.7]
    assert seen[-1] == (2, 1, 2)  # hits, misses, entries
    with pytest.raises(ValueError):  # a cached row is shared by every hit: read-only
        rows[0][0] = 1.0


def test_size_zero_keeps_nothing_and_counts_nothing():
    seen = []
    cache = PredictionCache(0, on_change=lambda *counts: seen.append(counts))
    cache.put_many(["a"], [np.array([1.0])])
    assert cache.get_many(["a"]) == [None] and len(cache) == 0 and not cache.enabled
    assert all(counts[:2] == (0, 0) for counts in seen)


def test_the_table_is_safe_across_threads():
    cache = PredictionCache(50)

    def work(n: int) -> None:
        for i in range(300):
            key = f"{(n * 7 + i) % 80}"
            if cache.get_many([key])[0] is None:
                cache.put_many([key], [np.array([float(key)])])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
    assert len(cache) == 50
    for key, row in zip(map(str, range(80)), cache.get_many([str(k) for k in range(80)]), strict=True):
        assert row is None or row.tolist() == [float(key)]


def test_the_key_is_the_encoding():
    assert key_of([[101, 7, 102]]) == key_of([[101, 7, 102]]) != key_of([[101, 8, 102]])
    assert key_of([[1, 2], [3]]) != key_of([[1], [2, 3]]) != key_of([[1, 2, 3]])  # windows kept apart
    assert len(key_of([list(range(512))] * 8)) == 64  # bounded, however long the text


# ---- in the service --------------------------------------------------------------------------------------

def test_answers_are_identical_with_and_without_the_cache(trained_run):
    with running(trained_run, cache_size=0) as off:
        expected = off.post("/predict", json={"texts": TEXTS}).json()
        expected_top = off.post("/predict", json={"texts": TEXTS, "top_k": 1}).json()
        expected_hf = off.post("/", json={"inputs": TEXTS}).json()
    with running(trained_run, cache_size=100) as on:
        first = on.post("/predict", json={"texts": TEXTS}).json()
        again = on.post("/predict", json={"texts": TEXTS}).json()  # every text a hit
        top = on.post("/predict", json={"texts": TEXTS, "top_k": 1}).json()  # hits, formatted anew
        hf = on.post("/", json={"inputs": TEXTS}).json()  # the other convention, from the same rows
        one = on.post("/predict", json={"text": TEXTS[2]}).json()
    assert first == expected and again == expected and top == expected_top and hf == expected_hf
    assert one == expected[2]


def test_a_repeated_text_runs_the_model_once_and_counters_move(trained_run):
    with running(trained_run, cache_size=100) as c:
        before = _model_texts(c)
        # TEXTS[0] twice, once with other spacing, which the run's cleaning normalises: the key is the
        # cleaned text.
        spaced = "  " + TEXTS[0].replace(" ", "\t ") + "\n"
        answers = c.post("/predict", json={"texts": [TEXTS[0], TEXTS[1], spaced]}).json()
        assert answers[0] == answers[2]
        assert _model_texts(c) - before == 2  # the repeat within the request was not run again
        c.post("/predict", json={"texts": [TEXTS[1], TEXTS[3]]})
        metrics = c.get("/metrics").text
        assert _model_texts(c) - before == 3  # only TEXTS[3] is new
    assert _metric(metrics, "tunetext_cache_hits_total") == 1
    assert _metric(metrics, "tunetext_cache_misses_total") == 4
    assert _metric(metrics, "tunetext_cache_entries") == 3


def test_the_cache_keeps_at_most_cache_size_texts(trained_run):
    with running(trained_run, cache_size=2) as c:
        c.post("/predict", json={"texts": TEXTS[:3]})  # TEXTS[0] is dropped first
        assert _metric(c.get("/metrics").text, "tunetext_cache_entries") == 2
        before = _model_texts(c)
        c.post("/predict", json={"text": TEXTS[2]})  # held
        assert _model_texts(c) == before
        c.post("/predict", json={"text": TEXTS[0]})  # dropped: runs the model again
        assert _model_texts(c) == before + 1
        assert len(c.app.state.tunetext.cache) == 2


def test_cache_size_zero_runs_the_model_every_time(trained_run):
    with running(trained_run, cache_size=0) as c:
        before = _model_texts(c)
        c.post("/predict", json={"texts": [TEXTS[0], TEXTS[0]]})
        c.post("/predict", json={"text": TEXTS[0]})
        metrics = c.get("/metrics").text
        assert _model_texts(c) - before == 3
    assert _metric(metrics, "tunetext_cache_hits_total") == 0
    assert _metric(metrics, "tunetext_cache_misses_total") == 0
    assert _metric(metrics, "tunetext_cache_entries") == 0


def test_concurrent_requests_with_the_cache_answer_as_without(trained_run):
    with running(trained_run, cache_size=0) as off:
        expected = {t: off.post("/predict", json={"text": t}).json() for t in TEXTS}
    with running(trained_run, cache_size=3, threads=2, pass_size=2, max_wait_ms=20) as c:
        lock = threading.Lock()
        wrong = []

        def ask(i: int) -> None:
            text = TEXTS[i % len(TEXTS)]
            answer = c.post("/predict", json={"text": text}).json()
            # Texts batched with others are padded: the same answer up to float rounding, not bit for bit
            want = expected[text]
            if answer["label"] != want["label"] or answer["probabilities"] != pytest.approx(
                    want["probabilities"], rel=1e-4, abs=1e-6):
                with lock:
                    wrong.append((text, answer))

        with ThreadPoolExecutor(6) as pool:
            list(pool.map(ask, range(40)))
        assert len(c.app.state.tunetext.cache) <= 3
    assert wrong == []
