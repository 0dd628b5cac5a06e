"""`tunetext report RUN_DIR`: one self-contained HTML page about a finished run, and its figures as PNGs.

The page shows the headline numbers, learning curves, the test confusion matrix, per-class scores, a
reliability diagram before and after temperature scaling, the most confident test mistakes with their
texts, before vs after fine-tuning (and prompt baselines when the run has them), and the data. A
multi-label run shows per-label threshold curves, per-label scores at the tuned thresholds and at 0.5,
per-label calibration and the largest per-label errors instead; a regression run a predicted-vs-true
scatter, its residuals and the largest errors (`task_sections`). Images are inline (base64 data URIs)
and the CSS is inline: the file can be mailed or attached as it is.

`sections` writes each part of the page; this module gathers the inputs, lays out the page and writes it.
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from tunetext import runs
from tunetext.assets import FetchError
from tunetext.backends.onnx import read_record
from tunetext.batches import LongText
from tunetext.config import RunConfig
from tunetext.data import DataError, Split, load_dataset
from tunetext.evaluate import multi_hot, with_progress
from tunetext.inference import iter_log_probs, sigmoid, to_values
from tunetext.predict import Classifier
from tunetext.report import sections, task_sections
from tunetext.version import __version__

log = logging.getLogger(__name__)

# matplotlib types rc keys as a Literal of every known name; Any keeps this plain table checkable.
STYLE: dict[Any, Any] = {
    "font.size": 11, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.labelsize": 11,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "legend.fontsize": 10, "legend.frameon": False,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "axes.axisbelow": True, "font.family": "DejaVu Sans",
}


def report(run_dir: str | Path, output: str | Path | None = None, batch_size: int = 128,
           progress: bool = True) -> Path:
    """Write an HTML report of the finished run in `run_dir` and return its path.

    `output` is the HTML file (default `RUN_DIR/report/report.html`); the figures are also written as
    PNG files next to it. The test split is reloaded from the run's data config (same preparation and
    seed, so the same split) and scored again for the mistakes and the reliability diagram (multi-label:
    the validation split too, for the threshold curves; regression: for the scatter and the largest
    errors); if the data cannot be read, those parts say why and the rest of the report is still written.
    `progress` shows a progress bar on stderr while the splits are scored, on a terminal only.
    """
    import matplotlib  # here, not at the top: only writing a report needs it, and it is slow to import

    run_dir = Path(run_dir)
    config, metrics, info = runs.read_run(run_dir)
    out = Path(output) if output is not None else run_dir / "report" / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    data_info = _read_json(run_dir / runs.DATA)
    clf = Classifier.load(run_dir, backend="torch")  # scores the PyTorch weights
    task = clf.task
    # Multi-label threshold curves are drawn on validation, where the thresholds were tuned.
    wanted = ("val", "test") if task == "multi_label" else ("test",)
    scored, problem = _score_splits(clf, config, data_info, wanted, batch_size, progress)
    scores = scored.get("test")
    figures = sections.Figures(out.parent)
    log_entries = _read_log(run_dir / runs.LOG)
    with matplotlib.rc_context(STYLE):
        head = [sections.header(run_dir, config, metrics, info, clf.label_names),
                sections.warnings(metrics),
                sections.learning_curves(figures, log_entries, metrics, config)]
        if task == "multi_label":
            middle = [task_sections.thresholds(figures, metrics, scored.get("val"), scores, problem),
                      task_sections.per_label(metrics),
                      task_sections.label_calibration(figures, metrics["test"]),
                      task_sections.label_mistakes(scores, clf.label_names, clf.thresholds or {}, problem)]
        elif task == "regression":
            middle = [task_sections.scatter(figures, metrics["test"], scores, clf.label_names[0], problem),
                      task_sections.largest_errors(scores, problem)]
        else:
            middle = [sections.confusion(figures, metrics["test"]),
                      sections.per_class(figures, metrics["test"]),
                      sections.calibration(figures, metrics, scores, problem),
                      sections.mistakes(scores, metrics["test"]["label_names"], problem)]
        body = [*head, *middle, sections.before_after(figures, metrics),
                sections.data(figures, config, data_info, scores), sections.export(read_record(run_dir))]
    page = PAGE.format(title=html.escape(f"tunetext report: {run_dir.name}"), css=CSS, body="\n".join(body),
                       footer=html.escape(f"tunetext {__version__} · tunetext report {run_dir}"))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


# --- inputs -----------------------------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    return runs.read_json(path) if path.is_file() else {}


def _read_log(path: Path) -> list[dict[str, Any]]:
    """The training log; a resumed run may log a step twice, and the later entry wins. A line that is not
    JSON (a run killed while writing it) is left out, with a warning naming it."""
    if not path.is_file():
        return []
    entries: dict[tuple[str, int], dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if line.strip():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                entry = None
            if not isinstance(entry, dict):
                log.warning("report: %s line %d is not a JSON object (cut short?); left out of the curves",
                            path, number)
                continue
            entries[(entry.get("event", ""), entry.get("step", 0))] = entry
    return sorted(entries.values(), key=lambda e: e.get("step", 0))


def _score_splits(clf: Classifier, config: RunConfig, data_info: dict[str, Any], wanted: tuple[str, ...],
                  batch_size: int, progress: bool = True
                  ) -> tuple[dict[str, sections.SplitScores], str | None]:
    """Reload the run's splits and score those in `wanted` ("val", "test") the way evaluation does
    (`iter_log_probs`); `({}, why)` if the data cannot be read."""
    try:
        dataset = load_dataset(config.data, label_names=clf.label_names)
    except (DataError, FetchError, OSError) as exc:
        log.warning("report: cannot reload the data (%s); leaving out the parts drawn from the re-scored "
                    "texts", exc)
        return {}, f"The run's data could not be read again ({exc}), so this part is missing."
    return {name: _score(clf, config, dataset.splits()[name], data_info.get(name, {}), name, batch_size,
                         progress) for name in wanted}, None


def _score(clf: Classifier, config: RunConfig, split: Split, recorded: dict[str, Any], name: str,
           batch_size: int, progress: bool) -> sections.SplitScores:
    """One split scored: raw scores, the labels as an array (multi-label: multi-hot (n, K)) and, for
    multi-label and regression, the probabilities or values read from the scores as `evaluate` does."""
    raw = np.concatenate([lp for _, lp in with_progress(iter_log_probs(
        clf.model, clf.tokenizer, split.texts, config.model.max_length, batch_size,
        template=config.data.template, long_text=LongText.of(config.data)), len(split),
        f"report: scoring {name}", progress)])
    matches = recorded.get("sha256") in (None, split.fingerprint())
    if clf.task == "multi_label":
        labels, values = multi_hot(split.labels, len(clf.label_names)), sigmoid(raw)
    elif clf.task == "regression":
        labels, values = np.asarray(split.labels, dtype=np.float64), to_values(raw, clf.task_record)[:, 0]
    else:
        labels, values = np.asarray(split.labels), None
    # A temperature folded into the head is taken out of the scores again: the calibration section shows
    # the model before and after it.
    return sections.SplitScores(split.texts, labels, raw * clf.folded_temperature,
                                clf.temperature * clf.folded_temperature, matches, values)


CSS = """
:root { --ink: #111827; --muted: #6b7280; --line: #e5e7eb; --bg: #f8fafc; --blue: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: var(--bg); }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
header, section { background: white; border: 1px solid var(--line); border-radius: 12px; padding: 22px 26px;
                  margin-bottom: 20px; }
.kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--blue);
          font-weight: 600; }
