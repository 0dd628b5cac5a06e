"""The service against hostile or careless clients: slow and oversized requests on a real socket, too costly
or empty requests, cross-site requests, the API key's scheme, unhandled errors, the CLI's port. Sections
are numbered as the findings of issue 11."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pickle
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi.testclient import TestClient

from tunetext import Classifier
from tunetext.predict import has_content
from tunetext.serve import ServeSettings, create_app, server_options
from tunetext.serve.protocol import ConnectionLimits, LimitedHttpToolsProtocol

TIMEOUT = 0.5  # header and body timeouts of the live server, in seconds
GOOD = b'{"text": "see you at 7"}'
# Each of these is a text the tiny BERT's tokenizer reduces to [CLS] [SEP]: before the fix, a prediction.
NO_CONTENT = ["\x00\x00\x00", "\u200b\u200b", "\u0301\u0308", "\ufeff \x07 \u200d", "\ufffd", "\U000f0000"]


# ---- a live server and a raw client ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def port(trained_run, live_server) -> Iterator[int]:
    settings = ServeSettings(header_timeout_s=TIMEOUT, body_timeout_s=TIMEOUT, max_header_bytes=4096,
                             max_concurrency=3, threads=1, precision="fp32")
    with live_server(create_app(trained_run, settings)) as p:
        yield p


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(5)  # far longer than TIMEOUT: a server without timeouts fails the test here
    return sock


def until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    start, received = time.monotonic(), b""
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"the connection was still open after 5 s; got {received!r}") from None
            if not chunk:
                break
            received += chunk
    return received, time.monotonic() - start


def status_and_body(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def read_response(sock: socket.socket) -> bytes:
    """One response (with a Content-Length) from a connection that stays open."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def post(port: int, body: bytes = GOOD, headers: bytes = b"Content-Type: application/json\r\n") -> int:
    """Status of one complete POST /predict on a new connection."""
    sock = connect(port)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers
                 + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return status_and_body(until_closed(sock)[0])[0]


# ---- 7: header and body timeouts, concurrency ------------------------------------------------------------

def test_slow_headers_are_answered_408_and_every_slow_connection_is_closed(port):
    slow = [connect(port) for _ in range(20)]  # slow loris: many connections, each a few bytes at a time
    for sock in slow:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    idle = connect(port)  # connects and sends nothing
    answers = [until_closed(sock) for sock in [*slow, idle]]
    for _, seconds in answers:
        assert seconds < TIMEOUT + 1.5
    for response, _ in answers[:-1]:
        status, body = status_and_body(response)
        assert status == 408 and "header_timeout_s" in body["detail"]
    assert answers[-1][0] == b""  # nothing was asked, so nothing is answered
    assert post(port) == 200


def test_a_slow_body_is_answered_408_and_closed(port):
    sock = connect(port)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"text\": ")
    response, seconds = until_closed(sock)
    status, body = status_and_body(response)
    assert status == 408 and "body_timeout_s" in body["detail"]
    assert TIMEOUT * 0.8 < seconds < TIMEOUT + 1.5
    assert post(port) == 200


def test_a_kept_alive_connection_gets_the_header_timeout_for_each_request(port):
    sock = connect(port)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(3):  # well-behaved requests, spaced out: none is cut
        sock.sendall(request)
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(TIMEOUT * 0.6)
    sock.sendall(request[:20])  # then a request that never ends
    response, seconds = until_closed(sock)
    assert status_and_body(response)[0] == 408 and seconds < TIMEOUT + 1.5


