"""Every benchmark script, end to end on tiny random models and the tiny data, so that none can rot.

The numbers they produce here mean nothing; what is checked is that each script runs its whole path and
writes a result with the fields its docs quote: the machine, the ratios (labelled loop or wall), the
choices made on validation, and the busy-machine verdict.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import inference  # noqa: E402
import machine  # noqa: E402
import serve_load  # noqa: E402
import tasks  # noqa: E402
import train_speed  # noqa: E402


def run_script(name: str, *args: str | Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, args)], capture_output=True,
                            text=True, cwd=BENCHMARKS, timeout=600)
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: a target missed, as on tiny models
    return result


def assert_machine_recorded(report: dict) -> None:
    m = report["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch_threads"] >= 1
    assert set(m["key_flags"]) == set(machine.KEY_FLAGS)
    assert m["torch"] and m["transformers"] and len(m["loadavg_at_start"]) == 3
    assert isinstance(report["indicative"], bool)


def test_train_speed_runs_every_way_and_labels_its_ratios(tmp_path, tiny_bert, tiny_csv):
    out = tmp_path / "train_speed.json"
    run_script("train_speed.py", "--model", tiny_bert, "--data", tiny_csv, "--epochs", "2", "--seeds", "1",
               "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    assert list(report["ways"]) == ["A", "B", "Bp", "C"]
    assert [(r["way"], r["seed"]) for r in report["runs"]] == [("Bp", 42), ("C", 42), ("B", 42), ("A", 42)]
    assert report["complete"]
    assert all("error" not in r for r in report["runs"]), report["warnings"]
    # Every way trained on the same split and kept its best-validation epoch.
    assert len({json.dumps(r["splits"], sort_keys=True) for r in report["runs"]}) == 1
    for run in report["runs"]:
        assert len(run["val_macro_f1_per_epoch"]) == 2 and run["best_checkpoint_step"] > 0
        assert 0 < run["loop_seconds"] < run["wall_seconds"]
    bp = next(r for r in report["runs"] if r["way"] == "Bp")
    assert bp["settings"]["per_device_train_batch_size"] == 32 and bp["settings"]["attention"] == "eager"
    assert bp["settings"]["bf16"] == next(r for r in report["runs"] if r["way"] == "C")["bf16"]
    for way in ("A", "B", "Bp"):
        for kind in ("loop", "wall"):
            expected = report["ways"][way][f"{kind}_seconds"] / report["ways"]["C"][f"{kind}_seconds"]
            assert report["ratios"][f"{way}_over_C_{kind}"] == pytest.approx(expected)
    assert set(report["ratios"]["definitions"]) == {"loop", "wall"}
    assert set(report["met"]["accuracy_vs_Bp"]) >= {"equal_or_better", "within_seed_spread"}


def test_train_speed_alternates_the_seeded_ways_in_rounds():
    assert train_speed.schedule(["A", "B", "Bp", "C"], [42, 43, 44]) == [
        ("Bp", 42), ("C", 42), ("C", 43), ("Bp", 43), ("Bp", 44), ("C", 44), ("B", 42), ("A", 42)]


def test_strategies_chooses_the_best_method_on_validation(tmp_path, tiny_bert, tiny_gpt2, tiny_csv):
    out = tmp_path / "strategies.json"
    run_script("strategies.py", "--source", tiny_csv, "--encoder", tiny_bert, "--decoder", tiny_gpt2,
               "--epochs", "1", "--only", "features,last_n_cached,last_n_uncached,full",
               "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    results, chosen = report["results"], report["targets"]["accuracy"]
    assert all("error" not in r for r in results.values())
    best = max(results[k]["val_macro_f1"] for k in results)
    assert results[chosen["best_minilm_method_on_validation"]]["val_macro_f1"] == best
    assert chosen["accuracy"] == results[chosen["best_minilm_method_on_validation"]]["accuracy"]
    cache = report["targets"]["cache minilm-l6"]
    on, off = results["last_n_cached"], results["last_n_uncached"]
    assert cache["loop_speedup"] == pytest.approx(off["train_seconds"] / on["train_seconds"])
    assert cache["wall_speedup"] == pytest.approx(off["wall_seconds"] / on["wall_seconds"])
    assert "val macro-F1" in out.with_suffix(".md").read_text()


def test_serve_load_leaves_the_warmup_out_of_its_batch_counts(tmp_path, trained_run):
    """The two-way comparison of older results, with their keys; no export is made for it."""
    out = tmp_path / "serve_load.json"
    run_script("serve_load.py", "--run-dir", trained_run, "--sides", "tunetext,baseline", "--requests", "12",
               "--warmup", "5", "--concurrency", "2", "--rounds", "2", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    assert "tunetext_onnx" not in report and "onnx_export" not in report
    assert not (trained_run / "onnx").exists()
    tunetext, baseline = report["tunetext"], report["baseline"]
    assert tunetext["requests"] == baseline["requests"] == 12 and not tunetext["errors"]
    assert tunetext["server"]["texts"] == 12  # the 5 warm-up requests are not counted
    assert tunetext["server"]["backend"] == "torch"
    assert len(report["ratios"]["p99_baseline_over_tunetext_per_round"]) == 2
    paired = zip(tunetext["rounds"], baseline["rounds"], strict=True)
    per_round = all(t["p99_ms"] < b["p99_ms"] for t, b in paired)
    assert report["met"]["p99"] == per_round
    assert report["met"]["all"] == (report["met"]["throughput"] and per_round)
    assert report["ratios_onnx"] == {} and report["met"]["onnx"] == {}
    assert report["label_agreement"] == 1.0


def test_serve_load_exports_and_compares_the_onnx_server(tmp_path, trained_run):
    """The three sides: the run is exported first (a copy: exporting changes the run other tests share),
    the ONNX server serves the export's chosen model, and each comparison is judged from its sides."""
    run, out = tmp_path / "run", tmp_path / "serve_load.json"
    shutil.copytree(trained_run, run)
    result = run_script("serve_load.py", "--run-dir", run, "--requests", "12", "--warmup", "5",
                        "--concurrency", "2", "--rounds", "2", "--output", out)
    assert "making one: tunetext export" in result.stdout
    report = json.loads(out.read_text())
    export = report["onnx_export"]
    assert export == {k: v for k, v in json.loads((run / "onnx" / "export.json").read_text()).items()
                      if k not in ("cpu", "versions")} | {"made_by_this_run": True}
    assert {"chosen", "reason", "fusions"} <= set(export) and "metric_drop_points" in export["int8"]
    onnx, torch, baseline = report["tunetext_onnx"], report["tunetext"], report["baseline"]
    assert onnx["server"]["backend"] == "onnx" and onnx["server"]["onnx_model"] == export["model"]
    assert torch["server"]["backend"] == "torch" and torch["server"]["onnx_model"] is None
    assert onnx["server"]["texts"] == torch["server"]["texts"] == 12 and not onnx["errors"]
    for key, other in (("over_torch", torch), ("over_baseline", baseline)):
        ratios, met = report["ratios_onnx"][key], report["met"]["onnx"][key]
        assert ratios["throughput"] == pytest.approx(
            onnx["requests_per_second"] / other["requests_per_second"], abs=0.01)
        paired = zip(onnx["rounds"], other["rounds"], strict=True)
        per_round = all(o["p99_ms"] < t["p99_ms"] for o, t in paired)
        assert met["p99"] == per_round
        assert met["all"] == (ratios["throughput"] >= report["target_onnx"][key]["throughput_ratio_min"]
                              and per_round)
        assert 0 <= report["label_agreement_onnx"][key] <= 1
    met = report["met"]
    assert met["all"] == all([met["throughput"] and met["p99"], *(m["all"] for m in met["onnx"].values())])


