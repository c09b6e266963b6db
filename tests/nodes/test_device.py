"""`heiti serve` and the remote session over real sockets on 127.0.0.1 (serial lines are in
test_device_serial.py).

Every wait is bounded: servers run with short frame timeouts, clients with short request timeouts,
and a per-test timeout keeps a broken link from hanging the suite.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
import threading
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from engine.payloads import ModelArtifact
from engine.protocol import VERSION, ErrorCode, MsgType, frame_message
from nodes.device_server import main
from nodes.targets import DeviceError, open_remote_session, pack_model
from tests.nodes.device_helpers import (
    ServerThread,
    hello,
    local_run,
    make_onnx,
    next_reply,
    raw_channel,
    tcp_target,
)

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path):
    running = ServerThread(tmp_path / "device")
    yield running
    running.stop()


# --- TCP ----------------------------------------------------------------------------------------------
def test_remote_onnx_equals_in_process_and_streams_device_stats(server: ServerThread, tmp_path: Path) -> None:
    model_path = make_onnx(tmp_path / "m.onnx", (1, 3, 224, 224))
    x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)  # the 602 KB input
    stats: list[dict] = []
    session = open_remote_session(tcp_target(server.address), "onnxruntime",
                                  ModelArtifact(path=model_path, model_format="onnx"), {"threads": 1}, stats.append)
    try:
        assert session.inputs[0]["name"] == "x" and session.outputs[0]["shape"] == [1, 10]
        assert "onnxruntime" in session.device_info["runtimes"] and session.uploaded
        started = time.perf_counter()
        while time.perf_counter() - started < 0.5:
            (y,) = session.run([x])
        np.testing.assert_allclose(y, local_run(model_path, x), rtol=1e-5, atol=1e-6)
        assert 0 < session.last_device_ms < 1000
    finally:
        session.close()
    assert stats, "no STATS arrived while the session was open"
    sample = stats[-1]
    assert {"t", "cpu_percent", "rss_mb", "mem_percent"} <= sample.keys()
    assert abs(sample["t"] - time.perf_counter()) < 5  # mapped onto this host's perf_counter clock
    again = open_remote_session(tcp_target(server.address), "onnxruntime", ModelArtifact(path=model_path, model_format="onnx"))
    try:
        assert not again.uploaded  # same SHA-256: the device kept it
    finally:
        again.close()


def test_model_with_side_files_is_packed_and_runs(server: ServerThread, tmp_path: Path) -> None:
    model_path = make_onnx(tmp_path / "ext.onnx", (2, 4), external=True)
    bundle = pack_model(model_path, "onnx")
    assert bundle.packing == "tar" and bundle.entry == "ext.onnx"
    assert pack_model(model_path, "onnx").sha256 == bundle.sha256  # deterministic archive
    bundle.cleanup()
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    session = open_remote_session(tcp_target(server.address), "onnxruntime", ModelArtifact(path=model_path, model_format="onnx"))
    try:
        np.testing.assert_allclose(session.run([x])[0], local_run(model_path, x), rtol=1e-5)
    finally:
        session.close()


def test_archive_with_path_traversal_or_links_is_refused(server: ServerThread, tmp_path: Path) -> None:
    import hashlib

    for name, kind in (("../evil.txt", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        archive = tmp_path / "bad.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            payload = b"owned" if kind == tarfile.REGTYPE else b""
            info.size = len(payload)
            tar.addfile(info, __import__("io").BytesIO(payload))
        data = archive.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        channel = raw_channel(server.address)
        try:
            hello(channel)
            assert next_reply(channel).type == MsgType.HELLO
            channel.send(MsgType.UPLOAD_MODEL, {"sha256": sha, "size": len(data), "name": "bad.tar", "packing": "tar",
                                                "offset": 0}, data=data, seq=2)
            reply = next_reply(channel)
            assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.UNSAFE_ARCHIVE
        finally:
            channel.close()
    assert not (server.server.store.root / "evil.txt").exists()
    assert not (server.server.store.root.parent / "evil.txt").exists()


def test_wrong_token_is_refused_and_the_right_one_accepted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    running = ServerThread(tmp_path / "device", token="s3cret")
    model = ModelArtifact(path=make_onnx(tmp_path / "m.onnx", (1, 4)), model_format="onnx")
    try:
        with pytest.raises(DeviceError) as info:
            open_remote_session(tcp_target(running.address, token="guess", retries=3), "onnxruntime", model)
        assert info.value.code == ErrorCode.UNAUTHORIZED and "token" in str(info.value)
        time.sleep(0.1)
        assert capsys.readouterr().err.count("wrong token") == 1  # refused once, not retried
        session = open_remote_session(tcp_target(running.address, token="s3cret"), "onnxruntime", model)
        session.close()
    finally:
        running.stop()


def test_non_loopback_bind_needs_a_token(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = Namespace(tcp="0.0.0.0:0", serial=None, baud=115200, token=None, workdir=str(tmp_path), stats_period=0.5)
    os.environ.pop("HEITI_TOKEN", None)
    assert main(args) == 2
    assert "--token" in capsys.readouterr().err


@pytest.mark.parametrize("fault", ["garbage", "bad_crc", "truncated", "oversize", "vanish"])
def test_server_survives_bad_frames_and_answers_the_next_one(server: ServerThread, fault: str) -> None:
    channel = raw_channel(server.address)
    transport = channel.transport
    try:
        good = b"".join(bytes(p) for p in frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=7))
        if fault == "garbage":
            transport.write([os.urandom(5000)], timeout=2)
            expected = ErrorCode.GARBAGE
        elif fault == "bad_crc":
            damaged = bytearray(good)
            damaged[25] ^= 0xFF
            transport.write([bytes(damaged)], timeout=2)
            expected = ErrorCode.BAD_CRC
        elif fault == "truncated":
            transport.write([good[:-6]], timeout=2)
            expected = ErrorCode.TRUNCATED
        elif fault == "oversize":
            huge = frame_message(MsgType.UPLOAD_MODEL, {}, data=b"\0" * 64, seq=9)
            head = bytearray(bytes(huge[0]))
            head[12:16] = (server.server.max_payload + 1).to_bytes(4, "big")
            import zlib

            head[16:20] = zlib.crc32(bytes(head[:16])).to_bytes(4, "big")
            transport.write([bytes(head)], timeout=2)
            expected = ErrorCode.OVERSIZE
        else:  # a client that sends half a frame and goes away
            transport.write([good[:10]], timeout=2)
            channel.close()
            channel = raw_channel(server.address)
            transport = channel.transport
            expected = None
        if expected is not None:
            reply = next_reply(channel)
            assert reply.type == MsgType.ERROR and reply.fields["code"] == expected
            if fault == "oversize":
                channel.close()  # the device would skip the announced bytes: start a clean link
                channel = raw_channel(server.address)
                transport = channel.transport
        transport.write([good], timeout=2)
        reply = next_reply(channel)
        assert reply.type == MsgType.HELLO and reply.seq == 7 and reply.is_reply
    finally:
        channel.close()


def test_requests_before_hello_and_unknown_types_get_errors(server: ServerThread) -> None:
    channel = raw_channel(server.address)
    try:
        channel.send(MsgType.INFER, {}, [np.zeros(3, np.float32)], seq=1)
        assert next_reply(channel).fields["code"] == ErrorCode.HELLO_FIRST
        hello(channel, seq=2)
        assert next_reply(channel).type == MsgType.HELLO
        channel.send(MsgType.INFER, {}, [np.zeros(3, np.float32)], seq=3)
        assert next_reply(channel).fields["code"] == ErrorCode.NO_SESSION
        channel.send(0x55, {}, seq=4)
        assert next_reply(channel).fields["code"] == ErrorCode.UNKNOWN_TYPE
        channel.send(MsgType.PING, seq=5)
        assert next_reply(channel).type == MsgType.PING
    finally:
        channel.close()


class CuttingProxy:
    """Forwards TCP to the server; the first connection is cut after `budget` client bytes."""

    def __init__(self, target_port: int, budget: int) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.target_port, self.budget, self.cuts = target_port, budget, 0
        self.forwarded = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            cut = self.cuts == 0
            self.cuts += 1
            threading.Thread(target=self._pump, args=(client, upstream, cut), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, cut: bool) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if cut and sent + len(data) > self.budget:
                    dst.sendall(data[: self.budget - sent])
                    break
                dst.sendall(data)
                sent += len(data)
                self.forwarded += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


def test_link_dropped_mid_upload_is_reported_then_resumed_on_retry(server: ServerThread, tmp_path: Path) -> None:
    # a 4 MB model so that the upload spans several 1 MiB chunks
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((1000, 1000)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])], initializer=[weight])
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx_model.ir_version = 9
    model_path = tmp_path / "big.onnx"
    onnx.save(onnx_model, str(model_path))
    model = ModelArtifact(path=model_path, model_format="onnx")
    size = model_path.stat().st_size

    proxy = CuttingProxy(server.port, budget=2_600_000)
    try:
        with pytest.raises(DeviceError) as info:
            open_remote_session(tcp_target(proxy.address, retries=0), "onnxruntime", model)
        message = str(info.value)
        assert re.search(r"uploaded \d\.\d of 4\.0 MB, then the upload failed", message), message
        stored = server.server.store.offset(pack_model(model_path, "onnx").sha256)
        assert 0 < stored < size
        session = open_remote_session(tcp_target(proxy.address, retries=2), "onnxruntime", model)
        try:
            x = np.ones((1, 1000), np.float32)
            np.testing.assert_allclose(session.run([x])[0], local_run(model_path, x), rtol=1e-4)
        finally:
            session.close()
        assert proxy.forwarded < 2 * size  # the second upload resumed instead of starting over
    finally:
        proxy.close()


def _start_cli_server(workdir: Path, address: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--tcp", address, "--workdir", str(workdir),
                             "--stats-period", "0.2"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"listening on tcp [\d.]+:(\d+)", line)
        if match:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("heiti serve did not start")


def test_server_restart_is_reported_and_a_retry_reconnects(tmp_path: Path) -> None:
    model_path = make_onnx(tmp_path / "m.onnx", (1, 4))
    model = ModelArtifact(path=model_path, model_format="onnx")
    x = np.ones((1, 4), np.float32)
    first, port = _start_cli_server(tmp_path / "device", "127.0.0.1:0")
    servers = [first]
    try:
        session = open_remote_session(tcp_target(f"127.0.0.1:{port}", retries=0), "onnxruntime", model)
        try:
            session.run([x])
            first.kill()
            first.wait(10)
            with pytest.raises(DeviceError) as info:
                session.run([x])
            assert "ran 1 inference, then inference 2 failed" in str(info.value)
            servers.append(_start_cli_server(tmp_path / "device", f"127.0.0.1:{port}")[0])
            session._client.retries = 3
            np.testing.assert_allclose(session.run([x])[0], local_run(model_path, x), rtol=1e-5)
        finally:
            session.close()
    finally:
        for proc in servers:  # never leave a server process behind, whatever failed
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)


def test_unreachable_device_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    model = ModelArtifact(path=make_onnx(tmp_path / "m.onnx", (1, 4)), model_format="onnx")
    started = time.monotonic()
    with pytest.raises(DeviceError) as info:
        open_remote_session(tcp_target(f"127.0.0.1:{free_port}", retries=2), "onnxruntime", model)
    assert time.monotonic() - started < 5
    assert "nothing done yet, then connecting failed" in str(info.value) and "3 attempts" in str(info.value)


def test_missing_runtime_is_named(server: ServerThread, tmp_path: Path) -> None:
    model = ModelArtifact(path=make_onnx(tmp_path / "m.onnx", (1, 4)), model_format="onnx")
    with pytest.raises(DeviceError, match="runtime 'nope' is not installed"):
        open_remote_session(tcp_target(server.address), "nope", model)


# --- target nodes -----------------------------------------------------------------------------------
def test_target_nodes_describe_the_device_or_fail_clearly(server: ServerThread, tmp_path: Path) -> None:
    from engine.executor import Executor
    from engine.graph import Graph
    from engine.registry import Registry
    from nodes.targets import LocalTarget, SerialTarget, TcpTarget

    registry = Registry()
    for cls in (LocalTarget, TcpTarget, SerialTarget):
        registry.register(cls)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    graph = Graph(name="targets")
    graph.add_node("target.local", "here")
    graph.add_node("target.tcp", "board", {"address": server.address, "timeout_s": 2})
    graph.add_node("target.tcp", "nobody", {"address": f"127.0.0.1:{free_port}", "timeout_s": 1, "retries": 0})
    result = Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / "run")
    assert result.outputs["here"]["target"].kind == "local"
    board = result.outputs["board"]["target"]
    assert (board.kind, board.address) == ("tcp", server.address)
    assert "onnxruntime" in board.options["device"]["runtimes"]
    assert result.states["nobody"] == "failed"
    assert "heiti serve" in result.errors["nobody"] and "connecting failed" in result.errors["nobody"]
    with pytest.raises(ValueError, match="HOST:PORT"):
        TcpTarget.Params(address="no port here")


@pytest.mark.heavy
def test_tvm_archive_is_linked_on_the_device_and_runs(server: ServerThread, tmp_path: Path) -> None:
    """What a board does with a module cross-compiled for it: here the 'board' is this host's CPU."""
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    model_path = make_onnx(tmp_path / "m.onnx", (1, 16))
    mod = from_onnx(onnx.load(str(model_path)), shape_dict={"x": [1, 16]})
    target = tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu()})
    archive = tmp_path / "model.tar"
    tvm.compile(mod, target=target).export_library(str(archive))
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    description = [{"name": "x", "shape": [1, 16], "dtype": "float32"}]
    session = open_remote_session(tcp_target(server.address, timeout_s=60), "tvm",
                                  ModelArtifact(path=archive, model_format="tvm"),
                                  {"inputs": description, "outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32"}]})
    try:
        np.testing.assert_allclose(session.run([x])[0], local_run(model_path, x), rtol=1e-4, atol=1e-5)
    finally:
        session.close()
    assert list(server.server.store.models.glob("*/model.linked.so"))