def test_beyond_max_concurrency_a_request_is_503(port):
    # Three requests being answered (max_concurrency=3): their headers are in, their bodies still coming.
    held = [connect(port) for _ in range(3)]
    for s in held:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD[:5])
    time.sleep(0.1)  # well within the 0.5 s body timeout
    sock = connect(port)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(GOOD) + GOOD)
    response, _ = until_closed(sock)
    status, body = status_and_body(response)
    assert status == 503 and "max_concurrency" in body["detail"]
    assert b"retry-after: 1" in response.lower()
    for s in held:
        s.close()
    deadline = time.monotonic() + 5
    while post(port) != 200:  # the server notices the closed connections at once, but not instantly
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_idle_and_slow_connections_do_not_lock_others_out(port):
    idle = [connect(port) for _ in range(3)]  # as many as max_concurrency, kept alive after a request
    for s in idle:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(s).startswith(b"HTTP/1.1 200")
    slow = [connect(port) for _ in range(10)]  # and more than that still sending their headers
    for s in slow:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
    assert post(port) == 200
    for s in idle + slow:
        s.close()


# ---- 8: header size --------------------------------------------------------------------------------------

def test_a_huge_header_is_refused_at_once_and_the_server_keeps_answering(port):
    sock = connect(port)
    start = time.monotonic()
    # The server may close the connection before it has taken the whole megabyte: as it should.
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(b"GET /info HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
    response, _ = until_closed(sock)
    assert time.monotonic() - start < 2
    if response:  # the 431 may be lost when the connection is reset under it
        status, body = status_and_body(response)
        assert status == 431 and "max_header_bytes" in body["detail"]
    assert post(port) == 200


class _Transport:
    """Just enough of an asyncio transport for the protocol."""

    def __init__(self) -> None:
        self.written, self.closed = b"", False

    def get_extra_info(self, name: str, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class _CountingParser:
    def __init__(self, parser) -> None:
        self.parser, self.fed = parser, 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.parser.feed_data(data)

    def __getattr__(self, name: str):
        return getattr(self.parser, name)


def test_a_huge_header_never_reaches_the_parser_beyond_the_limit():
    async def main():
        async def app(scope, receive, send):
            raise AssertionError("the app must not be called")

        limits = ConnectionLimits(header_timeout_s=10, body_timeout_s=10, max_header_bytes=4096,
                                  max_concurrency=10)
        config = uvicorn.Config(app, log_level="warning")
        config.load()
        protocol = LimitedHttpToolsProtocol(config=config, server_state=uvicorn.server.ServerState(),
                                            app_state={}, limits=limits)
        transport = _Transport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        parser = protocol.parser = _CountingParser(protocol.parser)  # type: ignore[assignment]
        protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
        for _ in range(16):  # a megabyte, in the chunks a socket delivers
            if transport.closed:
                break
            protocol.data_received(b"a" * 65536)
        protocol.connection_lost(None)
        return parser.fed, transport

    fed, transport = asyncio.run(main())
    assert transport.closed and fed == 4096
    status, body = status_and_body(transport.written)
    assert status == 431 and "4096 bytes (max_header_bytes)" in body["detail"]


def test_the_options_travel_to_worker_processes():
    options = server_options(ServeSettings(header_timeout_s=3))
    again = pickle.loads(pickle.dumps(options))  # uvicorn sends its config to each worker pickled
    assert again["http"].keywords["limits"] == ConnectionLimits(3, 30, 16_384, 256)
    assert again["http"].func is LimitedHttpToolsProtocol


# ---- 9: the per-request token budget ---------------------------------------------------------------------

@contextmanager
def running(run_dir, **settings):
    settings.setdefault("precision", "fp32")
    with TestClient(create_app(run_dir, ServeSettings(**settings)), raise_server_exceptions=False) as client:
        yield client


def test_a_request_over_the_token_budget_is_413_saying_what_it_cost(trained_run):
    clf = Classifier.load(trained_run)
    window = clf.config.model.max_length
    long = " ".join(["prize"] * 3 * window)  # truncated: it costs `window` tokens, not 3x as many
    with running(trained_run, max_request_tokens=2 * window) as c:
        assert c.post("/predict", json={"texts": [long, long]}).status_code == 200
        r = c.post("/predict", json={"texts": [long, long, "ok"]})
        assert r.status_code == 413
        detail = r.json()["detail"]
        cost = 2 * window + 3  # "ok" is [CLS] ok [SEP]
        assert f"costs {cost} tokens (3 text(s)" in detail
        assert f"max_length of {window}" in detail
        assert f"limit is {2 * window} tokens per request (max_request_tokens)" in detail
        assert "--max-request-tokens" in detail
        assert c.post("/predict", json={"text": "ok"}).status_code == 200
    assert ServeSettings().max_request_tokens == 8192


def test_a_full_queue_refuses_a_request_before_tokenizing_it(trained_run):
    from tunetext.serve.batching import Engine

    measured = []
    with running(trained_run, max_texts=2, max_queue=2) as c:
        state = c.app.state.tunetext
        real = Engine.measure

        def spy(self, texts):
            measured.append(texts)
            return real(self, texts)

        state.engine.measure = spy.__get__(state.engine)
        assert c.post("/predict", json={"text": "ok"}).status_code == 200 and len(measured) == 1
        state.batcher._pending.extend([object(), object()])  # the queue is full
        r = c.post("/predict", json={"text": "x" * 100_000})
        assert r.status_code == 503 and "max_queue=2" in r.json()["detail"]
        assert r.headers["retry-after"] == "1"
        assert len(measured) == 1  # refused before any tokenizing
        state.batcher._pending.clear()


# ---- 10: texts with nothing to classify ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "content"), [
    *[(t, False) for t in [*NO_CONTENT, "", " \t\n"]],
    *[(t, True) for t in ["a", "7", "!", "😀", "€", "日本", "e\u0301", "\u200bhi\u200b"]],
])
def test_content_is_a_letter_digit_punctuation_mark_or_symbol(text, content):
    assert has_content(text) is content


