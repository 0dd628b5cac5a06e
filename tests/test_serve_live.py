"""The service on a real socket: fuzzed against its own OpenAPI schema, and its page driven in Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tunetext.predict import has_content
from tunetext.serve import ServeSettings, create_app

ARTIFACTS = Path(__file__).parent / "artifacts"
KEY = "page-test-key"


@pytest.fixture(scope="module")
def base_url(trained_run, live_server) -> Iterator[str]:
    with live_server(create_app(trained_run, ServeSettings(max_texts=8, max_body_bytes=20_000))) as port:
        yield f"http://127.0.0.1:{port}"


# ---- fuzzing --------------------------------------------------------------------------------------------

# Every default check: no 5xx; status codes, content types, headers and bodies as documented; data the
# schema allows is accepted and data it forbids is refused. Bounded and repeatable: a fixed number of
# examples per operation, derandomised, no example database. (schemathesis' own pytest loader,
# `from_fixture`, does not run under pytest 9, so the operations are walked here.)
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_fuzz_finds_no_server_error_and_no_schema_violation(base_url, mode):
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    # A list longer than the documented maxItems is refused with 413, as the service promises; any other
    # acceptance of schema-violating data is still a failure.
    schema.config.checks.negative_data_rejection.expected_statuses.append("413")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        "POST /predict", "GET /health", "GET /ready", "GET /info", "GET /metrics"}
    for operation in operations:
        if mode is schemathesis.GenerationMode.NEGATIVE and not operation.body:
            continue  # nothing to get wrong in a GET without parameters
        cases = operation.as_strategy(generation_mode=mode)
        if mode is schemathesis.GenerationMode.POSITIVE:
            cases = cases.filter(_worth_classifying)

        @given(case=cases)
        @settings(max_examples=40, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def call(case):
            case.call_and_validate()

        call()
    assert _get(f"{base_url}/health") == 200  # still answering


def _worth_classifying(case) -> bool:
    """Whether every text in a generated body has content (`has_content`). The schema's pattern can only ask
    for a non-space character (JSON Schema's regexes have no Unicode categories), so a text of, say, a soft
    hyphen and a control character is valid by the schema and still refused with 422, by design."""
    body = case.body if isinstance(case.body, dict) else {}
    texts = [body["text"]] if isinstance(body.get("text"), str) else body.get("texts") or []
    return all(has_content(text) for text in texts if isinstance(text, str))


def _get(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status


# ---- the page in a real browser -------------------------------------------------------------------------

def _wait(driver, condition, timeout=15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def _classify(driver, text: str) -> dict:
    """Type `text`, click Classify, wait for the answer; the rendered label and bars."""
    from selenium.webdriver.common.by import By

    driver.execute_script("document.getElementById('label').textContent = ''")
    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "classify").click()
    _wait(driver, lambda d: d.find_element(By.ID, "label").text)
    bars = {}
    for bar in driver.find_elements(By.CSS_SELECTOR, "#bars .bar"):
        track = bar.find_element(By.XPATH, "..")
        bars[bar.get_attribute("data-label")] = (float(bar.get_attribute("data-probability")),
                                                 bar.size["width"] / track.size["width"])
    return {"label": driver.find_element(By.ID, "label").text, "bars": bars}


def _expected(base_url: str, text: str, key: str | None = None) -> dict:
    import urllib.request

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{base_url}/predict", data=json.dumps({"text": text}).encode(),
                                     headers=headers)
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def test_the_page_classifies_in_a_real_browser(browser, base_url, trained_run):
    from selenium.webdriver.common.by import By

    from tunetext.runs import read_run

    browser.get(f"{base_url}/")
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "dd[data-field=model]").text)
    config, metrics, _ = read_run(trained_run)
    assert browser.find_element(By.CSS_SELECTOR, "dd[data-field=model]").text == config.model.name
    accuracy = browser.find_element(By.CSS_SELECTOR, "dd[data-field='test accuracy']").text
    assert accuracy == f"{metrics['test']['accuracy']:.4f}"

    text = "WINNER! You have been selected for a 1000 cash prize, call now"
    shown = _classify(browser, text)
    expected = _expected(base_url, text)
    assert shown["label"] == expected["label"]
    assert set(shown["bars"]) == set(expected["probabilities"])
    for name, (p, width) in shown["bars"].items():
        assert p == pytest.approx(expected["probabilities"][name], abs=1e-6)
        assert width == pytest.approx(p, abs=0.02)  # the bar is drawn as long as the probability says
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")  # test output, never committed
    browser.save_screenshot(str(ARTIFACTS / "serve_page.png"))

    # An empty text is refused on the page, without a request.
    browser.find_element(By.ID, "text").clear()
    browser.find_element(By.ID, "classify").click()
    assert "Type some text" in browser.find_element(By.ID, "error").text


def test_the_page_asks_for_the_api_key(browser, trained_run, live_server):
    from selenium.webdriver.common.by import By

    with live_server(create_app(trained_run, ServeSettings(api_key=KEY))) as port:
        url = f"http://127.0.0.1:{port}"
        browser.get(f"{url}/")
        _wait(browser, lambda d: d.find_element(By.ID, "key-panel").is_displayed())
        assert "needs an API key" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "api-key").send_keys(KEY)
        browser.find_element(By.ID, "save-key").click()
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "dd[data-field=model]"))
        assert not browser.find_element(By.ID, "key-panel").is_displayed()
        text = "see you at the station at 7"
        shown = _classify(browser, text)
        assert shown["label"] == _expected(url, text, KEY)["label"]
        browser.save_screenshot(str(ARTIFACTS / "serve_page_api_key.png"))
