"""The `tunetext` command, called in-process through `tunetext.cli.main`."""

from __future__ import annotations

import csv
import json
import re

import pytest

import tunetext
from tunetext import Classifier, load_config
from tunetext.cli import main
from tunetext.evaluate import evaluate, format_metrics


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_predictions(rows: list[dict], expected) -> None:
    """The CLI's rows are the Python API's predictions for the same texts."""
    assert len(rows) == len(expected)
    for row, p in zip(rows, expected, strict=True):
        assert row["label"] == p.label
        assert row["score"] == pytest.approx(p.score, abs=1e-6)
        assert row["probabilities"] == pytest.approx(p.probabilities, abs=1e-6)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert tunetext.__version__ in capsys.readouterr().out


def test_train_with_config_file_and_overrides(tmp_path, tiny_bert, capsys, tiny_csv):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(
        f"data:\n  source: {tiny_csv}\nmodel:\n  name: {tiny_bert}\n  max_length: 64\n"
        "train:\n  epochs: 3\n  batch_size: 8\n  learning_rate: 1.0e-3\n  precision: fp32\n"
    )
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--config", config_file, "--output", out, "--quiet",
                              "epochs=1", "train.seed=3", "train.warmup_ratio=0")
    assert code == 0
    config = load_config(out / "tunetext.yaml")
    assert config.train.epochs == 1 and config.train.seed == 3 and config.train.warmup_ratio == 0  # overrides
    assert config.train.batch_size == 8 and config.model.max_length == 64  # from the file
    assert config.train.weight_decay == 0.01  # a default neither touched
    assert f"run written to {out}" in stdout
    assert "confusion matrix" in stdout and "before vs after fine-tuning (test)" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 5
    assert f"{metrics['test']['accuracy']:.4f}" in stdout


