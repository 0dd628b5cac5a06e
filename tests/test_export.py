"""`tunetext export` and the ONNX backend, with tiny models: the export gives PyTorch's answers, int8 is
kept only within its accuracy gate (a deliberately broken int8 model is refused, `force` overrides),
`backend="auto"` picks a passed export and ignores a stale one, and `onnx` says why it cannot run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_serve_tasks import TEXTS, multi_label_run, regression_run, running  # noqa: F401 - fixtures

from tunetext import export as export_module
from tunetext.backends.onnx import FOLDER, FP32, INT8, RECORD
from tunetext.cli import main
from tunetext.export import export, int8_settings
from tunetext.models import ModelError
from tunetext.predict import Classifier
from tunetext.report import sections
from tunetext.runs import RunError, foreign_entries


def _copy(run: Path, tmp_path_factory, name: str) -> Path:
    """A copy of a shared run, so that exporting into it changes no other test's run."""
    out = tmp_path_factory.mktemp(name) / "run"
    shutil.copytree(run, out)
    return out


@pytest.fixture(scope="module")
def exported(learned_bert_run, tmp_path_factory) -> tuple[Path, dict]:
    """The learned tiny BERT, exported (fp32 and int8); its record."""
    run = _copy(learned_bert_run, tmp_path_factory, "exported")
    return run, export(run, quantize="int8", progress=False)


def _agree(run: Path, backend: str, texts: list[str], tolerance: float) -> None:
    ours, reference = Classifier.load(run, backend=backend), Classifier.load(run, backend="torch")
    assert ours.backend == "onnx" and reference.backend == "torch"
    got, expected = ours.predict(texts), reference.predict(texts)
    for a, b in zip(got, expected, strict=True):
        assert a.labels == b.labels and a.truncated == b.truncated
        if b.value is not None:
            assert a.value == pytest.approx(b.value, abs=tolerance)
        for name, p in b.probabilities.items():
            assert a.probabilities[name] == pytest.approx(p, abs=tolerance)


def test_the_record_says_what_was_checked(exported):
    run, record = exported
    assert (run / FOLDER / FP32).is_file() and (run / FOLDER / INT8).is_file()
    assert json.loads((run / FOLDER / RECORD).read_text()) == record
    assert record["passed"] and record["fp32"]["label_agreement"] == 1.0
    assert record["fp32"]["max_probability_difference"] < 1e-4
    assert record["metric"] == "macro_f1"
    assert record["exporter"] == "torchscript" and record["fusions"]["applied"]
    assert record["fusions"]["operators"]["Attention"] == 2  # the tiny BERT's two layers, fused
    assert record["fp32"]["metric"] == pytest.approx(record["torch"]["metric"])
    int8 = record["int8"]
    assert int8["weight_type"] in ("QInt8", "QUInt8") and int8["why"]
    assert int8["bytes"] < record["fp32"]["bytes"]
    assert int8["used"] == (int8["metric_drop_points"] <= 0.5)
    assert record["chosen"] == ("int8" if int8["used"] else "fp32")
    assert {"name", "machine", "flags"} <= set(record["cpu"]) and "onnxruntime" in record["versions"]


def test_fp32_round_trip_gives_torchs_answers(exported, tiny_texts):
    run, _ = exported
    clf = Classifier.load(run, backend="onnx")
    clf.onnx = type(clf.onnx)(run / FOLDER / FP32, True)  # the fp32 model, whatever auto would choose
    expected = Classifier.load(run, backend="torch").predict(tiny_texts)
    for a, b in zip(clf.predict(tiny_texts), expected, strict=True):
        assert a.label == b.label
        assert a.score == pytest.approx(b.score, abs=1e-5)


def test_auto_uses_the_export_that_passed(exported, tiny_texts):
    run, record = exported
    clf = Classifier.load(run)
    assert clf.backend == "onnx" and clf.onnx.path.name == record["model"]
    _agree(run, "auto", tiny_texts, 0.05 if record["chosen"] == "int8" else 1e-5)


