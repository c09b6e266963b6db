"""`heiti serve` against clients that misbehave on purpose (issue 12): real sockets on 127.0.0.1,
a real pseudo-terminal for the serial case. Each test is the regression test of one finding."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from heiti.nodes.devices import server_limits
from heiti.nodes.devices.protocol import (
    MAGIC,
    PRE_HELLO_MAX_PAYLOAD,
    VERSION,
    Channel,
    ErrorCode,
    MsgType,
    encode_frame,
    frame_message,
)
from heiti.nodes.devices.server import ERROR_BURST, DeviceServer
from heiti.nodes.devices.transport import LinkClosed, SerialTransport, VirtualSerialLink

from tests.nodes.device_helpers import ServerThread, hello, next_reply, raw_channel

pytestmark = pytest.mark.timeout(120)


def wire(parts: list) -> bytes:
    return b"".join(bytes(p) for p in parts)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes `sock` within `seconds` (whatever it sends first is read and dropped)."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def greeted_socket(address: str, token: str = "") -> socket.socket:
    host, port = address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=2)
    sock.sendall(wire(frame_message(MsgType.HELLO, {"protocol": VERSION, "token": token}, seq=1)))
    channel = Channel(_Borrowed(sock))
    assert next_reply(channel).type == MsgType.HELLO
    return sock


class _Borrowed:
    """A blocking socket read through a Channel without taking it over."""

    rate = None

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, timeout: float) -> bytes:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return b""
        if not data:
            raise LinkClosed("closed")
        return data


def trickle(sock: socket.socket, data: bytes, period: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.wait(period):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


# --- deadlines ----------------------------------------------------------------------------------------
def test_trickling_sockets_cannot_hold_the_places(tmp_path: Path) -> None:
    """8 sockets each sending a byte of a HELLO every 0.1 s (well inside the stall timeout): each is
    closed at the total time to HELLO, and a real client is served at once meanwhile."""
    running = ServerThread(tmp_path / "device", hello_timeout=1.5, frame_timeout=0.5)
    stop = threading.Event()
    socks, threads = [], []
    try:
        whole = wire(frame_message(MsgType.HELLO, {"protocol": VERSION, "pad": "x" * 400}, seq=1))
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", running.port), timeout=2)
            socks.append(sock)
            thread = threading.Thread(target=trickle, args=(sock, whole, 0.1, stop), daemon=True)
            thread.start()
            threads.append(thread)
        time.sleep(0.3)
        started = time.monotonic()
        good = raw_channel(running.address)
        hello(good, seq=9)
        assert next_reply(good).type == MsgType.HELLO
        assert time.monotonic() - started < 3.0  # the tricklers' bytes would last 40 s
        good.close()
        # every trickler is closed by its deadline although its bytes never stopped
        assert all(closed_within(sock, 1.5 + 0.5 + 1.0) for sock in socks)
    finally:
        stop.set()
        for sock in socks:
            sock.close()
        running.stop()


def test_a_greeted_client_cannot_stretch_a_frame_by_trickling(server: ServerThread) -> None:
    sock = greeted_socket(server.address)
    stop = threading.Event()
    frame = wire(frame_message(MsgType.PING, {"pad": "y" * 200}, seq=5))
    thread = threading.Thread(target=trickle, args=(sock, frame, 0.05, stop), daemon=True)
    try:
        started = time.monotonic()
        thread.start()
        reply = next_reply(Channel(_Borrowed(sock)), timeout=5)
        assert reply.type == MsgType.ERROR and reply.fields["code"] == ErrorCode.TRUNCATED
        assert "first byte" in reply.fields["message"]
        assert time.monotonic() - started < server.server.frame_timeout + 1.0  # not len(frame) * 0.05 s
    finally:
        stop.set()
        thread.join(2)
        sock.close()


# --- bounded buffers ----------------------------------------------------------------------------------
def _flood(sock: socket.socket, data: bytes, seconds: float) -> int:
    """Write `data` over and over for `seconds` without reading; the bytes the server took."""
    sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    view = memoryview(data)
    while time.monotonic() < deadline:
        try:
            sent += sock.send(view)
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break
    return sent


def test_a_client_that_never_reads_meets_back_pressure(tmp_path: Path) -> None:
    """Streaming requests without reading a reply once grew the server by 1.5 GB in 1.8 s."""
    import psutil

    running = ServerThread(tmp_path / "device", write_timeout=1.0)
    sock = greeted_socket(running.address)
    try:
        rss = psutil.Process().memory_info().rss
        pings = wire(frame_message(MsgType.PING, seq=3)) * 2000
        sent = _flood(sock, pings, 3.0)
        # the server stopped taking requests once its replies piled up: no more than the socket
        # buffers both ways plus the link's bounded read buffers (a few MiB), never gigabytes
        assert sent < 64 * 2**20, sent
        assert psutil.Process().memory_info().rss - rss < 100 * 2**20
        good = raw_channel(running.address)  # and everyone else is still served
        hello(good, seq=9)
        assert next_reply(good).type == MsgType.HELLO
        good.close()
    finally:
        sock.close()
        running.stop()


def test_pre_hello_bytes_are_bounded_and_noise_closes_the_link(server: ServerThread) -> None:
    host, port = server.address.split(":")
    # a frame header announcing more than a stranger may send is refused from the header alone
    sock = socket.create_connection((host, int(port)), timeout=2)
    try:
        big = bytearray(wire(frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=2)))
        big[12:16] = struct.pack(">I", PRE_HELLO_MAX_PAYLOAD + 1)
        big[16:20] = struct.pack(">I", zlib.crc32(bytes(big[:16])))
        sock.sendall(bytes(big[:20]))
        reply = next_reply(Channel(_Borrowed(sock)))
        assert reply.fields["code"] == ErrorCode.OVERSIZE
    finally:
        sock.close()
    # bytes that never become a frame: closed after the garbage cap, not skipped forever
    sock = socket.create_connection((host, int(port)), timeout=2)
    try:
        noise = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes().replace(MAGIC[:1], b"-")
        sent = _flood(sock, noise, 2.0)
        assert closed_within(sock, 2.0)
        assert sent < 16 * 2**20
    finally:
        sock.close()


@pytest.mark.parametrize("request_line", [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                                          b"POST /run HTTP/1.1\r\nContent-Type: text/plain\r\n\r\n",
                                          b"OPTIONS * HTTP/1.1\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"])
def test_an_http_request_closes_the_link_before_any_frame_is_read(server: ServerThread, request_line: bytes) -> None:
    """What a web page could post to 127.0.0.1: a request line, then frames as the body."""
    host, port = server.address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=2)
    try:
        sock.sendall(request_line + wire(frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=1))
                     + wire(frame_message(MsgType.PING, seq=2)))
        sock.settimeout(3)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            received += chunk
        assert MAGIC not in received  # not one frame answered: closed at once
    finally:
        sock.close()


# --- refused frames and error replies ---------------------------------------------------------------------
def test_a_refused_version_frame_never_reaches_the_server_as_requests(server: ServerThread) -> None:
    channel = raw_channel(server.address)
    try:
        hello(channel, seq=1)
        assert next_reply(channel).type == MsgType.HELLO
        smuggled = wire(frame_message(MsgType.PING, seq=77))
        raw = bytearray(wire(encode_frame(MsgType.INFER, [smuggled], seq=5)))
        raw[4] = VERSION + 1
        raw[16:20] = struct.pack(">I", zlib.crc32(bytes(raw[:16])))
        channel.transport.write([bytes(raw)], timeout=2)
        channel.send(MsgType.PING, seq=78)
        first, second = next_reply(channel), next_reply(channel)
        assert (first.type, first.fields["code"], first.seq) == (MsgType.ERROR, ErrorCode.UNSUPPORTED_VERSION, 5)
        assert (second.type, second.seq) == (MsgType.PING, 78)  # 77 was never answered
    finally:
        channel.close()


def test_error_replies_are_rate_limited_and_endless_bad_frames_close_the_link(server: ServerThread) -> None:
    """256 KiB of frame starts with bad header CRCs once drew 30x their size in replies."""
    sock = greeted_socket(server.address)
    try:
        junk = (MAGIC + bytes(16)) * (256 * 1024 // 20)
        sock.sendall(junk[:64 * 1024])
        sock.settimeout(0.5)
        received = b""
        started = time.monotonic()
        while time.monotonic() - started < 3:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
        # at most the burst of replies (each ~100 bytes), then silence and the link closed
        assert 0 < received.count(MAGIC) <= ERROR_BURST + 1
        assert len(received) < 64 * 1024 // 30
    finally:
        sock.close()


def test_error_replies_cannot_swamp_a_serial_line(tmp_path: Path) -> None:
    """Over 921600 baud, 128 KiB of bad frame starts once queued ~6,500 replies (~8 s of line time)
    ahead of the next request; it must be answered right after the noise has passed."""
    baud = 921600
    with VirtualSerialLink() as link:
        device = DeviceServer(tmp_path / "device", frame_timeout=0.5, stats_period=0.2)
        threading.Thread(target=device.serve_serial, args=(link.port_a, baud), daemon=True).start()
        try:
            assert device.ready.wait(5)
            channel = Channel(SerialTransport(link.port_b, baud), frame_timeout=1.0)
            try:
                hello(channel, seq=1)
                assert next_reply(channel, timeout=5).type == MsgType.HELLO
                junk = (MAGIC + bytes(16)) * (128 * 1024 // 20)
                channel.transport.write([junk], timeout=10)  # paced: ~1.4 s on the line
                channel.send(MsgType.PING, seq=2)
                sent = time.monotonic()
                while True:
                    reply = next_reply(channel, timeout=5)
                    if reply.type == MsgType.PING:
                        break
                    assert reply.type == MsgType.ERROR
                assert reply.seq == 2 and time.monotonic() - sent < 3.0
            finally:
                channel.close()
        finally:
            device.stop()
            time.sleep(0.2)


def test_wrong_tokens_are_logged_a_few_times_not_once_each(tmp_path: Path, capfd: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # a fresh 10 s window: an earlier test's wrong-token line must not open it and let it end mid-test
    monkeypatch.setattr(server_limits, "_log_limit", server_limits.LogLimit())
    running = ServerThread(tmp_path / "device", token="s3cret")
    try:
        capfd.readouterr()
        for i in range(40):
            channel = raw_channel(running.address)
            hello(channel, seq=i + 1, token="guess")
            assert next_reply(channel).fields["code"] == ErrorCode.UNAUTHORIZED
            channel.close()
        time.sleep(0.2)
        lines = [line for line in capfd.readouterr().err.splitlines() if "wrong token" in line]
        assert 1 <= len(lines) <= 6, lines
    finally:
        running.stop()
