"""The HTTP service: `create_app(run_dir)` builds a FastAPI app that serves one finished run.

Nothing is loaded at import or in `create_app` but the run's config (so a bad directory fails at once);
the model is loaded and warmed up in the app's lifespan, and `/ready` says when that is done.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tunetext.backends.onnx import INT8
from tunetext.precision import use_bf16
from tunetext.predict import CONTENT, Classifier, Encoded, Prediction
from tunetext.runs import DATA, RunError, read_json, read_run
from tunetext.serve.batching import Batcher, BusyError, Engine, StoppedError, TextResult
from tunetext.serve.cache import PredictionCache, key_of
from tunetext.serve.guard import Guard, Metrics, is_open
from tunetext.serve.hf import HFRequest, function_problem, hf_answer
from tunetext.serve.protocol import ConnectionLimits
from tunetext.version import __version__

API_KEY_ENV = "TUNETEXT_API_KEY"
EXAMPLE = "I loved the movie, it was fantastic!"


def cpu_count() -> int:
    """Cores this process may use (respects affinity masks, e.g. `docker --cpuset-cpus`)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ServeSettings(BaseModel):
    """How the service batches, what it accepts, and how many threads it uses."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int = Field(32, ge=1, le=1024, description="Most texts gathered into one batch, from "
                                "any number of requests.")
    pass_size: int = Field(8, ge=1, le=1024, description="Texts per forward pass: a batch is sorted by "
                           "length and run in passes of this many, so short texts are not padded to the "
                           "longest.")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="Longest a batch waits for more texts once "
                               "it has one; 0 runs whatever is waiting at once.")
    max_texts: int = Field(64, ge=1, description="Most texts in one request; more is answered 413.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Largest request body; larger is 413.")
    max_request_tokens: int = Field(8192, ge=1, description="Most tokens one request may cost: the sum "
                                    "over its texts of each text's tokens as the model sees them, after "
                                    "truncation to the run's max_length, or with data.long_text=chunks all "
                                    "its windows' (the default, 8192, is 64 texts of 128 tokens); more is "
                                    "413.")
    max_queue: int = Field(4096, ge=1, description="Most texts waiting for the model; beyond it, 503.")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="Seconds a client has to send a "
                                    "request's line and headers, from connecting (or from the request's "
                                    "first byte on a kept-alive connection); then 408 and the connection is "
                                    "closed.")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="Seconds a client has to send a "
                                  "request's body once its headers are in; then 408 and the connection is "
                                  "closed.")
    max_header_bytes: int = Field(16_384, ge=1024, description="Largest request line plus headers; more is "
                                  "431, and the rest is not read.")
    max_concurrency: int = Field(256, ge=1, description="Most requests being answered at once (from the "
                                 "end of their headers to the end of their answer); a request beyond it is "
                                 "503. Idle and slow connections are bounded by the timeouts instead.")
    cache_size: int = Field(10_000, ge=0, description="Texts whose model output the prediction cache "
                            "keeps (least recently used dropped first), keyed on the text as the model sees "
                            "it (cleaned as the run cleans, tokenised); a repeated text is answered without "
                            "the model. 0 turns the cache off. Each worker has its own.")
    workers: int = Field(1, ge=1, description="Worker processes (each loads the model).")
    threads: int | None = Field(None, ge=1, description="Inference threads per worker, each running its "
                                "own batch on one torch thread; default: cores // workers (at least 1).")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="`auto`: bfloat16 autocast where training's `auto` uses it (a CPU with AMX, "
        "or with AVX512-BF16 where tunetext.precision's probe measures bf16 faster; probabilities "
        "within about 0.005 of fp32), else fp32. `fp32` gives exactly `Classifier.predict`'s numbers.")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="What scores: `auto` uses the run's ONNX export when it passed its checks and "
        "matches the run's weights (`tunetext export`; int8 when it passed its accuracy gate), else torch; "
        "`onnx` fails to start without one. Each inference thread runs ONNX Runtime on one thread.")
    api_key: SecretStr | None = Field(default_factory=lambda: SecretStr(os.environ[API_KEY_ENV])
                                      if os.environ.get(API_KEY_ENV) else None,
                                      description=f"Bearer key required on all but the open paths; "
                                      f"default: ${API_KEY_ENV}.")

    @model_validator(mode="after")
    def _queue_holds_a_request(self) -> ServeSettings:
        if self.max_queue < self.max_texts:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_texts ({self.max_texts})")
        return self

    def connection_limits(self) -> ConnectionLimits:
        return ConnectionLimits(self.header_timeout_s, self.body_timeout_s, self.max_header_bytes,
                                self.max_concurrency)

    def inference_threads(self) -> int:
        return self.threads or max(1, cpu_count() // self.workers)

    def bf16(self) -> bool:
        return use_bf16(self.precision, torch.device("cpu"))


def _precision(clf: Classifier, bf16: bool) -> str:
    """What the served model computes in: torch's fp32 or bf16, or the ONNX model's fp32 or int8."""
    if clf.onnx is not None:
        return "int8" if clf.onnx.path.name == INT8 else "fp32"
    return "bf16" if bf16 else "fp32"


# ---- request and response bodies ------------------------------------------------------------------

def _check_text(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("blank_text", "must not be empty or only whitespace")
    return text


# The schema says "string with a non-space character" so that fuzzers and clients know what is valid. A
# text must also have content (`has_content`: a letter, digit, punctuation mark or symbol), which JSON
# Schema's regexes cannot say; that is checked with the tokens (`Engine.measure`), 422 naming the field.
Text = Annotated[StrictStr, AfterValidator(_check_text), Field(json_schema_extra={"pattern": r"\S"})]
# An integer as JSON Schema has it: 3 and 3.0, but not 3.5, "3" or true.
Integer = Annotated[StrictInt, BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer()
                                               else v)]


def _request_schema(schema: dict[str, Any]) -> None:
    for prop in schema["properties"].values():
        prop.pop("default", None)  # absent means absent; null is not accepted
    schema["oneOf"] = [{"required": ["text"]}, {"required": ["texts"]}]
    schema["examples"] = [{"text": EXAMPLE}, {"texts": [EXAMPLE, "Dull and far too long."], "top_k": 1}]


class PredictRequest(BaseModel):
    """One text (`text`) or a list (`texts`), and optionally how many labels to return."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_request_schema)

    text: Text = Field(None, description="A text to classify; the answer is one prediction. A text must "
                       f"contain {CONTENT} (422 otherwise).")  # type: ignore[assignment]
    texts: list[Text] = Field(None, min_length=1, description="Texts to classify; the answer is a list "  # type: ignore[arg-type]
                              "of predictions in the same order.")
    top_k: Integer = Field(None, ge=1, description="Return only the k most probable labels, "  # type: ignore[assignment]
                             "most probable first (default: every label, in the model's order); for a "
                             "multi-label run, `labels` then holds only those of them over their "
                             "thresholds. A regression run has no labels: top_k is refused (422).")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise PydanticCustomError("text_or_texts", "give exactly one of `text` (a string) or `texts` "
                                      "(a list of strings)")
        return self


