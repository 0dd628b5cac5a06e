"""The shared forward pass: precision choice and what it asks torch about the CPU."""

import torch

from tunetext import inference


def test_the_cpu_question_is_answered_by_this_torch():
    # The one capability query (`cpu_has_amx`) must exist in the installed torch and answer yes or no: a
    # torch upgrade that moves it fails here, not at a user's first `precision: auto`.
    assert isinstance(inference.cpu_has_amx(), bool)
    assert inference.use_bf16("auto", torch.device("cpu")) is inference.cpu_has_amx()


def test_auto_precision_is_bf16_only_on_a_cpu_with_amx(monkeypatch):
    cpu = torch.device("cpu")
    for amx in (False, True):
        monkeypatch.setattr(inference, "cpu_has_amx", lambda amx=amx: amx)
        assert inference.use_bf16("auto", cpu) is amx
        assert inference.use_bf16("bf16", cpu) and not inference.use_bf16("fp32", cpu)  # asked: as asked
