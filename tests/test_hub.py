"""The run's README as a Hugging Face model card, and `tunetext push` with the Hub API replaced by a
recorder: the repo, the files and the errors, never the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.utils import filter_repo_objects

from tunetext.cli import main
from tunetext.config import load_config
from tunetext.hub import PushError, card_data, front_matter, push
from tunetext.models import CATALOGUE
from tunetext.runs import MARKER, RunError


def scores(card: ModelCard) -> dict[str, float]:
    return {r.metric_name: r.metric_value for r in card.data.eval_results}


def test_the_run_readme_is_a_model_card_with_the_runs_metrics(trained_run):
    card = ModelCard.load(trained_run / "README.md")
    test = json.loads((trained_run / "metrics.json").read_text())["test"]
    data = card.data
    assert data.pipeline_tag == "text-classification" and data.library_name == "transformers"
    assert {"tunetext", "single-label"} <= set(data.tags)
    # The tiny BERT is a local folder and the tiny data a local file: the card names neither.
    assert data.base_model is None and data.datasets is None
    assert scores(card) == pytest.approx({"accuracy": test["accuracy"], "macro F1": test["macro_f1"]})
    assert {r.dataset_split for r in data.eval_results} == {"test"}
    # The human-readable README is still there, below the metadata.
    assert card.text.lstrip().startswith("# tunetext run")
    assert f'Classifier.load("{trained_run}")' in card.text


def test_catalogue_model_and_builtin_data_are_named(tmp_path):
    config = load_config(overrides={"model.name": "minilm-l6", "data.source": "sms_spam"})
    metrics = {"task": {"type": "single_label"}, "test": {"accuracy": 0.5, "macro_f1": 0.25}}
    (tmp_path / "README.md").write_text(front_matter(tmp_path, config, metrics) + "# tunetext run\n")
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.datasets == ["sms_spam"]
    assert data.license is None
    macro = data.eval_results[1]
    assert macro.metric_type == "f1" and macro.metric_args == {"average": "macro"}


@pytest.mark.parametrize(("task", "test", "expected"), [
    ("multi_label", {"micro_f1": 0.75, "macro_f1": 0.5}, {"micro F1": 0.75, "macro F1": 0.5}),
    ("regression", {"r2": 0.3, "mae": 1.5, "pearson": 0.6}, {"R²": 0.3, "MAE": 1.5, "Pearson": 0.6}),
])
def test_each_task_carries_its_own_metrics(tmp_path, task, test, expected):
    config = load_config(overrides={"model.name": "org/encoder", "data.source": "org/reviews"})
    data = card_data(tmp_path, config, {"task": {"type": task}, "test": test})
    assert data.base_model == "org/encoder" and data.datasets == ["org/reviews"]  # hub ids as given
    assert task.replace("_", "-") in data.tags
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n")
    assert scores(card) == expected


def test_every_catalogue_model_has_a_hub_id():
    for entry in CATALOGUE.values():
        owner, name = entry.hub_id.split("/")
        assert owner and name and " " not in entry.hub_id


class RecordingApi:
    """huggingface_hub.HfApi as far as push uses it: records the calls, uploads nothing."""

    calls: list[tuple[str, dict]] = []
    fail: BaseException | None = None

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, repo_id, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return huggingface_hub.CommitInfo(commit_url="https://huggingface.co/me/spam/commit/1",
                                          commit_message="", commit_description="", oid="1")


@pytest.fixture
def hub_api(monkeypatch):
    RecordingApi.calls = []
    RecordingApi.fail = None
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


@pytest.fixture
def run_copy(tmp_path, trained_run) -> Path:
    """The trained run with what must not be uploaded beside it: a checkpoint, a stray file."""
    run = tmp_path / "spam"
    shutil.copytree(trained_run, run)
    (run / "checkpoint").mkdir()
    (run / "checkpoint" / "state.pt").write_bytes(b"x")
    (run / "onnx").mkdir()
    (run / "onnx" / "model.onnx").write_bytes(b"x")
    (run / "notes.txt").write_text("mine")
    return run


def uploaded(run: Path, call: dict) -> set[str]:
    """What upload_folder would upload with these patterns: the Hub client's own filter over the folder."""
    files = [p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()]
    return set(filter_repo_objects(files, allow_patterns=call["allow_patterns"],
                                   ignore_patterns=call["ignore_patterns"]))


def test_push_uploads_the_model_repo_files(hub_api, run_copy):
    url = push(run_copy, "me/spam", private=True, token="hf_x")
    calls = dict(hub_api.calls)
    assert calls["init"] == {"token": "hf_x"}
    assert calls["create_repo"] == {"repo_id": "me/spam", "private": True, "exist_ok": True,
                                    "repo_type": "model"}
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "me/spam" and Path(upload["folder_path"]) == run_copy
    files = uploaded(run_copy, upload)
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json",
            "tunetext.yaml", "onnx/model.onnx"} <= files
    assert not {f for f in files if f.startswith("checkpoint/")}
    assert not files & {"train_log.jsonl", "data.json", "run.json", ".tunetext-run", "notes.txt"}
    assert url == "https://huggingface.co/me/spam"


def test_push_writes_the_license_into_the_card(hub_api, run_copy):
    push(run_copy, "me/spam", license="apache-2.0")
    card = ModelCard.load(run_copy / "README.md")
    assert card.data.license == "apache-2.0"
    assert card.text.lstrip().startswith("# tunetext run")


def test_push_refuses_an_unfinished_run(hub_api, run_copy):
    (run_copy / MARKER).unlink()
    with pytest.raises(RunError, match="not a finished tunetext run"):
        push(run_copy, "me/spam")
    assert [name for name, _ in hub_api.calls] == []


@pytest.mark.parametrize("error", [ConnectionError, httpx2.ConnectError])  # the Hub client's own type too
def test_a_network_failure_says_what_and_what_to_do(hub_api, run_copy, error):
    hub_api.fail = error("Name or service not known")
    with pytest.raises(PushError, match=r"me/spam \(Name or service not known\); check the connection"):
        push(run_copy, "me/spam")


def test_a_bug_is_not_called_a_network_failure(hub_api, run_copy):
    hub_api.fail = KeyError("repo_type")
    with pytest.raises(KeyError):
        push(run_copy, "me/spam")


def test_the_push_command(hub_api, run_copy, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "from-env")
    assert main(["push", str(run_copy), "--repo-id", "me/spam", "--license", "mit"]) == 0
    calls = dict(hub_api.calls)
    assert calls["init"] == {"token": None}  # left to huggingface_hub, which reads HF_TOKEN
    assert calls["create_repo"]["private"] is False
    assert "uploaded to https://huggingface.co/me/spam" in capsys.readouterr().out
    assert ModelCard.load(run_copy / "README.md").data.license == "mit"
    (run_copy / MARKER).unlink()
    assert main(["push", str(run_copy), "--repo-id", "me/spam"]) == 2
    assert "not a finished tunetext run" in capsys.readouterr().err
