"""`heiti monitor`: live device figures without a graph, from a real `heiti serve` on 127.0.0.1 (and a
real pseudo-terminal serial pair), and from this machine; the HELLO `monitor` field is opt-in."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from heiti.nodes.devices.monitor import (
    MonitorError,
    parse_monitor_address,
    plain_line,
    run_monitor,
    samples,
)
from heiti.nodes.devices.protocol import VERSION, MsgType
from heiti.nodes.devices.server import DeviceServer
from heiti.nodes.devices.transport import VirtualSerialLink

from tests.nodes.device_helpers import hello, raw_channel

pytestmark = pytest.mark.timeout(120)
LINE = re.compile(r"^t=\d+\.\ds cpu=\d+\.\d% mem=\d+\.\d% temp=(-?\d+\.\d°C|n/a) freq=(\d+MHz|n/a)$")


def _after_hello(channel, seconds: float, enough: int = 10**6) -> list[dict]:
    """STATS received within `seconds` after the HELLO reply (which may take a while on a busy machine)."""
    got, end, greeted = [], time.monotonic() + 20, False
    while time.monotonic() < end and len(got) < enough:
        msg = channel.receive(0.1)
        if msg is None:
            continue
        if msg.type == MsgType.HELLO and not greeted:
            greeted, end = True, time.monotonic() + seconds
        elif msg.type == MsgType.STATS:
            got.append(msg.fields)
    assert greeted
    return got


def test_idle_stats_only_for_a_link_that_asks(server):
    plain = raw_channel(server.address)
    watcher = raw_channel(server.address)
    try:
        hello(plain)
        assert _after_hello(plain, 0.8) == []  # no model loaded, no monitor: no STATS, as before
        watcher.send(MsgType.HELLO, {"protocol": VERSION, "token": "", "monitor": True}, seq=1)
        stats = _after_hello(watcher, 10, enough=2)  # the server samples every 0.1 s
        assert len(stats) >= 2
        for sample in stats:
            assert {"cpu_percent", "mem_percent", "temp_c", "freq_mhz"} <= set(sample)  # None = explicitly absent
    finally:
        plain.close()
        watcher.close()


def test_monitor_samples_a_tcp_device(server):
    target = parse_monitor_address(f"tcp://{server.address}")
    stop, info, got = threading.Event(), {}, []
    for sample in samples(target, stop=stop, info=info):
        got.append(sample)
        if len(got) == 3:
            stop.set()
    assert info["monitor"] is True and info["server"] == "heiti serve"
    assert [s["t"] for s in got] == sorted(s["t"] for s in got)
    assert all("temp_c" in s and "freq_mhz" in s for s in got)


def test_cli_prints_one_plain_line_per_sample(server):
    proc = subprocess.run([sys.executable, "-m", "heiti.engine.cli", "monitor", f"tcp://{server.address}",
                           "--seconds", "1.5"], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) >= 2, proc.stdout
    for line in lines:
        assert LINE.match(line), line


def test_monitor_over_a_serial_pty(tmp_path: Path):
    link = VirtualSerialLink()
    device = DeviceServer(tmp_path / "device", frame_timeout=0.5, stats_period=0.1)
    threading.Thread(target=device.serve_serial, args=(link.port_a, 115200), daemon=True).start()
    try:
        assert device.ready.wait(5)
        out = io.StringIO()
        code = run_monitor(parse_monitor_address(f"serial:{link.port_b}@115200"), seconds=1.2, live=False, out=out)
        assert code == 0
        lines = out.getvalue().splitlines()[1:]
        assert len(lines) >= 2 and all(LINE.match(line) for line in lines), lines
    finally:
        device.stop()
        time.sleep(0.1)
        link.close()


def test_local_monitor_and_absent_figures_say_na():
    out = io.StringIO()
    assert run_monitor(parse_monitor_address("local"), seconds=0.8, period_s=0.1, live=False, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("# heiti monitor") and len(lines) >= 3
    assert all(LINE.match(line) for line in lines[1:]), lines
    assert plain_line({"t": 1, "cpu_percent": 5.0, "mem_percent": 7.0, "temp_c": None}).endswith("temp=n/a freq=n/a")


def test_live_view_draws_a_table():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert run_monitor(parse_monitor_address("local"), seconds=0.6, period_s=0.1, out=out) == 0
    text = out.getvalue()
    for label in ("CPU", "memory", "temperature", "frequency"):
        assert label in text


def test_bad_addresses_and_dead_devices_are_clear_errors(capsys):
    for bad in ("tcp://nowhere", "serial:/dev/ttyUSB0@fast", "http://x:1"):
        with pytest.raises(MonitorError, match="expected"):
            parse_monitor_address(bad)
    with socket_closed_port() as port:
        assert run_monitor(parse_monitor_address(f"127.0.0.1:{port}", timeout_s=1), seconds=2, live=False,
                           out=io.StringIO()) == 2
    assert "cannot reach tcp 127.0.0.1" in capsys.readouterr().err


class socket_closed_port:  # noqa: N801 - used as a context manager
    """A loopback port with nobody listening."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        pass
