"""The audit's HTML page: every section, user text escaped, long texts shortened, written atomically."""

from __future__ import annotations

import re

from tunetext.audit import page
from tunetext.audit.findings import AuditResult, DuplicateGroup, LabelIssue, Outlier, Row
from tunetext.audit.page import write_audit_html

EVIL = '<script>alert("x")</script> & <b>bold</b>'


def _result() -> AuditResult:
    train = Row("train", 3, EVIL, "ham")
    test = Row("test", 7, "free cash now", "spam")
    long = Row("train", 9, "word " * 200 + "END", "ham")
    return AuditResult(
        label_issues=[LabelIssue(train, "spam", 0.91, 0.04), LabelIssue(long, "spam", 0.7, 0.2)],
        duplicates=[DuplicateGroup((Row("train", 1, "Free CASH now!!", "spam"), test), "normalized", 1.0),
                    DuplicateGroup((Row("train", 4, "see you", "ham"), Row("train", 5, "see u", "ham")),
                                   "embedding", 0.973)],
        outliers=[Outlier(Row("val", 2, "0800 123 456", "spam"), 5.0, "0% letters (mostly digits)")],
        summary={"data": "sms_<b>spam</b>", "model": "minilm-l6", "folds": 5, "seconds": 12.345,
                 "thresholds": {"near_duplicate_similarity": 0.95}},
    )


def test_page_has_every_section_and_escapes_user_text(tmp_path):
    out = write_audit_html(_result(), tmp_path / "audit" / "audit.html")
    assert out == tmp_path / "audit" / "audit.html"
    text = out.read_text(encoding="utf-8")
    for sid, title in page.SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in text
    # No user text reaches the page as markup: the only <script> would be the user's.
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in text
    assert "sms_&lt;b&gt;spam&lt;/b&gt;" in text  # the summary is escaped too
    # The summary is printed as it is: numbers rounded, nested values flattened.
    assert "<th>folds</th><td>5</td>" in text and "12.35" in text
    assert "near_duplicate_similarity: 0.95" in text
    # The leak is marked, the other group is not.
    assert text.count("leak: train ↔ test") == 1
    assert text.count('class="pill leak"') == 1 and text.count('class="group leak"') == 1
    assert "cosine ≥ 0.973" in text
    assert "0% letters (mostly digits)" in text
    assert 'src="data:image/png;base64,' in text  # the quality histogram, inline
    assert (out.parent / "label-quality.png").is_file()
    assert not list(out.parent.glob(".*.tmp"))  # the temporary file was renamed


def test_long_texts_are_shortened_with_the_whole_text_in_the_title(tmp_path):
    text = write_audit_html(_result(), tmp_path / "a.html").read_text(encoding="utf-8")
    cells = re.findall(r'<td class="text" title="([^"]*)">([^<]*)</td>', text)
    long = [(title, shown) for title, shown in cells if title.endswith("END")]
    assert long, "the long text has a cell"
    title, shown = long[0]
    assert len(shown) == page.TEXT_CHARS and shown.endswith("…") and "END" not in shown


def test_an_empty_audit_says_so(tmp_path):
    text = write_audit_html(AuditResult([], [], []), tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "No training text&#x27;s label is doubted" in text
    assert "No near-duplicates" in text and "No outliers" in text
    assert not (tmp_path / "label-quality.png").exists()
