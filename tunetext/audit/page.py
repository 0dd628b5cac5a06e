"""The audit as one self-contained HTML page, in the style of `tunetext report` (its CSS and page layout):
a summary, the suspected label errors, the near-duplicate groups (leaks first) and the outliers.

Every user text is HTML-escaped; a long one is shortened on the page, with the whole text in the cell's
title (shown on hover). The quality histogram is inline (base64), and also written as a PNG beside the page.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from tunetext.audit.findings import AuditResult, DuplicateGroup, LabelIssue, Outlier, Row
from tunetext.report.page import CSS, PAGE, STYLE
from tunetext.report.sections import BLUE, Figures
from tunetext.version import __version__

MAX_ROWS = 200  # rows (or groups) shown per table; the findings file has them all
TEXT_CHARS = 240  # a longer text is shortened on the page (the title attribute holds all of it)
SECTIONS = (("label-issues", "Suspected label errors"), ("duplicates", "Near-duplicates and leakage"),
            ("outliers", "Outliers"))
AUDIT_CSS = """
.pill.leak { background: #fee2e2; color: #991b1b; font-weight: 600; }
.pill.how { background: #eff6ff; color: #1e40af; }
div.group { border-top: 1px solid var(--line); padding: 10px 0 4px; }
div.group.leak { border-left: 4px solid #dc2626; padding-left: 10px; }
div.group table { margin: 6px 0; }
td.text { max-width: 620px; word-wrap: break-word; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(text: str) -> str:
    """A table cell with the text, shortened past `TEXT_CHARS`; the whole of it in the title."""
    shown = text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS - 1] + "…"
    return f'<td class="text" title="{_e(text)}">{_e(shown)}</td>'


def _value(value: Any) -> str:
    """A summary value in words: numbers rounded, dicts as `key: value` pairs, lists joined."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _section(sid: str, intro: str, *parts: str) -> str:
    title = dict(SECTIONS)[sid]
    return (f'<section id="{sid}"><h2>{title}</h2>' + (f'<p class="intro">{_e(intro)}</p>' if intro else "")
            + "".join(parts) + "</section>")


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _more(n: int) -> str:
    if n <= MAX_ROWS:
        return ""
    return f'<p class="note">{n - MAX_ROWS:,} more are not shown here; the findings file lists all {n:,}.</p>'


def header(result: AuditResult) -> str:
    """What was audited (every entry of `result.summary`, as it is) and a card per kind of finding."""
    summary = result.summary
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_value(v))}</td></tr>" for k, v in summary.items())
    leaks = sum(g.leaks for g in result.duplicates)
    counts = (("suspected label errors", len(result.label_issues), "training texts whose label is doubted"),
              ("near-duplicate groups", len(result.duplicates), f"{leaks:,} of them leak across splits"),
              ("outliers", len(result.outliers), "texts far from every class or odd by themselves"))
    cards = "".join(f'<div class="card"><div class="label">{label}</div><div class="value">{n:,}</div>'
                    f'<div class="note">{_e(note)}</div></div>' for label, n, note in counts)
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in SECTIONS)
    name = summary.get("data", "")
    return (f'<header><div class="kicker">tunetext data audit</div><h1>{_e(name or "data audit")}</h1>'
            f'<table class="facts">{facts}</table><div class="cards">{cards}</div><nav>{nav}</nav></header>')


def _row_cells(row: Row) -> str:
    return f'<td>{_e(row.split)}</td><td class="num">{row.row}</td>'


def _quality_figure(figures: Figures, issues: list[LabelIssue]) -> str:
    import matplotlib  # slow to import: only a page with label issues draws this
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7, 2.8), layout="constrained")
        ax = fig.subplots()
        ax.hist([i.quality for i in issues], bins=20, range=(0.0, 1.0), color=BLUE)
        ax.set(xlabel="label quality (low = more likely wrong)", ylabel="flagged texts",
               title="Label quality of the flagged texts")
        return figures(fig, "label-quality", "histogram of the label quality of the flagged texts")


def label_issues(issues: list[LabelIssue], figures: Figures) -> str:
    if not issues:
        return _section("label-issues", "No training text's label is doubted.")
    rows = "".join(
        f'<tr>{_row_cells(i.row)}{_text(i.row.text)}<td><span class="pill pred">{_e(i.row.label)}</span></td>'
        f'<td><span class="pill true">{_e(i.suggested)}</span></td><td class="num">{i.confidence:.3f}</td>'
        f'<td class="num">{i.quality:.3f}</td></tr>' for i in issues[:MAX_ROWS])
    table = ('<table class="mistakes"><thead><tr><th>split</th><th>row</th><th>text</th><th>given</th>'
             '<th>suggested</th><th>confidence</th><th>quality</th></tr></thead>'
             f"<tbody>{rows}</tbody></table>")
    intro = (f"{_plural(len(issues), 'training text')} whose given label the out-of-sample probabilities "
             "doubt, most doubtful first: the suggested label with its probability (confidence), and the "
             "label quality score (low = more likely wrong). Read each before changing it: some are "
             "ambiguous.")
    return _section("label-issues", intro, _quality_figure(figures, issues), table, _more(len(issues)))


def _group(group: DuplicateGroup) -> str:
    held_out = sorted(group.splits - {"train"})
    leak = f'<span class="pill leak">leak: train ↔ {_e(" + ".join(held_out))}</span> '
    tags = leak if group.leaks else ""
    how = "same after normalisation" if group.how == "normalized" else "close in embedding space"
    sim = "" if group.how == "normalized" else f", cosine ≥ {group.similarity:.3f} to the first"
    rows = "".join(f"<tr>{_row_cells(r)}<td>{_e(r.label)}</td>{_text(r.text)}</tr>" for r in group.rows)
    return (f'<div class="group{" leak" if group.leaks else ""}">{tags}<span class="pill how">{how}</span> '
            f'{len(group.rows)} texts{sim}<table><thead><tr><th>split</th><th>row</th><th>label</th>'
            f'<th>text</th></tr></thead><tbody>{rows}</tbody></table></div>')


def duplicates(groups: list[DuplicateGroup]) -> str:
    if not groups:
        return _section("duplicates", "No near-duplicates: no two texts are the same after normalisation or "
                                      "close enough in embedding space.")
    leaks = sum(g.leaks for g in groups)
    intro = (f"{_plural(len(groups), 'group')} of near-duplicate texts, {leaks:,} of them leaking: a "
             "held-out text with a near-copy in training flatters the score on that split. Leaks first, then "
             "the closest groups. Exact copies were already removed when the data was prepared.")
    return _section("duplicates", intro, *(_group(g) for g in groups[:MAX_ROWS]), _more(len(groups)))


def outliers(found: list[Outlier]) -> str:
    if not found:
        return _section("outliers", "No outliers: every text is near a class and passes the text checks.")
    rows = "".join(f'<tr><td class="num">{o.score:.2f}</td>{_row_cells(o.row)}<td>{_e(o.row.label)}</td>'
                   f"<td>{_e(o.reason)}</td>{_text(o.row.text)}</tr>" for o in found[:MAX_ROWS])
    table = ('<table class="mistakes"><thead><tr><th>score</th><th>split</th><th>row</th><th>label</th>'
             f"<th>why</th><th>text</th></tr></thead><tbody>{rows}</tbody></table>")
    intro = (f"{_plural(len(found), 'text')}, strangest first: far from every class (measured in each "
             "class's own spread) or odd by themselves (empty, mostly not letters, another script).")
    return _section("outliers", intro, table, _more(len(found)))


def write_audit_html(result: AuditResult, path: str | Path) -> Path:
    """Write the audit page to `path` (atomically: a temporary file renamed into place) and return it.
    Figures are also written as PNGs beside it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures = Figures(out.parent)
    body = [header(result), label_issues(result.label_issues, figures), duplicates(result.duplicates),
            outliers(result.outliers)]
    name = result.summary.get("data", "")
    page = PAGE.format(title=_e(f"tunetext data audit: {name}" if name else "tunetext data audit"),
                       css=CSS + AUDIT_CSS, body="\n".join(body),
                       footer=_e(f"tunetext {__version__} · tunetext data audit"))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out
