"""Comparing runs: one table of finished runs, and mean/std over runs that differ only in their seed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunetext.runs import read_run

HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "ece", "log_loss",
            # multi-label (at the tuned thresholds) and regression
            "micro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "mae", "rmse", "r2", "pearson",
            "spearman")


def compare(run_dirs: list[str | Path]) -> list[dict[str, Any]]:
    """One row per finished run: what it trained on and with, and how it scored on test."""
    rows = []
    for run_dir in run_dirs:
        config, metrics, _ = read_run(run_dir)
        test = metrics.get("test", {})
        training = metrics.get("training", {})
        rows.append({
            "run": str(run_dir),
            "data": config.data.source,
            "model": config.model.name,
            "strategy": config.train.strategy + (f"({config.train.last_n})"
                                                 if config.train.strategy == "last_n" else ""),
            "epochs": training.get("epochs_completed"),
            "task": test.get("task", "single_label"),
            "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1"),
            "test_micro_f1": test.get("micro_f1"),
            "test_r2": test.get("r2"),
            "test_ece": test.get("ece"),
            "train_seconds": training.get("train_seconds"),
            "trainable_parameters": training.get("trainable_parameters"),
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as an aligned text table; floats to 4 places, large integers with separators."""
    if not rows:
        return "(no runs)"
    columns = list(rows[0])

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.1f}" if value >= 100 else f"{value:.4f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def aggregate_seeds(all_metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every headline metric on val and test, and of training time."""
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        out[split] = {key: mean_std([m[split][key] for m in all_metrics])
                      for key in HEADLINE if all(m[split].get(key) is not None for m in all_metrics)}
    out["train_seconds"] = mean_std([m["training"]["train_seconds"] for m in all_metrics])
    return out
