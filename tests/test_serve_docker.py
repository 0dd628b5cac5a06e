"""The Dockerfile, parsed (no Docker engine runs here, so the image is never built in tests)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def commands():
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def _all(commands, cmd):
    return [c for c in commands if c.cmd == cmd]


def _index(commands, predicate):
    return next(i for i, c in enumerate(commands) if predicate(c))


def test_slim_python_base(commands):
    (base,) = _all(commands, "FROM")
    assert re.fullmatch(r"python:3\.\d+-slim", base.value[0])
    assert commands[0].cmd == "FROM"


def test_installs_the_pinned_cpu_torch(commands):
    pin = re.search(r'"(torch==[^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    runs = " && ".join(c.value[0] for c in _all(commands, "RUN"))
    assert f"pip install {pin} --index-url https://download.pytorch.org/whl/cpu" in runs
    # torch comes first, so `pip install .` finds it satisfied instead of pulling the CUDA build.
    torch_at = _index(commands, lambda c: c.cmd == "RUN" and pin in c.value[0])
    package_at = _index(commands, lambda c: c.cmd == "RUN" and re.search(r"pip install \.(\s|$)", c.value[0]))
    assert torch_at < package_at


def test_copies_the_package_then_installs_it(commands):
    copies = _all(commands, "COPY")
    sources = [src for c in copies for src in c.value[:-1]]
    assert "tunetext" in sources and "pyproject.toml" in sources
    copy_at = _index(commands, lambda c: c.cmd == "COPY" and "tunetext" in c.value[:-1])
    install_at = _index(commands, lambda c: c.cmd == "RUN" and re.search(r"pip install \.(\s|$)", c.value[0]))
    assert copy_at < install_at
    # Everything copied must get past .dockerignore, and the rest must not.
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def sent(path: str) -> bool:
        keep = True
        for p in patterns:
            negate = p.startswith("!")
            p = p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, p) or path.startswith(p + "/"):
                keep = negate
        return keep

    for src in sources:
        assert sent(src), f"{src} is copied but .dockerignore leaves it out"
    assert not sent("runs") and not sent(".venv") and not sent("tests")


def test_runs_as_a_non_root_user(commands):
    users = _all(commands, "USER")
    assert users and users[-1].value[0] not in ("root", "0", "0:0")
    user_at = commands.index(users[-1])
    assert user_at > max(i for i, c in enumerate(commands) if c.cmd == "RUN")  # nothing runs as root later
    runs = " ".join(c.value[0] for c in _all(commands, "RUN"))
    assert "useradd" in runs and users[-1].value[0] in runs


def test_starts_tunetext_serve_on_the_mounted_run(commands):
    (entry,) = _all(commands, "ENTRYPOINT")
    assert entry.json  # exec form: signals reach the server, so it stops cleanly
    args = list(entry.value)
    assert args[:3] == ["tunetext", "serve", "/model"]
    from tunetext.cli import build_parser

    parsed = build_parser().parse_args(args[1:])  # the arguments are ones the CLI accepts
    assert parsed.run_dir == "/model" and parsed.port == 8000
    (expose,) = _all(commands, "EXPOSE")
    assert expose.value[0] == str(parsed.port)


def test_healthcheck_probes_health(commands):
    (check,) = _all(commands, "HEALTHCHECK")
    assert check.value[0] == "CMD"
    assert any("http://127.0.0.1:8000/health" in part for part in check.value[1:])
    assert any(f.startswith("--start-period=") for f in check.flags)  # loading the model takes a while
