"""The Hugging Face inference convention (POST / with `inputs`), spoken by huggingface_hub's own
`InferenceClient` to a live server. Multi-label and regression runs: tests/test_serve_tasks.py."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from huggingface_hub.errors import HfHubHTTPError

from tunetext import Classifier
from tunetext.serve import ServeSettings, create_app

TEXTS = ["WINNER! claim your 1000 prize now", "see you at 7pm", "ok"]
KEY = "hf-test-key"


@pytest.fixture(scope="module")
def served(trained_run, live_server):
    app = create_app(trained_run, ServeSettings(precision="fp32", max_texts=4, api_key=KEY))
    with live_server(app) as port:
        yield f"http://127.0.0.1:{port}", app


def test_the_real_client_gets_every_label_with_its_probability_most_probable_first(
        served, trained_run, inference_client):
    url, _ = served
    client = inference_client(url, api_key=KEY)
    clf = Classifier.load(trained_run)
    for text in TEXTS:
        expected = clf.predict(text)
        probs = expected.probabilities
        got = client.text_classification(text)
        assert [e.label for e in got] == sorted(probs, key=lambda n: -probs[n])
        assert got[0].label == expected.label
        for element in got:
            assert element.score == pytest.approx(expected.probabilities[element.label], abs=1e-5)
        assert sum(e.score for e in got) == pytest.approx(1, abs=1e-5)


def test_the_real_client_top_k_and_function_to_apply(served, trained_run, inference_client):
    url, _ = served
    client = inference_client(url, api_key=KEY)
    full = client.text_classification(TEXTS[0])
    top = client.text_classification(TEXTS[0], top_k=1)
    assert [(e.label, e.score) for e in top] == [(full[0].label, full[0].score)]
    assert client.text_classification(TEXTS[0], function_to_apply="softmax") == full
    with pytest.raises(HfHubHTTPError) as refused:  # the run's own function only: no logits to apply it to
        client.text_classification(TEXTS[0], function_to_apply="sigmoid")
    assert refused.value.response.status_code == 422
    assert "function_to_apply" in refused.value.response.json()["errors"][0]["field"]


def test_the_key_is_needed_on_post_but_not_for_the_page(served, inference_client):
    url, _ = served
    with pytest.raises(HfHubHTTPError) as refused:
        inference_client(url).text_classification(TEXTS[0])
    assert refused.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as wrong:
        inference_client(url, api_key="wrong").text_classification(TEXTS[0])
    assert wrong.value.response.status_code == 401
    import urllib.request

    with urllib.request.urlopen(f"{url}/", timeout=10) as page:  # GET / is the page, open to all
        assert page.status == 200 and b"<html" in page.read().lower()


def test_a_list_of_inputs_limits_errors_and_metrics(served, trained_run):
    url, app = served
    auth = {"Authorization": f"Bearer {KEY}"}
    import httpx

    clf = Classifier.load(trained_run)
    with httpx.Client(base_url=url, headers=auth, timeout=30) as http:
        many = http.post("/", json={"inputs": TEXTS, "parameters": {"top_k": 1}})
        assert many.status_code == 200
        assert [[e["label"] for e in answer] for answer in many.json()] == \
            [[p.label] for p in clf.predict(TEXTS)]
        # Also the same as /predict, field for field.
        one = http.post("/", json={"inputs": TEXTS[1]}).json()
        predicted = http.post("/predict", json={"text": TEXTS[1]}).json()
        assert {e["label"]: e["score"] for e in one[0]} == predicted["probabilities"]
        assert http.post("/", json={"inputs": TEXTS * 2}).status_code == 413  # max_texts=4
        blank = http.post("/", json={"inputs": ["fine", " \u200b "]})
        assert blank.status_code == 422 and blank.json()["errors"][0]["field"] == "inputs[1]"
        unknown = http.post("/", json={"inputs": "x", "options": {}})
        assert unknown.status_code == 422 and "`inputs`" in unknown.json()["detail"]
        assert http.post("/", json={"inputs": "x", "parameters": {"top_k": 0}}).status_code == 422
        assert http.post("/", content=b'{"inputs": "x"}',
                         headers={"Content-Type": "text/plain"}).status_code == 415
        metrics = http.get("/metrics").text
    assert 'tunetext_requests_total{method="POST",path="/",status="200"}' in metrics
    assert 'tunetext_request_errors_total{path="/",status="413"}' in metrics


def test_not_ready_is_503(trained_run):
    client = TestClient(create_app(trained_run))  # outside `with`, the lifespan (loading) does not run
    assert client.post("/", json={"inputs": "hello"}).status_code == 503
