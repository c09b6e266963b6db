"""`heiti device info ADDRESS`, and the client's guard against a device that never takes an upload."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import pytest
from heiti.nodes.devices.client import DeviceClient, DeviceError, device_hello
from heiti.nodes.devices.info import main, parse_device_address
from heiti.nodes.devices.protocol import VERSION, Channel, MsgType
from heiti.nodes.devices.server import DeviceServer
from heiti.nodes.devices.targets import pack_model
from heiti.nodes.devices.transport import TcpTransport, VirtualSerialLink

from tests.nodes.device_helpers import ServerThread, tcp_target

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "heiti.engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_addresses_are_parsed_or_refused_clearly() -> None:
    tcp = parse_device_address("tcp://10.0.0.7:7070")
    assert (tcp.kind, tcp.address) == ("tcp", "10.0.0.7:7070")
    serial = parse_device_address("serial:/dev/ttyUSB0@921600")
    assert (serial.kind, serial.address, serial.options["baud"]) == ("serial", "/dev/ttyUSB0", 921600)
    for bad in ("10.0.0.7:7070", "tcp://host", "serial:/dev/ttyUSB0@fast", "serial:@9600"):
        with pytest.raises(ValueError, match="expected"):
            parse_device_address(bad)


def test_device_info_over_tcp_through_the_cli(server: ServerThread) -> None:
    done = cli("device", "info", f"tcp://{server.address}", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["protocol"] == VERSION and "onnxruntime" in info["runtimes"]
    assert info["hostname"] == socket.gethostname() and info["cpu_count"] >= 1
    assert 0 < info["rtt_ms"]["min"] <= info["rtt_ms"]["median"] <= info["rtt_ms"]["max"] < 5000
    text = cli("device", "info", f"tcp://{server.address}")
    assert text.returncode == 0 and "round trip" in text.stdout and "runtimes" in text.stdout


def test_device_hello_describes_the_device_then_says_bye(server: ServerThread) -> None:
    info = device_hello(tcp_target(server.address))
    assert info["protocol"] == VERSION and info["hostname"] == socket.gethostname()
    deadline = time.monotonic() + 5
    while server.server._links and time.monotonic() < deadline:  # BYE ends the link on the device
        time.sleep(0.02)
    assert not server.server._links
    with pytest.raises(DeviceError, match="connecting failed"):
        device_hello(tcp_target(f"127.0.0.1:{free_port()}", timeout_s=1.0, retries=0))


def test_device_info_fails_clearly_when_nobody_is_there() -> None:
    started = time.monotonic()
    done = cli("device", "info", f"tcp://127.0.0.1:{free_port()}", "--timeout", "2")
    assert done.returncode == 1
    assert "Is `heiti serve` running there?" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    bad = cli("device", "info", "127.0.0.1:7070")
    assert bad.returncode == 1 and "tcp://HOST:PORT" in bad.stderr


def test_device_info_with_a_wrong_token_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    running = ServerThread(tmp_path / "device", token="s3cret")
    try:
        args = Namespace(address=f"tcp://{running.address}", token="nope", timeout=3.0, json=False)
        assert main(args) == 1
        assert "token" in capsys.readouterr().err
        args.token = "s3cret"
        assert main(args) == 0
        assert "round trip" in capsys.readouterr().out
    finally:
        running.stop()


def test_device_info_over_a_serial_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with VirtualSerialLink() as link:
        device = DeviceServer(tmp_path / "device", frame_timeout=0.5, stats_period=0.2)
        threading.Thread(target=device.serve_serial, args=(link.port_a, 115200), daemon=True).start()
        try:
            assert device.ready.wait(5)
            args = Namespace(address=f"serial:{link.port_b}@115200", token=None, timeout=5.0, json=False)
            assert main(args) == 0
            out = capsys.readouterr().out
            assert f"serial {link.port_b} @ 115200 baud" in out and "round trip" in out
        finally:
            device.stop()
            time.sleep(0.2)


def test_upload_to_a_device_that_never_advances_gives_up_quickly(tmp_path: Path) -> None:
    """A device that acknowledges every chunk with offset 0 once got 114,135 requests in 20 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    requests = []

    def fake_device() -> None:
        sock, _ = listener.accept()
        channel = Channel(TcpTransport(sock, "fake"))
        try:
            while True:
                msg = channel.receive(5)
                if msg is None:
                    return
                requests.append(msg.type)
                if msg.type == MsgType.HELLO:
                    channel.send(MsgType.HELLO, {"protocol": VERSION, "runtimes": []}, seq=msg.seq, reply=True)
                else:
                    channel.send(MsgType.OK, {"complete": False, "offset": 0}, seq=msg.seq, reply=True)
        except Exception:  # noqa: BLE001 - the client hung up
            return
        finally:
            channel.close()

    thread = threading.Thread(target=fake_device, daemon=True)
    thread.start()
    model = tmp_path / "m.bin"
    model.write_bytes(b"\1" * 300_000)
    bundle = pack_model(model, "onnx")
    client = DeviceClient(tcp_target(f"127.0.0.1:{port}"))
    try:
        client.connect()
        started = time.monotonic()
        with pytest.raises(DeviceError, match="does not take the upload"):
            client.upload(bundle)
        assert time.monotonic() - started < 10
        assert requests.count(MsgType.UPLOAD_MODEL) <= 10
    finally:
        client.drop()
        listener.close()
        thread.join(5)
