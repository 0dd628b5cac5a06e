"""`tunetext export RUN_DIR`: the run's model as ONNX, checked against PyTorch, int8 behind an accuracy gate.

What is written, into `RUN_DIR/onnx/`: `model.onnx` (fp32), with `quantize="int8"` also `model.int8.onnx`
(dynamic quantization: weights int8 ahead of time, activations quantized per batch at run time), and
`export.json`, the record of the checks: the fp32 export scored against the PyTorch model on the run's
validation split (largest difference in probability, label agreement), the operators ONNX Runtime's
transformer optimizer fused in an encoder's graph (attention, embedding and skip layer norms, bias + GELU:
kept only when the fused graph passes the same check), the int8 model's validation main
metric (`train.metric`) against fp32's, which one `Classifier.load(backend="auto")` will use and why, file
sizes, the CPU's features and the versions. Int8 is used only when its metric is at most `gate` points
(hundredths) below fp32's, unless `force`: int8 models that quietly collapse are a known failure
(onnxruntime #9599, #11286).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunetext.adaptive import METRICS
from tunetext.backends.onnx import FOLDER, FP32, INT8, RECORD, export_dir, weights_fingerprint
from tunetext.batches import collate
from tunetext.data import load_dataset
from tunetext.errors import UsageError
from tunetext.evaluate import compute_metrics, task_metrics
from tunetext.models import ADAPTER_CONFIG, ModelError
from tunetext.models.families import family_of
from tunetext.predict import BATCH_SIZE, Classifier
from tunetext.runs import read_run
from tunetext.version import __version__

# The fp32 export must give PyTorch's probabilities (values, for regression, in target standard deviations)
# within this: a larger difference is an export bug, not rounding.
FP32_TOLERANCE = 1e-3
OPSET = 18
FUSED = "model.fused.onnx"  # the optimizer's graph, until it passes the fp32 check


def export(run_dir: str | Path, format: str = "onnx", quantize: str | None = None, force: bool = False,
           gate: float = 0.5, progress: bool = True) -> dict[str, Any]:
    """Export a finished run's model to ONNX in `RUN_DIR/onnx/` and return the record of its checks
    (also written to `RUN_DIR/onnx/export.json`, see the module's doc).

    `quantize="int8"` adds a dynamically quantized model, used (`chosen`) only when its validation main
    metric is at most `gate` points below fp32's; `force` chooses it whatever the drop. An existing export
    is replaced. PEFT adapter runs (LoRA, prompt tuning: saved unmerged) cannot be exported.
    """
    if format != "onnx":
        raise UsageError(f"format must be onnx; got {format!r}")
    if quantize not in (None, "int8"):
        raise UsageError(f"quantize must be int8 or left out; got {quantize!r}")
    run_dir = Path(run_dir)
    config, metrics, _ = read_run(run_dir)
    if (run_dir / ADAPTER_CONFIG).is_file():
        raise ModelError(f"{run_dir} holds a PEFT adapter ({config.train.strategy}), saved unmerged over "
                         f"{config.model.name}'s weights: tunetext exports full models only; serve it with "
                         "backend torch, or train it with a full fine-tuning strategy to export it")
    say = _say if progress else (lambda _: None)
    folder = export_dir(run_dir)
    folder.mkdir(exist_ok=True)
    (folder / RECORD).unlink(missing_ok=True)  # a half-finished export is never used
    clf = Classifier.load(run_dir, backend="torch")
    val = load_dataset(config.data, label_names=clf.label_names).splits()["val"]
    encoded = clf.encode(val.texts)
    ids, counts = [s for e in encoded for s in e.windows], [len(e.windows) for e in encoded]
    say(f"exporting {config.model.name} to {folder / FP32}")
    exporter = _export_onnx(clf, ids[:2], folder / FP32)
    metric = config.train.metric if config.train.metric != "auto" else METRICS[clf.task][0]
    torch_side = _scored(clf, ids, counts, val.labels, metric)
    fusions = _fuse(clf, folder / FP32, folder / FUSED)
    if fusions["applied"]:
        try:
            fp32 = _scored(clf.with_onnx(folder / FUSED), ids, counts, val.labels, metric)
            fp32_check = _compare(clf, torch_side, fp32)
            wrong = (fp32_check["max_probability_difference"] > FP32_TOLERANCE
                     and f"differs from PyTorch by {fp32_check['max_probability_difference']:.3g} "
                         f"(tolerance {FP32_TOLERANCE})")
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime refusing its own optimizer's graph: not used
            wrong = f"does not run ({_failure(exc)})"
        if wrong:
            fusions.update(applied=False, why=f"the fused graph {wrong}: the graph as exported is kept")
            (folder / FUSED).unlink()
        else:
            (folder / FUSED).replace(folder / FP32)
    if not fusions["applied"]:
        fp32 = _scored(clf.with_onnx(folder / FP32), ids, counts, val.labels, metric)
        fp32_check = _compare(clf, torch_side, fp32)
    say(f"fusions: {fusions['why']}")
    record: dict[str, Any] = {
        "format": "onnx", "exporter": exporter, "opset": OPSET, "fusions": fusions, "metric": metric,
        "gate_points": gate,
        "validation_texts": len(val), "weights_sha256": weights_fingerprint(run_dir),
        "torch": {"bytes": _bytes(run_dir, "model.safetensors"), "metric": torch_side["metric"]},
        "fp32": {"file": FP32, "bytes": _bytes(folder, FP32), "metric": fp32["metric"], **fp32_check},
        "cpu": cpu_features(), "versions": _versions()}
    agreement = fp32_check["label_agreement"]
    say(f"fp32: largest difference from PyTorch {fp32_check['max_probability_difference']:.2e} on "
        f"{len(val)} validation texts"
        + ("" if agreement is None else f", answers agreeing on {agreement:.2%}"))
    if fp32_check["max_probability_difference"] > FP32_TOLERANCE:
        record.update(passed=False, chosen=None, model=None, reason=(
            f"the fp32 export differs from PyTorch by {fp32_check['max_probability_difference']:.3g} "
            f"(tolerance {FP32_TOLERANCE}) on the validation split"))
        _write(folder, record)
        raise ModelError(f"{run_dir}: {record['reason']}: the export is not used; report it with "
                         f"{folder / RECORD}")
    record.update(passed=True, chosen="fp32", model=FP32, reason="no quantization asked for")
    if quantize == "int8":
        record["int8"] = _int8(clf, folder, ids, counts, val.labels, metric, fp32, gate, force, say)
        chosen = record["int8"]["used"]
        record.update(chosen="int8" if chosen else "fp32", model=INT8 if chosen else FP32,
                      reason=record["int8"]["why"])
    _write(folder, record)
    say(f"backend auto will use the {record['chosen']} model: {record['reason']}")
    return record


@contextlib.contextmanager
def _quiet():
    """The exporters' and quantizer's step lines, warnings and log records held back."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _failure(exc: Exception) -> str:
    """An exception in one line: its type and its message's first line."""
    message = str(exc).splitlines()
    return f"{type(exc).__name__}: {message[0] if message else ''}"


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def _export_onnx(clf: Classifier, example: list[list[int]], path: Path) -> str:
    """Write the model's logits as an ONNX graph over (input_ids, attention_mask), batch and sequence
    dynamic, with the model's eager attention: torch's TorchScript exporter, else the dynamo one; which,
    returned. Neither: a ModelError. TorchScript first because ONNX Runtime's transformer fusions match the
    graphs it writes (the dynamo exporter's attention is left unfused, and int8 MiniLM ran slower for it)."""
    wrapped = _Logits(clf.model).eval()
    batch = collate(example * 2 if len(example) < 2 else example, clf.tokenizer.pad_token_id)
    args = (batch["input_ids"], batch["attention_mask"])
    names: dict[str, Any] = {"input_names": ["input_ids", "attention_mask"], "output_names": ["logits"]}
    failures = []
    for dynamo in (False, True):
        if dynamo:
            dims = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence")}
            shapes: dict[str, Any] = {"dynamic_shapes": {"input_ids": dims, "attention_mask": dims}}
        else:
            axes = {0: "batch", 1: "sequence"}
            shapes = {"dynamic_axes": {"input_ids": axes, "attention_mask": axes, "logits": {0: "batch"}}}
        try:
            # The exporters print their steps and warnings; a failure says what matters in its exception.
            with _quiet(), torch.no_grad(), _eager_attention(clf.model):
                torch.onnx.export(wrapped, args, str(path), dynamo=dynamo, opset_version=OPSET,
                                  external_data=False, **names, **shapes)
            return "dynamo" if dynamo else "torchscript"
        except Exception as exc:  # noqa: BLE001 - any exporter failure means: try the other, then report
            failures.append(f"{'dynamo' if dynamo else 'torchscript'}: {_failure(exc)}")
    raise ModelError(f"{clf.config.model.name} could not be exported to ONNX by torch "
                     f"{torch.__version__} ({'; '.join(failures)}); use backend torch")


@contextlib.contextmanager
def _eager_attention(model: Any):
    """The model with its attention written as plain operations (matmul, softmax), the form ONNX Runtime
    fuses, and its own kernel back afterwards."""
    kernel = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(kernel)


def _fuse(clf: Classifier, source: Path, target: Path) -> dict[str, Any]:
    """ONNX Runtime's transformer optimizer on an encoder's exported graph, written to `target`: which
    operators it fused, or why nothing was (decoders are left as exported; so is a graph it cannot read)."""
    model_config = clf.model.config
    if family_of(model_config).kind != "encoder":
        return {"applied": False, "operators": {}, "why": "a decoder: run as exported"}
    from onnxruntime.transformers import optimizer  # only export needs it

    try:
        with _quiet():
            fused = optimizer.optimize_model(str(source), model_type="bert",
                                             num_heads=model_config.num_attention_heads,
                                             hidden_size=model_config.hidden_size)
            fused.save_model_to_file(str(target))
    except Exception as exc:  # noqa: BLE001 - the optimizer is an optional speed-up: any failure keeps the graph
        return {"applied": False, "operators": {},
                "why": f"ONNX Runtime's optimizer failed ({_failure(exc)}): the graph as exported is kept"}
    operators = {name: n for name, n in fused.get_fused_operator_statistics().items() if n}
    if not operators:
        target.unlink()
        return {"applied": False, "operators": {}, "why": "nothing to fuse: the graph as exported is kept"}
    return {"applied": True, "operators": operators,
            "why": "fused " + ", ".join(f"{n} {name}" for name, n in operators.items())}


class _Logits(torch.nn.Module):
    """The model with plain tensor inputs and its logits as the one output."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _scored(clf: Classifier, ids: list[list[int]], counts: list[int], labels: list[Any],
            metric: str) -> dict[str, Any]:
    """A backend's validation answers: raw scores, probabilities (values), answers and the main metric."""
    raw = clf.raw_scores(ids, BATCH_SIZE, counts)
    probs = clf.probabilities(ids, BATCH_SIZE, counts)
    answers = [None if clf.task == "regression" else tuple(clf.answer(row).labels) for row in probs]
    if clf.task == "single_label":
        value = compute_metrics(labels, raw.argmax(axis=1), clf.label_names)[metric]
    else:
        value = task_metrics(raw, labels, clf.label_names, clf.task_record)[metric]
    return {"probabilities": probs, "answers": answers, "metric": float(value)}


def _compare(clf: Classifier, reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Largest difference in probability (regression: in values, over the target's standard deviation) and
    the share of texts with the same answer (label, or label set; None for regression)."""
    scale = float(clf.task_record.get("target_std", 1.0)) if clf.task == "regression" else 1.0
    diff = np.abs(reference["probabilities"] - other["probabilities"]).max(initial=0.0) / scale
    same = [a == b for a, b in zip(reference["answers"], other["answers"], strict=True)]
    agreement = None if clf.task == "regression" else float(np.mean(same)) if same else 1.0
    return {"max_probability_difference": float(diff), "label_agreement": agreement}


def _int8(clf: Classifier, folder: Path, ids: list[list[int]], counts: list[int], labels: list[Any],
          metric: str, fp32: dict[str, Any], gate: float, force: bool, say: Any) -> dict[str, Any]:
    """Quantize the fp32 export, score it on validation and apply the gate: the int8 part of the record."""
    settings = int8_settings(cpu_features())
    say(f"quantizing to int8: weights {settings['weight_type']} ({settings['why']})")
    quantize_int8(folder / FP32, folder / INT8, settings)
    int8 = _scored(clf.with_onnx(folder / INT8), ids, counts, labels, metric)
    drop = (fp32["metric"] - int8["metric"]) * 100  # points: the metric in hundredths
    within = drop <= gate
    change = (f"{drop:.2f} points below" if drop >= 0.005 else f"{-drop:.2f} points above" if drop <= -0.005
              else "the same as")
    why = (f"int8's validation {metric} is {change} fp32's, within the gate of {gate}" if within else
           f"int8's validation {metric} is {drop:.2f} points below fp32's, more than the gate of {gate}: "
           + ("used anyway (force)" if force else "fp32 kept; `--force` uses int8 regardless"))
    say(why)
    return {"file": INT8, "bytes": _bytes(folder, INT8), "metric": int8["metric"], "metric_drop_points": drop,
            **_compare(clf, fp32, int8), **settings, "used": within or force, "forced": force and not within,
            "why": why}


def quantize_int8(source: Path, target: Path, settings: dict[str, Any]) -> None:
    """Dynamic int8 quantization of `source` into `target` with `int8_settings`' choices (every MatMul
    and Gemm's weights; activations are quantized per batch as it runs)."""
    import onnx  # only int8 export needs these
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():  # its advice to pre-process first: measured by the gate instead
        quantize_dynamic(str(source), str(target), weight_type=getattr(QuantType, settings["weight_type"]),
                         per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                         # fused operators (com.microsoft) have no shape inference: their outputs are float
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def int8_settings(cpu: dict[str, Any]) -> dict[str, Any]:
    """The quantization that suits this CPU, and why. ONNX Runtime multiplies uint8 activations by int8
    weights with VPMADDUBSW on AVX2/AVX-512 without VNNI, whose 16-bit sums can saturate and cost accuracy;
    there uint8 weights (U8U8) avoid it. With VNNI (or AMX), and on ARM, int8 weights are exact and fastest.
    Weights are scaled per output channel rather than one scale per matrix: during issue 16, on a VNNI
    Xeon, that took MiniLM's validation macro-F1 drop from 0.45 to 0.00 points (sms_spam) and from 0.88 to
    0.01 (20newsgroups) at the same speed.
    """
    vnni = bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu.get("flags", [])))
    x86 = cpu.get("machine", "") in ("x86_64", "AMD64", "i686")
    if x86 and not vnni:
        return {"weight_type": "QUInt8", "per_channel": True, "reduce_range": False,
                "why": "x86 without VNNI: uint8 weights avoid the saturation of int8 x uint8 products"}
    return {"weight_type": "QInt8", "per_channel": True, "reduce_range": False,
            "why": "VNNI/AMX present: int8 weights, no saturation" if x86 else
            f"{cpu.get('machine')}: int8 weights"}


def cpu_features() -> dict[str, Any]:
    """The CPU's name and the instruction-set flags int8 speed and accuracy depend on (Linux's
    /proc/cpuinfo; elsewhere, the machine type alone)."""
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
              "asimddp", "i8mm")
    name, flags = platform.processor(), set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                name = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    return {"name": name, "machine": platform.machine(), "flags": sorted(f for f in wanted if f in flags)}


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {"tunetext": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _bytes(folder: Path, name: str) -> int | None:
    path = folder / name
    return path.stat().st_size if path.is_file() else None


def _write(folder: Path, record: dict[str, Any]) -> None:
    """The record, written whole and renamed into place, so a reader never sees half of one."""
    tmp = folder / (RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(folder / RECORD)


__all__ = ["FOLDER", "cpu_features", "export", "int8_settings", "quantize_int8"]
