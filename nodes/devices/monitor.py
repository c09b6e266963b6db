"""`heiti monitor ADDRESS`: watch a device's CPU, memory, temperature and frequency live, without a graph.

ADDRESS is `local` (this machine), `tcp://HOST:PORT` (or plain `HOST:PORT`) or `serial:PORT@BAUD`,
a device running `heiti serve`. A device streams STATS only while a model is loaded, unless the
link's HELLO says `"monitor": true` (docs/protocol.md); an older server that does not know the
field says so in its HELLO reply (no `monitor: true`) and we stop with a clear message.

`samples()` is the one source of samples, shared by the terminal view here and the editor's
Devices dock (app/docks/devices.py): a generator that yields dicts on the host's clock.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from heiti.engine.payloads import TargetHandle

#: what the view shows: key, label, unit
FIELDS = (("cpu_percent", "CPU", "%"), ("mem_percent", "memory", "%"), ("temp_c", "temperature", "°C"),
          ("freq_mhz", "frequency", "MHz"))
SHORT = {"cpu_percent": "cpu", "mem_percent": "mem", "temp_c": "temp", "freq_mhz": "freq"}
#: a quiet link is pinged this often, so the device's idle limit never closes a monitor
PING_EVERY_S = 30.0
SPARK = "▁▂▃▄▅▆▇█"


class MonitorError(Exception):
    """The address is wrong, or the device cannot be reached or watched."""


def parse_monitor_address(text: str, token: str = "", timeout_s: float = 5.0) -> TargetHandle:
    """`local`, `tcp://HOST:PORT`, `HOST:PORT` or `serial:PORT@BAUD` -> a TargetHandle."""
    from heiti.nodes.devices.info import parse_device_address

    raw = text.strip()
    if raw in ("local", "localhost"):
        return TargetHandle(kind="local", address="local")
    if raw and raw[0].isalnum() and "://" not in raw and not raw.startswith("serial:"):
        raw = "tcp://" + raw  # a bare HOST:PORT
    try:
        target = parse_device_address(raw)
    except ValueError as err:
        raise MonitorError(f"{err}, or local") from None
    target.options.update(timeout_s=timeout_s, token=token or os.environ.get("HEITI_TOKEN", ""))
    return target


def describe(target: TargetHandle) -> str:
    if target.kind == "serial":
        return f"serial {target.address} @ {target.options.get('baud')} baud"
    return "this machine" if target.kind == "local" else f"tcp {target.address}"


def samples(target: TargetHandle, period_s: float = 0.5, stop: threading.Event | None = None,
            info: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Yield samples ({t: seconds since the start on this host, cpu_percent, mem_percent, rss_mb,
    temp_c, freq_mhz, ...}; None where unreadable) until `stop` is set or the caller stops.

    `period_s` applies to `local`; a device samples at its own `--stats-period`. `info` (a dict)
    receives the device's HELLO description. Raises MonitorError when the device cannot be
    reached, refuses us, or falls silent.
    """
    stop = stop or threading.Event()
    if target.kind == "local":
        yield from _local(period_s, stop, info)
    else:
        yield from _remote(target, stop, info)


