"""`heiti serve` under link faults, on real sockets on 127.0.0.1: garbage, bad CRCs, truncated and
oversize frames, links cut mid-upload, restarts, slow and silent clients, fuzzed requests.

Every wait is bounded, as in test_device.py.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from heiti.engine.payloads import ModelArtifact
from heiti.nodes.devices.protocol import VERSION, ErrorCode, MsgType, frame_message
from heiti.nodes.devices.targets import DeviceError, open_remote_session, pack_model
from heiti.nodes.devices.transport import LinkClosed

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
            assert_fp32_close(session.run([x])[0], local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
        finally:
            session.close()
        assert proxy.forwarded < 2 * size  # the second upload resumed instead of starting over
    finally:
        proxy.close()


def _start_cli_server(workdir: Path, address: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "heiti.engine.cli", "serve", "--tcp", address, "--workdir", str(workdir),
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
            assert_fp32_close(session.run([x])[0], local_run(model_path, x), onnx_fp32_atol(model_path, x), "device vs here")
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



def test_slow_link_is_served_not_cut_off(server: ServerThread) -> None:
    """A frame dribbling in byte groups is still a frame while it completes within the frame time."""
    channel = raw_channel(server.address)
    try:
        whole = b"".join(bytes(p) for p in frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=4))
        started = time.monotonic()
        pieces = range(0, len(whole), 4)
        for i in pieces:
            channel.transport.write([whole[i : i + 4]], timeout=2)
            time.sleep(0.6 * server.server.frame_timeout / len(pieces))
        assert time.monotonic() - started > 0.5 * server.server.frame_timeout
        reply = next_reply(channel)
        assert reply.type == MsgType.HELLO and reply.seq == 4
    finally:
        channel.close()


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



def test_silent_clients_make_room_for_real_ones_and_then_busy_is_said(tmp_path: Path) -> None:
    running = ServerThread(tmp_path / "device", max_links=2, hello_timeout=5.0)
    silent = [raw_channel(running.address) for _ in range(2)]
    channels = []
    try:
        time.sleep(0.1)
        for seq in (3, 4):  # each new client takes the place of the oldest link still without HELLO
            channel = raw_channel(running.address)
            channels.append(channel)
            hello(channel, seq=seq)
            assert next_reply(channel).type == MsgType.HELLO
        for stranger in silent:
            with pytest.raises(LinkClosed):
                stranger.transport.read(2.0)
        late = raw_channel(running.address)  # both places now belong to clients that said HELLO
        channels.append(late)
        reply = next_reply(late)
        assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.BUSY
    finally:
        for channel in silent + channels:
            channel.close()
        running.stop()
