"""`tunetext report`: the HTML page and its figures, checked as text and rendered in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tunetext.cli import main
from tunetext.report import SECTIONS, mistakes_table, report
from tunetext.runs import METRICS

ARTIFACTS = Path(__file__).parent / "artifacts"  # gitignored; the browser test leaves a screenshot here
FIGURES = ["learning_curves", "confusion_matrix", "per_class", "calibration", "before_after", "data"]


@pytest.fixture(scope="module")
def run_copy(trained_run, tmp_path_factory) -> Path:
    """A copy of the tiny run, so writing RUN_DIR/report/ leaves the shared run as it was."""
    run = tmp_path_factory.mktemp("report") / "tiny-bert"
    shutil.copytree(trained_run, run)
    return run


@pytest.fixture(scope="module")
def page(run_copy) -> tuple[Path, str]:
    path = report(run_copy)
    return path, path.read_text(encoding="utf-8")


def test_report_is_written_in_the_run_with_every_section_and_figure(run_copy, page):
    path, text = page
    assert path == run_copy / "report" / "report.html"
    for sid, title in SECTIONS:
        assert re.search(rf'<section id="{sid}"><h2>{re.escape(title)}</h2>', text), sid
    img = r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" style="width:(\d+)px"'
    images = re.findall(img, text)
    assert len(images) == len(FIGURES)
    for name, (data, css_width) in zip(FIGURES, images, strict=True):  # each inline image is its PNG file
        png = (path.parent / f"{name}.png").read_bytes()
        assert base64.b64decode(data) == png
        with Image.open(io.BytesIO(png)) as image:
            assert image.format == "PNG"
            pixels = np.asarray(image.convert("L"))
        # Drawn at 150 dpi for a page that shows it at 96 CSS pixels an inch: twice as sharp, or nearly.
        assert pixels.shape[1] == pytest.approx(int(css_width) * 150 / 96, abs=2), name
        assert pixels.shape[0] >= 300, name  # the shortest figure is 2.4 inches tall
        # Something is drawn: not a blank white canvas, nor a filled one, and more than two shades.
        ink = pixels < 200
        assert 0.01 < ink.mean() < 0.7, name
        assert len(np.unique(pixels)) > 16, name
    with Image.open(path.parent / "learning_curves.png") as image:
        assert image.size == (1500, 540)  # 10 by 3.6 inches at 150 dpi


def test_report_loads_nothing_from_outside(page):
    _, text = page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text, re.IGNORECASE)
    assert not re.search(r"url\(|@import|<link|<script", text, re.IGNORECASE)
    assert re.findall(r'<img src="([^"]{0,22})', text) == ["data:image/png;base64,"] * len(FIGURES)


def test_report_numbers_agree_with_the_runs_metrics(run_copy, page):
    _, text = page
    metrics = json.loads((run_copy / METRICS).read_text())
    test = metrics["test"]
    assert f'test accuracy</div><div class="value">{test["accuracy"]:.3f}<' in text
    assert f'macro-F1</div><div class="value">{test["macro_f1"]:.3f}<' in text
    # The test split is reloaded and scored again: its calibration error and its mistakes must be the ones
    # recorded at training time.
    temperature = metrics["calibration"]["temperature"]
    assert (f"the ECE is {test['ece_uncalibrated']:.3f} at temperature 1 and {test['ece']:.3f} at "
            f"temperature {temperature:.2f}; log loss {test['log_loss']:.3f}") in text
    wrong = int(np.sum(test["confusion_matrix"]) - np.trace(test["confusion_matrix"]))
    if wrong:
        assert f"{wrong:,} of {test['n']:,} test texts are misclassified" in text
        assert text.count('<span class="pill pred">') == min(wrong, 10)
    else:
        assert "No mistakes" in text
    before = metrics["before_finetune"]["test"]
    assert f"<td>before fine-tuning (new head)</td><td>{before['accuracy']:.3f}</td>" in text
    assert "prompt" not in text.split('id="before-after"')[1].split("</table>")[0]


def test_mistakes_table_orders_by_confidence_and_escapes_texts():
    texts = ['<script>alert("x")</script> & win', "fine", "<b>bold</b>", "right"]
    labels = np.array([0, 1, 0, 0])
    probs = np.array([[0.2, 0.8], [0.4, 0.6], [0.4, 0.6], [0.9, 0.1]])  # texts 0 and 2 are wrong
    log_probs = np.log(probs)
    table, wrong = mistakes_table(texts, labels, log_probs, 1.0, ["a<b", "ham"])
    assert wrong == 2
    assert "<script>" not in table and "<b>bold" not in table and 'alert("x")' not in table
    rows = re.findall(r'<td class="text">(.*?)</td>', table)
    assert rows == ["&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; win", "&lt;b&gt;bold&lt;/b&gt;"]
    assert "a&lt;b" in table  # label names too
    assert re.findall(r'<td class="num">([\d.]+)</td>', table)[::2] == ["0.800", "0.600"]
    # A temperature flattens the probabilities shown (the raw column keeps temperature 1).
    calibrated, _ = mistakes_table(texts, labels, log_probs, 2.0, ["a", "ham"], limit=1)
    assert re.findall(r'<td class="num">([\d.]+)</td>', calibrated) == [f"{2 / 3:.3f}", "0.800"]


def test_prompt_baselines_join_the_before_after_table(run_copy, tmp_path):
    metrics = json.loads((run_copy / METRICS).read_text())
    zero = {**metrics["test"], "accuracy": 0.5123, "n": 9, "prompt": {"model": "tiny-gpt", "shots": 0}}
    few = {**metrics["test"], "accuracy": 0.6789, "n": 9, "prompt": {"model": "tiny-gpt", "shots": 4}}
    run = tmp_path / "with-prompts"
    shutil.copytree(run_copy, run, ignore=shutil.ignore_patterns("report"))
    (run / METRICS).write_text(json.dumps({**metrics, "prompt_baselines": {"zero_shot": zero,
                                                                           "few_shot": few}}))
    out = tmp_path / "elsewhere" / "prompts.html"
    assert main(["report", str(run), "--output", str(out)]) == 0
    table = out.read_text().split('id="before-after"')[1].split("</table>")[0]
    names = re.findall(r"<tr[^>]*><td>([^<]*)</td>", table)
    assert names == ["before fine-tuning (new head)", "zero-shot prompt (tiny-gpt)",
                     "4-shot prompt (tiny-gpt)", "after fine-tuning"]
    assert "<td>zero-shot prompt (tiny-gpt)</td><td>0.512</td>" in table
    assert "<td>4-shot prompt (tiny-gpt)</td><td>0.679</td>" in table
    assert "subsample of the test split" in out.read_text()
    assert sorted(p.stem for p in out.parent.glob("*.png")) == sorted(FIGURES)
    assert not (run / "report").exists()


def test_unreadable_data_still_gives_a_report_that_says_what_is_missing(run_copy, tmp_path):
    run = tmp_path / "moved-data"
    shutil.copytree(run_copy, run, ignore=shutil.ignore_patterns("report"))
    config = (run / "tunetext.yaml").read_text()
    (run / "tunetext.yaml").write_text(re.sub(r"source: .*", "source: /nonexistent/data.csv", config))
    text = report(run, tmp_path / "r.html").read_text()
    assert text.count("The run&#x27;s data could not be read again") == 2  # calibration and mistakes
    assert all(f'id="{sid}"' in text for sid, _ in SECTIONS)


# --- in a browser -------------------------------------------------------------------------------------

def chromium(tmp_path: Path, chromium_or_skip):
    binary, chromedriver = chromium_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1280,900", "--hide-scrollbars"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(str(chromedriver)), options=options)


def test_report_renders_in_chromium(page, tmp_path, chromium_or_skip):
    from selenium.webdriver.common.by import By

    path, _ = page
    driver = chromium(tmp_path, chromium_or_skip)
    try:
        driver.get(path.as_uri())
        assert driver.title == "tunetext report: tiny-bert"
        for sid, title in SECTIONS:
            heading = driver.find_element(By.CSS_SELECTOR, f"#{sid} h2")
            assert heading.is_displayed() and heading.text == title
            assert heading.size["height"] > 10
        loaded = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert loaded == [True] * len(FIGURES)
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        # Nothing wider than the window: no sideways scrolling on a laptop screen.
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height + 100, 16000))
        ARTIFACTS.mkdir(exist_ok=True)
        assert driver.save_screenshot(str(ARTIFACTS / "report.png"))
    finally:
        driver.quit()


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(chromium_or_skip, monkeypatch, tmp_path):
    absent = (tmp_path / "chromium", tmp_path / "chromedriver")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI=true: the browser tests must run.*driver missing"):
        chromium_or_skip(*absent)
    for ci in ("false", None):
        if ci is None:
            monkeypatch.delenv("CI")
        else:
            monkeypatch.setenv("CI", ci)
        with pytest.raises(pytest.skip.Exception, match="chromium-driver"):
            chromium_or_skip(*absent)
    for p in absent:
        p.write_text("")
    monkeypatch.setenv("CI", "true")
    assert chromium_or_skip(*absent) == absent
