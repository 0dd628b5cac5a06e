"""A run folder is shared ground: nothing in it may run code, tunetext deletes only what it wrote, and
crashes, kills and file-system errors leave something resumable and an error that names the path.
(Issue 11, items 1, 2, 14, 15, 16 and 17.)"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import signal
import stat
from pathlib import Path

import pytest
import torch

from tunetext import Classifier, TrainingInterrupted, cli, runs, train
from tunetext.cli import commands
from tunetext.models import ModelError
from tunetext.runs import RunError, has_checkpoint, is_finished

train_module = importlib.import_module("tunetext.train")


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A finished run this test may change."""
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


# --- 1. a checkpoint never runs code -------------------------------------------------------------------


def _payload(flag: str) -> None:
    Path(flag).write_text("code ran")


class Planted:
    """What an attacker pickles: unpickling it calls `_payload`."""

    def __init__(self, flag: Path):
        self.flag = str(flag)

    def __reduce__(self):
        return (_payload, (self.flag,))


@pytest.fixture
def interrupted_run(interrupt_after):
    """`interrupted_run(config, out, monkeypatch, at_batch)`: train until SIGINT arrives while batch
    `at_batch` is collated: a checkpoint is saved."""

    def run(config, out: Path, monkeypatch, at_batch: int) -> None:
        with monkeypatch.context() as patch:
            interrupt_after(patch, at_batch)
            with pytest.raises(TrainingInterrupted):
                train(config, out, progress=False)

    return run


def test_resume_refuses_a_planted_checkpoint_without_running_it(tmp_path, tiny_bert, monkeypatch,
                                                                tiny_config, interrupted_run):
    config = tiny_config(tiny_bert)
    out = tmp_path / "shared"
    interrupted_run(config, out, monkeypatch, at_batch=3)
    state = out / "checkpoint" / "state.pt"
    flag = tmp_path / "pwned"
    torch.save({"step": 0, "payload": Planted(flag)}, state)
    # The payload is real: loading the way tunetext used to would have run it.
    torch.load(state, weights_only=False)
    assert flag.read_text() == "code ran"
    flag.unlink()

    with pytest.raises(RunError, match=r"cannot be read as a tunetext checkpoint \(it holds an object of "
                                       r"type [\w.]*_payload other than tensors.*weights_only=True") as info:
        train(config, out, resume=True, progress=False)
    assert not flag.exists()
    assert "weights_only=False" not in str(info.value)  # torch's advice to load it unsafely is not passed on


def test_a_checkpoint_holds_only_what_weights_only_loading_reads(tmp_path, tiny_bert, monkeypatch,
                                                                 tiny_config, interrupted_run):
    config = tiny_config(tiny_bert)
    out = tmp_path / "run"
    interrupted_run(config, out, monkeypatch, at_batch=7)
    state = torch.load(out / "checkpoint" / "state.pt", weights_only=True)  # would raise on numpy arrays
    assert (state["step"], state["epoch"], state["batch"]) == (7, 1, 2)
    assert isinstance(state["rng"]["numpy"]["key"], torch.Tensor)


def test_a_damaged_or_foreign_checkpoint_is_a_clear_error(tmp_path, tiny_bert, monkeypatch, tiny_config,
                                                          interrupted_run):
    config = tiny_config(tiny_bert)
    out = tmp_path / "run"
    interrupted_run(config, out, monkeypatch, at_batch=3)
    state = out / "checkpoint" / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    with pytest.raises(RunError, match="cannot be read as a tunetext checkpoint"):
        train(config, out, resume=True, progress=False)
    torch.save({"step": 3}, state)
    with pytest.raises(RunError, match="not a tunetext checkpoint .*lacks"):
        train(config, out, resume=True, progress=False)


def test_a_run_without_safetensors_never_loads_a_pickled_bin(run_copy, tmp_path):
    (run_copy / "model.safetensors").unlink()
    flag = tmp_path / "pwned"
    torch.save({"weight": Planted(flag)}, run_copy / "pytorch_model.bin")
    with pytest.raises(RunError, match="has no model.safetensors"):
        Classifier.load(run_copy)
    assert not flag.exists()


