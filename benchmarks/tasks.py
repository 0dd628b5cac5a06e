"""Multi-label classification and regression: fine-tuned tunetext against a TF-IDF baseline, in one run.

Two parts, each on one built-in dataset (`--part multi_label regression`, both by default):

- multi_label: `minilm-l6` fine-tuned with tunetext's settings (`data.task=multi_label`) against TF-IDF
  (word 1-2 grams, sublinear tf) + one-vs-rest logistic regression. Both are scored on test at 0.5 for
  every label and at per-label thresholds tuned on validation by the same function
  (`tunetext.task_metrics.tune_thresholds`): micro- and macro-F1, subset accuracy, Hamming loss.
- regression: the same fine-tune (`data.task=regression`) against TF-IDF + ridge regression: Pearson,
  Spearman, MAE, RMSE and R² on test.

Like for like: the baseline reads the split tunetext trains on (`tunetext.data.load_dataset` with the
run's own data config, whose fingerprints are checked against the run's data.json), and chooses its one
setting (C, or ridge's alpha) from a small grid on validation by the validation metric tunetext picks its
best weights by (`train.metric`), never on test. `--subsample N` caps the training split
(`data.max_train_samples`) for both, so both see the same rows.

Targets (issue 15), each met or missed by how much: the fine-tuned model beats TF-IDF on every metric
(lower is better for Hamming loss, MAE and RMSE), and for multi-label, tuned thresholds beat 0.5 on
macro-F1. The fine-tune's figures are means over seeds; the baseline, which no training seed changes,
runs once per part.

Every fine-tune is `tunetext.train.train(config, output_dir)` in a fresh Python process (so one run's
memory or allocator state cannot touch the next); seeds run in rounds (every part's first seed, then
every part's second...), the baseline of a part before its first fine-tune, and the JSON and Markdown
are rewritten after every run, so `--deadline-s` (start no run after that many seconds) still leaves a
complete first round.

    python benchmarks/tasks.py                                   # both parts, one seed
    python benchmarks/tasks.py --part regression --seeds 3
    python benchmarks/tasks.py --part multi_label --subsample 2000 --set train.epochs=5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import CpuWatch, machine_info, verdict

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ["multi_label", "regression"]
# The built-in datasets each part runs on (docs/datasets.md); --multi-label-data / --regression-data take
# another built-in name or a file.
MULTI_LABEL_DATA: str | None = "movie_sentiment_bands"
REGRESSION_DATA: str | None = "movie_sentiment"
FIRST_SEED = 42

# The baseline's fixed settings and the grids it chooses from on validation (recorded in the result).
TFIDF = {"ngram_range": (1, 2), "sublinear_tf": True, "min_df": 2, "strip_accents": "unicode"}
C_GRID = (0.1, 1.0, 10.0, 100.0)
ALPHA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0)

# What each part reports, and which way is better.
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")
MULTI_LABEL_EXTRA = ("micro_precision", "micro_recall", "macro_precision", "macro_recall", "weighted_f1",
                     "samples_f1")
REGRESSION_METRICS = ("pearson", "spearman", "mae", "rmse", "r2")
LOWER_IS_BETTER = {"hamming_loss", "mae", "rmse"}
THRESHOLDS = ("tuned", "at_0.5")  # multi-label scores at tuned per-label thresholds, and at 0.5
TASK_METRIC = {"multi_label": "micro_f1", "regression": "r2"}  # what train.metric=auto means per task

TIMES = {"wall_seconds": "wall time: for tunetext the whole train() call in its process (reading and "
                         "preparing data, loading the model, training, final scoring, writing the run); "
                         "for TF-IDF, vectorising, fitting every grid value, tuning thresholds, scoring",
         "train_seconds": "tunetext's training loop alone (metrics.json training.train_seconds)",
         "fit_wall_seconds": "TF-IDF: the wall time of fitting the chosen grid value alone"}

# A fine-tune in a fresh process: the config is built from the same overrides the baseline's is.
CHILD = ("import sys\n"
         "from tunetext.config import load_config\n"
         "from tunetext.train import train\n"
         "train(load_config(overrides=sys.argv[2:]), sys.argv[1], overwrite=True, progress=False)\n")


def part_overrides(part: str, data: str, args: argparse.Namespace) -> list[str]:
    """The config overrides a part's fine-tunes and its baseline share (all but the training seed)."""
    out = [f"data.source={data}", f"data.task={part}", f"model.name={args.model}"]
    if args.subsample is not None:
        out.append(f"data.max_train_samples={args.subsample}")
    return [*out, *args.set]