class _TextOut(BaseModel):
    """What every answer says about how much of its text was read, whatever the run's task."""

    # additionalProperties false in the schema: an answer with another task's fields violates it.
    model_config = ConfigDict(extra="forbid")

    truncated: bool = Field(description="True when the text was longer than the model's window "
                            "(`max_length` tokens, see /info) and only part of it was classified: its start, "
                            "or with the run's data.long_text=head_tail its start and end, or with chunks "
                            "windows spread over it (more than data.max_chunks were needed).")
    chunks: int | None = Field(None, description="Only for a run trained with data.long_text=chunks: how "
                               "many windows of the text were scored; its answer pools them (1 for a short "
                               "text).")


class PredictionOut(_TextOut):
    """A single-label run's answer for one text."""

    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    probabilities: dict[str, float] = Field(description="Probability per label.")


class MultiLabelOut(_TextOut):
    """A multi-label run's answer for one text."""

    labels: list[str] = Field(description="Every label whose probability reaches its threshold (tuned on "
                              "validation when the run finished, see /info), most probable first; [] when "
                              "none does. With `top_k`, only those among the k most probable.")
    probabilities: dict[str, float] = Field(description="Probability per label, each on its own (sigmoid: "
                                            "they need not sum to 1).")


class RegressionOut(_TextOut):
    """A regression run's answer for one text."""

    value: float = Field(description="The predicted value, on the scale of the training targets.")


