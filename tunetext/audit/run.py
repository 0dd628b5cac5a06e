"""`audit()`: read the data as training would, embed it once, and look for suspected label errors,
near-duplicates and leakage, and outliers; write the findings where a person can edit them.

The output folder holds `findings.csv` and `findings.jsonl` (the same rows: one per finding, with an empty
`action` column to fill in with drop, relabel or keep, which `data.drop_flagged` then applies),
`audit.json` (the summary: data, model, folds, counts, thresholds, seconds per stage, the CPU) and
`audit.html`. Test labels are never read: the audit takes the test split's texts only (`AuditData`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunetext.audit.duplicates import leaks_to_drop, near_duplicates
from tunetext.audit.embed import Embeddings, embed_splits
from tunetext.audit.findings import AuditResult, LabelIssue, Row
from tunetext.audit.labels import as_matrix, cross_fitted, held_out, label_issues
from tunetext.audit.outliers import outliers
from tunetext.audit.page import write_audit_html
from tunetext.config import ConfigError, RunConfig, load_config, parse_overrides, with_overrides
from tunetext.data import Dataset, load_dataset
from tunetext.data.flagged import LABEL_SEPARATOR
from tunetext.runs import RunError, write_json
from tunetext.version import __version__

log = logging.getLogger(__name__)

FINDINGS_CSV, FINDINGS_JSONL, SUMMARY, PAGE = "findings.csv", "findings.jsonl", "audit.json", "audit.html"
OWNER = ".tunetext-audit"  # written first into every audit folder tunetext makes
OWN_FILES = {FINDINGS_CSV, FINDINGS_JSONL, SUMMARY, PAGE, OWNER}
COLUMNS = ("kind", "split", "row", "text", "given_label", "suggested_label", "score", "group", "reason",
           "action", "new_label")


@dataclass
class AuditData:
    """What the audit may see of a prepared `Dataset`: training and validation rows with their labels,
    and the test split's texts only. Built once, before anything else runs, so no later step can read a
    test label: there is none here to read."""

    rows: dict[str, list[Row]]  # train, val, test; a test row's label is always ""
    labels: dict[str, list[Any]]  # train and val only, as the Dataset holds them
    label_names: list[str]
    task: str

    @classmethod
    def of(cls, dataset: Dataset) -> AuditData:
        task, names = dataset.task, dataset.label_names
        rows: dict[str, list[Row]] = {}
        labels: dict[str, list[Any]] = {}
        for split, part in (("train", dataset.train), ("val", dataset.val)):
            labels[split] = list(part.labels)
            rows[split] = [Row(split, i, text, _label_name(label, names, task))
                           for i, (text, label) in enumerate(zip(part.texts, part.labels, strict=True))]
        rows["test"] = [Row("test", i, text, "") for i, text in enumerate(dataset.test.texts)]
        return cls(rows, labels, names, task)


def _label_name(label: Any, names: list[str], task: str) -> str:
    """A prepared label as a person writes it: the class name, the names joined by `|`, the number."""
    if task == "multi_label":
        return LABEL_SEPARATOR.join(names[i] for i in label)
    return f"{label:g}" if task == "regression" else names[label]


def audit_config(data: str | RunConfig, model: str | None = None, folds: int | None = None,
                 overrides: dict[str, Any] | list[str] | None = None) -> RunConfig:
    """The config an audit runs with: `data` (a source, or a whole config), then `overrides` (dotted keys,
    or `key=value` strings), then `model` (model.name) and `folds` (audit.folds) where given."""
    problems: list[str] = []
    pairs = parse_overrides(overrides, problems) if isinstance(overrides, list) else dict(overrides or {})
    if problems:
        raise ConfigError(problems)
    given = {k: v for k, v in {"model.name": model, "audit.folds": folds}.items() if v is not None}
    if isinstance(data, RunConfig):
        return with_overrides(data, {**pairs, **given})
    return load_config(overrides={"data.source": data, **pairs, **given})


def default_output(config: RunConfig) -> Path:
    """`audit/<data name>`, for an audit run without an output folder."""
    return Path("audit") / Path(config.data.source.rstrip("/")).stem


def audit(data: str | RunConfig, model: str | None = None, folds: int | None = None,
          output: str | Path | None = None, drop_leaks: bool = False,
          overrides: dict[str, Any] | list[str] | None = None, progress: bool = True) -> AuditResult:
    """Audit labelled data (a source name or file, or a `RunConfig`) with the frozen `model` (model.name,
    default minilm-l6) and `folds`-fold cross-fitting (audit.folds); `overrides` set any other key
    (`data.*`, `model.max_length`, `audit.*`). Writes the findings into `output` (default
    `audit/<data name>`, a new or empty folder or one an earlier audit wrote) and returns them.
    `drop_leaks` pre-fills `drop` in the findings' action column for the training copy of every
    near-duplicate that crosses into validation or test."""
    started = time.perf_counter()
    config = audit_config(data, model, folds, overrides)
    if config.data.augment:  # augmented copies are not the user's rows and would all be near-duplicates
        config = with_overrides(config, {"data.augment": 0})
    out_dir = check_output(Path(output) if output is not None else default_output(config))
    seconds: dict[str, float] = {}

    tick = time.perf_counter()
    dataset = load_dataset(config.data)
    inputs = AuditData.of(dataset)
    report = list(dataset.report)
    del dataset  # from here on, only `inputs`: the test split's texts, never its labels
    seconds["prepare"] = time.perf_counter() - tick
    texts = {split: [r.text for r in rows] for split, rows in inputs.rows.items()}
    embeddings = embed_splits(texts, config, progress)
    seconds["embed"] = embeddings.seconds
    log.info("audit: embedded %d texts with %s in %.1f s (%s cut at model.max_length=%d)",
             sum(map(len, texts.values())), config.model.name, embeddings.seconds,
             sum(embeddings.truncated.values()), config.model.max_length)

    tick = time.perf_counter()
    issues, label_summary = find_label_issues(inputs, embeddings, config)
    seconds["label_issues"] = time.perf_counter() - tick
    tick = time.perf_counter()
    groups = near_duplicates(inputs.rows, embeddings.vectors, config.audit.near_duplicate_similarity)
    seconds["duplicates"] = time.perf_counter() - tick
    tick = time.perf_counter()
    everything = [r for rows in inputs.rows.values() for r in rows]
    strange = outliers(everything, np.concatenate([embeddings.vectors[s] for s in inputs.rows]),
                       inputs.rows["train"], embeddings.vectors["train"],
                       [r.label for r in inputs.rows["train"]], config.audit.outliers)
    seconds["outliers"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started

    result = AuditResult(issues, groups, strange)
    result.summary = _summary(config, inputs, embeddings, label_summary, result, seconds, report, drop_leaks)
    result.summary["output"] = str(out_dir)
    write_outputs(result, out_dir, drop_leaks)
    return result


def find_label_issues(inputs: AuditData, embeddings: Embeddings,
                      config: RunConfig) -> tuple[list[LabelIssue], dict[str, Any]]:
    """Suspected label errors of the training split (cross-fitted) and the validation split (scored by a
    head fitted on all training texts); for regression data none, and the summary says why."""
    if inputs.task == "regression":
        why = ("label issues need classes, and this data's task is regression (a number per text): only "
               "near-duplicates and outliers are audited")
        log.warning("audit: %s", why)
        return [], {"skipped": why}
    k, ac, seed = len(inputs.label_names), config.audit, config.data.seed
    y_train = as_matrix(inputs.labels["train"], k, inputs.task)
    y_val = as_matrix(inputs.labels["val"], k, inputs.task)
    x_train, names, task = embeddings.vectors["train"], inputs.label_names, inputs.task
    train = cross_fitted(x_train, y_train, k, task, ac, seed)
    val = held_out(x_train, y_train, embeddings.vectors["val"], k, task, ac, seed)
    issues = (label_issues(inputs.rows["train"], y_train, train.probabilities, names, task)
              + label_issues(inputs.rows["val"], y_val, val.probabilities, names, task))
    return issues, {"folds": train.folds, "inverse_l2_chosen": train.inverse_l2 + val.inverse_l2,
                    "head": "logistic regression on standardised embeddings"
                    + (", one per label" if inputs.task == "multi_label" else "")}


def _summary(config: RunConfig, inputs: AuditData, embeddings: Embeddings, labels: dict[str, Any],
             result: AuditResult, seconds: dict[str, float], report: list[str],
             drop_leaks: bool) -> dict[str, Any]:
    per_split = {split: sum(i.row.split == split for i in result.label_issues) for split in ("train", "val")}
    return {
        "data": config.data.source, "model": config.model.name, "task": inputs.task,
        "label_names": inputs.label_names, "sizes": {s: len(rows) for s, rows in inputs.rows.items()},
        "folds": labels.get("folds"), "folds_asked": config.audit.folds,
        "label_issues": labels,
        "counts": {"label_issues": per_split, "duplicate_groups": len(result.duplicates),
                   "leaking_groups": sum(g.leaks for g in result.duplicates),
                   "outliers": len(result.outliers)},
        "thresholds": {"near_duplicate_similarity": config.audit.near_duplicate_similarity,
                       "outliers": config.audit.outliers, "max_length": config.model.max_length},
        "truncated": embeddings.truncated, "embedding_dim": embeddings.dim,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "cpu": cpu(), "test_labels_read": False, "drop_leaks": drop_leaks, "show": config.audit.show,
        "preparation": report, "tunetext_version": __version__,
    }


def cpu() -> dict[str, Any]:
    """The CPU the audit ran on (its model name, as lscpu shows it) and its core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return {"model": name, "cores": os.cpu_count()}


