"""Every default of the `tunetext` command is the API's: a CLI option either has no default of its own
(None, so the function or config field it feeds applies its own) or has exactly the API's, and its help
shows the API's value. The table below says which API each option feeds; it is written out by hand, so
a default changed on either side, or an option added without an entry, fails here."""

from __future__ import annotations

import argparse
import json
import shutil

import pytest

from tunetext.audit import audit
from tunetext.batch_predict import predict_file, read_texts
from tunetext.cli import build_parser, main
from tunetext.cli import commands as handlers
from tunetext.cli.parser import default_of
from tunetext.config import AuditConfig, DataConfig, ModelConfig, TrainConfig
from tunetext.evaluate import evaluate
from tunetext.export import export
from tunetext.hub import push
from tunetext.predict import BATCH_SIZE, Classifier
from tunetext.prompting import prompt_eval, prompt_story
from tunetext.ray_predict import predict_with_ray
from tunetext.report import report
from tunetext.search import search
from tunetext.serve import ServeSettings, serve
from tunetext.train import train, train_seeds

# (command, option) -> the API defaults it stands for. Several: the option feeds each of them.
FEEDS: dict[tuple[str, str], list[tuple[object, str]]] = {
    ("train", "--data"): [(DataConfig, "source")],
    ("train", "--model"): [(ModelConfig, "name")],
    ("train", "--epochs"): [(TrainConfig, "epochs")],
    ("train", "--strategy"): [(TrainConfig, "strategy")],
    ("train", "--text-column"): [(DataConfig, "text_column")],
    ("train", "--label-column"): [(DataConfig, "label_column")],
    ("train", "--label-columns"): [(DataConfig, "label_columns")],
    ("train", "--task"): [(DataConfig, "task")],
    ("train", "--max-train-samples"): [(DataConfig, "max_train_samples")],
    ("train", "--template"): [(DataConfig, "template")],
    ("train", "--init-from"): [(ModelConfig, "init_from")],
    ("train", "--init-labels"): [(ModelConfig, "init_labels")],
    ("train", "--resume"): [(train, "resume")],
    ("train", "--overwrite"): [(train, "overwrite"), (train_seeds, "overwrite")],
    ("search", "--trials"): [(search, "trials")],
    ("search", "--timeout"): [(search, "timeout")],
    ("search", "--storage"): [(search, "storage")],
    ("evaluate", "--data"): [(evaluate, "data")],
    ("evaluate", "--split"): [(evaluate, "split")],
    ("evaluate", "--text-column"): [(evaluate, "text_column")],
    ("evaluate", "--label-column"): [(evaluate, "label_column")],
    ("predict", "--text-column"): [(predict_file, "text_column"), (read_texts, "text_column")],
    ("predict", "--batch-size"): [(Classifier.predict, "batch_size"), (predict_file, "batch_size"),
                                  (predict_with_ray, "batch_size")],
    ("predict", "--chunk-rows"): [(predict_file, "chunk_rows"), (predict_with_ray, "chunk_rows")],
    ("predict", "--input-format"): [(predict_file, "input_format"), (read_texts, "input_format")],
    ("predict", "--output-format"): [(predict_file, "output_format")],
    ("predict", "--on-bad-row"): [(predict_file, "on_bad_row"), (read_texts, "on_bad_row")],
    ("predict", "--backend"): [(Classifier.load, "backend"), (predict_file, "backend"),
                               (predict_with_ray, "backend")],
    ("predict", "--num-workers"): [(predict_with_ray, "num_workers")],
    ("predict", "--ray-address"): [(predict_with_ray, "address")],
    ("export", "--format"): [(export, "format")],
    ("export", "--quantize"): [(export, "quantize")],
    ("export", "--gate"): [(export, "gate")],
    ("export", "--force"): [(export, "force")],
    ("push", "--private"): [(push, "private")],
    ("push", "--token"): [(push, "token")],
    ("push", "--license"): [(push, "license")],
    ("serve", "--host"): [(serve, "host")],
    ("serve", "--port"): [(serve, "port")],
    ("serve", "--log-level"): [(serve, "log_level")],
    **{("serve", f"--{name.removesuffix('_s').replace('_', '-')}"): [(ServeSettings, name)]
       for name in ("workers", "threads", "precision", "max_batch_size", "pass_size", "max_wait_ms",
                    "max_texts", "max_body_bytes", "max_request_tokens", "header_timeout_s", "body_timeout_s",
                    "max_header_bytes", "max_concurrency", "cache_size", "backend")},
    ("prompt-eval", "--labels"): [(prompt_eval, "labels"), (prompt_story, "labels")],
    ("prompt-eval", "--shots"): [(prompt_eval, "shots"), (prompt_story, "shots")],  # 0 alone, 4 with --run
    ("prompt-eval", "--split"): [(prompt_eval, "split")],
    ("prompt-eval", "--max-examples"): [(prompt_eval, "max_examples"), (prompt_story, "max_examples")],
    ("prompt-eval", "--score"): [(prompt_eval, "score"), (prompt_story, "score")],
    ("prompt-eval", "--calibrate"): [(prompt_eval, "calibrate"), (prompt_story, "calibrate")],
    ("prompt-eval", "--seed"): [(prompt_eval, "seed"), (prompt_story, "seed")],
    ("prompt-eval", "--batch-size"): [(prompt_eval, "batch_size"), (prompt_story, "batch_size")],
    ("prompt-eval", "--text-column"): [(DataConfig, "text_column")],
    ("prompt-eval", "--label-column"): [(DataConfig, "label_column")],
    ("report", "--output"): [(report, "output")],
    ("data show", "--text-column"): [(DataConfig, "text_column")],
    ("data show", "--label-column"): [(DataConfig, "label_column")],
    ("data show", "--label-columns"): [(DataConfig, "label_columns")],
    ("data show", "--task"): [(DataConfig, "task")],
    ("data show", "--seed"): [(DataConfig, "seed")],
    ("data audit", "--model"): [(ModelConfig, "name")],
    ("data audit", "--folds"): [(AuditConfig, "folds")],
    ("data audit", "--output"): [(audit, "output")],
    ("data audit", "--drop-leaks"): [(audit, "drop_leaks")],
}