# The answer's model for each task: the app documents the one of the run it serves.
ANSWERS: dict[str, type[_TextOut]] = {"single_label": PredictionOut, "multi_label": MultiLabelOut,
                                      "regression": RegressionOut}


class ErrorOut(BaseModel):
    detail: str


class FieldError(BaseModel):
    field: str
    message: str


class ValidationErrorOut(BaseModel):
    detail: str = Field(description="Every problem, each naming its field.")
    errors: list[FieldError]


class InfoOut(BaseModel):
    run: str
    model: str
    labels: list[str]
    max_length: int
    tunetext_version: str
    metrics: dict[str, Any] = Field(description="The run's test-set metrics (empty if it has none).")
    serving: dict[str, Any]
    task: Literal["single_label", "multi_label", "regression"] = Field(
        description="What /predict answers: `label` and `probabilities` (single_label), `labels` over "
        "their thresholds and `probabilities` (multi_label), or `value` (regression).")
    thresholds: dict[str, float] | None = Field(description="multi_label: each label's decision "
                                                "threshold; otherwise null.")
    scale: dict[str, Any] | None = Field(description="regression: the range the values are shown on, "
                                         "`low` and `high`, and `source`: the training targets' min and max "
                                         "(data.json), or their mean ± 3 std (metrics.json) where the run "
                                         "lacks those; otherwise null.")


class ReadyOut(BaseModel):
    ready: bool
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorOut, "description": "Too many texts, more tokens than the per-request budget, or a "
          "body over the size limit."},
    415: {"model": ErrorOut, "description": "The body is not declared `Content-Type: application/json`."},
    422: {"model": ValidationErrorOut, "description": "Malformed JSON, a field missing, empty or of the "
          "wrong type, or a text with nothing to classify."},
    503: {"model": ErrorOut, "description": "The model is not loaded yet, or the queue is full."},
}


# ---- the app ----------------------------------------------------------------------------------------

@dataclass
class _State:
    settings: ServeSettings
    metrics: Metrics
    classifier: Classifier | None = None
    engine: Engine | None = None
    batcher: Batcher[Encoded] | None = None
    cache: PredictionCache | None = None
    info: dict[str, Any] = field(default_factory=dict)
    ready: bool = False


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """("texts", 3) -> "texts[3]"; the body as a whole is "body"."""
    name = ""
    for part in loc:
        name += f"[{part}]" if isinstance(part, int) else f"{'.' if name else ''}{part}"
    return name or "body"


def _unprocessable(errors: list[Any], example: str = '{"text": "..."}',
                   fields: str = "`text` or `texts`, and `top_k`") -> JSONResponse:
    """422 naming the field of each problem (`example` and `fields`: of the route's request body)."""
    problems = []
    for error in errors:
        kind, message = error["type"], error["msg"]
        if kind == "json_invalid":
            message = f"malformed JSON ({message.removeprefix('Invalid JSON: ')}); send an object like " \
                      f"{example}"
        elif kind == "extra_forbidden":
            message = f"unknown field; this route takes {fields}"
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            message = f"must be a JSON object like {example}"
        problems.append((_field_name(error["loc"]), message))
    return JSONResponse(status_code=422, content={
        "detail": "; ".join(f"{f}: {m}" for f, m in problems),
        "errors": [{"field": f, "message": m} for f, m in problems]})


@contextmanager
def _busy_as_503() -> Iterator[None]:
    """The batcher's refusals as the service's 503s."""
    try:
        yield
    except BusyError as exc:
        raise HTTPException(503, f"the server is busy ({exc}); retry shortly",
                            headers={"Retry-After": "1"}) from None
    except StoppedError as exc:
        raise HTTPException(503, str(exc)) from None


