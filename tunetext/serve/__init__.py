"""Serve a finished run over HTTP: `tunetext serve RUN_DIR`, or `create_app(run_dir)` for any ASGI server.

    from tunetext.serve import create_app
    app = create_app("runs/spam")          # then: uvicorn module:app, or TestClient(app)

Endpoints: POST /predict, GET /health, /ready, /info, /metrics, /docs, and a small page at /.
See docs/serving.md.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import ValidationError

from tunetext.backends.onnx import usable_export
from tunetext.config import ConfigError
from tunetext.errors import UsageError
from tunetext.runs import read_run
from tunetext.serve.app import API_KEY_ENV, ServeSettings, create_app
from tunetext.serve.protocol import limited_protocol

__all__ = ["ServeSettings", "create_app", "serve", "serve_settings", "server_options"]

log = logging.getLogger(__name__)

_RUN_DIR_ENV = "TUNETEXT_SERVE_RUN_DIR"
_SETTINGS_ENV = "TUNETEXT_SERVE_SETTINGS"


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info",
          **settings: Any) -> None:
    """Run the service until interrupted. Binds to loopback unless `host` says otherwise (and warns when
    it does without an API key).

    `settings` are `ServeSettings` fields (`workers=2`, `max_texts=16`, ...); those not given, or given as
    None, take its defaults, and a value it refuses is a `ConfigError` naming the field. Each of `workers`
    processes loads the model and runs batches on `threads` inference threads (default: cores // workers),
    one torch thread each. The API key, if any, comes from $TUNETEXT_API_KEY.
    """
    resolved = serve_settings(**settings)
    workers = resolved.workers
    read_run(run_dir)  # fail before starting any process
    # The Rust tokenizer would start a thread pool of its own in every worker; the batch is small.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    exported, _ = (None, "") if resolved.backend == "torch" else usable_export(run_dir)
    log.info("serving %s on http://%s:%d with %d worker(s), %d inference thread(s) each, %s%s", run_dir,
             host, port, workers, resolved.inference_threads(),
             f"ONNX {exported.name}" if exported else "bf16" if resolved.bf16() else "fp32",
             ", API key required" if resolved.api_key else "")
    if resolved.api_key is None and not is_loopback(host):
        log.warning("WARNING: serving on %s, which other machines can reach, WITHOUT an API key: anyone who "
                    "can reach this port can use the model. Set %s, or bind to 127.0.0.1 and put a proxy in "
                    "front. See docs/serving.md.", host, API_KEY_ENV)
    options = server_options(resolved)
    if workers == 1:
        uvicorn.run(create_app(run_dir, resolved), host=host, port=port, log_level=log_level, **options)
        return
    # Several processes: uvicorn imports the app in each, so pass what it needs through the environment,
    # and give prometheus_client a directory where the workers' metrics add up.
    with tempfile.TemporaryDirectory(prefix="tunetext-metrics-") as metrics_dir:
        os.environ[_RUN_DIR_ENV] = str(Path(run_dir).resolve())
        os.environ[_SETTINGS_ENV] = resolved.model_dump_json(exclude={"api_key"})
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        # A worker importing torch and loading a model can hold the GIL for seconds on a busy machine;
        # uvicorn's default 5 s health check would kill and restart it over and over.
        uvicorn.run("tunetext.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level, timeout_worker_healthcheck=120, **options)


def serve_settings(**given: Any) -> ServeSettings:
    """`ServeSettings` from the fields `given` (None: its default), or a `ConfigError` naming each field
    it refuses, the value and why."""
    if "api_key" in given:  # workers read it from the environment, so one given here would not reach them
        raise UsageError(f"the API key comes from ${API_KEY_ENV}, not from an argument")
    try:
        return ServeSettings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(map(str, e["loc"]))
            if e["type"] == "extra_forbidden":
                problems.append(f"{where}: unknown serve setting; the settings are "
                                f"{', '.join(f for f in ServeSettings.model_fields if f != 'api_key')}")
            elif where:
                problems.append(f"{where}: got {e['input']!r}: {e['msg']}")
            else:  # a check across fields
                problems.append(e["msg"].removeprefix("Value error, "))
        raise ConfigError(problems) from None


def server_options(settings: ServeSettings) -> dict[str, Any]:
    """uvicorn's options for `settings`: its httptools protocol with the connection limits (header and
    body timeouts, header size, concurrency; see `tunetext.serve.protocol`), and no WebSockets."""
    return {"http": limited_protocol(settings.connection_limits()), "ws": "none"}


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine: localhost or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name other than localhost: it may resolve to any interface
        return False


def app_from_env():
    """The app of one worker process started by `serve(..., workers=N)`."""
    settings = ServeSettings.model_validate_json(os.environ[_SETTINGS_ENV])
    return create_app(os.environ[_RUN_DIR_ENV], settings)
