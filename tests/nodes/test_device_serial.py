"""`heiti serve` over serial lines: real pseudo-terminal pairs joined like a null-modem cable, at
several baud rates, with writes paced to the line's speed and bytes damaged in flight."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.payloads import ModelArtifact, TargetHandle
from heiti.nodes.devices.protocol import Channel, ErrorCode, MsgType
from heiti.nodes.devices.server import DeviceServer
from heiti.nodes.devices.targets import open_remote_session
from heiti.nodes.devices.transport import SerialTransport, VirtualSerialLink

from tests.nodes.device_helpers import hello, local_run, make_onnx, next_reply
from tests.tolerance import assert_fp32_close, onnx_fp32_atol

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def serial_link(tmp_path: Path):
    link = VirtualSerialLink()
    servers = []

    def serve(baud: int) -> DeviceServer:
        device = DeviceServer(tmp_path / f"device{baud}", frame_timeout=0.5, stats_period=0.1)
        threading.Thread(target=device.serve_serial, args=(link.port_a, baud), daemon=True).start()
        servers.append(device)
        assert device.ready.wait(5)
        return device

    yield link, serve
    for device in servers:
        device.stop()
    time.sleep(0.1)
    link.close()


@pytest.mark.parametrize("baud", [115200, 921600])
def test_serial_session_runs_at_the_line_speed(serial_link, tmp_path: Path, baud: int) -> None:
    link, serve = serial_link
    serve(baud)
    model_path = make_onnx(tmp_path / "m.onnx", (1, 64))
    size = model_path.stat().st_size
    target = TargetHandle(kind="serial", address=link.port_b, options={"baud": baud, "timeout_s": 3, "retries": 1})
    stats: list[dict] = []
    started = time.perf_counter()
    session = open_remote_session(target, "onnxruntime", ModelArtifact(path=model_path, model_format="onnx"), {}, stats.append)
    try:
        elapsed = time.perf_counter() - started
        assert elapsed > size / (baud / 10)  # paced like the real line: not faster than baud/10 bytes/s
        x = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)
        for _ in range(3):
            (y,) = session.run([x])
        assert_fp32_close(y, local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
        time.sleep(0.3)
        session.run([x])
        assert stats
    finally:
        session.close()


def test_serial_line_noise_is_retried_transparently(serial_link, tmp_path: Path) -> None:
    link, serve = serial_link
    serve(921600)
    model_path = make_onnx(tmp_path / "m.onnx", (1, 64))
    hits = {"n": 0}

    def corrupt(data: bytes) -> bytes:
        # damage one byte of the first three frames that carry an array (INFER requests)
        if len(data) > 200 and hits["n"] < 3 and b"NUMPY" in data:
            hits["n"] += 1
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x5A
            return bytes(damaged)
        return data

    target = TargetHandle(kind="serial", address=link.port_b, options={"baud": 921600, "timeout_s": 2, "retries": 4})
    session = open_remote_session(target, "onnxruntime", ModelArtifact(path=model_path, model_format="onnx"))
    try:
        link.corrupt = corrupt
        x = np.full((1, 64), 0.5, np.float32)
        (y,) = session.run([x])
        assert_fp32_close(y, local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
        assert hits["n"] >= 1
    finally:
        link.corrupt = None
        session.close()


def test_serial_garbage_then_hello(serial_link) -> None:
    link, serve = serial_link
    serve(921600)
    channel = Channel(SerialTransport(link.port_b, 921600), frame_timeout=0.5)
    try:
        channel.transport.write([b"\x00\xff" * 300], timeout=2)
        first = next_reply(channel)
        assert first.type == MsgType.ERROR and first.fields["code"] == ErrorCode.GARBAGE
        hello(channel, seq=3)
        reply = next_reply(channel)
        assert reply.type == MsgType.HELLO and reply.seq == 3
    finally:
        channel.close()


def test_pty_writes_are_paced_to_the_baud_rate() -> None:
    with VirtualSerialLink() as link:
        writer, reader = SerialTransport(link.port_a, 115200), SerialTransport(link.port_b, 115200)
        try:
            data = os.urandom(5760)  # half a second of a 115200-baud line
            got = bytearray()
            started = time.monotonic()
            writer.write([data], timeout=5)
            while len(got) < len(data) and time.monotonic() - started < 10:
                got += reader.read(0.5)
            elapsed = time.monotonic() - started
            assert bytes(got) == data
            assert 0.45 < elapsed < 3.0, elapsed
        finally:
            writer.close()
            reader.close()


def test_cli_serial_server_and_serial_target_node(tmp_path: Path) -> None:
    """`heiti serve --serial` as a real process, reached through a target.serial node."""
    import re
    import subprocess
    import sys

    from heiti.engine.executor import Executor
    from heiti.engine.graph import Graph
    from heiti.engine.registry import Registry
    from heiti.nodes.devices.targets import SerialTarget

    repo = Path(__file__).resolve().parents[2]
    with VirtualSerialLink() as link:
        proc = subprocess.Popen([sys.executable, "-m", "heiti.engine.cli", "serve", "--serial", link.port_a, "--baud", "921600",
                                 "--workdir", str(tmp_path / "device")], cwd=repo, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            line = ""
            while time.monotonic() < deadline and not re.search("serving on serial", line):
                line = proc.stderr.readline()
                assert line or proc.poll() is None, "heiti serve --serial exited"
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            registry = Registry()
            registry.register(SerialTarget)
            graph = Graph(name="serial")
            graph.add_node("target.serial", "board", {"port": link.port_b, "baud": 921600, "timeout_s": 3})
            result = Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / "run")
            board = result.outputs["board"]["target"]
            assert board.kind == "serial" and "onnxruntime" in board.options["device"]["runtimes"]
            model_path = make_onnx(tmp_path / "m.onnx", (1, 8))
            session = open_remote_session(board, "onnxruntime", ModelArtifact(path=model_path, model_format="onnx"))
            try:
                x = np.arange(8, dtype=np.float32).reshape(1, 8)
                assert_fp32_close(session.run([x])[0], local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
            finally:
                session.close()
        finally:
            proc.terminate()
            proc.wait(10)
