"""`Classifier`: load a finished run and predict label names with per-label probabilities."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch

from tunetext.backends.onnx import FP32, INT8, OnnxScorer, usable_export
from tunetext.batches import LongText, tokenize_windows_marking_cuts
from tunetext.config import RunConfig
from tunetext.data.clean import clean_text
from tunetext.errors import UsageError
from tunetext.inference import pool_windows, predict_log_probs, sigmoid, softmax_with_temperature, to_values
from tunetext.models import ADAPTER_CONFIG, load_adapter_classifier, load_classifier, load_tokenizer, task_of
from tunetext.runs import RunError, read_run
from tunetext.task_metrics import apply_thresholds, threshold_values

# Which forward pass scores: `auto` is the run's ONNX export when it passed its checks and was made from the
# run's current weights (`tunetext export`), else PyTorch; `onnx` insists on the export; `torch` never
# uses it.
Backend = Literal["auto", "torch", "onnx"]
ExportModel = Literal["chosen", "fp32", "int8"]
# Texts per forward pass when scoring. Small passes of length-sorted texts are fastest on a CPU: the
# sweeps in benchmarks/results/inference.json (MiniLM, 2-core Xeon) put 8 within a few percent of the best
# size for PyTorch and ONNX on SMS and on long documents, where 64 was the slowest of 4 to 64 every time.
# On a GPU pass a larger one.
BATCH_SIZE = 8

# What a text needs to be worth classifying, in words for error messages.
CONTENT = "a letter, digit, punctuation mark or symbol"


def has_content(text: str) -> bool:
    """Whether `text` has anything to classify: a character of Unicode category L, N, P or S (CONTENT).

    Whitespace, control and format characters (NUL, zero-width spaces, byte-order marks), combining
    marks, private-use and unassigned code points, and U+FFFD (what is left of undecodable bytes) are not
    content: a text of only those is classified as nothing (BERT's tokenizer drops them all and the model
    sees only [CLS] [SEP]), or as bytes the model never saw. The one test for both `Classifier.predict`
    and the HTTP service.
    """
    return any(unicodedata.category(c)[0] in "LNPS" and c != "\ufffd" for c in text)


def _why_not(text: str, cleaned: str) -> str | None:
    """Why `text` (`cleaned` by the run's text cleaning) cannot be classified; None: it can."""
    if not isinstance(text, str):
        return f"must be a string, not {type(text).__name__}"
    if not has_content(text):
        return (f"must contain {CONTENT}; this text holds only whitespace, control or zero-width "
                "characters or combining marks: nothing to classify")
    if not has_content(cleaned):
        return "nothing is left of this text after the run's text cleaning (data.strip_urls/strip_markup)"
    return None


@dataclass
class Encoded:
    """One text as the model sees it (`Classifier.encode`), or why it cannot be classified."""

    ids: list[int]  # token ids: cleaned, in the run's template, at most max_length (data.long_text says
    # how a longer text is cut; with chunks, its first window); [] with an error
    truncated: bool = False  # some of the text's tokens are in no window: it was longer than max_length and
    # cut (truncate: only its start is in `ids`; head_tail: its start and end; chunks: past max_chunks)
    error: str | None = None
    chunks: list[list[int]] | None = None  # data.long_text=chunks: every window of the text, `ids` first

    @property
    def windows(self) -> list[list[int]]:
        """Every window the text is scored on: `chunks`, or `ids` alone."""
        return self.chunks if self.chunks is not None else [self.ids]


@dataclass
class Prediction:
    """One text's answer. Single-label: `label`, its probability `score`, every label's `probabilities`.
    Multi-label: `labels`, every label whose probability reaches its threshold, most probable first
    (`label` is the first, None when there is none). Regression: `value`, on the targets' scale."""

    label: str | None
    score: float | None  # probability of `label`; None without one
    probabilities: dict[str, float]  # every label's; {} for regression
    truncated: bool = False  # part of the text was not classified (see `Encoded.truncated`)
    chunks: int | None = None  # data.long_text=chunks: windows the text was scored on and pooled; else None
    labels: list[str] = field(default_factory=list)
    value: float | None = None


class Classifier:
    """A fine-tuned classifier; `Classifier.load(run_dir).predict(texts)`."""

    def __init__(self, model, tokenizer, config: RunConfig, metrics: dict | None = None,
                 onnx: OnnxScorer | None = None, model_config: Any = None, load_model: Any = None):
        """`model`: the PyTorch model; or None with `onnx` (the scorer), `model_config` (its transformers
        config) and `load_model` (a function loading the PyTorch model, for what reads it: evaluation,
        reports)."""
        self._model = None if model is None else model.eval()
        self._load_model = load_model
        self.onnx = onnx
        self.backend = "torch" if onnx is None else "onnx"
        self.tokenizer = tokenizer
        self.config = config
        self.metrics = metrics or {}
        model_config = model.config if model is not None else model_config
        self.model_config = model_config
        self.label_names = [model_config.id2label[i] for i in range(model_config.num_labels)]
        # Temperature scaling fitted on validation when the run finished; 1.0 leaves scores as they are.
        # Runs that folded it into the head's weights (`calibration.folded`) have calibrated scores already:
        # `temperature` is what is still to apply (1.0 there), `folded_temperature` what the weights hold.
        calibration = self.metrics.get("calibration", {})
        fitted = float(calibration.get("temperature", 1.0))
        folded = bool(calibration.get("folded", False))
        self.temperature = 1.0 if folded else fitted
        self.folded_temperature = fitted if folded else 1.0
        self.task = task_of(model_config)
        # What turns raw scores into answers: multi-label thresholds (tuned on validation when the run
        # finished; 0.5 for a label without one), regression's target scale. Runs before multi-label
        # and regression existed have no record: single-label.
        self.task_record: dict[str, Any] = {"type": self.task, **self.metrics.get("task", {})}
        self.thresholds: dict[str, float] | None = None
        if self.task == "multi_label":
            tuned = self.task_record.get("thresholds") or {}
            self.thresholds = {name: float(tuned.get(name, 0.5)) for name in self.label_names}

    @property
    def model(self):
        """The PyTorch model; under the ONNX backend, loaded on first use (scoring does not need it)."""
        if self._model is None:
            self._model = self._load_model().eval()
        return self._model

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu", backend: Backend = "auto",
             threads: int | None = None, export: ExportModel = "chosen") -> Classifier:
        """A finished run. `backend` (`Backend`): `auto` scores with the run's ONNX export when it passed
        its checks and matches the run's weights, else with PyTorch; `onnx` fails with the reason when it
        cannot. `threads`: ONNX Runtime's threads (default: every CPU this process may use). `export`: the
        model the export's record chose (int8 when it passed its gate), or `fp32` / `int8` whatever it
        chose (a missing file is a RunError)."""
        config, metrics, info = read_run(run_dir)
        adapter = (Path(run_dir) / ADAPTER_CONFIG).is_file()
        weights = ["adapter_model.safetensors"] if adapter else ["model.safetensors",
                                                                 "model.safetensors.index.json"]
        if not any((Path(run_dir) / name).is_file() for name in weights):  # so no pickled .bin is tried
            raise RunError(f"{run_dir} has no {weights[0]}: the run's weights were removed or never "
                           "finished writing; train it again")

        def load_model():
            if adapter:  # a PEFT adapter and head, for model.name's weights
                task = metrics.get("task", {}).get("type", "single_label")
                model, tokenizer = load_adapter_classifier(
                    run_dir, config.model.name, info["label_names"], config.train.student_layers,
                    config.model.attention, torch.device(device), task)
            else:
                model, tokenizer, _ = load_classifier(str(run_dir), attention=config.model.attention,
                                                      device=torch.device(device))
            return model.to(device), tokenizer

        exported = _exported_model(run_dir, backend, torch.device(device), adapter, export)
        if exported is None:
            model, tokenizer = load_model()
            return cls(model, tokenizer, config, metrics)
        from transformers import AutoConfig  # the model's labels and task, without its weights

        model_config = AutoConfig.from_pretrained(str(run_dir))
        scorer = OnnxScorer(exported, task_of(model_config) == "single_label", threads)
        return cls(None, load_tokenizer(str(run_dir)), config, metrics, scorer, model_config,
                   lambda: load_model()[0])

    def with_onnx(self, path: str | Path, threads: int | None = None) -> Classifier:
        """This classifier scoring with the ONNX model at `path` (an export's fp32 or int8 file, whatever the
        record chose): the same cleaning, template, truncation, temperature, thresholds and labels."""
        scorer = OnnxScorer(path, self.task == "single_label", threads)
        return Classifier(None, self.tokenizer, self.config, self.metrics, scorer, self.model_config,
                          lambda: self.model)

    def encode(self, texts: list[str]) -> list[Encoded]:
        """Each text as the model sees it: cleaned as the training data was (`clean`), checked for content
        (`has_content`, before and after cleaning), put into the run's template and tokenised, a text longer
        than `max_length` cut or split into windows as the run's `data.long_text` says. A text that cannot
        be classified gets the reason instead of ids."""
        clean = self.clean(texts)
        out = [Encoded([], error=_why_not(text, c)) for text, c in zip(texts, clean, strict=True)]
        usable = [i for i, e in enumerate(out) if e.error is None]
        long_text = LongText.of(self.config.data)
        windows, cut = tokenize_windows_marking_cuts(self.tokenizer, [clean[i] for i in usable],
                                                     self.config.model.max_length, self.config.data.template,
                                                     long_text)
        for i, seqs, truncated in zip(usable, windows, cut, strict=True):
            out[i] = Encoded(seqs[0], truncated, chunks=seqs if long_text.mode == "chunks" else None)
        return out

    def probabilities(self, ids: list[list[int]], batch_size: int = BATCH_SIZE,
                      counts: list[int] | None = None) -> np.ndarray:
        """Calibrated probabilities for encoded texts (`Encoded.ids`), one row per text, columns in
        `self.label_names` order: softmax (single-label) or each label's sigmoid (multi-label); for
        regression one column, the value on the targets' scale. With `counts`, `ids` holds every text's
        windows (`Encoded.windows`), `counts[i]` consecutive rows for text i, pooled into one row per text
        (`pool_windows`)."""
        scores = self.raw_scores(ids, batch_size, counts)
        if self.task == "multi_label":
            return sigmoid(scores)
        if self.task == "regression":
            return to_values(scores, self.task_record)
        return softmax_with_temperature(scores, self.temperature)

    def raw_scores(self, ids: list[list[int]], batch_size: int = BATCH_SIZE,
                   counts: list[int] | None = None) -> np.ndarray:
        """The model's raw scores for encoded texts (`tunetext.inference`'s contract: log-probabilities for
        single-label, logits or standardised values otherwise), from whichever backend loaded; with
        `counts`, windows pooled as in `probabilities`. The one place the backends differ."""
        if self.onnx is not None:
            scores = self.onnx(ids, self.tokenizer.pad_token_id, batch_size)
        else:
            scores = predict_log_probs(self.model, ids, self.tokenizer.pad_token_id, batch_size)
        if counts is not None:
            scores = pool_windows(scores, counts, self.task == "single_label")
        return scores

    def encoded_probabilities(self, encoded: list[Encoded], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """`probabilities` of encoded texts, each scored on all its windows."""
        return self.probabilities([seq for e in encoded for seq in e.windows], batch_size,
                                  [len(e.windows) for e in encoded])

    def predict_proba(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Calibrated probabilities, one row per text, columns in `self.label_names` order. Texts are
        cleaned as the training data was (`clean_text` with the run's data config)."""
        return self.encoded_probabilities(self._encode_or_raise(texts), batch_size)

    def scores(self, texts: list[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """What the model says of each text, one row per text: every label's probability (softmax for
        single-label, each label's sigmoid for multi-label), or for regression one column, the value on
        the targets' scale. The same as `predict_proba`, under a name that fits regression too."""
        return self.predict_proba(texts, batch_size)

    def _encode_or_raise(self, texts: list[str]) -> list[Encoded]:
        """`encode`, or a UsageError naming every text that cannot be classified."""
        encoded = self.encode(texts)
        bad = [i for i, e in enumerate(encoded) if e.error is not None]
        if bad:
            emptied = [i for i in bad if isinstance(texts[i], str) and has_content(texts[i])]
            why = (f"; position(s) {', '.join(map(str, emptied[:10]))} only became empty by this run's "
                   "text cleaning (data.strip_urls/strip_markup)" if emptied else "")
            raise UsageError(f"texts must be strings with {CONTENT}; got a non-string, or a text that is "
                             "empty or only whitespace, control or zero-width characters or combining marks, "
                             f"at position(s) {', '.join(map(str, bad[:10]))}{why}")
        return encoded

    def clean(self, texts: list[str]) -> list[str]:
        """`texts` as the model sees them: cleaned exactly as this run's training data (non-strings are
        passed through, for the caller to reject)."""
        return [clean_text(t, self.config.data) if isinstance(t, str) else t for t in texts]

    @overload
    def predict(self, texts: str, batch_size: int = BATCH_SIZE) -> Prediction: ...
    @overload
    def predict(self, texts: list[str], batch_size: int = BATCH_SIZE) -> list[Prediction]: ...

    def predict(self, texts, batch_size=BATCH_SIZE):
        """The answer for one text or a list (`Prediction`: the label and every label's probability; the
        labels over their thresholds; or the value, as the run's task says); whether part of the text was
        not classified (`truncated`), and with `data.long_text=chunks` how many windows were pooled
        (`chunks`)."""
        single = isinstance(texts, str)
        encoded = self._encode_or_raise([texts] if single else list(texts))
        probs = self.encoded_probabilities(encoded, batch_size)
        out = [self.answer(row, e.truncated, None if e.chunks is None else len(e.chunks))
               for row, e in zip(probs, encoded, strict=True)]
        return out[0] if single else out

    def answer(self, row: np.ndarray, truncated: bool = False, chunks: int | None = None) -> Prediction:
        """One text's `Prediction` from its row of `probabilities`."""
        if self.task == "regression":
            return Prediction(None, None, {}, truncated, chunks, value=float(row[0]))
        probabilities = {name: float(p) for name, p in zip(self.label_names, row, strict=True)}
        if self.task == "multi_label":
            assert self.thresholds is not None
            chosen = apply_thresholds(row[None, :], threshold_values(self.thresholds, self.label_names))[0]
            over = sorted((name for name, on in zip(self.label_names, chosen, strict=True) if on),
                          key=lambda name: -probabilities[name])
            top = over[0] if over else None
            return Prediction(top, None if top is None else probabilities[top], probabilities, truncated,
                              chunks, labels=over)
        best = self.label_names[int(row.argmax())]
        return Prediction(best, probabilities[best], probabilities, truncated, chunks, labels=[best])


def _exported_model(run_dir: str | Path, backend: str, device: torch.device, adapter: bool,
                    export: str = "chosen") -> Path | None:
    """The ONNX file `backend` and `export` ask for (`Backend`, `ExportModel`), or None for PyTorch; `onnx`
    that cannot be used is a RunError saying why."""
    if backend not in ("auto", "torch", "onnx"):
        raise UsageError(f"backend must be auto, torch or onnx; got {backend!r}")
    if export not in ("chosen", "fp32", "int8"):
        raise UsageError(f"export must be chosen, fp32 or int8; got {export!r}")
    if backend == "torch" or (backend == "auto" and (device.type != "cpu" or adapter)):
        return None
    if device.type != "cpu":
        raise UsageError(f"the onnx backend runs on the CPU; got device {device}: use backend='torch'")
    path, why = usable_export(run_dir)
    if path is None and backend == "onnx":
        raise RunError(f"{run_dir}: cannot use the onnx backend: {why}")
    if path is not None and export != "chosen":
        path = path.parent / (FP32 if export == "fp32" else INT8)
        if not path.is_file():
            raise RunError(f"{run_dir}: the export has no {export} model ({path}): run `tunetext export "
                           f"{run_dir}{' --quantize int8' if export == 'int8' else ''}` again")
    return path