def test_a_text_with_nothing_to_classify_is_422_naming_its_position(client_for_content):
    c = client_for_content
    for i, bad in enumerate(NO_CONTENT):
        r = c.post("/predict", json={"texts": ["a real text", bad, "😀"]})
        assert r.status_code == 422, (i, r.text)
        error = r.json()
        assert [e["field"] for e in error["errors"]] == ["texts[1]"]
        assert "letter, digit, punctuation mark or symbol" in error["detail"]
        r = c.post("/predict", json={"text": bad})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "text"
    assert c.post("/predict", json={"texts": ["!!!", "😀", "e\u0301"]}).status_code == 200


@pytest.fixture(scope="module")
def client_for_content(trained_run):
    with running(trained_run) as c:
        yield c


def test_classifier_predict_refuses_a_text_with_nothing_to_classify(trained_run):
    clf = Classifier.load(trained_run)
    with pytest.raises(ValueError, match=r"letter, digit, punctuation mark or symbol.*position\(s\) 1, 3$"):
        clf.predict(["fine", "\u200b\u200b", "also fine", "\x00"])
    with pytest.raises(ValueError, match=r"position\(s\) 0$"):
        clf.predict("\u0301")
    assert clf.predict("😀").label in clf.label_names


# ---- 11: the body must be declared JSON ------------------------------------------------------------------

@pytest.mark.parametrize(("content_type", "status"), [
    (b"application/json", 200),
    (b"application/json; charset=utf-8", 200),
    (b"Application/JSON;charset=\"UTF-8\"", 200),
    (b"text/plain", 415),  # what a cross-site form or fetch can send without a CORS preflight
    (b"text/plain; charset=utf-8", 415),
    (b"application/x-www-form-urlencoded", 415),
    (b"multipart/form-data; boundary=x", 415),
    (b"application/json; charset=latin-1", 415),
    (b"application/jsonx", 415),
    (None, 415),
])
def test_post_needs_content_type_json(client_for_content, content_type, status):
    headers = {"Content-Type": content_type.decode()} if content_type else {}
    r = client_for_content.post("/predict", content=GOOD, headers=headers)
    assert r.status_code == status, r.text
    if status == 415:
        assert "Content-Type" in r.json()["detail"] and "application/json" in r.json()["detail"]


