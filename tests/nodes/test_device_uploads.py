"""`heiti serve` against uploads and LOAD requests that misbehave on purpose (issue 12): names, sizes,
sparse and lying archives, expired parts, option schemas, native code. Real sockets on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
from pathlib import Path

import pytest
from heiti.nodes.devices.model_store import ModelStore, StoreError, extract_flat
from heiti.nodes.devices.protocol import Channel, ErrorCode, MsgType
from heiti.nodes.devices.server import _link_tvm_archive

from tests.nodes.device_helpers import ServerThread, hello, next_reply, raw_channel

pytestmark = pytest.mark.timeout(120)


# --- uploads --------------------------------------------------------------------------------------------
def _upload(channel: Channel, seq: int, sha: str, size: int, name: str, data: bytes, offset: int = 0,
            packing: str = "file"):
    channel.send(MsgType.UPLOAD_MODEL, {"sha256": sha, "size": size, "name": name, "packing": packing,
                                        "offset": offset}, data=data, seq=seq)
    return next_reply(channel, timeout=10)


def test_upload_name_is_checked_before_a_byte_is_stored(server: ServerThread) -> None:
    channel = raw_channel(server.address)
    try:
        hello(channel, seq=1)
        next_reply(channel)
        data = os.urandom(4096)
        sha = hashlib.sha256(data).hexdigest()
        for seq, (name, packing) in enumerate([("../../etc/passwd", "file"), ("ok.bin", "zip")], start=2):
            reply = _upload(channel, seq, sha, len(data) * 2, name, data, packing=packing)
            assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.BAD_REQUEST
        assert list(server.server.store.partial.iterdir()) == []
    finally:
        channel.close()


def _sparse_tar(path: Path, real_size: int) -> Path:
    """A GNU sparse member that declares `real_size` bytes of holes in a ~2 KB archive."""
    info = tarfile.TarInfo("model/weights.bin")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 0
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[386:398] = b"%011o\0" % (real_size - 1)  # one data run of 0 bytes at the end of the holes
    header[398:410] = b"%011o\0" % 0
    header[483:495] = b"%011o\0" % real_size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header[:512])
    path.write_bytes(bytes(header[:512]) + bytes(1024))
    return path


def test_a_sparse_tar_is_refused_without_filling_the_disk(server: ServerThread, tmp_path: Path) -> None:
    archive = _sparse_tar(tmp_path / "sparse.tar", 512 * 2**20)
    with tarfile.open(archive) as tar:  # what an unchecked extraction would have written
        assert tar.getmembers()[0].size == 512 * 2**20
    data = archive.read_bytes()
    assert len(data) < 4096
    channel = raw_channel(server.address)
    try:
        hello(channel, seq=1)
        next_reply(channel)
        reply = _upload(channel, 2, hashlib.sha256(data).hexdigest(), len(data), "sparse.tar", data, packing="tar")
        assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.UNSAFE_ARCHIVE
    finally:
        channel.close()
    written = sum(f.stat().st_blocks * 512 for f in server.server.store.root.rglob("*") if f.is_file())
    assert written < 2**20


def test_a_tar_whose_members_claim_more_than_it_holds_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "w.bin"
    source.write_bytes(os.urandom(1000))
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(source, "m/w.bin")
    raw = bytearray(archive.read_bytes())
    store = ModelStore(tmp_path / "store")
    # the same archive with a size field far beyond its bytes (an archive "bomb" without holes)
    lying = tmp_path / "lying.tar"
    with tarfile.open(archive) as tar:
        offset = tar.getmembers()[0].offset
    header = raw[offset : offset + 512]
    header[124:136] = b"%011o\0" % (300 * 2**20)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    raw[offset : offset + 512] = header
    lying.write_bytes(bytes(raw))
    with pytest.raises(StoreError) as info:
        store.begin(hashlib.sha256(bytes(raw)).hexdigest(), len(raw), "lying.tar", "tar")
        store.append(hashlib.sha256(bytes(raw)).hexdigest(), len(raw), 0, bytes(raw))
        store.finish(hashlib.sha256(bytes(raw)).hexdigest(), "lying.tar", "tar", len(raw))
    assert info.value.kind in ("unsafe", "too_large")
    assert not list(store.models.iterdir())


def test_tvm_archive_path_is_capped_and_cleans_up_on_failure(tmp_path: Path) -> None:
    sparse = _sparse_tar(tmp_path / "sparse.tar", 256 * 2**20)
    with pytest.raises(ValueError, match="refused"):
        _link_tvm_archive(sparse)
    linky = tmp_path / "linky.tar"
    with tarfile.open(linky, "w") as tar:
        good = tmp_path / "a.o"
        good.write_bytes(b"\0" * 100)
        tar.add(good, "a.o")
        link = tarfile.TarInfo("b.o")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(ValueError, match="refused"):
        _link_tvm_archive(linky)
    assert not list(tmp_path.glob("*.objects"))  # nothing left behind
    assert not list(tmp_path.glob("*.so"))
    with pytest.raises(StoreError):
        extract_flat(linky, tmp_path / "objects")
    assert not (tmp_path / "objects").exists()


def test_sizes_are_checked_against_the_bytes_actually_stored(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    data = os.urandom(10_000)
    sha = hashlib.sha256(data).hexdigest()
    store.begin(sha, len(data), "m.bin", "file")
    assert store.append(sha, len(data), 0, data[:6000]) == 6000
    with open(store.partial / f"{sha}.part", "r+b") as f:  # the disk lost a tail (or someone truncated it)
        f.truncate(5000)
    with pytest.raises(StoreError, match="resend from 5000"):
        store.append(sha, len(data), 6000, data[6000:])
    with pytest.raises(StoreError) as info:
        store.finish(sha, "m.bin", "file", len(data))
    assert info.value.kind == "mismatch" and not store.is_complete(sha)


def test_parts_of_dropped_uploads_expire(tmp_path: Path) -> None:
    running = ServerThread(tmp_path / "device", partial_ttl=0.5)
    try:
        data = os.urandom(8192)
        sha = hashlib.sha256(data).hexdigest()
        channel = raw_channel(running.address)
        hello(channel, seq=1)
        next_reply(channel)
        assert _upload(channel, 2, sha, len(data), "m.bin", data[:4096]).fields["offset"] == 4096
        channel.close()  # the link drops mid-upload
        part = running.server.store.partial / f"{sha}.part"
        assert part.exists()  # a reconnecting client may resume it for a while ...
        deadline = time.monotonic() + 3
        while part.exists() and time.monotonic() < deadline:  # ... then its bytes go, with no request
            time.sleep(0.05)
        assert not part.exists()
    finally:
        running.stop()


# --- LOAD -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("runtime", "options", "match"), [
    ("torch", {"meta": {"arch": "cnn", "arch_config": {"input_shape": [1, 8, 8], "num_classes": 250_000_000}}},
     "num_classes"),
    ("onnxruntime", {"threads": 10_000}, "threads"),
    ("onnxruntime", {"providers": ["CUDAExecutionProvider"]}, "providers"),
    ("openvino", {"device": "GPU"}, "device"),
    ("tvm", {"entry": "main; import os"}, "entry"),
    ("onnxruntime", {"inputs": [{"name": "x", "shape": [10**9]}]}, "inputs"),
])
def test_load_options_are_checked_by_a_schema(tmp_path: Path, runtime: str, options: dict, match: str) -> None:
    running = ServerThread(tmp_path / "device", allow_native=True)
    channel = raw_channel(running.address)
    try:
        hello(channel, seq=1)
        next_reply(channel)
        channel.send(MsgType.LOAD, {"sha256": "a" * 64, "entry": "m", "runtime": runtime, "options": options}, seq=2)
        reply = next_reply(channel)
        assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.BAD_REQUEST
        assert match in reply.fields["message"]
    finally:
        channel.close()
        running.stop()


def test_a_torch_sidecar_in_the_upload_is_checked_like_the_options(server: ServerThread, tmp_path: Path) -> None:
    """LOAD with no arch in its meta makes torch read `model.json` beside the weights: an uploaded
    sidecar must not smuggle in the architecture the options schema refuses."""
    import io
    import json

    archive = tmp_path / "m.tar"
    with tarfile.open(archive, "w") as tar:
        for name, body in [("m/model.pt", b"not weights"), ("m/model.json", json.dumps(
                {"arch": "cnn", "arch_config": {"input_shape": [1, 8, 8], "num_classes": 250_000_000}}).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    data = archive.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    channel = raw_channel(server.address)
    try:
        hello(channel, seq=1)
        next_reply(channel)
        assert _upload(channel, 2, sha, len(data), "m.tar", data, packing="tar").fields["complete"] is True
        channel.send(MsgType.LOAD, {"sha256": sha, "entry": "m/model.pt", "runtime": "torch",
                                    "options": {"meta": {"task": "classification"}}}, seq=3)
        reply = next_reply(channel, timeout=10)
        assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.BAD_REQUEST
        assert "num_classes" in reply.fields["message"]
    finally:
        channel.close()


@pytest.mark.heavy  # imports TVM to try the (junk) library: ~25 s on a loaded 2-core machine
def test_native_code_needs_a_token_or_allow_native(tmp_path: Path) -> None:
    junk = b"\x7fELF not really a library"
    sha = hashlib.sha256(junk).hexdigest()
    cases = [({}, "", ErrorCode.NATIVE_REFUSED), ({"token": "t0k"}, "t0k", ErrorCode.LOAD_FAILED),
             ({"allow_native": True}, "", ErrorCode.LOAD_FAILED)]
    for i, (kwargs, token, expected) in enumerate(cases):
        running = ServerThread(tmp_path / f"device{i}", **kwargs)
        channel = raw_channel(running.address)
        try:
            hello(channel, seq=1, token=token)
            assert next_reply(channel).type == MsgType.HELLO
            assert _upload(channel, 2, sha, len(junk), "m.so", junk).fields["complete"] is True
            channel.send(MsgType.LOAD, {"sha256": sha, "entry": "m.so", "runtime": "tvm", "options": {}}, seq=3)
            reply = next_reply(channel, timeout=60)
            assert reply.type == MsgType.ERROR and reply.fields["code"] == expected, reply.fields
        finally:
            channel.close()
            running.stop()