def test_damaged_weights_name_the_folder(run_copy):
    weights = run_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[:8] = b"\xff" * 8  # the header length: what a few changed bytes at the start do
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"could not load the model in {run_copy}.*SafetensorError"):
        Classifier.load(run_copy)


# --- 2. --overwrite deletes only a run's own files -----------------------------------------------------


def test_a_project_folder_with_a_config_named_like_a_run_is_never_deleted(tmp_path, tiny_bert, tiny_config):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('mine')")
    (project / "notes.md").write_text("precious")
    (project / "reviews.csv").write_text("text,label\n")
    (project / "tunetext.yaml").write_text("train:\n  epochs: 1\n")  # the user's own config file
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(RunError, match="is not a tunetext run.*never deletes files it did not write"):
            train(tiny_config(tiny_bert), project, overwrite=overwrite, progress=False)
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before
    assert (project / "notes.md").read_text() == "precious"


def test_overwrite_refuses_a_run_holding_foreign_files(run_copy, tiny_bert, tiny_config):
    (run_copy / "my-notes.txt").write_text("precious")
    (run_copy / "report").mkdir()
    (run_copy / "report" / "draft.docx").write_text("mine too")
    with pytest.raises(RunError, match=r"files tunetext did not write \(my-notes.txt, report/\)"):
        train(tiny_config(tiny_bert), run_copy, overwrite=True, progress=False)
    assert (run_copy / "my-notes.txt").read_text() == "precious"
    assert is_finished(run_copy) and (run_copy / "model.safetensors").is_file()


def test_overwrite_replaces_a_run_and_its_report(run_copy, tiny_bert, tiny_config):
    (run_copy / "report").mkdir()
    (run_copy / "report" / "report.html").write_text("<html>")
    (run_copy / "report" / "curves.png").write_bytes(b"png")
    run = train(tiny_config(tiny_bert, epochs=1), run_copy, overwrite=True, progress=False)
    assert is_finished(run_copy) and run.metrics["training"]["steps"] == 5
    assert not (run_copy / "report").exists()
    assert (run_copy / runs.OWNER).is_file()
    listed = json.loads((run_copy / "run.json").read_text())["files"]
    assert "model.safetensors" in listed and "tokenizer.json" in listed and "run.json" not in listed


def test_a_run_with_a_damaged_run_json_can_still_be_overwritten(run_copy, tiny_bert, tiny_config):
    (run_copy / "run.json").write_text('{"files": ["mod')
    train(tiny_config(tiny_bert, epochs=1), run_copy, overwrite=True, progress=False)
    assert is_finished(run_copy)


def test_a_file_dropped_into_a_training_run_is_not_listed_as_the_runs(tmp_path, tiny_bert, monkeypatch,
                                                                      tiny_config):
    out = tmp_path / "run"
    real = train_module.evaluate_split

    def evaluate_split(*args, **kwargs):
        if out.is_dir():
            (out / "notes.txt").write_text("mine")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_split", evaluate_split)
    train(tiny_config(tiny_bert, epochs=1), out, progress=False)
    assert "notes.txt" not in json.loads((out / "run.json").read_text())["files"]
    with pytest.raises(RunError, match=r"files tunetext did not write \(notes.txt\)"):
        train(tiny_config(tiny_bert, epochs=1), out, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["cwd", "parent of cwd", "home"])
def test_overwrite_never_empties_the_working_or_home_folder(run_copy, tiny_bert, monkeypatch, where,
                                                            tiny_config):
    if where == "cwd":
        monkeypatch.chdir(run_copy)
        output, why = Path("."), "the current working folder"
    elif where == "parent of cwd":
        (run_copy / "checkpoint").mkdir()  # a folder of the run's own, so the run has no foreign entry
        monkeypatch.chdir(run_copy / "checkpoint")
        output, why = Path(".."), "a parent of the current working folder"
    else:
        monkeypatch.setenv("HOME", str(run_copy))
        output, why = run_copy, "your home folder"
    with pytest.raises(RunError, match=f"refusing to overwrite .*it is {why}"):
        train(tiny_config(tiny_bert), output, overwrite=True, progress=False)
    assert is_finished(run_copy)


def test_the_root_folder_is_never_emptied():
    assert runs._never_deleted(Path("/")) == "the root of the file system"
    assert runs._never_deleted(Path("/tmp/somewhere/else")) is None