def create_app(run_dir: str | Path, settings: ServeSettings | None = None) -> FastAPI:
    """The service for one finished run. The model loads when the app starts (its lifespan)."""
    settings = settings or ServeSettings()
    run_dir = Path(run_dir)
    config, run_metrics, _ = read_run(run_dir)  # a bad directory fails here, before any port is opened
    # The task decides the answer's shape, and so the OpenAPI schema, which is built before the model loads.
    task = run_metrics.get("task", {}).get("type", "single_label")
    if task not in ANSWERS:
        raise RunError(f"{run_dir / 'metrics.json'} names the task {task!r}, which this version of tunetext "
                       f"cannot serve ({', '.join(ANSWERS)}); serve it with the tunetext that trained it")
    answer_model = ANSWERS[task]
    state = _State(settings, Metrics())
    state.cache = PredictionCache(settings.cache_size, state.metrics.observe_cache)
    page = (resources.files("tunetext") / "static" / "index.html").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threads = settings.inference_threads()
        clf = await asyncio.to_thread(Classifier.load, run_dir, backend=settings.backend, threads=1)
        bf16 = clf.backend == "torch" and settings.bf16()  # ONNX runs at the precision it was saved in
        if clf.task != task:  # the model's config and metrics.json disagree: the folder was mixed up
            raise RunError(f"{run_dir}: metrics.json says the task is {task} but the model's config.json "
                           f"says {clf.task}; the run folder holds files of different runs")
        engine = Engine(clf, settings.pass_size, bf16)
        state.classifier, state.engine = clf, engine
        # One torch thread per inference thread (torch's setting is per thread, so it is set on each).
        state.batcher = Batcher(engine, settings.max_batch_size, settings.max_wait_ms, settings.max_queue,
                                threads=threads, on_batch=state.metrics.observe_batch,
                                thread_init=partial(torch.set_num_threads, 1))
        state.batcher.start()
        # Warm up every inference thread at the sizes that will be used: one text and a full batch.
        example = await asyncio.to_thread(engine.measure, [EXAMPLE])
        await state.batcher.run_on_each_thread(engine, example)
        await state.batcher.run_on_each_thread(engine, example * settings.max_batch_size)
        state.info = {
            "run": run_dir.name, "model": config.model.name, "labels": clf.label_names,
            "max_length": config.model.max_length, "tunetext_version": __version__,
            "metrics": run_metrics.get("test", {}),
            "serving": {**settings.model_dump(exclude={"api_key"}), "threads": threads,
                        "precision": _precision(clf, bf16), "backend": clf.backend,
                        "onnx_model": None if clf.onnx is None else clf.onnx.path.name,
                        "api_key_required": settings.api_key is not None},
            "task": task, "thresholds": clf.thresholds,
            "scale": _scale(run_dir, run_metrics) if task == "regression" else None,
        }
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            await state.batcher.stop()

    app = FastAPI(title="tunetext", version=__version__, lifespan=lifespan,
                  description=f"Predictions from the tunetext run `{run_dir.name}` ({config.model.name}).")
    app.state.tunetext = state

    def _ready_or_503() -> tuple[Classifier, Engine, Batcher[Encoded]]:
        if not state.ready or state.classifier is None or state.engine is None or state.batcher is None \
                or not state.batcher.running:
            raise HTTPException(503, "the model is not loaded yet; try again when /ready answers 200")
        return state.classifier, state.engine, state.batcher

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the model is loaded and warmed up", response_model=ReadyOut,
             responses={503: {"model": ReadyOut, "description": "Not ready (loading or shutting down)."}})
    async def ready() -> JSONResponse:
        ok = state.ready and state.batcher is not None and state.batcher.running
        return JSONResponse(status_code=200 if ok else 503, content={
            "ready": ok, "detail": "model loaded and warmed up" if ok else "the model is not loaded"})

    @app.get("/info", summary="The model, its labels and test metrics, and the serving settings",
             response_model=InfoOut, responses={503: ERRORS[503]})
    async def info() -> dict[str, Any]:
        _ready_or_503()
        return state.info

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        return Response(state.metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # The body is parsed here rather than by FastAPI, so that every way a body can be wrong (not UTF-8, not
    # JSON, not an object, wrong fields) ends as one kind of answer: 422 naming the field.
    @app.post("/predict", summary="Classify one text or a list of texts",
              response_model=answer_model | list[answer_model], responses=ERRORS,  # type: ignore[valid-type]
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}})
    async def predict(request: Request) -> Response:
        try:
            body = PredictRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _unprocessable(exc.errors())
        clf, _, _ = _ready_or_503()
        if task == "regression" and body.top_k is not None:
            return _unprocessable([{"type": "top_k_regression", "loc": ("top_k",), "msg": "this run predicts "
                                    "a value (regression), not labels: leave out top_k"}])
        single = body.text is not None
        texts = [body.text] if single else body.texts
        outcome = await _classify(texts, lambda i: ("text",) if single else ("texts", i))
        if isinstance(outcome, Response):
            return outcome
        results, encoded = outcome
        answers = [_answer(clf, r, body.top_k, e) for r, e in zip(results, encoded, strict=True)]
        state.metrics.truncated.inc(sum(a["truncated"] for a in answers))
        # Built by hand, not through `response_model`: the schema is the same, without a validation pass
        # over every answer.
        return Response(json.dumps(answers[0] if single else answers), media_type="application/json")

    # huggingface_hub's InferenceClient(base_url).text_classification(...) POSTs here (see serve/hf.py).
    @app.post("/", include_in_schema=False)
    async def hf_predict(request: Request) -> Response:
        try:
            body = HFRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return _unprocessable(exc.errors(), example='{"inputs": "..."}',
                                  fields="`inputs`, and `parameters` with `top_k` and `function_to_apply`")
        clf, _, _ = _ready_or_503()
        problem = function_problem(task, body.parameters)
        if problem:
            return _unprocessable([{"type": "function_to_apply", "loc": ("parameters", "function_to_apply"),
                                    "msg": problem}])
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        outcome = await _classify(texts, lambda i: ("inputs",) if isinstance(body.inputs, str)
                                  else ("inputs", i))
        if isinstance(outcome, Response):
            return outcome
        results, encoded = outcome
        top_k = body.parameters.top_k if body.parameters else None
        predictions = [_prediction(clf, r, e) for r, e in zip(results, encoded, strict=True)]
        state.metrics.truncated.inc(sum(p.truncated for p in predictions))
        return Response(json.dumps([hf_answer(clf, p, top_k) for p in predictions]),
                        media_type="application/json")

    async def _classify(texts: list[str], where: Callable[[int], tuple[Any, ...]]
                        ) -> tuple[list[TextResult], list[Encoded]] | Response:
        """Each text's model row, through the limits, the cache and the batcher, with its encoding; or the
        422 naming (by `where(i)`) every text that cannot be classified."""
        clf, engine, batcher = _ready_or_503()
        if len(texts) > settings.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; the limit is {settings.max_texts} "
                                "(max_texts): split the list into several requests")
        with _busy_as_503():  # a full queue refuses the request before any text is tokenized
            batcher.check_room(len(texts))
        # Every text is checked, encoded and its cost counted before any of them reaches the model (off the
        # event loop: tokenizing a megabyte of text takes a while); the model runs on these very ids.
        encoded = await asyncio.to_thread(engine.measure, texts)
        failed = [{"type": "no_content", "loc": where(i), "msg": e.error}
                  for i, e in enumerate(encoded) if e.error]
        if failed:
            return _unprocessable(failed)
        cost = sum(len(w) for e in encoded for w in e.windows)  # each window at most max_length
        per_window = " per window" if clf.config.data.long_text == "chunks" else ""
        if cost > settings.max_request_tokens:
            raise HTTPException(413, f"this request costs {cost} tokens ({len(texts)} text(s), each "
                                f"counted up to the model's max_length of {engine.max_length}"
                                f"{per_window}); the limit is "
                                f"{settings.max_request_tokens} tokens per request (max_request_tokens): "
                                "send fewer or shorter texts per request, or start the server with a larger "
                                "--max-request-tokens")
        assert state.cache is not None
        with _busy_as_503():
            results = await _cached(state.cache, batcher, encoded)
        return results, encoded

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        # Starlette hands the exception on to the server, which logs it with its traceback; the client
        # learns only that it happened.
        return JSONResponse(status_code=500, content={
            "detail": "the server failed while answering this request; the error is in the server's log"})

    _document(app, settings, task)
    app.add_middleware(Guard, metrics=state.metrics, max_body_bytes=settings.max_body_bytes,
                       api_key=settings.api_key.get_secret_value() if settings.api_key else None)
    return app