h1 { margin: 2px 0 12px; font-size: 28px; }
h2 { margin: 0 0 8px; font-size: 20px; }
h3 { margin: 18px 0 6px; font-size: 15px; }
.intro, .note { color: var(--muted); margin: 0 0 12px; max-width: 860px; }
.warn { background: #fef3c7; border: 1px solid #f59e0b; border-radius: 8px; padding: 8px 12px; }
section.alert { background: #fef2f2; border: 2px solid #dc2626; }
section.alert h2 { color: #991b1b; }
table { border-collapse: collapse; margin: 10px 0; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 12px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { font-size: 13px; color: var(--muted); font-weight: 600; white-space: nowrap; }
tfoot td { font-weight: 600; }
tr.final td { font-weight: 700; background: #eff6ff; }
table.facts th { color: var(--muted); font-weight: 500; padding: 2px 16px 2px 0; border: 0; }
table.facts td { padding: 2px 0; border: 0; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 12px;
         margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; background: var(--bg); }
.card .label { font-size: 13px; color: var(--muted); }
.card .value { font-size: 30px; font-weight: 700; }
.card .note { font-size: 13px; color: var(--muted); }
.up { color: #15803d; font-weight: 600; } .down { color: #b91c1c; font-weight: 600; }
nav { display: flex; flex-wrap: wrap; gap: 8px; }
nav a { font-size: 13px; color: var(--blue); text-decoration: none; border: 1px solid #bfdbfe;
        border-radius: 999px; padding: 3px 10px; background: #eff6ff; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; display: block; }
table.mistakes td.text { max-width: 620px; word-wrap: break-word; }
td.num { font-variant-numeric: tabular-nums; }
td.hash { font-family: ui-monospace, monospace; color: var(--muted); font-size: 12px; }
.pill { border-radius: 999px; padding: 1px 8px; font-size: 13px; white-space: nowrap; }
.pill.pred { background: #fee2e2; color: #991b1b; } .pill.true { background: #dcfce7; color: #166534; }
ul.prep { margin: 4px 0; padding-left: 20px; color: #374151; }
footer { color: var(--muted); font-size: 12px; text-align: center; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<main>
{body}
<footer>{footer}</footer>
</main>
</body>
</html>
"""