def test_the_page_sends_json(client_for_content):
    page = client_for_content.get("/").text
    assert 'const h = { "Content-Type": "application/json" };' in page
    assert 'fetch("predict", { method: "POST", headers: headers(),' in page


# ---- 12: a public address without a key ------------------------------------------------------------------

@pytest.mark.parametrize(("host", "key", "warned"), [
    ("0.0.0.0", None, True), ("::", None, True), ("192.168.1.20", None, True), ("myhost.example", None, True),
    ("0.0.0.0", "k", False), ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
])
def test_serving_beyond_loopback_without_a_key_warns(monkeypatch, caplog, trained_run, host, key, warned):
    from tunetext.serve import serve

    monkeypatch.setenv("TUNETEXT_API_KEY", key or "")
    started = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(kw))
    with caplog.at_level(logging.WARNING, logger="tunetext.serve"):
        serve(trained_run, host=host)
    assert started["host"] == host and started["http"].func is LimitedHttpToolsProtocol
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert bool(warnings) is warned
    if warned:
        assert "WITHOUT an API key" in warnings[0] and "TUNETEXT_API_KEY" in warnings[0]


# ---- 13: unhandled errors, the key's scheme, the port ----------------------------------------------------

def test_an_unhandled_error_is_a_json_500_without_details(trained_run):
    def broken(texts):
        raise RuntimeError("secret: /home/me/model.bin failed")

    with running(trained_run) as c:
        c.app.state.tunetext.batcher.engine = broken
        r = c.post("/predict", json={"text": "hello"})
        assert r.status_code == 500 and r.headers["content-type"] == "application/json"
        assert "server's log" in r.json()["detail"]
        assert "secret" not in r.text and "Traceback" not in r.text and "RuntimeError" not in r.text


def test_the_bearer_scheme_is_case_insensitive(trained_run):
    with running(trained_run, api_key="s3cret") as c:
        for value in ("Bearer s3cret", "bearer s3cret", "BEARER s3cret", "bEaReR  s3cret"):
            assert c.get("/info", headers={"Authorization": value}).status_code == 200, value
        for value in ("Basic s3cret", "s3cret", "Bearer", "Bearer s3cret2", "Bearers3cret", "bearer S3CRET"):
            assert c.get("/info", headers={"Authorization": value}).status_code == 401, value
        # The key comes before the body's type: no key and text/plain is 401, not 415.
        r = c.post("/predict", content=GOOD, headers={"Content-Type": "text/plain"})
        assert r.status_code == 401


@pytest.mark.parametrize("port_arg", ["99999", "0", "-1", "65536", "http", "80.5"])
def test_a_bad_port_is_a_usage_error(capsys, port_arg):
    from tunetext import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["serve", "runs/x", "--port", port_arg])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and f"--port: must be a whole number from 1 to 65535, got '{port_arg}'" in err


def test_cli_passes_the_limits_to_serve(monkeypatch, trained_run):
    from tunetext import cli

    seen = {}
    monkeypatch.setattr("tunetext.serve.serve", lambda run_dir, **kw: seen.update(kw))
    assert cli.main(["serve", str(trained_run), "--port", "65535", "--max-request-tokens", "100",
                     "--header-timeout", "1.5", "--body-timeout", "2", "--max-header-bytes", "2048",
                     "--max-concurrency", "9"]) == 0
    assert seen["port"] == 65535
    assert [seen[k] for k in ("max_request_tokens", "header_timeout_s", "body_timeout_s", "max_header_bytes",
                              "max_concurrency")] == [100, 1.5, 2.0, 2048, 9]
    seen.clear()
    assert cli.main(["serve", str(trained_run)]) == 0
    assert "header_timeout_s" not in seen  # unset: ServeSettings' default applies
