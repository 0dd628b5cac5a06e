"""The ONNX Runtime backend: `Classifier.encode`'s ids in, the same scores as `tunetext.inference` out.

`tunetext export` writes the run's model as ONNX (fp32, and int8 when it passes its accuracy gate) into
`RUN_DIR/onnx/` with a record of its checks (`RECORD`). This module reads that record, says whether an
export may be used (it passed, and the run's weights are the ones it was made from), and runs it: texts
batched by length and padded as `tunetext.batches.collate` pads them, scores in input order, log-softmax
for a single-label model and raw logits otherwise (`tunetext.inference.predict_log_probs`'s contract).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tunetext.batches import collate, sorted_batches
from tunetext.runs import RunError

FOLDER = "onnx"  # inside the run directory
RECORD = "export.json"  # the export's checks, in FOLDER
FP32, INT8 = "model.onnx", "model.int8.onnx"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def export_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FOLDER


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The export record of a run (`tunetext export`'s checks and choice), or None without one."""
    path = export_dir(run_dir) / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); run `tunetext export {run_dir} --force` "
                       "again") from None


def weights_fingerprint(run_dir: str | Path) -> str:
    """sha256 over the run's weight files, so an export made from other weights is not used for these."""
    digest = hashlib.sha256()
    for name in WEIGHTS:
        path = Path(run_dir) / name
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def usable_export(run_dir: str | Path) -> tuple[Path | None, str]:
    """The exported model `backend="auto"` may use, or None, with the reason in words: the record's chosen
    model (int8 when it passed its gate, else fp32), present, made from the run's current weights."""
    record = read_record(run_dir)
    if record is None:
        return None, f"{export_dir(run_dir) / RECORD} is missing: run `tunetext export {run_dir}`"
    if not record.get("passed"):
        return None, f"the export failed its checks ({record.get('reason', 'no reason recorded')})"
    if record.get("weights_sha256") != weights_fingerprint(run_dir):
        return None, ("the run's weights changed since the export (stale export): run "
                      f"`tunetext export {run_dir} --force` again")
    path = export_dir(run_dir) / record["model"]
    if not path.is_file():
        return None, f"{path} is missing: run `tunetext export {run_dir} --force` again"
    return path, f"{record['chosen']} export"


def default_threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxScorer:
    """An ONNX Runtime session over an exported model, scoring token ids like `predict_log_probs`.

    `threads`: ONNX Runtime's intra-op threads (default: every CPU this process may use; the service runs
    one per inference thread, as it runs torch). One operator at a time (sequential execution, 1 inter-op
    thread): a transformer's graph is a chain, and parallel branches only contend for the same cores.
    """

    def __init__(self, path: str | Path, single_label: bool, threads: int | None = None):
        import onnxruntime as ort  # only the ONNX backend needs it

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # fusions
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.single_label = single_label

    def __call__(self, ids: list[list[int]], pad_id: int, batch_size: int) -> np.ndarray:
        """Scores for tokenised texts in input order: log class probabilities (single-label) or raw
        logits, batched by length and padded on the right as `collate` does."""
        rows: dict[int, np.ndarray] = {}
        for batch_idx in sorted_batches([len(x) for x in ids], batch_size):
            batch = collate([ids[i] for i in batch_idx], pad_id)
            logits = self.session.run(None, {k: batch[k].numpy() for k in self.inputs})[0].astype(np.float32)
            for i, row in zip(batch_idx, logits, strict=True):
                rows[i] = row
        out = np.stack([rows[i] for i in range(len(ids))]) if ids else np.zeros((0, 0), np.float32)
        if self.single_label and len(out):
            out = out - out.max(axis=1, keepdims=True)
            out = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
        return out.astype(np.float32)