def test_train_bad_override_exits_2_and_names_it(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(capsys, "train", "--output", out, "epochz=2", "train.batch_size=0",
                                   "novalue")
    assert code == 2
    assert stdout == ""
    assert "error: invalid configuration" in stderr
    assert "epochz" in stderr and "train.epochs" in stderr  # the unknown key and the likely one
    assert "train.batch_size: got 0" in stderr
    assert "'novalue': overrides are written key=value" in stderr
    assert not out.exists()  # nothing started


def test_train_missing_text_column_exits_2_listing_the_columns(tmp_path, tiny_bert, capsys, tiny_csv):
    code, _, stderr = run_cli(capsys, "train", "--data", tiny_csv, "--model", tiny_bert, "--output",
                              tmp_path / "run", "--text-column", "body", "--quiet")
    assert code == 2
    assert "no column 'body'" in stderr and "'text', 'label'" in stderr


def test_evaluate_json_matches_the_stored_test_scores(trained_run, capsys):
    code, stdout, _ = run_cli(capsys, "evaluate", trained_run, "--json")
    assert code == 0
    metrics = json.loads(stdout)
    stored = json.loads((trained_run / "metrics.json").read_text())["test"]
    assert metrics["split"] == "test"
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"])
    assert metrics["confusion_matrix"] == stored["confusion_matrix"]


def test_evaluate_table_and_other_data(trained_run, tmp_path, capsys):
    code, stdout, _ = run_cli(capsys, "evaluate", trained_run)
    assert code == 0
    metrics = evaluate(trained_run)  # the API's answer for the same run and data
    assert metrics["split"] == "test" and "confusion matrix" in stdout
    assert stdout == "".join(f"data: {line}\n" for line in metrics["report"]) + format_metrics(
        metrics, f"{trained_run} on its own data (test)") + "\n"
    other = tmp_path / "other.csv"
    other.write_text("body,category\nfree prize call now,spam\nsee you at 6,ham\nwin cash today,spam\n")
    code, stdout, _ = run_cli(capsys, "evaluate", trained_run, "--data", other, "--text-column", "body",
                              "--label-column", "category", "--json")
    assert code == 0
    metrics = evaluate(trained_run, data=str(other), text_column="body", label_column="category")
    assert metrics["split"] == "all" and metrics["n"] == 3
    assert json.loads(stdout) == json.loads(json.dumps(metrics))


def test_evaluate_unfinished_directory_exits_2(tmp_path, capsys):
    code, _, stderr = run_cli(capsys, "evaluate", tmp_path)
    assert code == 2 and "not a finished tunetext run" in stderr


def test_predict_texts_plain_and_json(trained_run, capsys):
    texts = ["WINNER! claim your 1000 prize", "see you at 7pm"]
    expected = Classifier.load(trained_run).predict(texts)
    code, stdout, _ = run_cli(capsys, "predict", trained_run, *texts)
    assert code == 0
    lines = stdout.splitlines()
    assert len(lines) == 2
    for line, text, p in zip(lines, texts, expected, strict=True):
        assert line.split()[0] == p.label and line.split()[1] == f"{p.score:.4f}" and line.endswith(text)

    code, stdout, _ = run_cli(capsys, "predict", trained_run, *texts, "--json")
    rows = json.loads(stdout)
    assert [r["text"] for r in rows] == texts
    for row, p in zip(rows, expected, strict=True):
        assert row["label"] == p.label
        assert row["probabilities"] == pytest.approx(p.probabilities)
        assert sum(row["probabilities"].values()) == pytest.approx(1)


def test_predict_txt_input_to_jsonl_output(trained_run, tmp_path, capsys):
    source = tmp_path / "texts.txt"
    source.write_text("free entry to win\nare we still on for lunch\ncall 0800 now\n")
    out = tmp_path / "preds.jsonl"
    code, stdout, stderr = run_cli(capsys, "predict", trained_run, "--input", source, "--output", out)
    assert code == 0 and stdout == ""
    assert f"wrote 3 predictions to {out}" in stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    texts = source.read_text().splitlines()
    assert [r["text"] for r in rows] == texts
    assert_predictions(rows, Classifier.load(trained_run).predict(texts))


def test_predict_csv_input_to_csv_output(trained_run, tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text('id,body\n1,"free entry, to win"\n2,lunch later?\n')
    out = tmp_path / "preds.csv"
    code, _, _ = run_cli(capsys, "predict", trained_run, "--input", source, "--text-column", "body",
                         "--output", out)
    assert code == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "body", "label", "score", "p_ham", "p_spam", "truncated"]  # id kept
    assert [r["body"] for r in rows] == ["free entry, to win", "lunch later?"]
    assert [r["id"] for r in rows] == ["1", "2"]
    for r, p in zip(rows, Classifier.load(trained_run).predict([r["body"] for r in rows]), strict=True):
        assert float(r["p_ham"]) + float(r["p_spam"]) == pytest.approx(1, abs=1e-5)
        assert float(r["score"]) == pytest.approx(float(r[f"p_{r['label']}"]))
        assert r["label"] == p.label and float(r["score"]) == pytest.approx(p.score, abs=1e-6)  # 6 places
        assert [float(r[f"p_{name}"]) for name in p.probabilities] == pytest.approx(
            list(p.probabilities.values()), abs=1e-6)


def test_predict_json_lines_input_with_json_suffix(trained_run, tmp_path, capsys):
    # .json is read as JSON lines for training data, so also for prediction input
    source = tmp_path / "in.json"
    source.write_text('{"text": "free entry to win"}\n{"text": "lunch later?"}\n')
    code, stdout, _ = run_cli(capsys, "predict", trained_run, "--input", source, "--json")
    assert code == 0
    rows, texts = json.loads(stdout), ["free entry to win", "lunch later?"]
    assert [r["text"] for r in rows] == texts
    assert_predictions(rows, Classifier.load(trained_run).predict(texts))


def test_predict_without_texts_exits_2(trained_run, capsys):
    code, _, stderr = run_cli(capsys, "predict", trained_run)
    assert code == 2 and "give texts" in stderr


def test_data_show(capsys, tiny_csv):
    code, stdout, _ = run_cli(capsys, "data", "show", tiny_csv)
    assert code == 0
    assert "single_label, 2 labels: ham, spam" in stdout
    assert "train     36 examples;" in stdout and "val        5 examples;" in stdout
    assert "test      11 examples;" in stdout
    assert re.search(r"ham +19 \(52.8%\) +3 \(60.0%\) +6 \(54.5%\)", stdout)
    assert re.search(r"spam +17 \(47.2%\) +2 \(40.0%\) +5 \(45.5%\)", stdout)
    assert stdout.count("  [ham] ") == 2 and stdout.count("  [spam] ") == 2


def test_data_show_missing_column_exits_2(capsys, tiny_csv):
    code, _, stderr = run_cli(capsys, "data", "show", tiny_csv, "--label-column", "category")
    assert code == 2
    assert "no column 'category'" in stderr and "'text', 'label'" in stderr


def test_data_show_takes_data_settings(tmp_path, capsys):
    labels = ("Billing", "billing", "other")
    rows = [f"text {i} of kind {k},{label}" for i in range(12) for k, label in enumerate(labels)]
    path = tmp_path / "similar.csv"
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    code, _, stderr = run_cli(capsys, "data", "show", path)
    assert code == 2 and "differ only in letter case" in stderr and "tunetext data show" in stderr
    code, stdout, _ = run_cli(capsys, "data", "show", path, "data.similar_labels=keep")
    assert code == 0 and "3 labels: Billing, billing, other" in stdout
    code, _, stderr = run_cli(capsys, "data", "show", path, "data.similar_labels=merge")
    assert code == 2 and "similar_labels" in stderr
    code, _, stderr = run_cli(capsys, "data", "show", path, "train.epochs=3")
    assert code == 2 and "train.epochs: tunetext data show takes data settings only" in stderr


def test_data_list(capsys):
    code, stdout, _ = run_cli(capsys, "data", "list")
    assert code == 0
    line = next(line for line in stdout.splitlines() if line.startswith("sms_spam "))
    assert "5,574" in line


# ---- options among the positional arguments ---------------------------------------------------------------

def test_predict_takes_options_between_and_after_the_texts(trained_run, capsys):
    texts = ["WINNER! claim your 1000 prize", "see you at 7pm"]
    code, stdout, _ = run_cli(capsys, "predict", trained_run, "--json", texts[0])
    assert code == 0 and [r["text"] for r in json.loads(stdout)] == texts[:1]
    code, stdout, _ = run_cli(capsys, "predict", trained_run, texts[0], "--json", texts[1], "--batch-size", 1)
    assert code == 0 and [r["text"] for r in json.loads(stdout)] == texts
    code, stdout, _ = run_cli(capsys, "predict", trained_run, "--", "--json")  # `--`: the rest are texts
    assert code == 0 and stdout.split()[2:] == ["--json"]


def test_train_takes_options_among_the_overrides():
    from tunetext.cli import build_parser

    args = build_parser().parse_args(["train", "epochs=1", "--output", "out", "train.seed=3", "--quiet"])
    assert args.overrides == ["epochs=1", "train.seed=3"] and args.output == "out" and args.quiet


def test_data_show_takes_options_after_the_overrides(capsys, tiny_csv):
    code, stdout, _ = run_cli(capsys, "data", "show", tiny_csv, "data.lowercase=true", "--examples", 1)
    assert code == 0
    assert stdout.count("  [ham] ") == 1 and stdout.count("  [spam] ") == 1


# ---- errors: the user's are one line, a bug's keep their traceback ----------------------------------------

def test_an_error_that_is_not_the_users_keeps_its_traceback(monkeypatch):
    from tunetext.cli import commands

    def bug(args):
        raise ValueError("a bug in tunetext")

    monkeypatch.setattr(commands, "data_list_command", bug)
    with pytest.raises(ValueError, match="a bug in tunetext"):
        main(["data", "list"])


def test_an_empty_text_to_predict_exits_2(trained_run, capsys):
    code, _, stderr = run_cli(capsys, "predict", trained_run, "fine", "   ")
    assert code == 2 and stderr.startswith("error: texts must be strings") and "position(s) 1" in stderr


def test_an_input_file_that_is_not_text_exits_2(trained_run, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "broken.parquet").write_text("not parquet")
    code, _, stderr = run_cli(capsys, "predict", trained_run, "--input", tmp_path / "latin1.txt")
    assert code == 2 and "latin1.txt: not UTF-8 text" in stderr
    code, _, stderr = run_cli(capsys, "predict", trained_run, "--input", tmp_path / "empty.txt")
    assert code == 2 and "empty.txt holds no texts" in stderr
    code, _, stderr = run_cli(capsys, "predict", trained_run, "--input", tmp_path / "broken.parquet")
    assert code == 2 and "broken.parquet: not a readable Parquet file" in stderr


def test_a_config_file_that_is_not_text_exits_2(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"\xff\xfe\x00data:\n")
    code, _, stderr = run_cli(capsys, "train", "--config", config, "--output", tmp_path / "run")
    assert code == 2 and f"{config} is not valid YAML" in stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--labels", "ham"], "--labels takes NAME=WORDS pairs"),
    (["--labels", ","], "--labels takes NAME=WORDS pairs"),
    (["--template", "no text field"], "a template must contain {text}"),
    (["--data", None], "give --data (a dataset), or --run RUN_DIR"),
    (["--shots", "-1"], "shots must be 0 or more, got -1"),
    (["--shots", "100"], "asked for 100 shots but the training split has only 36 examples"),
    (["--labels", "ham=ham"], "no verbalizer for label(s) 'spam'"),
])
def test_bad_prompt_eval_input_exits_2_before_loading_a_model(argv, message, capsys, tiny_csv):
    options = {"--data": str(tiny_csv), "--template": "Message: {text}"}
    for flag, value in zip(argv[::2], argv[1::2], strict=True):
        options[flag] = value
    given = [item for flag, value in options.items() if value is not None for item in (flag, value)]
    # A model that does not exist: every one of these is found before the model is loaded.
    code, _, stderr = run_cli(capsys, "prompt-eval", "--model", "no-such-model", *given)
    assert code == 2 and stderr.startswith("error: ") and message in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--split", "val"], "--run compares test scores; leave out --split"),
    (["--text-column", "body"], "leave out --text-column and --label-column"),
    (["--data", "sms_spam"], "the story compares on one test split"),
])
def test_prompt_eval_with_a_run_refuses_what_it_would_ignore(argv, message, trained_run, capsys):
    code, _, stderr = run_cli(capsys, "prompt-eval", "--model", "no-such-model", "--run", trained_run,
                              "--template", "Message: {text}", *argv)
    assert code == 2 and message in stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--max-texts", "0"], "max_texts: got 0: Input should be greater than or equal to 1"),
    (["--max-texts", "5000"], "max_queue (4096) must be at least max_texts (5000)"),
    (["--workers", "0"], "workers: got 0"),
    (["--max-wait-ms", "-1"], "max_wait_ms: got -1.0"),
    (["--header-timeout", "0"], "header_timeout_s: got 0.0"),
])
def test_bad_serve_settings_exit_2_naming_the_setting(argv, message, trained_run, capsys):
    code, _, stderr = run_cli(capsys, "serve", trained_run, *argv)
    assert code == 2 and "error: invalid configuration" in stderr and message in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("argv", [
    ["predict", "RUN", "hi", "--batch-size", "0"], ["prompt-eval", "--model", "m", "--template", "{text}",
                                                    "--max-examples", "0"],
    ["train", "--output", "out", "--seeds", "0"], ["data", "show", "x.csv", "--examples", "-1"],
])
def test_numbers_out_of_range_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "must be a whole number of at least" in capsys.readouterr().err


