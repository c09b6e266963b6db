"""`heiti serve` as a separate process (`python -m heiti.engine.cli serve`) under abuse: a soak with
8 misbehaving clients while a good one is served, then protocol fuzzing with >= 10,000 random and
mutated frames. The server must stay up, keep serving within 5 s, and keep its memory (+200 MB),
threads and file descriptors bounded."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
from heiti.engine.payloads import TargetHandle
from heiti.nodes.devices.info import probe
from heiti.nodes.devices.protocol import MAGIC, VERSION, ErrorCode, MsgType, encode_frame, frame_message

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]
SOAK_SECONDS = 10.0
FUZZ_FRAMES = 10_000
MEMORY_BUDGET = 200 * 2**20


def wire(parts: list) -> bytes:
    return b"".join(bytes(p) for p in parts)


class ServeProcess:
    """`python -m heiti.engine.cli serve --tcp 127.0.0.1:0`, its port read from its log."""

    def __init__(self, log: Path, *extra: str) -> None:
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "heiti.engine.cli", "serve", "--tcp", "127.0.0.1:0", *extra],
            stdout=subprocess.DEVNULL, stderr=self._log_file, cwd=REPO)
        deadline = time.monotonic() + 90
        while True:
            found = re.search(r"listening on tcp 127\.0\.0\.1:(\d+)", log.read_text())
            if found:
                break
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        self.port = int(found.group(1))
        self.address = f"127.0.0.1:{self.port}"
        self.ps = psutil.Process(self.proc.pid)

    def workdir(self) -> Path:
        return Path(re.search(r"models are kept in (\S+);", self.log.read_text()).group(1))

    def rss(self) -> int:
        return self.ps.memory_info().rss

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log_file.close()
        return self.proc.returncode


def served_within(address: str) -> float:
    """Seconds a good client needs for HELLO and one PING (what `heiti device info` does)."""
    started = time.monotonic()
    info = probe(TargetHandle(kind="tcp", address=address, options={"timeout_s": 5.0, "retries": 3}), pings=1)
    assert info["protocol"] == VERSION
    return time.monotonic() - started


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("soak")
    running = ServeProcess(folder / "serve.log", "--workdir", str(folder / "device"),
                           "--hello-timeout", "2", "--frame-timeout", "0.5")
    yield running
    running.stop()


# --- the misbehaving clients ------------------------------------------------------------------------------
def _connect(address: str) -> socket.socket:
    host, port = address.split(":")
    return socket.create_connection((host, int(port)), timeout=2)


def _hello(sock: socket.socket) -> None:
    sock.sendall(wire(frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=1)))
    sock.settimeout(3)
    got = b""
    while MAGIC not in got or len(got) < 60:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        got += chunk


def trickler(address: str, stop: threading.Event) -> None:
    frame = wire(frame_message(MsgType.HELLO, {"protocol": VERSION, "pad": "t" * 300}, seq=1))
    while not stop.is_set():
        try:
            with _connect(address) as sock:
                for i in range(len(frame)):
                    if stop.wait(0.2):
                        return
                    sock.sendall(frame[i : i + 1])
        except OSError:
            continue


def never_reader(address: str, stop: threading.Event) -> None:
    pings = wire(frame_message(MsgType.PING, seq=3)) * 1000
    while not stop.is_set():
        try:
            with _connect(address) as sock:
                _hello(sock)
                sock.setblocking(False)
                view = memoryview(pings)
                while not stop.is_set():
                    try:
                        sock.send(view)
                    except BlockingIOError:
                        stop.wait(0.02)
        except OSError:
            stop.wait(0.1)


def dropped_uploader(address: str, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    chunk = os.urandom(256 * 1024)
    while not stop.is_set():
        try:
            with _connect(address) as sock:
                _hello(sock)
                sha = f"{rng.getrandbits(256):064x}"
                for i in range(2):
                    sock.sendall(wire(frame_message(MsgType.UPLOAD_MODEL, {
                        "sha256": sha, "size": 10 * len(chunk), "name": "m.bin", "packing": "file",
                        "offset": i * len(chunk)}, data=chunk, seq=10 + i)))
                # and gone, mid-upload, without waiting for the acknowledgements
        except OSError:
            pass
        stop.wait(0.3)


def garbage_sender(address: str, stop: threading.Event, http: bool) -> None:
    rng = np.random.default_rng(7)
    while not stop.is_set():
        try:
            with _connect(address) as sock:
                if http:
                    sock.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                while not stop.is_set():
                    sock.sendall(rng.integers(0, 256, 8192, dtype=np.uint8).tobytes())
                    stop.wait(0.01)
        except OSError:
            stop.wait(0.05)


def test_soak_eight_misbehaving_clients_while_a_good_one_is_served(serve: ServeProcess) -> None:
    served_within(serve.address)  # warm: runtimes listed, modules imported
    baseline = serve.rss()
    stop = threading.Event()
    workers = [threading.Thread(target=trickler, args=(serve.address, stop)) for _ in range(2)]
    workers += [threading.Thread(target=never_reader, args=(serve.address, stop)) for _ in range(2)]
    workers += [threading.Thread(target=dropped_uploader, args=(serve.address, stop, i)) for i in range(2)]
    workers += [threading.Thread(target=garbage_sender, args=(serve.address, stop, http)) for http in (False, True)]
    for worker in workers:
        worker.daemon = True
        worker.start()
    waits, peak = [], baseline
    try:
        started = time.monotonic()
        while time.monotonic() - started < SOAK_SECONDS:
            time.sleep(0.5)
            waits.append(served_within(serve.address))
            peak = max(peak, serve.rss())
    finally:
        stop.set()
        for worker in workers:
            worker.join(10)
    assert serve.proc.poll() is None
    assert max(waits) < 5.0, waits
    assert peak - baseline < MEMORY_BUDGET, (peak - baseline) / 2**20
    print(f"soak: {len(waits)} good clients, slowest {max(waits):.2f} s, "
          f"RSS +{(peak - baseline) / 2**20:.0f} MB, load {os.getloadavg()[0]:.1f}")


# --- protocol fuzzing -------------------------------------------------------------------------------------
def _fields(rng: random.Random) -> dict:
    def value(depth: int = 0):
        makers = [lambda: None, lambda: True, lambda: rng.randint(-2**40, 2**40), lambda: rng.random() * 1e12,
                  lambda: "x" * rng.randrange(20), lambda: f"{rng.getrandbits(256):064x}",
                  lambda: [value(depth + 1) for _ in range(rng.randrange(3))],
                  lambda: {rng.choice(KEYS): value(depth + 1) for _ in range(rng.randrange(3))}]
        return makers[rng.randrange(8 if depth < 2 else 6)]()
    return {rng.choice(KEYS): value() for _ in range(rng.randrange(6))}


KEYS = ["sha256", "size", "offset", "name", "packing", "entry", "runtime", "options", "protocol", "token",
        "threads", "meta", "inputs", "arch_config", "num_classes", "x"]
TYPES = [MsgType.HELLO, MsgType.PING, MsgType.UPLOAD_MODEL, MsgType.LOAD, MsgType.INFER, MsgType.STATS,
         MsgType.OK, MsgType.ERROR, 0x00, 0x42, 0xFF]


def fuzz_frame(rng: random.Random) -> bytes:
    """One random or mutated frame (valid ones too, so the requests behind the parser are reached)."""
    msg_type = rng.choice(TYPES)
    fields = _fields(rng)
    if rng.random() < 0.3:
        fields.update(runtime=rng.choice(["torch", "tvm", "onnxruntime", "keras", "nope"]),
                      options={"threads": rng.randint(-5, 10**6), "meta": {"arch_config": {"num_classes": rng.randint(0, 10**9)}}})
    arrays = [np.zeros(rng.randrange(4), rng.choice([np.float32, np.int8, np.uint16]))] if rng.random() < 0.3 else []
    data = os.urandom(rng.randrange(64)) if rng.random() < 0.2 else None
    raw = bytearray(wire(frame_message(msg_type, fields, arrays, data, seq=rng.getrandbits(32), reply=rng.random() < 0.05)))
    mutation = rng.randrange(8)
    if mutation == 1:  # flipped bytes anywhere
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif mutation == 2:  # cut short
        raw = raw[: rng.randrange(1, len(raw))]
    elif mutation == 3:  # a lying length (header CRC recomputed, so it is believed)
        struct.pack_into(">I", raw, 12, max(0, len(raw) - 24 + rng.randint(-64, 4096)))
        struct.pack_into(">I", raw, 16, zlib.crc32(bytes(raw[:16])))
    elif mutation == 4:  # another version
        raw[4] = rng.choice([0, 2, 255])
        struct.pack_into(">I", raw, 16, zlib.crc32(bytes(raw[:16])))
    elif mutation == 5:  # random payload bytes with valid CRCs: the message decoder's turn
        raw = bytearray(wire(encode_frame(msg_type, [os.urandom(rng.randrange(200))], seq=rng.getrandbits(32))))
    elif mutation == 6:  # a payload whose JSON is valid but not what a message looks like
        meta = json.dumps(rng.choice([[], 1, "s", {"fields": []}, {"arrays": [2**40]}, {"data": -1},
                                      {"fields": {}, "arrays": ["x"]}])).encode()
        raw = bytearray(wire(encode_frame(msg_type, [struct.pack(">I", len(meta)) + meta], seq=7)))
    elif mutation == 7:  # noise before it
        raw = bytearray(os.urandom(rng.randrange(1, 100))) + raw
    return bytes(raw)


def _drain(sock: socket.socket, replies: list[bytes], done: threading.Event) -> None:
    sock.settimeout(0.2)
    while not done.is_set():
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            continue
        except OSError:
            return
        if not chunk:
            return
        replies.append(chunk)


def fuzz_link(address: str, frames: list[bytes], greet: bool) -> int:
    """Send `frames` on one new link (after a HELLO when `greet`), then a PING to know the server
    got through them; returns how many INTERNAL errors (a request that crashed a handler) came back."""
    try:
        sock = _connect(address)
    except OSError:
        return 0
    replies: list[bytes] = []
    done = threading.Event()
    reader = threading.Thread(target=_drain, args=(sock, replies, done), daemon=True)
    reader.start()
    try:
        if greet:
            sock.sendall(wire(frame_message(MsgType.HELLO, {"protocol": VERSION}, seq=1)))
        for frame in frames:
            sock.sendall(frame)
        sock.sendall(wire(frame_message(MsgType.PING, seq=0xFEED)))
    except OSError:
        pass  # the server closed this link (BYE, noise, HTTP-looking bytes): fine
    deadline = time.monotonic() + 3
    while reader.is_alive() and time.monotonic() < deadline and b"\xfe\xed" not in b"".join(replies[-4:]):
        time.sleep(0.02)
    done.set()
    reader.join(2)
    sock.close()
    return b"".join(replies).count(b'"name":"%s"' % ErrorCode.INTERNAL.name.encode())


def test_fuzzing_ten_thousand_frames_leaves_the_server_up_and_serving(serve: ServeProcess) -> None:
    rng = random.Random(20261130)
    frames = [fuzz_frame(rng) for _ in range(FUZZ_FRAMES)]
    batches = [frames[i : i + 200] for i in range(0, len(frames), 200)]
    served_within(serve.address)
    baseline_rss, baseline_threads, baseline_fds = serve.rss(), serve.ps.num_threads(), serve.ps.num_fds()
    started = time.monotonic()
    internal = []
    jobs = iter(enumerate(batches))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                job = next(jobs, None)
            if job is None:
                return
            n, batch = job
            internal.append(fuzz_link(serve.address, batch, greet=n % 5 != 0))  # every 5th: before HELLO

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    elapsed = time.monotonic() - started
    assert serve.proc.poll() is None, serve.log.read_text()[-3000:]
    assert served_within(serve.address) < 5.0
    time.sleep(1.0)  # links of the last batches wind down
    assert serve.rss() - baseline_rss < MEMORY_BUDGET
    assert serve.ps.num_threads() <= baseline_threads + 2
    assert serve.ps.num_fds() <= baseline_fds + 2
    log = serve.log.read_text()
    assert "Traceback" not in log and "link failed" not in log, log[-3000:]
    assert len(internal) == len(batches) and sum(internal) == 0  # no request crashed its handler
    print(f"fuzz: {len(frames)} frames on {len(batches)} links in {elapsed:.1f} s, load {os.getloadavg()[0]:.1f}")


def test_the_default_temporary_folder_is_removed_at_exit(tmp_path: Path) -> None:
    running = ServeProcess(tmp_path / "serve.log")
    try:
        workdir = running.workdir()
        assert workdir.is_dir() and served_within(running.address) < 5.0
    finally:
        assert running.stop() == 0
    assert not workdir.exists()