def test_either_model_of_the_export_can_be_asked_for(exported, learned_bert_run, tmp_path_factory):
    run, _ = exported
    for model, name in (("fp32", FP32), ("int8", INT8)):
        clf = Classifier.load(run, backend="onnx", export=model)
        assert clf.onnx is not None and clf.onnx.path.name == name
    fp32_only = _copy(learned_bert_run, tmp_path_factory, "fp32_only")
    export(fp32_only, progress=False)
    with pytest.raises(RunError, match="no int8 model.*--quantize int8"):
        Classifier.load(fp32_only, backend="onnx", export="int8")


def test_int8_settings_follow_the_cpu():
    assert int8_settings({"machine": "x86_64", "flags": ["avx2"]})["weight_type"] == "QUInt8"
    assert int8_settings({"machine": "x86_64", "flags": ["avx2", "avx512_vnni"]})["weight_type"] == "QInt8"
    assert int8_settings({"machine": "aarch64", "flags": []})["weight_type"] == "QInt8"


def _broken_quantizer(monkeypatch):
    """int8 quantization that then zeroes every quantized weight: a model that collapses, as reported."""
    import onnx
    from onnx import numpy_helper

    real = export_module.quantize_int8

    def broken(source, target, settings):
        real(source, target, settings)
        model = onnx.load(str(target))
        for init in model.graph.initializer:
            if init.name.endswith("_quantized"):
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
        onnx.save(model, str(target))

    monkeypatch.setattr(export_module, "quantize_int8", broken)


def test_the_gate_keeps_fp32_when_int8_collapses_and_force_overrides(learned_bert_run, tmp_path_factory,
                                                                    monkeypatch):
    run = _copy(learned_bert_run, tmp_path_factory, "broken")
    _broken_quantizer(monkeypatch)
    record = export(run, quantize="int8", progress=False)
    assert record["int8"]["metric_drop_points"] > 0.5
    assert record["chosen"] == "fp32" and record["model"] == FP32 and not record["int8"]["used"]
    assert "fp32 kept" in record["reason"]
    assert Classifier.load(run).onnx.path.name == FP32
    forced = export(run, quantize="int8", force=True, progress=False)
    assert forced["chosen"] == "int8" and forced["int8"]["forced"]
    assert Classifier.load(run).onnx.path.name == INT8


def test_a_stale_or_missing_export_is_refused(learned_bert_run, tmp_path_factory):
    from safetensors.torch import load_file, save_file

    run = _copy(learned_bert_run, tmp_path_factory, "stale")
    with pytest.raises(RunError, match="tunetext export"):
        Classifier.load(run, backend="onnx")
    assert Classifier.load(run).backend == "torch"
    export(run, progress=False)
    assert Classifier.load(run).backend == "onnx"
    assert foreign_entries(run) == []  # the export is the run's own: --overwrite may replace it
    (run / FOLDER / export_module.FUSED).write_bytes(b"")  # what an export stopped mid-check leaves
    assert foreign_entries(run) == []
    (run / FOLDER / export_module.FUSED).unlink()
    weights = load_file(run / "model.safetensors")  # trained further, say: other weights than exported
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    save_file(weights, run / "model.safetensors", metadata={"format": "pt"})
    assert Classifier.load(run).backend == "torch"
    with pytest.raises(RunError, match="stale"):
        Classifier.load(run, backend="onnx")