# Options no API parameter stands behind: what the command prints or reads, or how it runs.
CLI_ONLY = {
    ("train", "--output"), ("train", "--config"), ("train", "--seeds"), ("train", "--quiet"),
    ("search", "--config"), ("search", "--output"),
    ("evaluate", "--json"),
    ("predict", "--input"), ("predict", "--output"), ("predict", "--json"), ("predict", "--engine"),
    ("prompt-eval", "--model"), ("prompt-eval", "--data"), ("prompt-eval", "--template"),
    ("prompt-eval", "--run"), ("prompt-eval", "--json"),
    ("compare", "--json"),
    ("push", "--repo-id"),  # required: the API's repo_id has no default either
    ("data show", "--examples"),
    ("data audit", "--quiet"),
}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command name, its parser) for every command with options of its own, `data show` included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))
    if path:
        yield " ".join(path), parser


def options():
    for name, parser in commands(build_parser()):
        for action in parser._actions:
            if action.option_strings and not isinstance(action, argparse._HelpAction):
                yield name, parser, action


def expanded_help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """An option's help as `--help` prints it, on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


def shown(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def test_every_option_is_in_the_table():
    found = {(name, action.option_strings[-1]) for name, _, action in options()}
    assert found - set(FEEDS) - CLI_ONLY == set(), "a new option: say which API default it stands for"
    assert (set(FEEDS) | CLI_ONLY) - found == set(), "the table names an option the CLI no longer has"
    assert not set(FEEDS) & CLI_ONLY


@pytest.mark.parametrize("key", sorted(FEEDS), ids=" ".join)
def test_an_option_defaults_to_the_api(key):
    name, flag = key
    parser, action = next((p, a) for n, p, a in options() if (n, a.option_strings[-1]) == key)
    api = [default_of(owner, param) for owner, param in FEEDS[key]]
    # None lets the API's own default apply; any other value must be the API's.
    assert action.default is None or all(action.default == value for value in api), (key, action.default, api)
    help_text = expanded_help(parser, action)
    if isinstance(action, argparse._StoreTrueAction):
        assert api == [False] * len(api)  # a flag turns on what the API leaves off
        return
    assert "default: " in help_text, f"{key}: the help should say what happens without the option"
    for value in api:
        if value is not None:
            assert f"{shown(value)}" in help_text.split("default: ", 1)[1], (key, value, help_text)


@pytest.mark.parametrize("key", sorted(CLI_ONLY), ids=" ".join)
def test_a_cli_only_option_shows_its_default(key):
    parser, action = next((p, a) for n, p, a in options() if (n, a.option_strings[-1]) == key)
    if action.required or isinstance(action, argparse._StoreTrueAction):
        return
    help_text = expanded_help(parser, action)
    assert "default: " in help_text, key
    if action.default is not None:
        assert f"default: {action.default}" in help_text


def test_shots_reads_both_functions_defaults():
    """The issue's case: --shots once defaulted to 0 while prompt_story's is 4, so `prompt-eval --run`
    dropped the few-shot row the API gives. Its help names both, read from the functions."""
    parser, action = next((p, a) for n, p, a in options() if (n, a.option_strings[-1]) == ("prompt-eval",
                                                                                          "--shots"))
    assert action.default is None
    text = expanded_help(parser, action)
    assert (f"default: {default_of(prompt_eval, 'shots')}; with --run, {default_of(prompt_story, 'shots')}"
            in text)


def test_the_table_catches_a_default_set_on_the_cli(monkeypatch):
    """The check above can fail: a CLI default that differs from the API's is caught."""
    real = argparse.ArgumentParser.add_argument

    def with_old_shots_default(self, *flags, **kwargs):
        if flags == ("--shots",):
            kwargs["default"] = 0
        return real(self, *flags, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "add_argument", with_old_shots_default)
    with pytest.raises(AssertionError):
        test_an_option_defaults_to_the_api(("prompt-eval", "--shots"))


