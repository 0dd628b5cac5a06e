"""The connection layer under the app: uvicorn's httptools protocol with the limits a public server needs.

uvicorn limits neither how long a client may take to send a request nor how large its headers may be
(httptools keeps a header of any size), so one client could hold hundreds of connections open with
half-sent requests, or grow the server's memory by gigabytes before the API key is even looked at.
`LimitedHttpToolsProtocol` adds, per connection:

- time: a request's line and headers must arrive within `header_timeout_s` of the connection opening
  (or, on a kept-alive connection, of the request's first byte), its body within `body_timeout_s` of
  the end of its headers. Then 408 and the connection is closed (closed without an answer when the
  client sent nothing at all). The time the app takes to answer is not limited here;
- size: the request line and headers may take `max_header_bytes`; beyond that, 431 and the connection
  is closed, without reading further;
- load: a request arriving while `max_concurrency` requests are being answered is answered 503.
  Connections that are idle or still sending their headers do not count: they are bounded by the
  timeouts, and counting them would let a client that keeps opening slow connections lock everyone else
  out (uvicorn's `limit_concurrency` counts them, and answers in plain text).

These answers are JSON (`{"detail": ...}`) like the app's, but they are given before the app sees the
request, so the app's metrics do not count them. uvicorn's own 400 for a malformed request is JSON too.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol


@dataclass(frozen=True)
class ConnectionLimits:
    """See the module docstring; `ServeSettings` holds the defaults and their descriptions."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_concurrency: int


def limited_protocol(limits: ConnectionLimits) -> partial[LimitedHttpToolsProtocol]:
    """What to give uvicorn as `http=`: the protocol with `limits` bound (picklable, for worker processes)."""
    return partial(LimitedHttpToolsProtocol, limits=limits)


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    body = json.dumps({"detail": "the server is at its limit of requests answered at once "
                                 "(max_concurrency); retry shortly"}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"retry-after", b"1"),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with `limits` on time, header size and concurrency."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline: asyncio.TimerHandle | None = None  # for the part of the request now expected
        self._in_head = True  # expecting a request line and headers (or between requests)
        self._head_bytes = 0  # of the current request's line and headers so far

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("headers", self.limits.header_timeout_s, "header_timeout_s")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The parser gets a request's line and headers only up to the limit, so that nothing holds more.
        while data and self._in_head and not self.transport.is_closing():
            room = self.limits.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse(431, f"the request line and headers are over {self.limits.max_header_bytes} "
                             "bytes (max_header_bytes); send smaller headers")
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
        if data and not self.transport.is_closing():
            super().data_received(data)

    # httptools' callbacks, as it parses: they move the deadline along and choose the app.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a later request on a kept-alive connection: its first byte is here
            self._expect("headers", self.limits.header_timeout_s, "header_timeout_s")

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._expect("body", self.limits.body_timeout_s, "body_timeout_s")
        limit = self.limits.max_concurrency
        busy = len(self.tasks) >= limit  # the requests being answered; this one has no task yet
        if busy:
            self.logger.warning("503: %d requests being answered already (max_concurrency)", limit)
        self.app = _over_capacity if busy else self.config.loaded_app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._stop_deadline()  # answering takes what it takes; then uvicorn's keep-alive timeout applies
        self._in_head, self._head_bytes = True, 0

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, in JSON."""
        self._refuse(400, f"{msg.rstrip('.')}: not a well-formed HTTP/1.1 request")

    def _expect(self, part: str, seconds: float, setting: str) -> None:
        self._stop_deadline()
        self._deadline = self.loop.call_later(seconds, self._too_slow, part, seconds, setting)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self, part: str, seconds: float, setting: str) -> None:
        self._deadline = None
        if self._in_head and self._head_bytes == 0:  # nothing of a request arrived: nothing to answer
            self.transport.close()
            return
        self._refuse(408, f"the request {part} did not arrive within {seconds:g} s ({setting}); send the "
                     "whole request at once")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer `status` (if no answer to this request has begun) and close the connection."""
        client = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
        self.logger.warning("%s%d, connection closed: %s", client, status, detail)
        cycle = self.cycle
        if self._in_head:  # the request has no cycle yet; `cycle` is an earlier request's
            answer = (cycle is None or cycle.response_complete) and not self.pipeline
        else:  # the app may be waiting for the body: it hears a disconnect, and its answer goes nowhere
            answer = not cycle.response_started and not self.pipeline
            cycle.disconnected = True
            cycle.message_event.set()
        if answer and not self.transport.is_closing():
            body = json.dumps({"detail": detail}).encode()
            head = [STATUS_LINE[status], *(name + b": " + value + b"\r\n"
                                           for name, value in self.server_state.default_headers),
                    b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n"]
            self.transport.write(b"".join(head) + body)
        self.transport.close()
