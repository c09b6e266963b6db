"""Device protocol figures: upload throughput (TCP; serial over a pseudo-terminal at 115200 and
921600 baud against the line's limit of baud/10 bytes/s) and the per-inference round-trip
overhead over TCP for a 602 KB input against the same ONNX Runtime session in-process.

The device runs as a real `heiti serve` subprocess. Prints figures and ratios; asserts nothing.
Goals (docs/architecture.md, Devices and the wire protocol): serial payload >= 90% of baud/10; round trip <= 1 ms above in-process.

    .venv/bin/python bench/protocol.py [--quick]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from heiti.engine.payloads import ModelArtifact, TargetHandle  # noqa: E402
from heiti.nodes.devices.client import DeviceClient  # noqa: E402
from heiti.nodes.devices.targets import open_remote_session, pack_model  # noqa: E402
from heiti.nodes.devices.transport import VirtualSerialLink  # noqa: E402


def start_server(args: list[str], workdir: Path, wait_for: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "heiti.engine.cli", "serve", *args, "--workdir", str(workdir)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if re.search(wait_for, line):
            proc.match = re.search(wait_for, line)  # type: ignore[attr-defined]
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("heiti serve did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def upload_rate(target: TargetHandle, size: int, tmp: Path) -> tuple[float, float]:
    """(seconds, payload bytes/s) to upload `size` fresh random bytes."""
    blob = tmp / f"blob-{time.monotonic_ns()}.bin"
    blob.write_bytes(np.random.default_rng().bytes(size))
    bundle = pack_model(blob, "raw")
    client = DeviceClient(target)
    client.connect()
    try:
        started = time.perf_counter()
        client.upload(bundle)
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    return elapsed, size / elapsed


def bench_tcp_upload(tmp: Path, quick: bool) -> None:
    proc = start_server(["--tcp", "127.0.0.1:0"], tmp / "tcp-device", r"listening on tcp [\d.]+:(\d+)")
    port = int(proc.match.group(1))  # type: ignore[attr-defined]
    target = TargetHandle(kind="tcp", address=f"127.0.0.1:{port}", options={"timeout_s": 30})
    try:
        size = (16 if quick else 64) * 2**20
        rates = [upload_rate(target, size, tmp)[1] for _ in range(3)]
        print(f"upload over TCP loopback, {size / 2**20:.0f} MiB: median {statistics.median(rates) / 1e6:.0f} MB/s "
              f"(runs: {', '.join(f'{r / 1e6:.0f}' for r in rates)} MB/s; SHA-256 and CRC32 included)")
    finally:
        stop(proc)


def bench_serial_upload(tmp: Path, baud: int, seconds: float) -> None:
    with VirtualSerialLink() as link:
        proc = start_server(["--serial", link.port_a, "--baud", str(baud)], tmp / f"serial-{baud}", r"serving on serial")
        try:
            limit = baud / 10
            size = int(limit * seconds)
            target = TargetHandle(kind="serial", address=link.port_b, options={"baud": baud, "timeout_s": 10})
            elapsed, rate = upload_rate(target, size, tmp)
            print(f"upload over a pty at {baud} baud, {size / 1e3:.0f} kB: {rate:,.0f} B/s payload in {elapsed:.1f} s "
                  f"= {rate / limit:.1%} of the line's limit ({limit:,.0f} B/s) — goal >= 90%")
        finally:
            stop(proc)


def bench_round_trip(tmp: Path, quick: bool) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32), "w")
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0), helper.make_node("MatMul", ["m", "w"], ["y"])],
        "pool-fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], initializer=[weight, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp / "pool_fc.onnx"
    onnx.save(model, str(path))
    x = np.random.default_rng(1).random((1, 3, 224, 224), dtype=np.float32)

    proc = start_server(["--tcp", "127.0.0.1:0"], tmp / "rt-device", r"listening on tcp [\d.]+:(\d+)")
    port = int(proc.match.group(1))  # type: ignore[attr-defined]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    local = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    remote = open_remote_session(TargetHandle(kind="tcp", address=f"127.0.0.1:{port}", options={"timeout_s": 10}),
                                 "onnxruntime", ModelArtifact(path=path, model_format="onnx"), {"threads": 1})
    try:
        for _ in range(50):
            remote.run([x])
            local.run(None, {"x": x})
        rounds, per = (5, 100) if quick else (10, 200)
        remote_ms, local_ms, device_ms = [], [], []
        for _ in range(rounds):  # interleaved blocks, so that load from elsewhere hits both alike
            for _ in range(per):
                t = time.perf_counter_ns()
                remote.run([x])
                remote_ms.append((time.perf_counter_ns() - t) / 1e6)
                device_ms.append(remote.last_device_ms)
            for _ in range(per):
                t = time.perf_counter_ns()
                local.run(None, {"x": x})
                local_ms.append((time.perf_counter_ns() - t) / 1e6)
    finally:
        remote.close()
        stop(proc)
    med = statistics.median
    print(f"round trip over TCP loopback, {x.nbytes / 1e3:.0f} kB input, {len(remote_ms)} calls:")
    print(f"  remote: median {med(remote_ms):.3f} ms, mean {statistics.fmean(remote_ms):.3f} ms "
          f"(device-side run: median {med(device_ms):.3f} ms)")
    print(f"  in-process: median {med(local_ms):.3f} ms, mean {statistics.fmean(local_ms):.3f} ms")
    print(f"  overhead: median {med(remote_ms) - med(local_ms):.3f} ms, "
          f"mean {statistics.fmean(remote_ms) - statistics.fmean(local_ms):.3f} ms above in-process — goal <= 1 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller transfers, fewer calls")
    args = parser.parse_args()
    from heiti.nodes.devices import protocol

    print(f"CRC-32 from {protocol.crc32.__module__ or 'zlib'} (install zlib-ng for the fast one)")
    with tempfile.TemporaryDirectory(prefix="heiti-bench-") as name:
        tmp = Path(name)
        bench_round_trip(tmp, args.quick)
        bench_tcp_upload(tmp, args.quick)
        for baud in (115200, 921600):
            bench_serial_upload(tmp, baud, seconds=3.0 if args.quick else 8.0)


if __name__ == "__main__":
    main()
