"""What every request passes before the routes: counting (Prometheus), the API key, the body's type and
size.

A plain ASGI middleware rather than Starlette's `BaseHTTPMiddleware`, which costs a task per request.
Order: metrics outermost, so 401s, 413s and 415s are counted too; then the key, so an unauthenticated
client gets 401 whatever it sent; then the body's declared type, which must be JSON (415 otherwise: a
web page on another site may send text/plain or a form to this server without asking, but it cannot send
application/json unless the server agrees to a CORS preflight, which this one never does); then the
body limit, which buffers the body (at most `max_body_bytes`) and replays it to the app.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths anyone may read (GET, HEAD) when an API key is set: probes, the page (it holds no data and asks for
# the key) and the API docs. Everything else, unknown paths and POST / (the Hugging Face convention's
# predictions) included, needs the key.
OPEN_PATHS = frozenset({"/", "/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect",
                        "/redoc"})


def is_open(path: str, method: str) -> bool:
    """Whether a request needs no API key: a read of one of the OPEN_PATHS."""
    return path in OPEN_PATHS and method in ("GET", "HEAD")
# Metric labels use these paths and "other", so random URLs cannot grow the label set without bound.
KNOWN_PATHS = OPEN_PATHS | {"/predict", "/info", "/metrics"}


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps can live in one process).

    With several worker processes, `serve` sets PROMETHEUS_MULTIPROC_DIR, every worker writes its values
    there and a scrape of any worker reports the sum over all of them.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tunetext_requests", "HTTP requests by path, method and status.",
                                ["path", "method", "status"], registry=r)
        self.errors = Counter("tunetext_request_errors", "HTTP responses with status 400 or more.",
                              ["path", "status"], registry=r)
        self.latency = Histogram("tunetext_request_latency_seconds", "Time from request to response.",
                                 ["path"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        # A batch is what one inference thread takes from the queue at once; it runs as one or more
        # length-sorted forward passes of at most pass_size texts, so this is not the size of a pass.
        self.batch_size = Histogram("tunetext_batch_size",
                                    "Texts per batch (a batch runs as forward passes of at most pass_size).",
                                    registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.inference = Histogram("tunetext_inference_seconds",
                                   "Running one batch's forward passes on its already tokenised texts.",
                                   registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))
        self.texts = Counter("tunetext_texts", "Texts classified.", registry=r)
        self.truncated = Counter("tunetext_texts_truncated", "Texts cut to the model's max length.",
                                 registry=r)
        # The prediction cache (ServeSettings.cache_size); a hit is answered without the model, so it is
        # not in tunetext_texts.
        self.cache_hits = Counter("tunetext_cache_hits", "Texts answered from the prediction cache.",
                                  registry=r)
        self.cache_misses = Counter("tunetext_cache_misses", "Texts looked up in the prediction cache and "
                                    "not found.", registry=r)
        self.cache_entries = Gauge("tunetext_cache_entries", "Rows held in the prediction cache now (with "
                                   "several workers, the sum of theirs).", registry=r,
                                   multiprocess_mode="livesum")

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.texts.inc(size)

    def observe_cache(self, hits: int, misses: int, entries: int) -> None:
        self.cache_hits.inc(hits)
        self.cache_misses.inc(misses)
        self.cache_entries.set(entries)

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


async def _json_response(send: Send, status: int, detail: str,
                         headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def _is_json(content_type: bytes) -> bool:
    """`application/json`, with no charset or with UTF-8 (the only one JSON has), any case and spacing."""
    media_type, *params = (part.strip().lower() for part in content_type.split(b";"))
    charsets = [value.strip(b'"') for name, _, value in (p.partition(b"=") for p in params)
                if name.strip() == b"charset"]
    return media_type == b"application/json" and all(c in (b"utf-8", b"utf8") for c in charsets)


class Guard:
    """Count, check the API key and the body's type, limit the body; then hand the request to `app`."""

    def __init__(self, app: ASGIApp, metrics: Metrics, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.expected = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before it starts a response

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counting_send)
        finally:
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        if self.expected is not None and not is_open(scope["path"], scope["method"]):
            given = headers.get(b"authorization", b"")
            scheme, _, key = given.partition(b" ")
            # The scheme's name is case-insensitive (RFC 7235): "bearer" and "BEARER" are "Bearer" too.
            if not (scheme.lower() == b"bearer" and hmac.compare_digest(key.strip(b" "), self.expected)):
                what = "is missing" if not given else "does not match"
                await _json_response(send, 401, f"this server needs an API key: the Authorization header "
                                     f"{what}; send 'Authorization: Bearer <key>'",
                                     ((b"www-authenticate", b"Bearer"),))
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared_type = headers.get(b"content-type", b"")
        if not _is_json(declared_type):
            what = f"is {declared_type.decode('latin-1')!r}" if declared_type else "is missing"
            await _json_response(send, 415, f"the request body must be JSON: its Content-Type header {what}; "
                                 "send 'Content-Type: application/json'")
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, int(declared))
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send, size, at_least=True)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send, size: int, at_least: bool = False) -> None:
        await _json_response(send, 413, f"the request body is {'more than ' if at_least else ''}"
                             f"{size if not at_least else self.max_body_bytes} bytes; the limit is "
                             f"{self.max_body_bytes} bytes (max_body_bytes): send fewer or shorter texts")