def test_serve_load_sides_are_checked():
    assert serve_load.sides_arg("baseline, tunetext_onnx") == ["baseline", "tunetext_onnx"]
    for bad in ("tunetext", "tunetext,tunetext", "tunetext,onnx"):
        with pytest.raises(argparse.ArgumentTypeError, match="two or more of tunetext, tunetext_onnx"):
            serve_load.sides_arg(bad)


def test_inference_measures_the_four_ways_in_rounds(tmp_path, trained_run):
    """Each way in its own process (one round here, to be quick), the run exported first (a copy:
    exporting changes the run other tests share), batch sizes chosen from the validation sweep, ratios from
    the medians."""
    run, out = tmp_path / "run", tmp_path / "inference.json"
    shutil.copytree(trained_run, run)
    run_script("inference.py", "--sms-run", run, "--datasets", "sms_spam", "--rounds", "1",
               "--sweep-texts", "8", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    data = report["datasets"]["sms_spam"]
    ways = data["ways"]
    assert set(ways) == set(inference.WAYS) and (run / "onnx" / "model.int8.onnx").is_file()
    for name, way in ways.items():
        assert len(way["rounds"]) == 1 and way["peak_rss_mib"] > 0 and 0 <= way["accuracy"] <= 1
        assert way["texts_per_second"] == way["rounds"][0]["texts_per_second"]
        if name == "pipeline":
            assert way["batch_size"] == 8 and way["encode_seconds"] is None
        else:
            sweep = way["sweep_texts_per_second"]
            assert way["batch_size"] == int(max(sweep, key=sweep.get))
    ratios = data["ratios"]
    assert ratios["int8_over_torch"] == pytest.approx(
        ways["onnx_int8"]["texts_per_second"] / ways["torch"]["texts_per_second"], abs=0.01)
    assert len(ratios["per_round_int8_over_pipeline"]) == 1
    assert data["int8_accuracy_drop_points"] == pytest.approx(
        (ways["onnx_fp32"]["accuracy"] - ways["onnx_int8"]["accuracy"]) * 100, abs=0.01)
    assert report["met"]["sms_spam"]["sms_p50"] == (ways["onnx_int8"]["latency_ms"]["p50"] < 5.0)
    assert data["export"]["chosen"] in ("fp32", "int8")


def test_accuracy_runs_on_a_csv(tmp_path, tiny_bert, tiny_csv):
    out = tmp_path / "accuracy.json"
    run_script("accuracy.py", "--datasets", tiny_csv, "--model", tiny_bert, "--seeds", "2",
               "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    result = report["datasets"][str(tiny_csv)]
    assert len(result["per_seed"]) == 2 and all("quiet" in s for s in result["per_seed"])
    assert [s["seed"] for s in result["per_seed"]] == [42, 43] and report["complete"]
    assert isinstance(report["indicative_times"], bool)
    assert {c["key"] for c in result["choices"]} >= {"train.epochs", "train.class_weights"}
    # A part run elsewhere (another seed) merges in: the runs of both, in seed order, summarised again.
    part = tmp_path / "part.json"
    run_script("accuracy.py", "--datasets", tiny_csv, "--model", tiny_bert, "--seeds", "1",
               "--first-seed", "44", "--workdir", tmp_path / "work2", "--output", part)
    run_script("accuracy.py", "--merge", out, part, "--output", tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())["datasets"][str(tiny_csv)]
    assert [s["seed"] for s in merged["per_seed"]] == [42, 43, 44] and merged["seeds"] == 3
    assert merged["test_accuracy"]["mean"] == pytest.approx(
        sum(s["test_accuracy"] for s in merged["per_seed"]) / 3)
    assert result["test_accuracy"]["mean"] == pytest.approx(
        sum(s["test_accuracy"] for s in result["per_seed"]) / 2)
    assert report["machine"]["cpu"]


def test_attention_times_both_kernels_on_the_same_batches(tmp_path, tiny_bert, tiny_csv):
    out = tmp_path / "attention.json"
    run_script("attention.py", "--model", tiny_bert, "--data", tiny_csv, "--steps", "1", "--warmup", "1",
               "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    fp32 = report["fp32"]
    assert report["batches"] == 1 and set(fp32["seconds_per_step"]) == {"eager", "sdpa"}
    assert fp32["sdpa_over_eager_loop"] == pytest.approx(
        fp32["seconds_per_step"]["sdpa"] / fp32["seconds_per_step"]["eager"])


def test_cpu_watch_counts_other_processes_as_other_work():
    watch = machine.CpuWatch()
    subprocess.run([sys.executable, "-c", "sum(range(3 * 10**7))"], check=True)  # a waited-for child: ours
    ours = watch.stop()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # not waited for: other work
    try:
        watch = machine.CpuWatch()
        time.sleep(1.5)
        theirs = watch.stop()
    finally:
        spinner.kill()
        spinner.wait()
    assert theirs["other_cpu_seconds"] > ours["other_cpu_seconds"] + 0.5
    assert theirs["busy"]
    indicative, warnings = machine.verdict([theirs])
    assert indicative and "indicative" in warnings[0]
    assert machine.verdict([{**theirs, "busy": False}]) == (False, [])


def test_long_text_compares_the_ways_and_chooses_on_validation(tmp_path, tiny_bert, tiny_csv):
    out = tmp_path / "long_text.json"
    # Windows of 8 tokens make the tiny CSV's texts long documents.
    run_script("long_text.py", "--data", tiny_csv, "--model", tiny_bert, "--workdir", tmp_path / "work",
               "--output", out, "--set", "model.max_length=8", "--set", "train.epochs=2", "--set",
               "train.batch_size=4", "--subsample", "40,8")
    report = json.loads(out.read_text())
    assert report["subsample"]["test"] <= 10 and report["chosen_mode"] in ("truncate", "head_tail", "chunks")
    assert_machine_recorded(report)
    ways = report["ways"]
    assert set(ways) == {"truncate", "head_tail", "chunks", "chunks_same_steps"}
    assert not any("error" in w for w in ways.values()) and report["complete"]
    best = report["chosen_on_validation"]
    assert all(ways[best]["val_macro_f1"] >= ways[w]["val_macro_f1"]
               for w in ("truncate", "head_tail", "chunks"))
    assert ways["chunks"]["steps"] > ways["truncate"]["steps"] == ways["head_tail"]["steps"]
    assert ways["chunks_same_steps"]["steps"] < ways["chunks"]["steps"]


def test_precision_times_both_ways_and_records_the_choice(tmp_path, tiny_bert):
    out = tmp_path / "precision.json"
    run_script("precision.py", "--model", tiny_bert, "--rounds", "1", "--tokens", "8", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    train = report["train"]
    assert train["fp32_over_bf16"] == pytest.approx(train["seconds"]["fp32"] / train["seconds"]["bf16"])
    assert report["auto_chose"] == ("bf16" if report["machine"]["auto_bf16_cpu"] else "fp32")


def _task_data(tmp_path: Path, tiny_csv: Path) -> tuple[Path, Path]:
    """The tiny texts with tags drawn from their words (some rows none) as multi-label JSONL, and with a
    number from their length as regression CSV."""
    import csv

    tags = {"prize": ("won", "win", "prize", "award", "voucher"),
            "food": ("coffee", "pizza", "curry", "lunch"), "reply": ("call", "text", "txt", "reply", "send")}
    with open(tiny_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    multi, numeric = tmp_path / "multi.jsonl", tmp_path / "numeric.csv"
    multi.write_text("".join(json.dumps({"text": r["text"], "label": [
        tag for tag, words in tags.items() if any(w in r["text"].lower() for w in words)]}) + "\n"
        for r in rows))
    with numeric.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows((r["text"], len(r["text"]) / 10 + 2.0 * (r["label"] == "spam")) for r in rows)
    return multi, numeric


def test_tasks_compares_tunetext_with_tfidf_on_both_tasks(tmp_path, tiny_bert, tiny_csv):
    multi, numeric = _task_data(tmp_path, tiny_csv)
    out = tmp_path / "tasks.json"
    run_script("tasks.py", "--multi-label-data", multi, "--regression-data", numeric, "--model", tiny_bert,
               "--seeds", "1", "--subsample", "30", "--set", "train.epochs=2", "--set", "train.batch_size=8",
               "--set", "data.val_fraction=0.2", "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    assert report["complete"] and set(report["parts"]) == {"multi_label", "regression"}
    for entry in report["parts"].values():
        runs = entry["tunetext"]["per_seed"]
        assert [r["seed"] for r in runs] == [42] and not any("error" in r for r in runs)
        # Both ways saw the same rows: the runs' data.json fingerprints match the baseline's split, and
        # the training split is the subsample.
        assert entry["same_split"] and entry["split_sizes"] == entry["baseline_split_sizes"]
        assert entry["split_sizes"]["train"] <= 32
        base = entry["baseline"]
        assert base["chosen"] == {next(iter(base["settings"]["grid"])):
                                  float(max(base["val_by_grid"], key=base["val_by_grid"].get))}
        assert len(base["val_by_grid"]) == len(next(iter(base["settings"]["grid"].values())))
        assert base["wall_seconds"] > 0 and entry["tunetext"]["wall_seconds"]["mean"] > \
            entry["tunetext"]["train_seconds"]["mean"] > 0
        for key, target in entry["targets"]["fine_tuned_beats_tfidf"].items():
            assert target["tunetext"] == pytest.approx(entry["tunetext"]["test"][key]["mean"])
            assert target["met"] == (target["margin"] > 0)
    multi_entry = report["parts"]["multi_label"]
    beats = multi_entry["targets"]["fine_tuned_beats_tfidf"]
    assert set(beats) == {f"{way}.{m}" for way in ("tuned", "at_0.5")
                          for m in ("micro_f1", "macro_f1", "subset_accuracy", "hamming_loss")}
    assert set(multi_entry["baseline"]["thresholds"]) == set(multi_entry["label_names"])
    assert beats["tuned.micro_f1"]["tfidf"] == multi_entry["baseline"]["test"]["tuned"]["micro_f1"]
    assert "tuned_beats_0.5_on_macro_f1" in multi_entry["targets"]
    assert set(report["parts"]["regression"]["targets"]["fine_tuned_beats_tfidf"]) == {
        "pearson", "spearman", "mae", "rmse", "r2"}
    assert "TF-IDF" in out.with_suffix(".md").read_text()


def test_tasks_judges_each_target_the_right_way_round():
    assert tasks.beats("mae", 0.4, 0.5) | {"margin": 0} == {
        "tunetext": 0.4, "tfidf": 0.5, "better": "lower", "margin": 0, "met": True, "missed_by": 0.0}
    assert tasks.beats("macro_f1", 0.4, 0.5)["missed_by"] == pytest.approx(0.1)
    assert not tasks.beats("pearson", 0.5, 0.5)["met"]  # a tie does not beat
    assert tasks.beats("hamming_loss", 0.2, 0.1)["missed_by"] == pytest.approx(0.1)

    def run(seed: int, score: float) -> dict:
        return {"seed": seed, "test": {m: score for m in tasks.REGRESSION_METRICS},
                "split_sha256": {"t": "x"}, "split_sizes": {"train": 3}, "wall_seconds": 2.0,
                "train_seconds": 1.0}

    entry = {"split_sha256": {"t": "x"}, "tunetext": {"per_seed": [run(42, 0.6), run(43, 0.8)]},
             "baseline": {"test": {m: 0.5 for m in tasks.REGRESSION_METRICS}}}
    tasks.summarise("regression", entry)
    beat = entry["targets"]["fine_tuned_beats_tfidf"]
    assert entry["tunetext"]["test"]["r2"]["mean"] == pytest.approx(0.7) and entry["same_split"]
    assert beat["r2"]["met"] and not beat["mae"]["met"] and beat["mae"]["missed_by"] == pytest.approx(0.2)
    assert not entry["targets"]["all_met"]


def test_predict_memory_measures_each_size_in_its_own_process(tmp_path):
    out = tmp_path / "predict_memory.json"
    run_script("predict_memory.py", "--sizes", "300", "30", "--chunk-rows", "64", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    sizes = report["sizes"]
    assert [s["size"] for s in sizes] == [30, 300] and [s["rows"] for s in sizes] == [30, 300]
    assert all(s["peak_kib"] >= s["peak_after_load_kib"] > 0 for s in sizes)
    assert report["ratio"] == pytest.approx(sizes[1]["peak_kib"] / sizes[0]["peak_kib"], abs=1e-4)
    assert report["met"] == (report["ratio"] <= report["target_ratio"])


def test_audit_benchmark_flips_audits_and_trains_the_three_ways(tmp_path, tiny_bert, tiny_csv):
    """`benchmarks/audit.py --quick`: labels flipped in train only, the audit's precision and recall
    against them, and (a) clean, (b) noisy, (c) noisy with the flagged rows dropped through
    data.drop_flagged, all on one test split."""
    out = tmp_path / "audit.json"
    run_script("audit.py", "--quick", "--datasets", tiny_csv, "--model", tiny_bert, "--noise", "0.05", "0.1",
               "--workdir", tmp_path / "work", "--output", out)
    report = json.loads(out.read_text())
    assert_machine_recorded(report)
    assert report["seeds"]["flips"] == 0 and report["seeds"]["data"] == 42
    entry = report["datasets"][str(tiny_csv)]
    for rate in ("0.05", "0.1"):
        found = entry["noise"][rate]
        assert found["flipped"] == max(1, round(float(rate) * entry["sizes"]["train"]))
        assert found["recall"] == found["true_positives"] / found["flipped"]
        if found["flagged"]:
            assert found["precision"] == found["true_positives"] / found["flagged"]
        assert found["audit_seconds"] > 0 and found["stages"]["embed"] > 0
    training = entry["training"]
    runs = training["runs"]
    assert training["same_test_split"] and set(runs) == {"clean", "noisy", "noisy_dropped"}
    assert runs["noisy_dropped"]["train_size"] == runs["noisy"]["train_size"] - training["marked_drop"]
    assert runs["noisy_dropped"]["drop_flagged"]["dropped"]["train"] == training["marked_drop"]
    assert training["marked_drop"] == entry["noise"]["0.05"]["flagged"]
    assert report["met"][str(tiny_csv)]["recall"] == (entry["noise"]["0.05"]["recall"] >= 0.6)
