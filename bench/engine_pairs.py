"""ONNX Runtime against a compiled TVM model, as the runtime node times them, in alternating processes.

On this shared 2-core host one process's ONNX Runtime may take 7.5 ms and the next one's 11 ms
for the same MobileNetV2 call (2 threads): a single run of each engine can land anywhere in that
range. So each pair starts a fresh process per engine, times 3 × 200 calls back to back over 200
different inputs (the runtime node's way), and alternates which engine goes first; the figure is
the median of the per-pair ratios.

    .venv/bin/python bench/engine_pairs.py MODEL.onnx MODEL.so [--pairs 6] [--threads 2]

(e.g. a run folder's nodes/<convert>/model.onnx and nodes/<compile.tvm>/model.so)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "10000")  # as Heiti sets it (heiti/nodes/__init__.py)

ONE = """
import json, os, statistics, sys, time
import numpy as np
engine, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
shape = [int(d) for d in sys.argv[4].split(",")]
xs = [rng.random(shape, dtype=np.float32) for _ in range(200)]
if engine == "ort":
    import onnxruntime as ort
    options = ort.SessionOptions(); options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    def call(x): session.run(None, {name: x})
else:
    os.environ["TVM_NUM_THREADS"] = str(threads)
    import tvm
    from tvm.runtime.vm import VirtualMachine
    dev = tvm.cpu(0)
    main = VirtualMachine(tvm.runtime.load_module(path), dev)["main"]
    xs = [tvm.runtime.tensor(x, dev) for x in xs]
    def call(x): main(x)
for x in xs[:5]:
    call(x)
times = []
for _ in range(3):
    for x in xs:
        t0 = time.perf_counter(); call(x); times.append(time.perf_counter() - t0)
print(json.dumps({"median_ms": statistics.median(times) * 1e3}))
"""


def one(engine: str, path: str, threads: int, shape: str) -> float:
    out = subprocess.run([sys.executable, "-c", ONE, engine, path, str(threads), shape],
                         capture_output=True, text=True, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx")
    parser.add_argument("tvm")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shape", default="1,3,224,224")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, {args.threads} threads; load {os.getloadavg()}", flush=True)
    ratios = []
    for i in range(args.pairs):
        order = ["ort", "tvm"] if i % 2 == 0 else ["tvm", "ort"]
        ms = {engine: one(engine, args.onnx if engine == "ort" else args.tvm, args.threads, args.shape)
              for engine in order}
        ratios.append(ms["tvm"] / ms["ort"])
        print(f"pair {i + 1}: ORT {ms['ort']:.2f} ms, TVM {ms['tvm']:.2f} ms, TVM/ORT {ratios[-1]:.2f}  "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)
        time.sleep(0.5)
    print(f"TVM/ORT median of {len(ratios)} pairs: {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    main()