# ---- Ctrl-C: one line and 130, wherever it comes --------------------------------------------------------

def test_ctrl_c_while_the_libraries_load_exits_130(monkeypatch, capsys):
    from tunetext import cli

    def interrupted(verbose):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "quiet_libraries", interrupted)
    code, _, stderr = run_cli(capsys, "data", "list")
    assert code == 130 and stderr.strip() == "interrupted"


def test_ctrl_c_while_data_loads_exits_130_without_a_traceback(tiny_csv):
    """A real SIGINT, delivered once `data show` is loading its data, in a process of its own."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from tunetext import cli
        from tunetext.cli import commands

        def load_dataset(*args, **kwargs):  # a first download can take minutes
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)
            raise SystemExit("SIGINT did not interrupt the loading")

        commands.load_dataset = load_dataset
        sys.exit(cli.main(["data", "show", {str(tiny_csv)!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip() == "interrupted"


def test_serve_settings_from_python_are_checked_like_the_flags(trained_run):
    from tunetext.config import ConfigError
    from tunetext.errors import UsageError
    from tunetext.serve import serve

    with pytest.raises(ConfigError, match="max_textz: unknown serve setting; the settings are max_batch"):
        serve(trained_run, max_textz=3)
    with pytest.raises(ConfigError, match="pass_size: got 0"):
        serve(trained_run, pass_size=0)
    with pytest.raises(UsageError, match=r"the API key comes from \$TUNETEXT_API_KEY"):
        serve(trained_run, api_key="k")
