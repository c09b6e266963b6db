"""`heiti device info ADDRESS`: is the board there, what does it run, how far away is it?

Says HELLO and a few PINGs through the same client the runtimes use, prints the device's
description and the round trip; exit 0, or 1 with a clear message when the device cannot be reached.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from heiti.engine.payloads import TargetHandle
from heiti.nodes.devices.client import DeviceClient, DeviceError
from heiti.nodes.devices.protocol import MsgType
from heiti.nodes.devices.transport import parse_address

PINGS = 5


def parse_device_address(text: str) -> TargetHandle:
    """`tcp://HOST:PORT` or `serial:PORT@BAUD` (`serial:/dev/ttyUSB0@115200`) as a TargetHandle."""
    if text.startswith("tcp://"):
        host, port = parse_address(text[len("tcp://"):])
        return TargetHandle(kind="tcp", address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if text.startswith("serial:"):
        port, at, baud = text[len("serial:"):].rpartition("@")
        if not at:
            port, baud = baud, "115200"
        if not port or not baud.isdigit() or not 300 <= int(baud) <= 16_000_000:
            raise ValueError(f"address {text!r}: expected serial:PORT@BAUD, e.g. serial:/dev/ttyUSB0@115200")
        return TargetHandle(kind="serial", address=port, options={"baud": int(baud)})
    raise ValueError(f"address {text!r}: expected tcp://HOST:PORT or serial:PORT@BAUD")


def probe(target: TargetHandle, pings: int = PINGS) -> dict[str, Any]:
    """HELLO, then `pings` PINGs: the device's description plus `rtt_ms` (median, min, max)."""
    client = DeviceClient(target)
    try:
        info = client.hello()
        rtts = []
        for _ in range(pings):
            started = time.perf_counter()
            client.with_retries("PING", lambda: client.request(MsgType.PING, expect=MsgType.PING))
            rtts.append((time.perf_counter() - started) * 1e3)
    finally:
        client.close()
    info["rtt_ms"] = {"median": statistics.median(rtts), "min": min(rtts), "max": max(rtts), "count": len(rtts)}
    info["address"] = client.name
    return info


_ROWS = [("protocol", "protocol"), ("server", "server"), ("hostname", "hostname"), ("system", "system"),
         ("machine", "machine"), ("arch", "arch"), ("python", "python"), ("cpu_count", "CPUs"),
         ("mem_total_mb", "memory (MB)"), ("max_payload", "max frame (bytes)"), ("stats_period", "stats period (s)")]


def format_info(info: dict[str, Any]) -> str:
    lines = [f"device at {info.get('address', '?')}"]
    for key, label in _ROWS:
        if info.get(key) is not None:
            value = info[key]
            lines.append(f"  {label:<18} {json.dumps(value) if isinstance(value, dict | list) else value}")
    lines.append(f"  {'runtimes':<18} {', '.join(info.get('runtimes') or []) or 'none'}")
    known = {key for key, _ in _ROWS} | {"runtimes", "rtt_ms", "address", "time"}
    for key in sorted(set(info) - known):
        lines.append(f"  {key:<18} {info[key]}")
    rtt = info["rtt_ms"]
    lines.append(f"  {'round trip':<18} {rtt['median']:.2f} ms median of {rtt['count']} PINGs "
                 f"({rtt['min']:.2f}–{rtt['max']:.2f} ms)")
    return "\n".join(lines)


def main(args: Any) -> int:
    """Entry point of `heiti device info` (arguments defined in engine/cli.py)."""
    try:
        target = parse_device_address(args.address)
    except ValueError as err:
        print(f"heiti device info: {err}", file=sys.stderr)
        return 1
    target.options.update({"timeout_s": float(args.timeout), "retries": 0})
    if args.token:
        target.options["token"] = args.token
    try:
        info = probe(target)
    except DeviceError as err:
        print(f"heiti device info: {err}. Is `heiti serve` running there?", file=sys.stderr)
        return 1
    print(json.dumps(info, indent=1, default=str) if args.json else format_info(info))
    return 0