def test_the_table_catches_a_default_changed_in_the_api(monkeypatch):
    """A CLI default written out as the API's value (not derived) fails once the API's changes."""
    real = argparse.ArgumentParser.add_argument

    def with_a_copied_default(self, *flags, **kwargs):
        if flags == ("--batch-size",) and "predict" in self.prog:
            kwargs["default"] = BATCH_SIZE  # the API's value today, written out
        return real(self, *flags, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "add_argument", with_a_copied_default)
    test_an_option_defaults_to_the_api(("predict", "--batch-size"))  # the same value: passes
    monkeypatch.setattr(Classifier.predict, "__defaults__", (BATCH_SIZE * 4,))
    with pytest.raises(AssertionError):
        test_an_option_defaults_to_the_api(("predict", "--batch-size"))


# ---- what reaches the API when an option is left out ------------------------------------------------------

def test_prompt_eval_with_a_run_and_no_shots_gives_the_few_shot_row(tmp_path, trained_run, tiny_gpt2, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)  # the story is stored in the run's metrics.json
    code = main(["prompt-eval", "--model", str(tiny_gpt2), "--run", str(run), "--template", "Message: {text}",
                 "--max-examples", "4", "--json"])
    story = json.loads(capsys.readouterr().out)
    assert code == 0
    assert story["few_shot"]["prompt"]["shots"] == default_of(prompt_story, "shots") > 0
    assert story["zero_shot"]["prompt"]["shots"] == 0


def test_left_out_options_are_not_passed(monkeypatch, trained_run, capsys, tiny_csv):
    seen: dict[str, dict] = {}

    def spy(name, result):
        def record(*args, **kwargs):
            seen[name] = kwargs
            return result
        return record

    prompt_result = {"prompt": {"shots": 0}, "split": "test"}
    monkeypatch.setattr(handlers, "prompt_eval", spy("prompt_eval", prompt_result))
    monkeypatch.setattr(handlers, "evaluate", spy("evaluate", {}))
    real_predict = Classifier.predict

    def predict(self, texts, **kwargs):
        seen["predict"] = kwargs
        return real_predict(self, texts, **kwargs)

    monkeypatch.setattr(Classifier, "predict", predict)
    assert main(["prompt-eval", "--model", "m", "--data", str(tiny_csv), "--template", "{text}",
                 "--json"]) == 0
    assert set(seen["prompt_eval"]) == {"calibrate", "progress"}  # every other setting: prompt_eval's own
    assert main(["evaluate", str(trained_run), "--json"]) == 0
    assert seen["evaluate"] == {}
    assert main(["predict", str(trained_run), "--json", "hello"]) == 0
    assert seen["predict"] == {}


def test_serve_binds_loopback_unless_asked(monkeypatch, trained_run):
    import uvicorn

    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw))
    assert main(["serve", str(trained_run)]) == 0
    assert started["host"] == "127.0.0.1" and started["port"] == 8000