def selection_metric(config: Any, task: str) -> str:
    """The validation metric tunetext picks its best weights by; the baseline chooses its grid value by it."""
    return TASK_METRIC[task] if config.train.metric == "auto" else config.train.metric


def val_score(metrics: dict[str, Any], name: str) -> float:
    """`name` from a metric dictionary; `neg_mae` and `neg_rmse` are the negated errors."""
    if name in metrics:
        return float(metrics[name])
    if name.startswith("neg_") and name[4:] in metrics:
        return -float(metrics[name[4:]])
    raise SystemExit(f"train.metric={name} is not a metric of {metrics.get('task')}; choose one that is")


# --- the baseline ---------------------------------------------------------------------------------------

def _pick(metrics: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: metrics[k] for k in keys if k in metrics}


def _grid_search(grid: tuple[float, ...], fit: Any, score: Any) -> tuple[float, Any, dict[str, float], float]:
    """Fit every grid value, score each on validation; (best value, its model, the scores, its fit's wall
    seconds). Ties go to the value first in the grid (the stronger regularisation)."""
    scores: dict[str, float] = {}
    best: tuple[float, Any, float] | None = None
    for value in grid:
        started = time.perf_counter()
        model = fit(value)
        seconds = time.perf_counter() - started
        scores[str(value)] = score(model)
        if best is None or scores[str(value)] > scores[str(best[0])]:
            best = (value, model, seconds)
    assert best is not None
    return best[0], best[1], scores, best[2]


def multi_label_baseline(dataset: Any, metric: str) -> dict[str, Any]:
    """TF-IDF + one-vs-rest logistic regression, C chosen on validation, scored on test at 0.5 and at
    per-label thresholds tuned on validation with tunetext's own rule."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from tunetext.evaluate import multi_hot
    from tunetext.task_metrics import multi_label_metrics, tune_thresholds

    watch = CpuWatch()
    names = dataset.label_names
    y = {s: multi_hot(split.labels, len(names)) for s, split in dataset.splits().items()}
    vectorizer = TfidfVectorizer(**TFIDF)
    x = {"train": vectorizer.fit_transform(dataset.train.texts),
         "val": vectorizer.transform(dataset.val.texts), "test": vectorizer.transform(dataset.test.texts)}

    def fit(c: float) -> Any:
        return OneVsRestClassifier(LogisticRegression(C=c, solver="liblinear", max_iter=1000,
                                                      random_state=0)).fit(x["train"], y["train"])

    def score(model: Any) -> float:  # at 0.5, as tunetext's validation scores before thresholds are tuned
        return val_score(multi_label_metrics(y["val"], model.predict_proba(x["val"]), names), metric)

    c, model, by_c, fit_seconds = _grid_search(C_GRID, fit, score)
    val_probs, test_probs = model.predict_proba(x["val"]), model.predict_proba(x["test"])
    tuned = tune_thresholds(y["val"], val_probs, names)
    thresholds = [tuned["thresholds"][n] for n in names]
    test = {"tuned": multi_label_metrics(y["test"], test_probs, names, thresholds),
            "at_0.5": multi_label_metrics(y["test"], test_probs, names)}
    val = multi_label_metrics(y["val"], val_probs, names, thresholds)
    quiet = watch.stop()
    return {"settings": {"tfidf": TFIDF, "vocabulary": len(vectorizer.vocabulary_),
                         "classifier": "OneVsRestClassifier(LogisticRegression(solver='liblinear'))",
                         "grid": {"C": list(C_GRID)}, "chosen_by": f"validation {metric} at 0.5"},
            "chosen": {"C": c}, "val_by_grid": by_c, "thresholds": tuned["thresholds"], "how": tuned["how"],
            "test": {way: {**_pick(m, MULTI_LABEL_METRICS + MULTI_LABEL_EXTRA),
                           "per_label_f1": {n: v["f1"] for n, v in m["per_label"].items()}}
                     for way, m in test.items()},
            "val": _pick(val, MULTI_LABEL_METRICS), "wall_seconds": quiet["wall_seconds"],
            "fit_wall_seconds": round(fit_seconds, 3), "quiet": quiet}


def regression_baseline(dataset: Any, metric: str) -> dict[str, Any]:
    """TF-IDF + ridge regression, alpha chosen on validation, scored on test."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    from tunetext.task_metrics import regression_metrics

    watch = CpuWatch()
    y = {s: np.asarray(split.labels, dtype=float) for s, split in dataset.splits().items()}
    vectorizer = TfidfVectorizer(**TFIDF)
    x = {"train": vectorizer.fit_transform(dataset.train.texts),
         "val": vectorizer.transform(dataset.val.texts), "test": vectorizer.transform(dataset.test.texts)}

    def fit(alpha: float) -> Any:
        return Ridge(alpha=alpha).fit(x["train"], y["train"])

    def score(model: Any) -> float:
        return val_score(regression_metrics(y["val"], model.predict(x["val"])), metric)

    alpha, model, by_alpha, fit_seconds = _grid_search(ALPHA_GRID, fit, score)
    test = regression_metrics(y["test"], model.predict(x["test"]))
    val = regression_metrics(y["val"], model.predict(x["val"]))
    quiet = watch.stop()
    return {"settings": {"tfidf": TFIDF, "vocabulary": len(vectorizer.vocabulary_), "regressor": "Ridge",
                         "grid": {"alpha": list(ALPHA_GRID)}, "chosen_by": f"validation {metric}"},
            "chosen": {"alpha": alpha}, "val_by_grid": by_alpha,
            "test": _pick(test, REGRESSION_METRICS + ("mean_pred", "std_pred", "mean_true", "std_true")),
            "val": _pick(val, REGRESSION_METRICS), "wall_seconds": quiet["wall_seconds"],
            "fit_wall_seconds": round(fit_seconds, 3), "quiet": quiet}