def test_slow_link_is_served_not_cut_off(server: ServerThread) -> None:
    """A frame dribbling in byte groups, each gap shorter than the frame timeout, is still a frame."""
    channel = raw_channel(server.address)
    try:
        whole = b"".join(bytes(p) for p in frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=4))
        started = time.monotonic()
        for i in range(0, len(whole), 4):
            channel.transport.write([whole[i : i + 4]], timeout=2)
            time.sleep(0.06)
        assert time.monotonic() - started > server.server.frame_timeout  # longer than a stall may last
        reply = next_reply(channel)
        assert reply.type == MsgType.HELLO and reply.seq == 4
    finally:
        channel.close()


def test_folder_model_is_uploaded_as_a_safe_tar(server: ServerThread, tmp_path: Path) -> None:
    from nodes.device_client import DeviceClient

    folder = tmp_path / "model_ir"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.xml").write_text("<net/>")
    (folder / "model.bin").write_bytes(os.urandom(3000))
    (folder / "sub" / "extra.json").write_text("{}")
    bundle = pack_model(folder, "openvino")
    assert (bundle.packing, bundle.entry) == ("tar", "model_ir")
    client = DeviceClient(tcp_target(server.address))
    try:
        client.connect()
        assert client.upload(bundle) is True
        assert client.upload(bundle) is False  # already there
    finally:
        client.close()
        bundle.cleanup()
    stored = server.server.store.entry_path(bundle.sha256, "model_ir")
    assert (stored / "model.bin").read_bytes() == (folder / "model.bin").read_bytes()
    assert (stored / "sub" / "extra.json").exists()