def test_the_cli_exports_and_predicts_with_the_backend(learned_bert_run, tmp_path_factory, capsys):
    run = _copy(learned_bert_run, tmp_path_factory, "cli")
    assert main(["export", str(run), "--quantize", "int8"]) == 0
    assert "used by --backend auto" in capsys.readouterr().out
    assert main(["predict", str(run), *TEXTS, "--backend", "onnx", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = Classifier.load(run).predict(TEXTS)
    assert [r["label"] for r in rows] == [p.label for p in expected]
    with pytest.raises(SystemExit):  # argparse: a backend that does not exist
        main(["predict", str(run), "x", "--backend", "nope"])


def test_serve_runs_the_backend_it_is_given(exported):
    """The same answers as `Classifier.predict` with the backend; int8's within 0.01, since dynamic
    quantization scales activations by the batch's range, and the service batches texts differently."""
    run, record = exported
    tolerance = 0.01 if record["chosen"] == "int8" else 1e-5
    expected = Classifier.load(run, backend="onnx").predict(TEXTS)
    with running(run, backend="onnx") as client:
        serving = client.get("/info").json()["serving"]
        assert serving["backend"] == "onnx" and serving["onnx_model"] == record["model"]
        assert serving["precision"] == record["chosen"]  # the ONNX model's: fp32 or int8, never bf16
        answers = [client.post("/predict", json={"text": t}).json() for t in TEXTS]
    for answer, prediction in zip(answers, expected, strict=True):
        assert answer["label"] == prediction.label
        assert answer["score"] == pytest.approx(prediction.score, abs=tolerance)
    with running(run, backend="torch") as client:
        serving = client.get("/info").json()["serving"]
        assert serving["backend"] == "torch" and serving["onnx_model"] is None


def test_a_fused_graph_that_disagrees_with_torch_is_not_kept(learned_bert_run, tmp_path_factory, monkeypatch):
    """The optimizer's graph is checked like the export: here its classifier bias is shifted, so it must
    be dropped for the graph as exported, which still gives PyTorch's answers."""
    import onnx
    from onnx import numpy_helper

    fuse = export_module._fuse

    def fuse_wrongly(clf, source, target):
        result = fuse(clf, source, target)
        graph = onnx.load(str(target))
        (bias,) = [t for t in graph.graph.initializer if t.name.endswith("classifier.bias")]
        shifted = numpy_helper.to_array(bias) + np.float32([3.0, -3.0])
        bias.CopyFrom(numpy_helper.from_array(shifted, bias.name))
        onnx.save(graph, str(target))
        return result

    monkeypatch.setattr(export_module, "_fuse", fuse_wrongly)
    run = _copy(learned_bert_run, tmp_path_factory, "fused_wrongly")
    record = export(run, progress=False)
    assert record["passed"] and not record["fusions"]["applied"]
    assert "differs from PyTorch" in record["fusions"]["why"]
    assert not (run / FOLDER / export_module.FUSED).exists()
    _agree(run, "onnx", TEXTS, 1e-4)


@pytest.mark.parametrize("fixture", ["multi_label_run", "regression_run"])
def test_multi_label_and_regression_runs_round_trip(fixture, request, tmp_path_factory):
    run = _copy(request.getfixturevalue(fixture), tmp_path_factory, fixture)
    record = export(run, progress=False)
    assert record["passed"] and record["metric"] in ("micro_f1", "r2")
    _agree(run, "onnx", TEXTS, 1e-4)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_run_round_trips(family, tiny_family, tiny_config, tmp_path):
    """Decoders score at their last real token; right padding must not move it in the export."""
    from tunetext import train

    run = tmp_path / family
    train(tiny_config(tiny_family(family), epochs=1), run, progress=False)
    record = export(run, progress=False)
    assert record["passed"] and record["fp32"]["label_agreement"] == 1.0
    assert not record["fusions"]["applied"]  # decoders run as exported
    _agree(run, "onnx", TEXTS, 1e-4)


def test_an_adapter_run_is_refused(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="PEFT adapter"):
        export(run, progress=False)


def test_the_report_shows_the_export(exported):
    _, record = exported
    html = sections.export(record)
    assert 'id="export"' in html and "ONNX int8" in html and record["chosen"] in html
    assert "6 Attention" not in html and "2 Attention" in html  # what the optimizer fused
    assert sections.export(None) == ""
