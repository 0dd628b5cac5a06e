"""Several seeds and the comparison table."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tunetext.cli import main
from tunetext.compare import aggregate_seeds, compare, format_table, mean_std
from tunetext.train import train, train_seeds


def test_mean_std_is_the_sample_statistic():
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}


def test_aggregate_seeds_covers_val_test_and_time():
    metrics = [{"val": {"accuracy": a, "macro_f1": a}, "test": {"accuracy": a, "macro_f1": a / 2},
                "training": {"train_seconds": 10 * a}} for a in (0.8, 0.9, 1.0)]
    summary = aggregate_seeds(metrics)
    assert summary["test"]["macro_f1"]["mean"] == pytest.approx(0.45)
    assert summary["val"]["accuracy"]["std"] == pytest.approx(0.1)
    assert summary["train_seconds"]["mean"] == pytest.approx(9.0)


def _weights(run_dir):
    return load_file(run_dir / "model.safetensors")


def _losses(run_dir):
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [e["loss"] for e in log if e["event"] == "train"]


def test_train_seeds_shares_the_split_and_varies_the_seed(tmp_path, tiny_bert, tiny_config):
    config = tiny_config(tiny_bert, epochs=1, log_every=1)
    results, summary = train_seeds(config, tmp_path / "seeds", 2, progress=False)
    assert [r.config.train.seed for r in results] == [42, 43]
    # The seeds really differ: another head at the start, other batches, so other weights and losses ...
    first, second = (_weights(r.run_dir) for r in results)
    assert first.keys() == second.keys()
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])
    assert _losses(results[0].run_dir) != _losses(results[1].run_dir)
    # ... while the same seed repeats its run exactly.
    again = train(config, tmp_path / "again", progress=False)
    assert again.config.train.seed == 42
    assert all(torch.equal(t, _weights(again.run_dir)[k]) for k, t in first.items())
    assert _losses(again.run_dir) == _losses(results[0].run_dir)
    fingerprints = {json.loads((r.run_dir / "data.json").read_text())["test"]["sha256"] for r in results}
    assert len(fingerprints) == 1
    saved = json.loads((tmp_path / "seeds" / "seeds.json").read_text())
    assert saved["seeds"] == [42, 43] and saved["test"]["accuracy"]["n"] == 2
    accs = [r.metrics["test"]["accuracy"] for r in results]
    assert saved["test"]["accuracy"]["mean"] == pytest.approx(sum(accs) / 2)

    rows = compare([r.run_dir for r in results])
    assert [row["test_accuracy"] for row in rows] == accs
    table = format_table(rows)
    assert "test_accuracy" in table and str(results[0].run_dir) in table


def test_compare_cli_and_unfinished_run_error(trained_run, tiny_bert, tiny_csv, tmp_path, capsys):
    assert main(["compare", str(trained_run), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == json.loads(json.dumps(compare([trained_run])))  # the API's table, as JSON
    metrics = json.loads((trained_run / "metrics.json").read_text())
    [row] = rows
    assert (row["run"], row["model"], row["data"]) == (str(trained_run), str(tiny_bert), str(tiny_csv))
    assert (row["strategy"], row["epochs"]) == ("full", 3)
    assert row["test_accuracy"] == metrics["test"]["accuracy"]
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "tunetext.yaml").write_text("{}")
    assert main(["compare", str(tmp_path / "half")]) == 2
    assert "not a finished tunetext run" in capsys.readouterr().err