# --- 14. the output folder is checked first; file-system errors name the path --------------------------


def test_an_unwritable_output_fails_before_data_or_model_load(tmp_path, tiny_bert, monkeypatch, tiny_config):
    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the output folder was checked")

    monkeypatch.setattr(train_module, "load_dataset", no_loading)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(RunError, match="is a file, not a folder"):
        train(tiny_config(tiny_bert), a_file, progress=False)
    with pytest.raises(RunError, match=r"notes.txt is a file, not a folder"):
        train(tiny_config(tiny_bert), a_file / "run", progress=False)
    # Tests run as root, who may write anywhere: a folder without write permission is simulated.
    monkeypatch.setattr(runs.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(RunError, match=f"cannot write in {tmp_path} \\(permission denied\\)"):
        train(tiny_config(tiny_bert), tmp_path / "new-run", progress=False)


def test_cli_turns_file_system_errors_into_one_line(tmp_path, tiny_bert, monkeypatch, capsys, tiny_config):
    def disk_full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runs, "write_json", disk_full)
    code = cli.main(["train", "--data", str(tiny_config(tiny_bert).data.source), "--model", str(tiny_bert),
                     "--output", str(tmp_path / "run"), "--epochs", "1", "train.precision=fp32"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: No space left on device: {tmp_path / 'run' / 'metrics.json'}; free some disk space" in err
    assert "Traceback" not in err


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, tiny_bert, monkeypatch,
                                                                       tiny_config):
    real = torch.save
    calls = {"n": 0}

    def save(obj, path, *args, **kwargs):  # what torch's zip writer raised on a full tmpfs
        calls["n"] += 1
        if calls["n"] == 2:
            Path(path).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 89664 vs 89552")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(train_module.torch, "save", save)
    out = tmp_path / "run"
    with pytest.raises(RunError, match="could not write a checkpoint .*previous one is kept.*--resume"):
        train(tiny_config(tiny_bert), out, progress=False)
    assert not (out / "checkpoint" / "state.pt.tmp").exists()
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=True)["epoch"] == 1


def test_a_full_disk_while_saving_the_weights_is_one_error(tmp_path, tiny_bert, monkeypatch, tiny_config):
    import transformers.modeling_utils
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", full)
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"could not write the model's weights into .*No space left.*--resume"):
        train(tiny_config(tiny_bert), out, progress=False)
    assert has_checkpoint(out) and not is_finished(out)


def test_describe_os_error_names_path_and_fix():
    text = cli.describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/srv/runs/x"))
    assert text == ("Permission denied: /srv/runs/x; check the permissions of the path, or choose one you "
                    "can write to")


# --- 15. kill -9, SIGTERM before the loop, and the order of finishing ----------------------------------


def read_log(run_dir: Path) -> list[tuple[str, int, int]]:
    entries = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [(e["event"], e["step"], e["epoch"]) for e in entries if e["event"] != "cache"]


def test_resume_after_a_kill_does_not_repeat_logged_steps(tmp_path, tiny_bert, monkeypatch, tiny_config):
    config = tiny_config(tiny_bert, log_every=1, checkpoint_every_epoch=True)
    reference = train(config, tmp_path / "straight", progress=False)

    class Killed(Exception):
        pass

    calls = {"n": 0}
    real = train_module.collate

    def collate(*args, **kwargs):  # dies as kill -9 would: after the epoch-1 checkpoint, mid-epoch 2
        calls["n"] += 1
        if calls["n"] == 8:
            raise Killed
        return real(*args, **kwargs)

    out = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "collate", collate)
        with pytest.raises(Killed):
            train(config, out, progress=False)
    assert ("train", 7, 2) in read_log(out)  # logged after the checkpoint at step 5
    train(config, out, resume=True, progress=False)
    assert read_log(out) == read_log(reference.run_dir)