def test_fuzzed_requests_get_replies_and_the_server_keeps_serving(server: ServerThread) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    channel = raw_channel(server.address)
    hello(channel, seq=1)
    assert next_reply(channel).type == MsgType.HELLO
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                               max_leaves=6)
    keys = st.sampled_from(["sha256", "size", "offset", "name", "packing", "entry", "runtime", "options", "protocol", "x"])
    seqs = iter(range(100, 10**6))

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([MsgType.UPLOAD_MODEL, MsgType.LOAD, MsgType.INFER, MsgType.PING, 0x42]),
           st.dictionaries(keys, json_values, max_size=5), st.booleans())
    def probe(msg_type: int, fields: dict, with_data: bool) -> None:
        seq = next(seqs)
        channel.send(msg_type, fields, [np.zeros(2, np.float32)] if msg_type == MsgType.INFER else (),
                     data=b"xyz" if with_data else None, seq=seq)
        reply = next_reply(channel)
        assert reply.seq == seq and reply.is_reply

    try:
        probe()
        channel.send(MsgType.PING, seq=7)
        assert next_reply(channel).type == MsgType.PING
    finally:
        channel.close()



def test_silent_clients_are_turned_away_then_dropped(tmp_path: Path) -> None:
    running = ServerThread(tmp_path / "device", max_links=2, hello_timeout=0.5)
    silent = [raw_channel(running.address) for _ in range(2)]
    try:
        time.sleep(0.1)
        third = raw_channel(running.address)
        reply = next_reply(third)
        assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.BUSY
        third.close()
        time.sleep(1.0)  # past the HELLO deadline: the silent links are closed
        fourth = raw_channel(running.address)
        hello(fourth, seq=5)
        assert next_reply(fourth).type == MsgType.HELLO
        fourth.close()
    finally:
        for channel in silent:
            channel.close()
        running.stop()


