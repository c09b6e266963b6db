"""`heiti serve` and the remote session over real sockets on 127.0.0.1 (serial lines are in
test_device_serial.py).

Every wait is bounded: servers run with short frame timeouts, clients with short request timeouts,
and a per-test timeout keeps a broken link from hanging the suite.
"""

from __future__ import annotations

import os
import socket
import tarfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.payloads import ModelArtifact
from heiti.nodes.devices import server_limits
from heiti.nodes.devices.protocol import ErrorCode, MsgType
from heiti.nodes.devices.server import main
from heiti.nodes.devices.targets import DeviceError, open_remote_session, pack_model

from tests.nodes.device_helpers import (
    ServerThread,
    hello,
    local_run,
    make_onnx,
    next_reply,
    raw_channel,
    tcp_target,
)
from tests.tolerance import assert_fp32_close, onnx_fp32_atol

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


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
        assert_fp32_close(y, local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
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
        assert_fp32_close(session.run([x])[0], local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
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


def test_wrong_token_is_refused_and_the_right_one_accepted(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_limits, "_log_limit", server_limits.LogLimit())  # no earlier test's lines count
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


def test_missing_runtime_is_named(server: ServerThread, tmp_path: Path) -> None:
    model = ModelArtifact(path=make_onnx(tmp_path / "m.onnx", (1, 4)), model_format="onnx")
    with pytest.raises(DeviceError, match="runtime 'nope' is not installed"):
        open_remote_session(tcp_target(server.address), "nope", model)


# --- target nodes -----------------------------------------------------------------------------------
def test_target_nodes_describe_the_device_or_fail_clearly(server: ServerThread, tmp_path: Path) -> None:
    from heiti.engine.executor import Executor
    from heiti.engine.graph import Graph
    from heiti.engine.registry import Registry
    from heiti.nodes.devices.targets import LocalTarget, SerialTarget, TcpTarget

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
    options = {"inputs": description, "outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32"}]}
    artifact = ModelArtifact(path=archive, model_format="tvm")
    # native code: refused to a client without a token ...
    with pytest.raises(DeviceError, match="native code") as refused:
        open_remote_session(tcp_target(server.address, timeout_s=60), "tvm", artifact, options)
    assert refused.value.code == ErrorCode.NATIVE_REFUSED
    assert not list(server.server.store.models.glob("*/model.linked.so"))
    # ... and run for one that presented the device's token
    secured = ServerThread(tmp_path / "secured", token="s3cret")
    try:
        session = open_remote_session(tcp_target(secured.address, timeout_s=60, token="s3cret"), "tvm", artifact, options)
        try:
            assert_fp32_close(session.run([x])[0], local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
        finally:
            session.close()
        assert list(secured.server.store.models.glob("*/model.linked.so"))
        assert not list(secured.server.store.models.glob("*/*.objects"))  # the object files are cleaned up
    finally:
        secured.stop()


def test_folder_model_is_uploaded_as_a_safe_tar(server: ServerThread, tmp_path: Path) -> None:
    from heiti.nodes.devices.client import DeviceClient

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


@pytest.mark.heavy
def test_example_graph_measures_on_the_device(server: ServerThread, tmp_path: Path) -> None:
    """resources/graphs/digits_remote.json end to end, its device pointed at a server thread."""
    from heiti.engine.events import NodeMetric
    from heiti.engine.executor import Executor
    from heiti.engine.graph import load_graph
    from heiti.engine.measurements import read_measurements

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
