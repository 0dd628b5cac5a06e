"""The HTTP service, in process: every endpoint, every kind of bad input, the API key, batching."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from tunetext import Classifier, __version__
from tunetext.runs import RunError, read_run
from tunetext.serve import ServeSettings, create_app
from tunetext.serve.batching import Batcher, BusyError, TextResult

TUTORIAL = "I loved the movie, it was fantastic!"
TEXTS = ["WINNER! claim your 1000 prize now", "see you at 7pm", "ok", "Call me when you get home, the train "
         "was late again and I am stuck at the station with no battery left on my phone"]


@contextmanager
def running(run_dir, **settings):
    """A client of the app with its lifespan run, so the model is loaded. fp32 unless asked, so that
    answers equal `Classifier.predict`'s exactly (up to float rounding)."""
    settings.setdefault("precision", "fp32")
    with TestClient(create_app(run_dir, ServeSettings(**settings))) as client:
        yield client


@pytest.fixture(scope="module")
def client(trained_run):
    with running(trained_run) as c:
        yield c


@pytest.fixture(scope="module")
def clf(trained_run):
    return Classifier.load(trained_run)


def assert_same(answer: dict, expected, atol=1e-5):
    assert answer["label"] == expected.label
    assert answer["score"] == pytest.approx(expected.score, abs=atol)
    assert answer["probabilities"].keys() == expected.probabilities.keys()
    for name, p in expected.probabilities.items():
        assert answer["probabilities"][name] == pytest.approx(p, abs=atol)


# ---- /predict ---------------------------------------------------------------------------------------

def test_the_tutorial_request_works_as_written(client, clf):
    # curl -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' \
    #      -d '{"text": "I loved the movie, it was fantastic!"}'
    r = client.post("/predict", content=b'{"text": "I loved the movie, it was fantastic!"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"label", "score", "probabilities", "truncated"}
    assert list(answer["probabilities"]) == clf.label_names
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-5)
    assert answer["score"] == max(answer["probabilities"].values())
    assert answer["truncated"] is False
    assert_same(answer, clf.predict(TUTORIAL))


def test_a_list_is_answered_in_order(client, clf):
    r = client.post("/predict", json={"texts": TEXTS})
    assert r.status_code == 200, r.text
    answers = r.json()
    assert isinstance(answers, list) and len(answers) == len(TEXTS)
    for answer, text in zip(answers, TEXTS, strict=True):
        assert_same(answer, clf.predict(text))


def test_top_k_keeps_the_most_probable_labels_first(client, clf):
    answer = client.post("/predict", json={"text": TEXTS[0], "top_k": 1}).json()
    assert list(answer["probabilities"]) == [answer["label"]]
    full = clf.predict(TEXTS[0])
    assert answer["label"] == full.label
    assert client.post("/predict", json={"text": TEXTS[0], "top_k": 1.0}).json() == answer  # JSON's integer
    answers = client.post("/predict", json={"texts": TEXTS[:2], "top_k": 5}).json()  # more than there are
    for answer in answers:
        probs = list(answer["probabilities"].values())
        assert len(probs) == len(clf.label_names) and probs == sorted(probs, reverse=True)


def test_a_text_longer_than_the_window_is_truncated_and_says_so(client, clf):
    long = " ".join(["prize"] * 3 * clf.config.model.max_length)
    answers = client.post("/predict", json={"texts": [long, TEXTS[1]]}).json()
    assert [a["truncated"] for a in answers] == [True, False]
    assert_same(answers[0], clf.predict(long))  # the Classifier truncates the same way
    metrics = client.get("/metrics").text
    assert _sample(metrics, "tunetext_texts_truncated_total") >= 1


