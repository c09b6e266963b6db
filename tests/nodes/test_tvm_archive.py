"""A TVM module cross-compiled for a device is a .tar of object files, which TVM writes
gzip-compressed: the device unpacks it, within a bound on what it decompresses to."""

import gzip
import io
import random
import tarfile

import pytest
from heiti.nodes.devices.model_store import StoreError, extract_flat


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_gzip_compressed_tvm_archive_unpacks(tmp_path):
    rng = random.Random(0)  # object code compresses a few times, not thousands of times
    files = {"lib0.o": b"\x7fELF" + rng.randbytes(5000), "devc.o": b"\x7fELF" + rng.randbytes(3000)}
    archive = tmp_path / "model.tar"
    archive.write_bytes(gzip.compress(_tar(files)))
    out = extract_flat(archive, tmp_path / "objects", max_bytes=archive.stat().st_size)
    assert {p.name: p.read_bytes() for p in out} == files
    assert not (tmp_path / "objects.plain.tar").exists()


def test_a_plain_tvm_archive_still_unpacks(tmp_path):
    archive = tmp_path / "model.tar"
    archive.write_bytes(_tar({"lib0.o": b"abc"}))
    assert [p.name for p in extract_flat(archive, tmp_path / "objects", max_bytes=archive.stat().st_size)] == ["lib0.o"]


def test_a_gzip_bomb_is_refused_before_it_fills_the_disk(tmp_path):
    archive = tmp_path / "model.tar"
    archive.write_bytes(gzip.compress(_tar({"lib0.o": bytes(20 << 20)})))  # ~20 KB -> 20 MB
    with pytest.raises(StoreError, match="decompresses to more than"):
        extract_flat(archive, tmp_path / "objects", max_bytes=archive.stat().st_size)
    assert not (tmp_path / "objects").exists() and not (tmp_path / "objects.plain.tar").exists()


def test_a_truncated_gzip_archive_is_refused(tmp_path):
    archive = tmp_path / "model.tar"
    archive.write_bytes(gzip.compress(_tar({"lib0.o": bytes(range(256)) * 40}))[:200])
    with pytest.raises(StoreError, match="gzip|tar"):
        extract_flat(archive, tmp_path / "objects", max_bytes=archive.stat().st_size)