def _local(period_s: float, stop: threading.Event, info: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    import platform

    from heiti.nodes.devices.stats import StatsSampler

    if info is not None:
        info.update(hostname=platform.node(), machine=platform.machine(), stats_period=period_s, cpu_count=os.cpu_count())
    sampler = StatsSampler(period_s)
    start, seen = time.monotonic(), 0
    try:
        while not stop.is_set():
            if sampler.count == seen or sampler.latest is None:
                stop.wait(min(0.05, period_s / 4))
                continue
            seen = sampler.count
            sample = dict(sampler.latest)
            sample["t"] = round(float(sample.get("t", time.monotonic())) - start, 3)
            yield sample
    finally:
        sampler.stop()


def _remote(target: TargetHandle, stop: threading.Event, info: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    from heiti.nodes.devices.protocol import DEFAULT_MAX_PAYLOAD, VERSION, Channel, MsgType, ProtocolError
    from heiti.nodes.devices.transport import LinkClosed, LinkTimeout, SerialTransport, connect_tcp

    timeout = float(target.options.get("timeout_s", 5.0))
    name = describe(target)
    try:
        if target.kind == "serial":
            transport = SerialTransport(target.address, int(target.options.get("baud", 115200)))
        else:
            transport = connect_tcp(target.address, timeout)
    except (LinkClosed, LinkTimeout, OSError) as err:
        raise MonitorError(f"cannot reach {name}: {err}") from None
    channel = Channel(transport, DEFAULT_MAX_PAYLOAD, frame_timeout=min(timeout, 5.0))
    seq = 1
    try:
        channel.send(MsgType.HELLO, {"protocol": VERSION, "client": "heiti monitor",
                                     "token": target.options.get("token", ""), "monitor": True}, seq=seq, timeout=timeout)
        hello = _await_reply(channel, seq, timeout, name)
        if hello.get("monitor") is not True:
            raise MonitorError(f"{name} does not stream its figures while idle (an older `heiti serve` without "
                               "monitor support): update Heiti on the device")
        if info is not None:
            info.update(hello)
        period = float(hello.get("stats_period") or 0.5)
        silence = max(5.0, 5 * period, timeout)
        offset = time.monotonic() - float(hello.get("time", time.monotonic()))  # device clock -> ours, roughly
        start = last_stats = last_ping = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            if now - last_stats > silence:
                raise MonitorError(f"{name} sent no figures for {silence:g} s")
            if now - last_ping > PING_EVERY_S:
                seq += 1
                channel.send(MsgType.PING, {}, seq=seq, timeout=timeout)
                last_ping = now
            try:
                msg = channel.receive(min(0.25, period))
            except ProtocolError:
                continue  # a damaged frame: the next sample will do
            if msg is None or msg.type != MsgType.STATS:
                continue
            last_stats = time.monotonic()
            sample = dict(msg.fields)
            device_t = sample.get("t")
            host_t = float(device_t) + offset if isinstance(device_t, int | float) else last_stats
            sample["t"] = round(max(host_t - start, 0.0), 3)  # read up to a period before we asked
            yield sample
    except (LinkClosed, LinkTimeout, OSError) as err:
        raise MonitorError(f"{name}: the link dropped ({err})") from None
    finally:
        try:
            channel.send(MsgType.BYE, seq=seq + 1, timeout=1.0)
        except (LinkClosed, LinkTimeout, OSError):
            pass
        channel.close()


def _await_reply(channel: Any, seq: int, timeout: float, name: str) -> dict[str, Any]:
    from heiti.nodes.devices.protocol import MsgType, ProtocolError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = channel.receive(max(deadline - time.monotonic(), 0.01))
        except ProtocolError:
            continue
        if msg is None:
            break
        if msg.type == MsgType.ERROR and msg.seq in (seq, 0):
            text = msg.fields.get("message", "refused")
            hint = " (give --token or set HEITI_TOKEN)" if msg.fields.get("name") == "UNAUTHORIZED" else ""
            raise MonitorError(f"{name} refused the monitor: {text}{hint}")
        if msg.type == MsgType.HELLO and msg.seq == seq and msg.is_reply:
            return dict(msg.fields)
    raise MonitorError(f"{name} did not answer HELLO within {timeout:g} s (is `heiti serve` running there?)")


# --- the terminal view -------------------------------------------------------------------------------
def value_text(sample: dict[str, Any], key: str, unit: str) -> str:
    """A figure with its unit, or "n/a" when the device does not expose it (never a fake zero)."""
    value = sample.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    digits = 0 if unit == "MHz" else 1
    return f"{value:.{digits}f} {unit}" if unit != "%" else f"{value:.{digits}f}%"


def plain_line(sample: dict[str, Any]) -> str:
    """One line per sample, for logs and pipes: `t=1.0s cpu=12.5% mem=40.1% temp=n/a freq=2400MHz`."""
    parts = [f"t={float(sample.get('t', 0.0)):.1f}s"]
    parts += [f"{SHORT[key]}={value_text(sample, key, unit).replace(' ', '')}" for key, _, unit in FIELDS]
    return " ".join(parts)


def sparkline(values: list[float], width: int = 30) -> str:
    values = [v for v in values if v is not None][-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(int((v - low) / span * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)] for v in values)


class _History:
    def __init__(self, keep: int = 120) -> None:
        self.values: dict[str, deque[float]] = {key: deque(maxlen=keep) for key, _, _ in FIELDS}
        self.count = 0

    def add(self, sample: dict[str, Any]) -> None:
        self.count += 1
        for key, values in self.values.items():
            value = sample.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values.append(float(value))

    def table(self, title: str, sample: dict[str, Any]) -> Any:
        from rich.table import Table

        table = Table(title=title, caption=f"{self.count} samples, t={float(sample.get('t', 0)):.1f} s — Ctrl-C to stop",
                      expand=False)
        for column in ("", "now", "min", "mean", "max", "history"):
            table.add_column(column, justify="left" if column in ("", "history") else "right")
        for key, label, unit in FIELDS:
            values = list(self.values[key])
            if not values:
                table.add_row(label, "n/a", "", "", "", "[dim]not exposed here[/dim]")
                continue
            low, mean, high = (value_text({key: v}, key, unit) for v in (min(values), sum(values) / len(values),
                                                                          max(values)))
            table.add_row(label, value_text(sample, key, unit), low, mean, high, sparkline(values))
        return table


def run_monitor(target: TargetHandle, seconds: float | None = None, period_s: float = 0.5, live: bool | None = None,
                out: Any = None) -> int:
    """Show samples until `seconds` have passed (None: until Ctrl-C). Returns the exit code."""
    out = out or sys.stdout
    live = out.isatty() if live is None else live
    stop = threading.Event()
    timer = threading.Timer(seconds, stop.set) if seconds else None
    info: dict[str, Any] = {}
    history = _History()
    title = f"heiti monitor — {describe(target)}"
    view = None
    stream = None
    try:
        if timer is not None:
            timer.daemon = True
            timer.start()
        stream = samples(target, period_s, stop, info)
        if live:
            from rich.console import Console
            from rich.live import Live

            view = Live(console=Console(file=out), auto_refresh=False, transient=False)
            view.start()
        else:
            print(f"# {title}", file=out, flush=True)
        for sample in stream:
            history.add(sample)
            if view is not None:
                host = info.get("hostname") or ""
                view.update(history.table(title + (f" ({host})" if host else ""), sample), refresh=True)
            else:
                print(plain_line(sample), file=out, flush=True)
        return 0
    except KeyboardInterrupt:
        return 0
    except MonitorError as err:
        print(f"heiti monitor: {err}", file=sys.stderr, flush=True)
        return 2
    finally:
        stop.set()
        if stream is not None:
            stream.close()  # ends the link (BYE) or the local sampler now, not at garbage collection
        if timer is not None:
            timer.cancel()
        if view is not None:
            view.stop()


def main(args: Any) -> int:
    """Entry of `heiti monitor` (engine/cli.py)."""
    if args.seconds is not None and args.seconds <= 0:
        print("heiti monitor: --seconds must be positive", file=sys.stderr)
        return 2
    try:
        target = parse_monitor_address(args.address, token=args.token or "", timeout_s=args.timeout)
    except MonitorError as err:
        print(f"heiti monitor: {err}", file=sys.stderr)
        return 2
    return run_monitor(target, seconds=args.seconds, period_s=args.period)