def test_a_served_text_is_cleaned_and_tokenized_once(trained_run, clf, monkeypatch):
    from tunetext import predict

    cleaned, tokenized = [], []
    clean, tokenize = predict.clean_text, type(clf.tokenizer).__call__

    def counting_clean(text, config):
        cleaned.append(text)
        return clean(text, config)

    def counting_tokenize(self, texts, *args, **kwargs):
        tokenized.extend([texts] if isinstance(texts, str) else texts)
        return tokenize(self, texts, *args, **kwargs)

    with running(trained_run) as c:  # started (and warmed up) first: only the request is counted
        monkeypatch.setattr(predict, "clean_text", counting_clean)
        monkeypatch.setattr(type(clf.tokenizer), "__call__", counting_tokenize)  # every thread's copy
        long = " ".join(["prize"] * 3 * clf.config.model.max_length)
        answers = c.post("/predict", json={"texts": [*TEXTS, long]}).json()
    assert cleaned == [*TEXTS, long]
    assert len(tokenized) == len(TEXTS) + 1  # checked, counted and classified from one tokenization
    monkeypatch.undo()
    assert [a["truncated"] for a in answers] == [False] * len(TEXTS) + [True]
    for answer, text in zip(answers, [*TEXTS, long], strict=True):
        assert_same(answer, clf.predict(text))


@pytest.mark.parametrize(("pass_size", "precision"), [(8, "fp32"), (3, "fp32"), (8, "bf16")])
def test_batched_answers_equal_unbatched(learned_bert_run, pass_size, precision):
    clf = Classifier.load(learned_bert_run)
    texts = [t for t in TEXTS for _ in range(2)]  # 8 texts of different lengths: one batch pads most of them
    # The batch fills up at 8 texts and runs at once; the long wait only makes sure all 8 share it.
    with running(learned_bert_run, max_batch_size=8, max_wait_ms=10_000, pass_size=pass_size,
                 precision=precision, threads=1) as c:
        start = threading.Barrier(len(texts))

        def ask(text):
            start.wait()
            return c.post("/predict", json={"text": text})

        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(ask, texts))
        metrics = c.get("/metrics").text
    assert [r.status_code for r in responses] == [200] * len(texts)
    assert _sample(metrics, "tunetext_batch_size_count") == 1  # one forward pass...
    assert _sample(metrics, "tunetext_batch_size_sum") == len(texts)  # ...for all eight requests
    if precision == "fp32":
        for r, text in zip(responses, texts, strict=True):
            assert_same(r.json(), clf.predict(text))  # unbatched: one text at a time
        return
    # bf16 rounds every matmul input to 8 significant bits (relative error up to 2^-9); the logits of this
    # model are a few units, so bf16 may move a log-probability by a few hundredths: 0.05 allows that. The
    # learned model's answers are far from 0.5 and from each other in that measure (checked first), so
    # the tolerance can neither hide a flipped label nor one text's answer given for another's.
    exact = {text: np.log(list(clf.predict(text).probabilities.values())) for text in TEXTS}
    assert min(abs(lp[0] - lp[1]) for lp in exact.values()) > 1  # every score is above 0.73
    assert min(np.abs(a - b).max() for i, a in enumerate(exact.values())
               for b in list(exact.values())[i + 1:]) > 0.2
    for r, text in zip(responses, texts, strict=True):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            alone = clf.predict(text)  # unbatched, in bf16 too
        answer = r.json()
        assert answer["label"] == alone.label == clf.predict(text).label
        served = np.log(list(answer["probabilities"].values()))
        np.testing.assert_allclose(served, np.log(list(alone.probabilities.values())), atol=0.05, rtol=0)
        np.testing.assert_allclose(served, exact[text], atol=0.05, rtol=0)  # and near the fp32 answer


# ---- bad input ----------------------------------------------------------------------------------------

BAD = [  # (body, the field the message must name)
    (b'{"text": ""}', "text"),
    (b'{"text": "  \\n\\t "}', "text"),
    (b'{"text": 42}', "text"),
    (b'{"text": null}', "text"),
    (b'{"text": ["a"]}', "text"),
    (b'{"texts": "not a list"}', "texts"),
    (b'{"texts": []}', "texts"),
    (b'{"texts": ["fine", "  "]}', "texts[1]"),
    (b'{"texts": ["fine", 7]}', "texts[1]"),
    (b'{"text": "a", "top_k": 0}', "top_k"),
    (b'{"text": "a", "top_k": "3"}', "top_k"),
    (b'{"text": "a", "top_k": 1.5}', "top_k"),
    (b'{"text": "a", "top_k": true}', "top_k"),
    (b'{"text": "\\ud800 lone surrogate"}', "body"),  # not valid Unicode, so not valid JSON
    (b'{}', "body"),  # the message names `text` and `texts`
    (b'{"text": "a", "texts": ["b"]}', "body"),
    (b'{"text": "a", "model": "/etc/passwd"}', "model"),  # nothing in a request chooses a file or a model
    (b'{"text": "a", "run_dir": "/tmp"}', "run_dir"),
    (b'{"text": ', "body"),
    (b'not json at all', "body"),
    (b'\xff\xfe\x00', "body"),
    (b'["a", "b"]', "body"),
    (b'"just a string"', "body"),
    (b'', "body"),
]