async def _cached(cache: PredictionCache, batcher: Batcher[Encoded], encoded: list[Encoded]
                  ) -> list[TextResult]:
    """Each text's result: from `cache` (keyed on its cleaned, tokenised windows), or from the batcher for
    the texts it does not hold, each distinct one once (a text repeated in the request is run once), then
    kept. With the cache off, every text goes to the batcher."""
    if not cache.enabled:
        return await batcher.submit(encoded)
    keys = [key_of(e.windows) for e in encoded]
    rows = cache.get_many(keys)
    first: dict[str, int] = {}  # a missing key -> where it first occurs
    for i, (key, row) in enumerate(zip(keys, rows, strict=True)):
        if row is None:
            first.setdefault(key, i)
    if first:
        fresh = await batcher.submit([encoded[i] for i in first.values()])
        computed = dict(zip(first, fresh, strict=True))
        kept = {key: r.probabilities for key, r in computed.items() if r.probabilities is not None}
        cache.put_many(list(kept), list(kept.values()))  # a text's error, if any, is not remembered
        return [TextResult(row) if row is not None else computed[key] for key, row in zip(keys, rows,
                                                                                           strict=True)]
    return [TextResult(row) for row in rows]


def _prediction(clf: Classifier, result: TextResult, encoded: Encoded) -> Prediction:
    """One text's `Prediction` from its model row, by `Classifier.answer`."""
    assert result.probabilities is not None
    return clf.answer(result.probabilities, encoded.truncated, None if encoded.chunks is None
                      else len(encoded.chunks))


