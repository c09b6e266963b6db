"""What Heiti adds around the runtime call, for ONNX Runtime, LiteRT and TVM (docs/architecture.md, Measurements).

For each runtime, one session/interpreter/VM and one set of prepared inputs serve both:
- a bare loop: `for feed in feeds: <the runtime call>` timed as a whole, divided by the count;
- Heiti's measurement as the runtime nodes do it (`heiti.nodes.runtimes.loop.measure_sampled`: resource
  sampler thread, latencies streamed as metric events through a real event bus into a JSONL file).
The two alternate in short rounds (each going first in every other round), and each figure is
the median over rounds of the ratio of two neighbouring loops, so the drift of a shared, busy
machine cancels out. Two ratios:
- timed mean / bare mean           (does Heiti's timer inflate the call?)       goal <= 1.02
- loop period / timed mean         (what Heiti adds between calls: staging the   goal <= 1.10
                                    inputs, fetching/dequantising outputs, bookkeeping)
The bare loop makes the runtime call only (LiteRT: `invoke()` on inputs set once), which is
exactly the region Heiti times.

The model is a small CNN on 3x64x64 inputs (calls of roughly 1 ms), single-threaded runtimes.

    .venv/bin/python bench/overhead.py [--rounds 30] [--round-s 0.25] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from heiti.engine.context import CancelToken, RunContext  # noqa: E402
from heiti.engine.events import EventBus, JsonlWriter  # noqa: E402
from heiti.nodes.runtimes import RuntimeParams  # noqa: E402
from heiti.nodes.runtimes.backends import open_session, session_steps  # noqa: E402
from heiti.nodes.runtimes.loop import measure_sampled  # noqa: E402

SHAPE = (3, 64, 64)
WIDTHS = (32, 64, 128)


def torch_onnx(out: Path) -> Path:
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    c = SHAPE[0]
    for w in WIDTHS:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = w
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)).eval()
    torch.onnx.export(model, (torch.zeros(1, *SHAPE),), str(out), dynamo=False,
                      input_names=["input"], output_names=["logits"])
    return out


def keras_tflite(out: Path) -> Path:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SHAPE[1], SHAPE[2], SHAPE[0]), batch_size=1)
    h = inputs
    for w in WIDTHS:
        h = keras.layers.Conv2D(w, 3, padding="same", activation="relu")(h)
        h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(10)(h))
    out.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return out


def tvm_so(onnx_path: Path, out: Path) -> Path:
    import onnx
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={"input": [1, *SHAPE]})
    cpu = tvm.target.codegen.llvm_get_system_cpu()
    tvm.compile(mod, target=tvm.target.Target({"kind": "llvm", "mcpu": cpu})).export_library(str(out))
    return out


def bare_loop(session, runtime: str, feeds: list) -> float:
    """Mean ms of the runtime call in a plain loop, on the session's own framework object."""
    clock = time.perf_counter_ns
    if runtime == "onnxruntime":
        sess, names = session._session, session._out_names
        t = clock()
        for feed in feeds:
            sess.run(names, feed)
    elif runtime == "litert":
        invoke = session._interp.invoke
        session.stage(feeds[0])
        t = clock()
        for _ in feeds:
            invoke()
    else:  # tvm
        main = session._main
        t = clock()
        for feed in feeds:
            main(*feed)
    return (clock() - t) / len(feeds) / 1e6


def heiti_loop(session, feeds: list, ctx: RunContext) -> tuple[float, float]:
    """(timed mean ms, loop period ms) of Heiti's measurement on the same session and feeds."""
    _, stage, run_call, finish = session_steps(session)
    result, _ = measure_sampled(run_call, feeds, metric=lambda n, v, x: ctx.metric(n, v, x=x), warmup=0,
                                stage=stage, finish=finish, cancelled=lambda: ctx.cancelled,
                                period_s=RuntimeParams().sample_period_s, t0=ctx.t0)
    return float(result.latencies_ns.mean() / 1e6), result.wall_ns / result.completed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--round-s", type=float, default=0.25, help="target length of one round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="heiti-overhead-"))
    print(f"building models in {tmp} ...", flush=True)
    onnx_path = torch_onnx(tmp / "cnn.onnx")
    models = {"onnxruntime": (onnx_path, {}, "NCHW"),
              "litert": (keras_tflite(tmp / "cnn.tflite"), {}, "NHWC"),
              "tvm": (tvm_so(onnx_path, tmp / "cnn.so"),
                      {"inputs": [{"name": "input", "shape": [1, *SHAPE], "dtype": "float32"}]}, "NCHW")}
    x = np.random.default_rng(0).normal(size=(400, *SHAPE)).astype(np.float32)

    bus = EventBus()
    writer = JsonlWriter(tmp / "events.jsonl")
    bus.subscribe(writer)
    print(f"\n{args.rounds} rounds of ~{args.round_s} s per loop, {args.threads} thread(s); "
          "ms are medians, ratios medians of neighbouring rounds\n")
    print(f"load average before: {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores\n")
    print(f"{'runtime':12s} {'calls':>6s} {'bare ms':>9s} {'timed ms':>9s} {'period ms':>10s} "
          f"{'timed/bare':>11s} {'period/timed':>13s}")
    for runtime, (path, options, layout) in models.items():
        session = open_session(runtime, str(path), {**options, "threads": args.threads})
        data = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        for _ in range(10):  # warm up once for both loops
            session.run([data[:1]])
        t = time.perf_counter()
        session.run([data[:1]])
        calls = int(min(len(data), max(10, args.round_s / (time.perf_counter() - t))))
        feeds = [session.prepare([data[i:i + 1]]) for i in range(calls)]
        ctx = RunContext(runtime, tmp, tmp, bus, CancelToken())
        bare, timed, period, r_timed, r_period = [], [], [], [], []
        for r in range(args.rounds):
            if r % 2 == 0:  # alternate which loop goes first: the first of a pair runs ~1% slower here
                b = bare_loop(session, runtime, feeds)
                tm, pm = heiti_loop(session, feeds, ctx)
            else:
                tm, pm = heiti_loop(session, feeds, ctx)
                b = bare_loop(session, runtime, feeds)
            bare.append(b)
            timed.append(tm)
            period.append(pm)
            r_timed.append(tm / b)
            r_period.append(pm / tm)
        med = statistics.median
        print(f"{runtime:12s} {calls:6d} {med(bare):9.4f} {med(timed):9.4f} {med(period):10.4f} "
              f"{med(r_timed):11.3f} {med(r_period):13.3f}", flush=True)
        session.close()
    writer.close()
    print(f"\nload average after: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print("goals: timed/bare <= 1.02, period/timed <= 1.10")


if __name__ == "__main__":
    main()
