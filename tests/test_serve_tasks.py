"""The service for multi-label and regression runs: the answer's shape, the schema that documents it, /info,
the page, and the parts every task shares (metrics, batching, the API key)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tunetext import Classifier
from tunetext.runs import RunError, read_json
from tunetext.serve import ServeSettings, create_app

TEXTS = ["WINNER! claim your 1000 prize now", "see you at 7pm", "ok", "Call me when you get home, the train "
         "was late again and I am stuck at the station with no battery left on my phone"]


def _train(out: Path, model: Path, **overrides) -> Path:
    from tunetext import load_config, train

    config = load_config(overrides={"model.name": str(model), "model.max_length": 64, "train.epochs": 3,
                                    "train.batch_size": 8, "train.learning_rate": 1e-3,
                                    "train.precision": "fp32", "train.early_stopping_patience": None,
                                    **overrides})
    train(config, out, progress=False)
    return out


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_bert, tiny_csv) -> Path:
    """The tiny data as tags: `spam` for spam, `number` for a text with a digit (a list per row, JSONL)."""
    folder = tmp_path_factory.mktemp("multi")
    with open(tiny_csv, newline="", encoding="utf-8") as f, open(folder / "tags.jsonl", "w") as out:
        for row in csv.DictReader(f):
            tags = (["spam"] if row["label"] == "spam" else []) + (["number"] if re.search(r"\d", row["text"])
                                                                   else [])
            out.write(json.dumps({"text": row["text"], "tags": tags}) + "\n")
    return _train(folder / "run", tiny_bert, **{"data.source": str(folder / "tags.jsonl"),
                                                "data.label_column": "tags"})


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_bert, tiny_csv) -> Path:
    """The tiny data with a number per text (its length, plus 4.5 for spam), as CSV."""
    folder = tmp_path_factory.mktemp("regression")
    with open(tiny_csv, newline="", encoding="utf-8") as f, \
            open(folder / "scores.csv", "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "score"])
        for row in csv.DictReader(f):
            writer.writerow([row["text"], len(row["text"]) / 7 + (4.5 if row["label"] == "spam" else 0)])
    return _train(folder / "run", tiny_bert, **{"data.source": str(folder / "scores.csv"),
                                                "data.label_column": "score", "data.task": "regression"})


@contextmanager
def running(run_dir, **settings):
    settings.setdefault("precision", "fp32")
    with TestClient(create_app(run_dir, ServeSettings(**settings))) as client:
        yield client


@pytest.fixture(scope="module")
def multi(multi_label_run):
    with running(multi_label_run) as c:
        yield c


@pytest.fixture(scope="module")
def regression(regression_run):
    with running(regression_run) as c:
        yield c


def _answer_schema(client: TestClient) -> dict:
    """The schema /openapi.json gives for one text's 200 answer to /predict, `$ref`s resolved."""
    schema = client.get("/openapi.json").json()
    content = schema["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]
    one = next(s for s in content["schema"]["anyOf"] if "$ref" in s)
    return schema["components"]["schemas"][one["$ref"].rsplit("/", 1)[1]]


def _conforms(answer: dict, schema: dict) -> None:
    assert set(schema["required"]) <= set(answer) <= set(schema["properties"])


# ---- multi-label ----------------------------------------------------------------------------------------

def test_multi_label_answers_the_labels_over_their_thresholds_as_the_classifier_does(multi, multi_label_run):
    clf = Classifier.load(multi_label_run)
    answers = multi.post("/predict", json={"texts": TEXTS}).json()
    schema = _answer_schema(multi)
    for answer, expected in zip(answers, clf.predict(TEXTS), strict=True):
        _conforms(answer, schema)
        assert answer["labels"] == expected.labels
        assert list(answer["probabilities"]) == clf.label_names
        for name, p in expected.probabilities.items():
            assert answer["probabilities"][name] == pytest.approx(p, abs=1e-5)
        assert answer["truncated"] is expected.truncated
        assert "label" not in answer and "value" not in answer
    assert multi.post("/predict", json={"text": TEXTS[0]}).json() == answers[0]


def test_multi_label_uses_the_classifiers_thresholds_not_one_half(multi_label_run):
    with running(multi_label_run) as c:
        clf = c.app.state.tunetext.classifier
        probs = c.post("/predict", json={"text": TEXTS[0]}).json()["probabilities"]
        clf.thresholds = {name: 0.0 for name in clf.label_names}  # every label is over
        everything = c.post("/predict", json={"text": TEXTS[0]}).json()
        clf.thresholds = {name: 1.0 for name in clf.label_names}  # none can be
        nothing = c.post("/predict", json={"text": TEXTS[0]}).json()
        low = min(probs, key=probs.get)
        clf.thresholds = {name: 0.0 if name == low else 1.0 for name in clf.label_names}
        only_low = c.post("/predict", json={"text": TEXTS[0]}).json()
    assert everything["labels"] == sorted(probs, key=lambda n: -probs[n])  # most probable first
    assert nothing["labels"] == []
    assert only_low["labels"] == [low]  # over its own threshold though it is the least probable


def test_multi_label_top_k_keeps_the_most_probable_and_the_labels_among_them(multi_label_run):
    with running(multi_label_run) as c:
        c.app.state.tunetext.classifier.thresholds = {"number": 0.0, "spam": 0.0}
        full = c.post("/predict", json={"text": TEXTS[0]}).json()
        top = c.post("/predict", json={"text": TEXTS[0], "top_k": 1}).json()
    best = max(full["probabilities"], key=full["probabilities"].get)
    assert top["probabilities"] == {best: full["probabilities"][best]}
    assert top["labels"] == [best] and len(full["labels"]) == 2


def test_multi_label_schema_and_info(multi, multi_label_run):
    schema = _answer_schema(multi)
    assert {"labels", "probabilities", "truncated"} <= set(schema["required"])
    assert schema["properties"]["labels"]["type"] == "array"
    assert "label" not in schema["properties"] and "value" not in schema["properties"]
    info = multi.get("/info").json()
    clf = Classifier.load(multi_label_run)
    assert info["task"] == "multi_label" and info["labels"] == clf.label_names
    assert info["thresholds"] == clf.thresholds == read_json(multi_label_run / "metrics.json")["task"][
        "thresholds"]
    assert info["scale"] is None


# ---- regression ---------------------------------------------------------------------------------------

def test_regression_answers_the_value(regression, regression_run):
    clf = Classifier.load(regression_run)
    answers = regression.post("/predict", json={"texts": TEXTS}).json()
    schema = _answer_schema(regression)
    for answer, expected in zip(answers, clf.predict(TEXTS), strict=True):
        _conforms(answer, schema)
        assert set(answer) == {"value", "truncated"}
        assert schema["additionalProperties"] is False
        assert answer["value"] == pytest.approx(expected.value, abs=1e-4)
        assert answer["truncated"] is expected.truncated
    # On the targets' scale (they run from about 0 to 20 here), not the standardised one the model learnt.
    target = read_json(regression_run / "metrics.json")["task"]
    assert answers[0]["value"] == pytest.approx(target["target_mean"], abs=2 * target["target_std"])


def test_regression_refuses_top_k_naming_it(regression):
    r = regression.post("/predict", json={"text": TEXTS[0], "top_k": 2})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "top_k" and "regression" in r.json()["detail"]
    assert regression.post("/predict", json={"text": TEXTS[0]}).status_code == 200


def test_regression_schema_and_info(regression, regression_run):
    schema = _answer_schema(regression)
    assert schema["properties"]["value"]["type"] == "number" and "value" in schema["required"]
    assert "labels" not in schema["properties"] and "probabilities" not in schema["properties"]
    info = regression.get("/info").json()
    target = read_json(regression_run / "data.json")["train"]["target"]
    assert info["task"] == "regression" and info["thresholds"] is None
    assert info["scale"]["low"] == target["min"] and info["scale"]["high"] == target["max"]
    assert "data.json" in info["scale"]["source"]


def test_regression_scale_falls_back_to_mean_and_std_without_the_data_summary(regression_run, tmp_path):
    copy = Path(shutil.copytree(regression_run, tmp_path / "run"))
    (copy / "data.json").unlink()
    with running(copy) as c:
        scale = c.get("/info").json()["scale"]
    task = read_json(copy / "metrics.json")["task"]
    assert scale["low"] == pytest.approx(task["target_mean"] - 3 * task["target_std"])
    assert scale["high"] == pytest.approx(task["target_mean"] + 3 * task["target_std"])
    assert "metrics.json" in scale["source"]


def test_a_task_this_version_cannot_serve_fails_before_serving(regression_run, tmp_path):
    copy = Path(shutil.copytree(regression_run, tmp_path / "run"))
    metrics = read_json(copy / "metrics.json")
    metrics["task"]["type"] = "ranking"
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(RunError, match="ranking"):
        create_app(copy)


# ---- the Hugging Face convention (POST /), with huggingface_hub's own client -----------------------------

def test_hf_client_multi_label_gets_each_sigmoid_without_thresholds(multi_label_run, live_server,
                                                                     inference_client):
    clf = Classifier.load(multi_label_run)
    with live_server(create_app(multi_label_run, ServeSettings(precision="fp32"))) as port:
        client = inference_client(f"http://127.0.0.1:{port}")
        for text in TEXTS:
            expected = clf.predict(text).probabilities
            got = client.text_classification(text)
            # Every label, over its threshold or not, most probable first.
            assert [e.label for e in got] == sorted(expected, key=lambda n: -expected[n])
            assert [e.score for e in got] == pytest.approx([expected[e.label] for e in got], abs=1e-5)
        assert len(client.text_classification(TEXTS[0], top_k=1)) == 1
        assert client.text_classification(TEXTS[0], function_to_apply="sigmoid") == \
            client.text_classification(TEXTS[0])


def test_hf_client_regression_gets_the_value_named_after_the_target(regression_run, live_server,
                                                                     inference_client):
    from huggingface_hub.errors import HfHubHTTPError

    clf = Classifier.load(regression_run)
    with live_server(create_app(regression_run, ServeSettings(precision="fp32"))) as port:
        client = inference_client(f"http://127.0.0.1:{port}")
        got = client.text_classification(TEXTS[1])
        with pytest.raises(HfHubHTTPError) as refused:
            client.text_classification(TEXTS[1], function_to_apply="softmax")
    assert [e.label for e in got] == ["score"]  # the target column's name
    assert got[0].score == pytest.approx(clf.predict(TEXTS[1]).value, abs=1e-4)
    assert refused.value.response.status_code == 422 and "regression" in refused.value.response.text


# ---- single-label stays as it was ------------------------------------------------------------------------

def test_single_label_schema_and_info(trained_run):
    with running(trained_run) as c:
        schema = _answer_schema(c)
        info = c.get("/info").json()
    assert {"label", "score", "probabilities", "truncated"} <= set(schema["required"])
    assert "labels" not in schema["properties"] and "value" not in schema["properties"]
    assert info["task"] == "single_label" and info["thresholds"] is None and info["scale"] is None


# ---- what every task shares ----------------------------------------------------------------------------

@pytest.mark.parametrize("run", ["multi_label_run", "regression_run"])
def test_batched_concurrent_answers_equal_one_at_a_time(request, run):
    run_dir = request.getfixturevalue(run)
    expected = Classifier.load(run_dir).predict(TEXTS)
    with running(run_dir, pass_size=2, max_wait_ms=50, threads=2) as c:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda t: c.post("/predict", json={"text": t}).json(), TEXTS))
        metrics = c.get("/metrics").text
    for answer, prediction in zip(answers, expected, strict=True):
        if prediction.value is not None:
            assert answer["value"] == pytest.approx(prediction.value, abs=1e-4)
        else:
            assert answer["labels"] == prediction.labels
            assert answer["probabilities"] == pytest.approx(prediction.probabilities, abs=1e-5)
    assert 'tunetext_requests_total{method="POST",path="/predict",status="200"} 4.0' in metrics
    assert "tunetext_texts_total 4.0" in metrics