# --- the output folder ------------------------------------------------------------------------------------

def check_output(path: Path) -> Path:
    """`path` if an audit may write there: a new or empty folder, or one an audit wrote that holds nothing
    else (its files are replaced); else a `RunError` saying why."""
    if path.exists() and not path.is_dir():
        raise RunError(f"{path} is a file, not a folder; choose another --output")
    if path.exists() and any(path.iterdir()):
        if not (path / OWNER).is_file():
            raise RunError(f"{path} exists and was not written by tunetext data audit (it has no {OWNER}); "
                           "tunetext writes only into a new or empty folder and never deletes files it did "
                           "not write. Choose an empty or new --output")
        foreign = sorted(p.name for p in path.iterdir() if p.name not in OWN_FILES
                         and not (p.is_file() and p.suffix == ".png")  # the page's figures
                         and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if foreign:
            raise RunError(f"{path} holds an audit but also files tunetext did not write "
                           f"({', '.join(foreign[:10])}); move them out or choose another --output")
    return path


def write_outputs(result: AuditResult, out_dir: Path, drop_leaks: bool) -> None:
    """The findings (CSV and JSONL), the page and, last, the summary, each written to a temporary file and
    renamed into place, so that a crash never leaves half a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OWNER).write_text("This folder was written by tunetext data audit; a new audit may replace "
                                 "the files it wrote here.\n")
    rows = findings_rows(result, drop_leaks)
    tmp = out_dir / f".{FINDINGS_CSV}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_dir / FINDINGS_CSV)
    tmp = out_dir / f".{FINDINGS_JSONL}.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out_dir / FINDINGS_JSONL)
    write_audit_html(result, out_dir / PAGE)
    write_json(out_dir / SUMMARY, result.summary)


def findings_rows(result: AuditResult, drop_leaks: bool = False) -> list[dict[str, Any]]:
    """One row per finding, in the columns of the findings file: label issues (most likely wrong first),
    then each near-duplicate group's members (group numbered from 1), then outliers (strangest first).
    Scores: a label issue's cleanlab label quality (low: likely wrong), a duplicate group's similarity, an
    outlier's score (high: strange). A test row's given label is left empty: the audit never reads it."""
    rows = []
    for issue in result.label_issues:
        rows.append(_row("label_issue", issue.row, suggested_label=issue.suggested, score=issue.quality,
                         reason=f"given {issue.row.label!r}; out-of-sample probability "
                         f"{issue.confidence:.2f} for {issue.suggested!r}"))
    to_drop = {(r.split, r.row) for r in leaks_to_drop(result.duplicates)} if drop_leaks else set()
    for number, group in enumerate(result.duplicates, start=1):
        what = ("the same text after normalisation" if group.how == "normalized" else
                f"cosine similarity at least {group.similarity:.3f}")
        where = f"; spans {', '.join(sorted(group.splits))} (leak)" if group.leaks else ""
        for member in group.rows:
            rows.append(_row("near_duplicate", member, score=group.similarity, group=number,
                             reason=f"{len(group.rows)} texts, {what}{where}",
                             action="drop" if (member.split, member.row) in to_drop else ""))
    for strange in result.outliers:
        rows.append(_row("outlier", strange.row, score=strange.score, reason=strange.reason))
    return rows


def _row(kind: str, row: Row, score: float, suggested_label: str = "", group: int | str = "",
         reason: str = "", action: str = "") -> dict[str, Any]:
    return {"kind": kind, "split": row.split, "row": row.row, "text": row.text,
            "given_label": row.label if row.split != "test" else "", "suggested_label": suggested_label,
            "score": round(float(score), 6), "group": group, "reason": reason, "action": action,
            "new_label": ""}


# --- the terminal -------------------------------------------------------------------------------------------

def findings_table(result: AuditResult, show: int) -> list[str]:
    """Lines for the terminal: the top `show` findings of each kind, and where the rest are."""
    s = result.summary
    lines = [f"audit of {s['data']} with {s['model']} ({s['task']}; {s['sizes']['train']} train, "
             f"{s['sizes']['val']} val, {s['sizes']['test']} test texts) in {s['seconds']['total']:.1f} s"]
    if "skipped" in s["label_issues"]:
        lines.append(f"\nlabel issues: none looked for: {s['label_issues']['skipped']}")
    else:
        counts = s["counts"]["label_issues"]
        lines.append(f"\nsuspected label errors: {counts['train']} in train, {counts['val']} in val "
                     f"({s['folds']}-fold cross-fitting); top {min(show, len(result.label_issues))}:")
        lines.append(f"  {'split':<6}{'row':>6}  {'given':<14}{'suggested':<14}{'conf':>6}{'quality':>9}"
                     "  text")
        for issue in result.label_issues[:show]:
            lines.append(f"  {issue.row.split:<6}{issue.row.row:>6}  {_cut(issue.row.label, 13):<14}"
                         f"{_cut(issue.suggested, 13):<14}{issue.confidence:>6.2f}{issue.quality:>9.4f}  "
                         f"{_cut(issue.row.text, 70)}")
    leaking = s["counts"]["leaking_groups"]
    lines.append(f"\nnear-duplicate groups: {len(result.duplicates)} ({leaking} span train and a held-out "
                 f"split); top {min(show, len(result.duplicates))}:")
    for number, group in enumerate(result.duplicates[:show], start=1):
        leak = ", leak" if group.leaks else ""
        lines.append(f"  group {number} ({group.how}, similarity {group.similarity:.3f}{leak}):")
        for member in group.rows[:5]:
            lines.append(f"    {member.split:<6}{member.row:>6}  {_cut(member.text, 80)}")
        if len(group.rows) > 5:
            lines.append(f"    and {len(group.rows) - 5} more")
    lines.append(f"\noutliers: {len(result.outliers)}; top {min(show, len(result.outliers))}:")
    for strange in result.outliers[:show]:
        lines.append(f"  {strange.row.split:<6}{strange.row.row:>6}{strange.score:>8.3f}  "
                     f"{_cut(strange.reason, 40):<42}{_cut(strange.row.text, 60)}")
    if "output" in s:
        lines.append(f"\nall findings: {Path(s['output']) / FINDINGS_CSV} (fill in the action column: drop, "
                     f"relabel with new_label, or keep; then train with data.drop_flagged="
                     f"{Path(s['output']) / FINDINGS_CSV}); page: {Path(s['output']) / PAGE}")
    return lines


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."