def test_sigterm_during_the_evaluation_before_training_saves_a_checkpoint(tmp_path, tiny_bert, monkeypatch,
                                                                           capsys, tiny_config):
    config = tiny_config(tiny_bert)
    real = train_module.evaluate_split
    calls = {"n": 0}

    def evaluate_split(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "evaluate_split", evaluate_split)
        with pytest.raises(TrainingInterrupted, match="--resume"):
            train(config, out, progress=False)
    assert "stopping at the next safe point, saving a checkpoint" in capsys.readouterr().err
    assert has_checkpoint(out) and not is_finished(out)
    assert torch.load(out / "checkpoint" / "state.pt", weights_only=True)["step"] == 0
    resumed = train(config, out, resume=True, progress=False)
    assert resumed.metrics["training"]["steps"] == 15


def test_sigterm_while_the_data_loads_stops_at_once_and_writes_nothing(tmp_path, tiny_bert, monkeypatch,
                                                                       tiny_config):
    went_on = []

    def load_dataset(*args, **kwargs):  # loading may take minutes (a first fetch): it is not waited for
        os.kill(os.getpid(), signal.SIGTERM)
        went_on.append(True)

    monkeypatch.setattr(train_module, "load_dataset", load_dataset)
    with pytest.raises(TrainingInterrupted, match="before it started; nothing was written"):
        train(tiny_config(tiny_bert), tmp_path / "run", progress=False)
    assert not went_on and not (tmp_path / "run").exists()


def test_sigterm_while_a_resume_loads_leaves_the_checkpoint(tmp_path, tiny_bert, monkeypatch, tiny_config,
                                                            interrupted_run):
    config = tiny_config(tiny_bert)
    out = tmp_path / "run"
    interrupted_run(config, out, monkeypatch, at_batch=7)
    before = (out / "checkpoint" / "state.pt").read_bytes()

    def load_classifier(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_module, "load_classifier", load_classifier)
    with pytest.raises(TrainingInterrupted, match="before it resumed; the checkpoint in .* is as it was"):
        train(config, out, resume=True, progress=False)
    assert (out / "checkpoint" / "state.pt").read_bytes() == before


def test_a_second_ctrl_c_ends_the_cli_without_a_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "data_list_command", interrupted)
    assert cli.main(["data", "list"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_a_crash_while_finishing_never_loses_both_checkpoint_and_run(tmp_path, tiny_bert, monkeypatch,
                                                                     tiny_config):
    config = tiny_config(tiny_bert, checkpoint_every_epoch=True)
    real = runs.shutil.rmtree

    def crash(path, *args, **kwargs):
        if Path(path).name == runs.CHECKPOINT:
            raise KeyboardInterrupt  # killed between the two steps of finishing
        return real(path, *args, **kwargs)

    monkeypatch.setattr(runs.shutil, "rmtree", crash)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", progress=False)
    assert is_finished(tmp_path / "run")  # run.json came first
    assert Classifier.load(tmp_path / "run").predict("win a prize").label in ("ham", "spam")


# --- 16. a damaged metrics.json names itself -----------------------------------------------------------


def test_the_report_leaves_out_log_lines_that_are_not_json_objects(run_copy, caplog):
    from tunetext.report.page import _read_log

    log = run_copy / "train_log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "3", '{"event": "tr', *lines[1:]]) + "\n")
    assert len(_read_log(log)) == len({(e["event"], e["step"]) for e in map(json.loads, lines)})
    assert "line 2 is not a JSON object" in caplog.text and "line 3 is not a JSON object" in caplog.text


def test_a_metrics_file_that_is_not_json_is_named(run_copy, capsys):
    (run_copy / "metrics.json").write_text('{"test": {"accuracy": 0.9')  # cut short
    with pytest.raises(RunError, match=f"{run_copy / 'metrics.json'} is not valid JSON"):
        Classifier.load(run_copy)
    assert cli.main(["evaluate", str(run_copy)]) == 2
    assert f"{run_copy / 'metrics.json'} is not valid JSON" in capsys.readouterr().err


# --- 17. run files readable by others as the umask allows ----------------------------------------------


def test_run_files_get_the_umasks_permissions(tmp_path, tiny_bert, tiny_config):
    previous = os.umask(0o027)
    try:
        run = train(tiny_config(tiny_bert, epochs=1), tmp_path / "run", progress=False)
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in run.run_dir.iterdir() if p.is_file()}
    assert "model.safetensors" in modes
    assert modes == dict.fromkeys(modes, 0o640), modes