def _answer(clf: Classifier, result: TextResult, top_k: int | None, encoded: Encoded) -> dict[str, Any]:
    """One text's answer in the shape of the run's task (`ANSWERS`), from `Classifier.answer`, so that the
    service thresholds and scales exactly as `Classifier.predict` does."""
    chunks = None if encoded.chunks is None else len(encoded.chunks)
    prediction = _prediction(clf, result, encoded)
    answer: dict[str, Any]
    if clf.task == "regression":
        answer = {"value": prediction.value}
    else:
        probs = prediction.probabilities  # in the model's label order
        kept = sorted(probs, key=lambda name: -probs[name])[:top_k] if top_k else list(probs)
        if clf.task == "multi_label":
            answer = {"labels": [name for name in prediction.labels if name in kept]}
        else:
            answer = {"label": prediction.label, "score": prediction.score}
        answer["probabilities"] = {name: probs[name] for name in kept}
    answer["truncated"] = prediction.truncated
    if chunks is not None:  # only runs trained with data.long_text=chunks say how many windows were pooled
        answer["chunks"] = chunks
    return answer


def _scale(run_dir: Path, metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The range a regression run's values are drawn on by the page: the training targets' min and max
    (data.json), else their mean ± 3 std (metrics.json's task record), else None."""
    target = read_json(run_dir / DATA).get("train", {}).get("target", {}) if (run_dir / DATA).is_file() \
        else {}
    if isinstance(target.get("min"), int | float) and isinstance(target.get("max"), int | float) \
            and target["max"] > target["min"]:
        return {"low": float(target["min"]), "high": float(target["max"]),
                "source": "the training targets' min and max (data.json)"}
    mean, std = metrics.get("task", {}).get("target_mean"), metrics.get("task", {}).get("target_std")
    if isinstance(mean, int | float) and isinstance(std, int | float) and std > 0:
        return {"low": mean - 3 * std, "high": mean + 3 * std,
                "source": "the training targets' mean ± 3 std (metrics.json)"}
    return None


def _document(app: FastAPI, settings: ServeSettings, task: str) -> None:
    """Put the per-app limits, the API key and what the run's task accepts into the OpenAPI schema, so docs
    and fuzzers know them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema["components"]["schemas"]["PredictRequest"] = PredictRequest.model_json_schema()
            schema["components"]["schemas"]["PredictRequest"]["properties"]["texts"]["maxItems"] = \
                settings.max_texts
            if task == "regression":  # no labels to keep the top k of: the field is refused (422)
                request = schema["components"]["schemas"]["PredictRequest"]
                del request["properties"]["top_k"]
                request["examples"] = [{k: v for k, v in example.items() if k != "top_k"}
                                       for example in request["examples"]]
            if settings.api_key is not None:
                schema["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                for path, ops in schema["paths"].items():
                    for method, op in ops.items():
                        if not is_open(path, method.upper()):
                            op["security"] = [{"bearer": []}]
                            op["responses"]["401"] = {"description": "No or wrong API key.", "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