@pytest.mark.parametrize("run", ["multi_label_run", "regression_run"])
def test_the_api_key_and_the_limits_hold_for_every_task(request, run):
    with running(request.getfixturevalue(run), api_key="k", max_texts=2) as c:
        assert c.post("/predict", json={"text": TEXTS[0]}).status_code == 401
        assert c.get("/info").status_code == 401
        auth = {"Authorization": "Bearer k"}
        assert c.post("/predict", json={"text": TEXTS[0]}, headers=auth).status_code == 200
        assert c.post("/predict", json={"texts": TEXTS}, headers=auth).status_code == 413
        assert c.post("/predict", json={"text": " "}, headers=auth).status_code == 422


# ---- the page, in a real browser -------------------------------------------------------------------------

def _show(driver, url: str, text: str):
    """Open the page, wait for /info, classify `text` and wait for the answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "dd[data-field=task]"))
    driver.find_element(By.ID, "text").send_keys(text)
    driver.find_element(By.ID, "classify").click()
    WebDriverWait(driver, 15).until(lambda d: d.find_element(By.ID, "label").text)
    return By


def test_the_page_shows_several_labels_with_thresholds(browser, multi_label_run, live_server, tmp_path):
    # The run's thresholds as if tuned so: `number` is over its threshold whatever the text, `spam` never.
    copy = Path(shutil.copytree(multi_label_run, tmp_path / "run"))
    metrics = read_json(copy / "metrics.json")
    metrics["task"]["thresholds"] = {"number": 0.0, "spam": 1.0}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with live_server(create_app(copy, ServeSettings(precision="fp32"))) as port:
        by = _show(browser, f"http://127.0.0.1:{port}/", TEXTS[0])
        assert browser.find_element(by.CSS_SELECTOR, "dd[data-field=task]").text == "multi-label"
        assert browser.find_element(by.ID, "label").text == "number"
        bars = {b.get_attribute("data-label"): b
                for b in browser.find_elements(by.CSS_SELECTOR, "#bars .bar")}
        assert set(bars) == {"number", "spam"}
        assert bars["number"].get_attribute("data-highlighted") == "true"
        assert bars["spam"].get_attribute("data-highlighted") == "false"
        marks = [float(m.get_attribute("data-threshold"))
                 for m in browser.find_elements(by.CSS_SELECTOR, "#bars .threshold")]
    assert sorted(marks) == [0.0, 1.0]


def test_the_page_shows_the_value_on_the_scale(browser, regression_run, live_server):
    app = create_app(regression_run, ServeSettings(precision="fp32"))
    expected = Classifier.load(regression_run).predict(TEXTS[1]).value
    with live_server(app) as port:
        by = _show(browser, f"http://127.0.0.1:{port}/", TEXTS[1])
        assert browser.find_element(by.CSS_SELECTOR, "dd[data-field=task]").text == "regression"
        shown = float(browser.find_element(by.ID, "label").text)
        share = float(browser.find_element(by.ID, "value-bar").get_attribute("data-share"))
        note = browser.find_element(by.ID, "scale-note").text
    scale = read_json(regression_run / "data.json")["train"]["target"]
    assert shown == pytest.approx(expected, abs=1e-3)
    assert share == pytest.approx(min(1, max(0, (expected - scale["min"]) / (scale["max"] - scale["min"]))),
                                  abs=1e-4)
    assert "min and max" in note


# ---- fuzzing against each task's own schema --------------------------------------------------------------

@pytest.mark.parametrize("run", ["multi_label_run", "regression_run"])
def test_fuzz_finds_no_server_error_and_no_schema_violation_for_each_task(request, run, live_server):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    from tunetext.predict import has_content

    app = create_app(request.getfixturevalue(run), ServeSettings(max_texts=8, max_body_bytes=20_000))
    with live_server(app) as port:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
        schema.config.checks.negative_data_rejection.expected_statuses.append("413")
        operations = {f"{op.method.upper()} {op.path}": op for op in
                      (result.ok() for result in schema.get_all_operations())}
        if run == "regression_run":  # documented as not accepted, so a client never sends it
            assert "top_k" not in schema.raw_schema["components"]["schemas"]["PredictRequest"]["properties"]
        for name in ("POST /predict", "GET /info"):
            for mode in schemathesis.GenerationMode:
                if mode is schemathesis.GenerationMode.NEGATIVE and name == "GET /info":
                    continue
                cases = operations[name].as_strategy(generation_mode=mode)
                if mode is schemathesis.GenerationMode.POSITIVE:  # see test_serve_live._worth_classifying
                    cases = cases.filter(lambda case: all(
                        has_content(t) for t in ([case.body.get("text")] + (case.body.get("texts") or []))
                        if isinstance(t, str)) if isinstance(case.body, dict) else True)

                @given(case=cases)
                @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
                def call(case):
                    case.call_and_validate()

                call()