# --- the fine-tune --------------------------------------------------------------------------------------

def fine_tune(part: str, overrides: list[str], seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One tunetext run in a fresh process, and what it scored on validation and test."""
    out = args.workdir / part / f"seed-{seed}"
    settings = [*overrides, f"train.seed={seed}"]
    print(f"$ tunetext train {' '.join(settings)} -> {out}", flush=True)
    watch = CpuWatch()
    done = subprocess.run([sys.executable, "-c", CHILD, str(out), *settings], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    quiet = watch.stop()
    result: dict[str, Any] = {"seed": seed, "run_dir": str(out), "overrides": settings,
                              "wall_seconds": quiet["wall_seconds"], "quiet": quiet,
                              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    if done.returncode != 0:
        return result | {"error": f"train() exited with code {done.returncode}: {done.stderr[-2000:]}"}
    m = json.loads((out / "metrics.json").read_text())
    data = json.loads((out / "data.json").read_text())
    result |= {"train_seconds": m["training"]["train_seconds"], "steps": m["training"]["steps"],
               "epochs_completed": m["training"]["epochs_completed"], "bf16": m["training"]["bf16"],
               "choices": m["training"].get("choices", []), "task": m.get("task"),
               "split_sha256": {s: data[s]["sha256"] for s in ("train", "val", "test")},
               "split_sizes": {s: data[s]["size"] for s in ("train", "val", "test")}}
    if part == "multi_label":
        keys = MULTI_LABEL_METRICS + MULTI_LABEL_EXTRA
        test = {"tuned": _pick(m["test"], keys), "at_0.5": _pick(m["test"]["at_0.5"], keys)}
        return result | {"test": test,
                         "val": _pick(m["val"], MULTI_LABEL_METRICS),
                         "thresholds": m["test"].get("thresholds"),
                         "warnings": m["test"].get("warnings", [])}
    return result | {"test": _pick(m["test"], REGRESSION_METRICS + ("mean_pred", "std_pred")),
                     "val": _pick(m["val"], REGRESSION_METRICS), "warnings": m["test"].get("warnings", [])}


# --- summary and targets --------------------------------------------------------------------------------

def _stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def beats(metric: str, ours: float, theirs: float, names: tuple[str, str] = ("tunetext", "tfidf")
          ) -> dict[str, Any]:
    """Whether `ours` is better than `theirs` on `metric` (strictly: a tie misses by 0), and the margin
    (positive: better; in the metric's units)."""
    lower = metric in LOWER_IS_BETTER
    margin = theirs - ours if lower else ours - theirs
    return {names[0]: ours, names[1]: theirs, "better": "lower" if lower else "higher",
            "margin": margin, "met": margin > 0, "missed_by": max(0.0, -margin)}


def _scores(part: str) -> list[tuple[str, str, str]]:
    """(key in the result, where the score is in a test dict, metric name) for every compared score."""
    if part == "multi_label":
        return [(f"{way}.{m}", way, m) for way in THRESHOLDS for m in MULTI_LABEL_METRICS]
    return [(m, "", m) for m in REGRESSION_METRICS]


def _at(test: dict[str, Any], where: str, metric: str) -> float:
    return float((test[where] if where else test)[metric])


def summarise(part: str, entry: dict[str, Any]) -> None:
    """The fine-tunes' means over seeds, and the targets, met or missed by how much, into `entry`."""
    done = [r for r in entry["tunetext"]["per_seed"] if "error" not in r]
    tt = entry["tunetext"]
    tt["seeds"] = len(done)
    if not done:
        return
    tt["test"] = {key: _stat([_at(r["test"], where, m) for r in done]) for key, where, m in _scores(part)}
    for key in ("wall_seconds", "train_seconds"):
        tt[key] = _stat([r[key] for r in done])
    entry["split_sizes"] = done[0]["split_sizes"]
    entry["same_split"] = all(r["split_sha256"] == entry["split_sha256"] for r in done)
    targets: dict[str, Any] = {}
    base = entry.get("baseline", {})
    if "test" in base:
        targets["fine_tuned_beats_tfidf"] = {
            key: beats(m, tt["test"][key]["mean"], _at(base["test"], where, m))
            for key, where, m in _scores(part)}
    if part == "multi_label":
        targets["tuned_beats_0.5_on_macro_f1"] = beats(
            "macro_f1", tt["test"]["tuned.macro_f1"]["mean"], tt["test"]["at_0.5.macro_f1"]["mean"],
            ("tuned", "at_0.5"))
        if "test" in base:  # not a target: the same comparison for the baseline, to read beside it
            entry["tfidf_tuned_over_0.5_macro_f1"] = beats(
                "macro_f1", base["test"]["tuned"]["macro_f1"], base["test"]["at_0.5"]["macro_f1"],
                ("tuned", "at_0.5"))
    verdicts = [t["met"] for t in targets.get("fine_tuned_beats_tfidf", {}).values()]
    if "tuned_beats_0.5_on_macro_f1" in targets:
        verdicts.append(targets["tuned_beats_0.5_on_macro_f1"]["met"])
    targets["all_met"] = bool(verdicts) and all(verdicts) and "test" in base
    entry["targets"] = targets


def _fmt(value: float, metric: str) -> str:
    """Shares (F1, accuracy, Hamming loss) in %, correlations, R² and errors as they are."""
    return f"{value:.4f}" if metric in REGRESSION_METRICS else f"{100 * value:.2f}"


def _verdict(target: dict[str, Any], metric: str) -> str:
    if target["met"]:
        return "met"
    points = "" if metric in REGRESSION_METRICS else " points"
    if target["margin"] == 0:
        return "missed: tied"
    return f"missed by {_fmt(target['missed_by'], metric)}{points}"


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    where = machine["gpu"] or f"{machine['cpu']} ({machine['cores']} cores)"
    lines = [f"# {report['model']} fine-tuned against TF-IDF: multi-label and regression", "",
             f"Measured on {where}; overrides: {' '.join(report['overrides']) or 'none'}; training "
             f"subsample: {report['subsample'] or 'none'}. F1, accuracy and Hamming loss in %. Times are "
             "wall time (see `time_definitions` in the JSON)."
             + (" **Indicative only: the machine was busy.**" if report.get("indicative") else "")]
    for part, entry in report["parts"].items():
        tt, base = entry["tunetext"], entry.get("baseline", {})
        sizes = entry.get("split_sizes") or entry.get("baseline_split_sizes", {})
        lines += ["", f"## {part}: {entry['data']}", "",
                  f"train / val / test: {sizes.get('train')} / {sizes.get('val')} / {sizes.get('test')}; "
                  f"tunetext seeds: {tt.get('seeds', 0)}; TF-IDF chose {base.get('chosen', '-')}; "
                  f"same split: {entry.get('same_split', '-')}", "",
                  "| metric | tunetext (mean ± std) | TF-IDF | target: tunetext better |",
                  "| --- | --- | --- | --- |"]
        beat = entry.get("targets", {}).get("fine_tuned_beats_tfidf", {})
        for key, where, m in _scores(part):
            stat = tt.get("test", {}).get(key)
            ours = f"{_fmt(stat['mean'], m)} ± {_fmt(stat['std'], m)}" if stat else "-"
            theirs = _fmt(_at(base["test"], where, m), m) if "test" in base else "-"
            t = beat.get(key)
            cell = "-" if t is None else _verdict(t, m)
            lines.append(f"| {key} | {ours} | {theirs} | {cell} |")
        tuned = entry.get("targets", {}).get("tuned_beats_0.5_on_macro_f1")
        if tuned:
            lines += ["", "Tuned thresholds against 0.5 on tunetext's macro-F1: "
                      + _verdict(tuned, "macro_f1")]
        if "wall_seconds" in tt:
            lines += ["", f"Wall time: tunetext {tt['wall_seconds']['mean']:.0f} s per run (training loop "
                      f"{tt['train_seconds']['mean']:.0f} s); TF-IDF {base.get('wall_seconds', 0):.1f} s in "
                      f"all, {base.get('fit_wall_seconds', 0):.1f} s for the chosen fit."]
    return "\n".join(lines) + "\n"


# --- the run --------------------------------------------------------------------------------------------

def start_part(part: str, data: str, args: argparse.Namespace) -> dict[str, Any]:
    """A part's entry with its baseline, fitted on the split its fine-tunes will train on."""
    from tunetext.config import load_config
    from tunetext.data import load_dataset

    overrides = part_overrides(part, data, args)
    config = load_config(overrides=overrides)
    dataset = load_dataset(config.data)
    metric = selection_metric(config, part)
    print(f"{part}: TF-IDF baseline on {data} ({len(dataset.train)} / {len(dataset.val)} / "
          f"{len(dataset.test)}), chosen by validation {metric}", flush=True)
    fit = multi_label_baseline if part == "multi_label" else regression_baseline
    return {"data": data, "task": part, "overrides": overrides, "selection_metric": metric,
            "label_names": dataset.label_names,
            "split_sha256": {s: split.fingerprint() for s, split in dataset.splits().items()},
            "baseline_split_sizes": {s: len(split) for s, split in dataset.splits().items()},
            "baseline": fit(dataset, metric), "tunetext": {"per_seed": []}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", nargs="+", choices=PARTS, default=PARTS, help="which parts to run")
    parser.add_argument("--multi-label-data", default=MULTI_LABEL_DATA,
                        help="built-in multi-label dataset (or a file, for a smoke run)")
    parser.add_argument("--regression-data", default=REGRESSION_DATA,
                        help="built-in regression dataset (or a file, for a smoke run)")
    parser.add_argument("--model", default="minilm-l6", help="catalogue name or model folder")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per part, from --first-seed "
                        "(the data split stays the same)")
    parser.add_argument("--first-seed", type=int, default=FIRST_SEED)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every fine-tune (and the data the baseline reads)")
    parser.add_argument("--subsample", type=int, metavar="TRAIN",
                        help="cap the training split at about TRAIN rows (data.max_train_samples), the same "
                        "rows for tunetext and TF-IDF; validation and test stay whole")
    parser.add_argument("--deadline-s", type=float, help="start no run after this many seconds")
    parser.add_argument("--output", type=Path, default=RESULTS / "tasks.json",
                        help="JSON result; the Markdown summary goes next to it (.md)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench-tasks"))
    args = parser.parse_args(argv)
    args.data = {"multi_label": args.multi_label_data, "regression": args.regression_data}
    missing = [p for p in args.part if not args.data[p]]
    if missing:
        parser.error(f"no dataset for {', '.join(missing)}: the built-in is not set in benchmarks/tasks.py "
                     "yet; pass " + " ".join(f"--{p.replace('_', '-')}-data NAME" for p in missing))
    return args


def write(report: dict[str, Any], output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "what": __doc__.split("\n\n")[0], "machine": machine_info(), "model": args.model,
        "overrides": args.set, "subsample": args.subsample, "seeds_asked": args.seeds,
        "first_seed": args.first_seed, "time_definitions": TIMES, "complete": False, "parts": {}}
    stretches: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for part in args.part:
            if args.deadline_s is not None and time.perf_counter() - started > args.deadline_s:
                report["stopped_at_deadline"] = True
                continue
            if part not in report["parts"]:
                report["parts"][part] = start_part(part, args.data[part], args)
                stretches.append(report["parts"][part]["baseline"]["quiet"])
            entry = report["parts"][part]
            entry["tunetext"]["per_seed"].append(fine_tune(part, entry["overrides"], seed, args))
            stretches.append(entry["tunetext"]["per_seed"][-1]["quiet"])
            summarise(part, entry)
            # Scores do not depend on other load; the seconds do.
            report["indicative"], report["warnings"] = verdict(stretches)
            report["complete"] = all(len(report["parts"].get(p, {}).get("tunetext", {}).get("per_seed", []))
                                     == args.seeds for p in args.part)
            write(report, args.output)
    report["indicative"], report["warnings"] = verdict(stretches)
    write(report, args.output)
    print(markdown(report), flush=True)
    errors = [r for e in report["parts"].values() for r in e["tunetext"]["per_seed"] if "error" in r]
    for r in errors:
        print(f"seed {r['seed']}: {r['error']}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
