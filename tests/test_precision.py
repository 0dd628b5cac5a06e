"""What `precision: auto` means: bf16 where the CPU has AMX, or AVX512-BF16 and a probe finds bf16 faster."""

import json

import pytest
import torch

from tunetext import precision


def test_the_cpu_questions_are_answered_by_this_torch():
    # The capability queries must exist in the installed torch and answer yes or no: a torch upgrade that
    # moves them fails here, not at a user's first `precision: auto`.
    assert isinstance(precision.cpu_has_amx(), bool)
    assert isinstance(precision.cpu_has_avx512_bf16(), bool)


@pytest.mark.parametrize(("amx", "avx512_bf16", "speedup", "expected"), [
    (True, True, 0.5, True),      # AMX tiles: bf16 without asking
    (False, True, 1.95, True),    # AMD Zen 4: AVX512-BF16, measured faster
    (False, True, 0.72, False),   # AVX512-BF16 but measured slower (AMX hidden by a hypervisor)
    (False, False, 9.0, False),   # no bf16 units: fp32, probe never consulted
])
def test_auto_precision_on_cpu(monkeypatch, amx, avx512_bf16, speedup, expected):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(precision, "cpu_has_avx512_bf16", lambda: avx512_bf16)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: speedup)
    assert precision.use_bf16("auto", cpu) is expected
    assert precision.use_bf16("bf16", cpu) and not precision.use_bf16("fp32", cpu)  # asked: as asked


def test_the_probe_is_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path))
    precision.cpu_bf16_speedup.cache_clear()
    calls = []
    monkeypatch.setattr(precision, "_measure_speedup", lambda: calls.append(1) or 1.4)
    assert precision.cpu_bf16_speedup() == 1.4
    precision.cpu_bf16_speedup.cache_clear()  # a new process: reads the file, measures nothing
    assert precision.cpu_bf16_speedup() == 1.4 and calls == [1]
    assert list(json.loads((tmp_path / precision.PROBE_FILE).read_text()).values()) == [1.4]
    precision.cpu_bf16_speedup.cache_clear()


def test_a_corrupted_probe_file_is_measured_again(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path))
    (tmp_path / precision.PROBE_FILE).write_text("{not json")
    precision.cpu_bf16_speedup.cache_clear()
    monkeypatch.setattr(precision, "_measure_speedup", lambda: 0.7)
    assert precision.cpu_bf16_speedup() == 0.7
    assert json.loads((tmp_path / precision.PROBE_FILE).read_text())
    precision.cpu_bf16_speedup.cache_clear()


def test_the_probe_measures_a_real_ratio():
    speedup = precision._measure_speedup()
    assert 0.05 < speedup < 20  # a ratio of two measured times of the same work, not a constant