@pytest.mark.parametrize(("body", "field"), BAD, ids=[b.decode("utf-8", "replace")[:30] for b, _ in BAD])
def test_bad_input_is_422_naming_the_field_and_the_service_keeps_answering(client, body, field):
    r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    error = r.json()
    assert [e["field"] for e in error["errors"]] == [field], error
    assert error["detail"].startswith(f"{field}: ")
    if body == b"{}":
        assert "`text`" in error["detail"] and "`texts`" in error["detail"]
    assert client.post("/predict", json={"text": TUTORIAL}).status_code == 200


def test_unicode_beyond_ascii_is_fine(client, clf):
    for body, text in ((b'{"text": "caf\\u00e9 \\ud83d\\ude00"}', "café 😀"),
                       ('{"text": "naïve 😀 日本"}'.encode(), "naïve 😀 日本")):
        r = client.post("/predict", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        assert_same(r.json(), clf.predict(text))


def test_a_body_that_is_not_declared_json_is_415(client):
    # A form, or text/plain, is what a page on another site can send without a CORS preflight.
    r = client.post("/predict", content=b"text=hello",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_too_many_texts_is_413(trained_run):
    with running(trained_run, max_texts=3) as c:
        r = c.post("/predict", json={"texts": ["a"] * 4})
        assert r.status_code == 413 and "max_texts" in r.json()["detail"]
        assert c.post("/predict", json={"texts": ["a"] * 3}).status_code == 200


def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(trained_run):
    with running(trained_run, max_body_bytes=2048) as c:
        big = json.dumps({"text": "x" * 5000}).encode()
        r = c.post("/predict", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and "max_body_bytes" in r.json()["detail"]

        def chunks():  # no Content-Length: the limit must hold while reading
            for i in range(0, len(big), 500):
                yield big[i:i + 500]

        r = c.post("/predict", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.post("/predict", json={"text": "x" * 1000}).status_code == 200


# ---- API key --------------------------------------------------------------------------------------------

def test_api_key(trained_run):
    with running(trained_run, api_key="s3cret") as c:
        for path in ("/health", "/ready", "/", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        for method, path in (("post", "/predict"), ("get", "/info"), ("get", "/metrics")):
            kw = {"json": {"text": TUTORIAL}} if method == "post" else {}
            r = getattr(c, method)(path, **kw)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert "Authorization" in r.json()["detail"]
            r = getattr(c, method)(path, headers={"Authorization": "Bearer wrong"}, **kw)
            assert r.status_code == 401, path
            r = getattr(c, method)(path, headers={"Authorization": "Bearer s3cret"}, **kw)
            assert r.status_code == 200, path
        # The key is checked before anything else is looked at.
        r = c.post("/predict", content=b"{broken", headers={"Content-Type": "application/json"})
        assert r.status_code == 401
        serving = c.get("/info", headers={"Authorization": "Bearer s3cret"}).json()["serving"]
        assert serving["api_key_required"] is True and "api_key" not in serving
        schema = c.get("/openapi.json").json()
        assert schema["paths"]["/predict"]["post"]["security"] == [{"bearer": []}]


def test_the_api_key_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TUNETEXT_API_KEY", "from-env")
    assert ServeSettings().api_key.get_secret_value() == "from-env"
    assert "from-env" not in repr(ServeSettings())
    monkeypatch.setenv("TUNETEXT_API_KEY", "")
    assert ServeSettings().api_key is None


# ---- the other endpoints ------------------------------------------------------------------------------

def test_health_ready_and_predict_before_the_model_is_loaded(trained_run):
    c = TestClient(create_app(trained_run))  # not entered: the lifespan has not run
    assert c.get("/health").json() == {"status": "ok"}
    r = c.get("/ready")
    assert r.status_code == 503 and r.json()["ready"] is False
    assert c.post("/predict", json={"text": TUTORIAL}).status_code == 503
    assert c.get("/info").status_code == 503


def test_ready_when_loaded(client):
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_info(client, trained_run, clf):
    info = client.get("/info").json()
    config, metrics, _ = read_run(trained_run)
    assert info["labels"] == clf.label_names
    assert info["model"] == config.model.name
    assert info["max_length"] == config.model.max_length
    assert info["tunetext_version"] == __version__
    assert info["metrics"] == metrics["test"]
    assert info["serving"]["max_batch_size"] == ServeSettings().max_batch_size
    assert info["serving"]["api_key_required"] is False


def test_metrics_count_requests_errors_latency_and_batches(trained_run):
    with running(trained_run, cache_size=0) as c:  # the same text thrice: each a batch of the model's
        for _ in range(3):
            c.post("/predict", json={"text": TUTORIAL})
        c.post("/predict", json={"text": ""})
        c.get("/no-such-page")
        text = c.get("/metrics").text
    assert _sample(text, 'tunetext_requests_total{method="POST",path="/predict",status="200"}') == 3
    assert _sample(text, 'tunetext_request_errors_total{path="/predict",status="422"}') == 1
    assert _sample(text, 'tunetext_request_errors_total{path="other",status="404"}') == 1
    assert _sample(text, 'tunetext_request_latency_seconds_count{path="/predict"}') == 4
    assert _sample(text, "tunetext_batch_size_sum") == 3
    assert _sample(text, "tunetext_texts_total") == 3


def test_openapi_and_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/ready", "/info", "/metrics"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["PredictRequest"]
    assert request["additionalProperties"] is False
    assert request["properties"]["texts"]["maxItems"] == ServeSettings().max_texts
    assert set(schema["paths"]["/predict"]["post"]["responses"]) == {"200", "413", "415", "422", "503"}
    assert client.get("/docs").status_code == 200


def test_the_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert 'id="classify"' in page and 'id="text"' in page
    # No CDN, no web fonts, no external anything: it must work offline.
    assert "http://" not in page and "https://" not in page and "src=" not in page


# ---- the batcher, alone ----------------------------------------------------------------------------------

def _result(text: str) -> TextResult:
    return TextResult(np.array([len(text), 0.0]))


def test_batches_are_bounded_and_gathered():
    sizes: list[int] = []

    def engine(texts):
        sizes.append(len(texts))
        return [_result(t) for t in texts]

    async def main():
        batcher = Batcher(engine, max_batch_size=2, max_wait_ms=0, max_queue=100)
        batcher.start()
        answers = await asyncio.gather(batcher.submit(["a", "bb", "ccc"]), batcher.submit(["dddd", "eeeee"]))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert sizes == [2, 2, 1]
    assert [[r.probabilities[0] for r in a] for a in answers] == [[1, 2, 3], [4, 5]]


def test_waiting_texts_are_shared_by_the_idle_threads_which_run_at_once():
    together = threading.Barrier(2, timeout=10)  # passes only if two batches are in the model at once
    sizes = []

    def engine(texts):
        sizes.append(len(texts))
        together.wait()
        return [_result(t) for t in texts]

    async def main():
        batcher = Batcher(engine, max_batch_size=8, max_wait_ms=0, max_queue=10, threads=2)
        batcher.start()
        answers = await asyncio.gather(batcher.submit(["a", "bb", "ccc"]), batcher.submit(["dddd"]))
        await batcher.stop()
        return answers

    answers = asyncio.run(main())
    assert sizes == [2, 2]  # not one batch of 4 on one thread while the other idles
    assert [[r.probabilities[0] for r in a] for a in answers] == [[1, 2, 3], [4]]


def test_a_full_queue_is_busy_and_a_model_failure_reaches_every_caller():
    release = threading.Event()
    calls = []

    def engine(texts):
        calls.append(texts)
        release.wait(10)
        if texts == ["boom"]:
            raise RuntimeError("model failed")
        return [_result(t) for t in texts]

    async def main():
        batcher = Batcher(engine, max_batch_size=1, max_wait_ms=0, max_queue=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(["boom"]))
        while not calls:  # the first text is in the model; two more fill the queue
            await asyncio.sleep(0.001)
        queued = asyncio.ensure_future(batcher.submit(["x", "y"]))
        await asyncio.sleep(0)
        with pytest.raises(BusyError):
            await batcher.submit(["z"])
        release.set()
        with pytest.raises(RuntimeError, match="model failed"):
            await first
        assert [r.probabilities[0] for r in await queued] == [1, 1]  # the batcher survived the failure
        await batcher.stop()

    asyncio.run(main())


# ---- threads, workers, CLI ---------------------------------------------------------------------------

def test_inference_threads_default_to_cores_per_worker(monkeypatch):
    monkeypatch.setattr("tunetext.serve.app.cpu_count", lambda: 8)
    assert ServeSettings().inference_threads() == 8
    assert ServeSettings(workers=2).inference_threads() == 4
    assert ServeSettings(workers=16).inference_threads() == 1
    assert ServeSettings(workers=2, threads=3).inference_threads() == 3


def test_each_inference_thread_runs_one_torch_thread(trained_run):
    before = torch.get_num_threads()
    try:
        with running(trained_run, threads=2) as c:
            batcher = c.app.state.tunetext.batcher
            # torch's thread count is per thread: what matters is the threads the model runs on.
            seen = c.portal.call(batcher.run_on_each_thread, lambda: (threading.get_ident(),
                                                                      torch.get_num_threads()))
            assert len({ident for ident, _ in seen}) == 2 and {n for _, n in seen} == {1}
            assert c.get("/info").json()["serving"]["threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_precision(trained_run, monkeypatch):
    assert ServeSettings(precision="bf16").bf16() and not ServeSettings(precision="fp32").bf16()
    monkeypatch.setattr("tunetext.precision.cpu_has_amx", lambda: False)
    monkeypatch.setattr("tunetext.precision.cpu_has_avx512_bf16", lambda: False)
    assert not ServeSettings().bf16()  # auto: fp32 without bf16 units
    monkeypatch.setattr("tunetext.precision.cpu_has_amx", lambda: True)
    assert ServeSettings().bf16()
    with running(trained_run, precision="bf16") as c:
        assert c.get("/info").json()["serving"]["precision"] == "bf16"


def test_a_bad_run_dir_fails_before_serving(tmp_path):
    from tunetext.serve import serve

    with pytest.raises(RunError, match="not a finished tunetext run"):
        create_app(tmp_path)
    with pytest.raises(RunError):
        serve(tmp_path / "missing")


def test_worker_processes_build_the_app_from_the_environment(monkeypatch, trained_run):
    from tunetext.serve import app_from_env

    monkeypatch.setenv("TUNETEXT_SERVE_RUN_DIR", str(trained_run))
    monkeypatch.setenv("TUNETEXT_SERVE_SETTINGS", ServeSettings(workers=2, max_batch_size=16).model_dump_json(
        exclude={"api_key"}))
    app = app_from_env()
    assert app.state.tunetext.settings.max_batch_size == 16
    assert app.state.tunetext.settings.workers == 2


def test_cli_serve_maps_to_serve(monkeypatch, trained_run):
    from tunetext import cli

    seen = {}
    monkeypatch.setattr("tunetext.serve.serve", lambda run_dir, **kw: seen.update(run_dir=run_dir, **kw))
    assert cli.main(["serve", str(trained_run), "--workers", "2", "--max-batch-size", "16",
                     "--max-wait-ms", "2.5", "--pass-size", "4"]) == 0
    assert seen["run_dir"] == str(trained_run)
    assert [seen[k] for k in ("workers", "max_batch_size", "max_wait_ms", "pass_size")] == [2, 16, 2.5, 4]
    # Unset: serve's own defaults apply (loopback, port 8000: tests/test_cli_defaults.py), and ServeSettings'.
    assert not {"host", "port", "max_texts"} & set(seen)


def _sample(text: str, name: str) -> float:
    """The value of one sample in Prometheus text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in metrics:\n{text}")