@pytest.mark.heavy
def test_example_graph_measures_on_the_device(server: ServerThread, tmp_path: Path) -> None:
    """resources/graphs/digits_remote.json end to end, its device pointed at a server thread."""
    from engine.events import NodeMetric
    from engine.executor import Executor
    from engine.graph import load_graph
    from engine.measurements import read_measurements

    graph = load_graph(REPO / "resources" / "graphs" / "digits_remote.json")
    graph.set_param("device", "address", server.address)
    graph.set_param("train", "epochs", 1)
    graph.set_param("ort_device", "max_samples", 200)
    graph.set_param("ort_host", "max_samples", 200)
    metrics: list[NodeMetric] = []
    executor = Executor(cache_dir=tmp_path / "cache")
    executor.subscribe(lambda event: metrics.append(event) if isinstance(event, NodeMetric) else None)
    result = executor.run(graph, tmp_path / "run")
    assert result.status == "ok", result.errors
    device = read_measurements(result.outputs["ort_device"]["measurements"].path).data
    host = read_measurements(result.outputs["ort_host"]["measurements"].path).data
    assert device.classification.accuracy == host.classification.accuracy  # same model, same answers
    assert device.device_latency_ms.count == device.latency_ms.count == 200
    assert device.device_latency_ms.median < device.latency_ms.median  # the round trip holds the device time
    assert any(m.node == "ort_device" and m.name == "cpu_percent" and m.source != "host" for m in metrics)
