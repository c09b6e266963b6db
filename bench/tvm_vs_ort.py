"""Apache TVM against ONNX Runtime, OpenVINO and LiteRT on MobileNetV2-224 and a ResNet-style CNN.

Both models are built offline with Keras (random weights, He-normal re-initialised so activations
stay O(1) through the depth and the output differences mean something), exported to ONNX with
tf2onnx (NCHW input, as `convert.keras_to_onnx` does) and to TFLite (fp32). Engines, all at the
same thread count:
- ONNX Runtime (the reference: every ratio is to it, and every max difference);
- OpenVINO (f32 precision hint), LiteRT (fp32 .tflite);
- TVM "none": TVM 0.27's own pipeline, no schedule (what compile.tvm did before);
- TVM "default": compile.tvm's default schedule, no measurement (heiti.nodes.tvm_schedule);
- TVM "tuned": MetaSchedule with the xgboost cost model for --tune-minutes per model, started from
  the default schedules, database in --tuning-db (reused: a second run with the same database
  tunes nothing unless --retune).
With --int8 the ONNX model is also quantised to static QDQ (ONNX Runtime's quantize_static, as
optimize.onnx_quantize does: uint8 activations, int8 weights per tensor, 16 random calibration
inputs) and three more engines run it: ONNX Runtime int8, TVM "int8-float" (float maths on
dequantised values, what TVM's importer gives) and TVM "int8" (integer kernels,
heiti.nodes.tvm_int8); their max difference is to ONNX Runtime int8, with the output step.
Every engine runs in its own worker process (spawned; TVM is compiled in the coordinator first),
as the product's runtime nodes each measure alone: with all engines in one process, their thread
pools (ONNX Runtime and TVM spin-wait after a call) disturbed each other and two-thread ratios
moved wildly. The coordinator interleaves rounds (every engine once per round, `--calls` calls,
a `--pause` between engines while the other workers block on their pipes); each figure is the
median over rounds of the engine's median call, and the ratio to ONNX Runtime is the median
over rounds of the per-round ratio, so a busy shared machine's drift cancels out. The load
average is printed with the figures.

    .venv/bin/python bench/tvm_vs_ort.py [--models mobilenetv2,resnet] [--threads 2]
        [--tune-minutes 0] [--tuning-db DIR] [--skip-none] [--rounds 9] [--calls 10] [--pause 0.3] [--int8]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "10000")  # as Heiti sets it (heiti/nodes/__init__.py)


def _reinit(net: Any) -> None:
    rng = np.random.default_rng(0)
    for layer in net.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = []
        for w in weights:
            if w.ndim in (2, 4):
                depthwise = w.ndim == 4 and w.shape[-1] == 1
                fan_in = int(np.prod(w.shape[:2] if depthwise else w.shape[:-1]))
                w = rng.normal(0, np.sqrt(2.0 / fan_in), w.shape).astype(np.float32)
            new.append(w)
        layer.set_weights(new)


def _resnet(input_shape: tuple[int, int, int] = (64, 64, 3), classes: int = 10) -> Any:
    import keras

    layers = keras.layers
    x_in = keras.Input(input_shape)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x_in)))
    for filters, stride in [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)]:
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut))
        x = layers.ReLU()(layers.Add()([y, shortcut]))
    return keras.Model(x_in, layers.Dense(classes)(layers.GlobalAveragePooling2D()(x)))


def build_models(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    out = {}
    for name in names:
        keras.utils.set_random_seed(0)
        if name == "mobilenetv2":
            net, hwc = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3),
                                                      classifier_activation=None), (224, 224, 3)
        else:
            net, hwc = _resnet(), (64, 64, 3)
        _reinit(net)
        spec = tf.TensorSpec([1, *hwc], tf.float32, name="input")
        function = tf.function(lambda x, net=net: net(x, training=False), input_signature=[spec])
        proto, _ = tf2onnx.convert.from_function(function, input_signature=[spec], opset=17, inputs_as_nchw=["input:0"])
        onnx_path = folder / f"{name}.onnx"
        onnx.save(proto, str(onnx_path))
        converter = tf.lite.TFLiteConverter.from_keras_model(net)  # from_concrete_functions gave NaNs here
        tflite_path = folder / f"{name}.tflite"
        tflite_path.write_bytes(converter.convert())
        out[name] = {"onnx": onnx_path, "tflite": tflite_path, "nchw": (1, hwc[2], hwc[0], hwc[1]),
                     "input": proto.graph.input[0].name}
    return out


def quantise_qdq(onnx_path: Path, shape: tuple[int, ...], input_name: str) -> tuple[Path, float]:
    """Static QDQ int8 copy of the model (ONNX Runtime), and its output quantisation step."""
    from onnx import load, numpy_helper
    from onnxruntime import quantization as q

    class Reader:
        def __init__(self) -> None:
            self.rng, self.left = np.random.default_rng(0), 16

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.left -= 1
            return None if self.left < 0 else {input_name: self.rng.standard_normal(shape, dtype=np.float32)}

    prepared = onnx_path.with_name(onnx_path.stem + "-pre.onnx")
    q.quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
    out = onnx_path.with_name(onnx_path.stem + "-qdq.onnx")
    q.quantize_static(str(prepared), str(out), Reader(), quant_format=q.QuantFormat.QDQ,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    model = load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    last = next(n for n in model.graph.node if n.op_type == "DequantizeLinear"
                and n.output[0] == model.graph.output[0].name)
    return out, float(inits[last.input[1]])


def compile_tvm(onnx_path: Path, shape: tuple[int, ...], input_name: str, mode: str, folder: Path,
                tune_minutes: float, tuning_db: Path, retune: bool, int8: str = "") -> tuple[Any, dict[str, Any]]:
    import onnx
    import tvm
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import resolve_target
    from tvm.relax.frontend.onnx import from_onnx

    target, _ = resolve_target("host")
    t0 = time.perf_counter()
    mod = from_onnx(onnx.load(str(onnx_path)), shape_dict={input_name: list(shape)})
    info: dict[str, Any] = {}
    if int8 == "integer":
        from heiti.nodes import tvm_int8

        mod, stats = tvm_int8.rewrite(mod)
        info["integer"] = f"{stats.conv2d} conv2d, {stats.matmul} matmul"
    if mode != "none":
        mod = ts.prepare(mod, target)
        database, stats = ts.default_schedule_database(mod, target)
        info["schedule_s"] = round(stats.seconds, 1)
        if mode == "tuned":
            def progress(elapsed: float, best_ms: float, message: str) -> None:
                if len(info.setdefault("progress", [])) % 20 == 0:
                    print(f"    tuning {elapsed:6.0f} s: estimated {best_ms:.2f} ms ({message})", flush=True)
                info["progress"].append((elapsed, best_ms))

            result = ts.tune(mod, target, tuning_db, minutes=tune_minutes, retune=retune, on_progress=progress)
            info.update(tune_s=round(result.seconds, 1), trials=result.trials, reused=result.reused,
                        estimated_ms=result.best_ms, estimated_default_ms=result.default_ms)
            database = ts.tuned_database(tuning_db, database)
        mod = ts.apply_database(mod, target, database)
    with tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(mod, target=target)
    path = folder / f"{onnx_path.stem}-{mode}{'-' + int8 if int8 else ''}.so"
    executable.export_library(str(path))
    info["compile_s"] = round(time.perf_counter() - t0 - info.get("tune_s", 0.0), 1)
    return path, info


# --- engines: each in its own worker process ------------------------------------------------------
def _open_engine(spec: dict[str, Any], x: np.ndarray) -> tuple[Callable[[], Any], Callable[[], np.ndarray]]:
    """In the worker: (one timed inference, the output) for an engine spec."""
    kind, path, threads = spec["kind"], spec["path"], spec["threads"]
    if kind == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        return (lambda: session.run(None, feed)), (lambda: session.run(None, feed)[0])
    if kind == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                         "INFERENCE_NUM_THREADS": threads})
        request = compiled.create_infer_request()
        return (lambda: request.infer([x])), (lambda: next(iter(request.infer([x]).values())))
    if kind == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=path, num_threads=threads)
        interpreter.allocate_tensors()
        i_out = interpreter.get_output_details()[0]["index"]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.ascontiguousarray(x.transpose(0, 2, 3, 1)))

        def litert_out() -> np.ndarray:
            interpreter.invoke()
            return interpreter.get_tensor(i_out)

        return interpreter.invoke, litert_out
    if kind == "tvm":  # as the product's TVM runtime backend: pool size set before TVM starts
        os.environ["TVM_NUM_THREADS"] = str(threads)
        import tvm
        from tvm.runtime.vm import VirtualMachine

        tvm.get_global_func("runtime.config_threadpool")(1, threads)
        device = tvm.cpu(0)
        main = VirtualMachine(tvm.runtime.load_module(path), device)["main"]
        xt = tvm.runtime.tensor(x, device)

        def tvm_out() -> np.ndarray:
            r = main(xt)
            return r.numpy() if hasattr(r, "numpy") else r[0].numpy()

        return (lambda: main(xt)), tvm_out
    raise ValueError(f"unknown engine kind {kind!r}")


def _worker(spec: dict[str, Any], x: np.ndarray, conn: Any) -> None:
    """A worker process: opens one engine, then answers the coordinator until told to stop.

    Messages in: ("run", K) -> K call times in ns; ("output",) -> the output array; ("stop",).
    While idle it blocks on the pipe, so its thread pool goes quiet and does not disturb the
    engine being measured.
    """
    try:
        t0 = time.perf_counter()
        call, output = _open_engine(spec, x)
        conn.send(("ready", round(time.perf_counter() - t0, 2)))
    except Exception as err:  # noqa: BLE001 - a missing engine is a line in the output, not a crash
        conn.send(("error", f"{type(err).__name__}: {str(err)[:300]}"))
        return
    while True:
        message = conn.recv()
        if message[0] == "run":
            times = []
            for _ in range(int(message[1])):
                t = time.perf_counter_ns()
                call()
                times.append(time.perf_counter_ns() - t)
            conn.send(times)
        elif message[0] == "output":
            conn.send(np.asarray(output()))
        else:
            return


class Engine:
    """The coordinator's handle on one worker process."""

    def __init__(self, name: str, spec: dict[str, Any], x: np.ndarray) -> None:
        import multiprocessing as mp

        context = mp.get_context("spawn")
        self.name = name
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(spec, x, child), daemon=True)
        self.process.start()
        child.close()

    def ready(self) -> str | float:
        """Open time in seconds, or the error text."""
        status, value = self.conn.recv()
        return value if status == "ready" else str(value)

    def run(self, calls: int) -> list[int]:
        self.conn.send(("run", calls))
        return self.conn.recv()

    def output(self) -> np.ndarray:
        self.conn.send(("output",))
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop",))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()


def engine_specs(models: dict[str, Any], name: str, x: np.ndarray, threads: int, args: argparse.Namespace,
                 folder: Path) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """name -> engine spec (what a worker opens); compile/convert info. TVM compiles here, once."""
    m = models[name]
    specs: dict[str, dict[str, Any]] = {"onnxruntime": {"kind": "onnxruntime", "path": str(m["onnx"])},
                                        "openvino": {"kind": "openvino", "path": str(m["onnx"])},
                                        "litert": {"kind": "litert", "path": str(m["tflite"])}}
    info: dict[str, Any] = {}
    modes = [*(["none"] if not args.skip_none else []), "default", *(["tuned"] if args.tune_minutes > 0 else [])]
    for mode in modes:
        path, tinfo = compile_tvm(m["onnx"], x.shape, m["input"], mode, folder, args.tune_minutes,
                                  Path(args.tuning_db).expanduser(), args.retune)
        info[f"tvm-{mode}"] = tinfo
        specs[f"tvm-{mode}"] = {"kind": "tvm", "path": str(path)}
        print(f"  tvm-{mode}: {tinfo}", flush=True)
    if args.int8:
        qdq, info["step"] = quantise_qdq(m["onnx"], x.shape, m["input"])
        specs["ort-int8"] = {"kind": "onnxruntime", "path": str(qdq)}
        for kind, label in (("float", "tvm-int8-float"), ("integer", "tvm-int8")):
            path, tinfo = compile_tvm(qdq, x.shape, m["input"], "default", folder, 0, Path(args.tuning_db), False, kind)
            info[label] = tinfo
            specs[label] = {"kind": "tvm", "path": str(path)}
            print(f"  {label}: {tinfo}", flush=True)
    for spec in specs.values():
        spec["threads"] = threads
    return specs, info


def measure(specs: dict[str, dict[str, Any]], x: np.ndarray, args: argparse.Namespace,
            info: dict[str, Any]) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Per-round median call (ms) of every engine, each in its own process, rounds interleaved.

    In a round every engine runs its calls alone while the other workers block on their pipes;
    `--pause` seconds between engines let the previous engine's pool stop spinning (ONNX Runtime
    and TVM spin-wait after a call). That is how the product's runtime nodes measure: one at a time.
    """
    engines: dict[str, Engine] = {}
    try:
        for k, spec in specs.items():  # opened one at a time: a compile does not disturb another's warm-up
            engine = Engine(k, spec, x)
            opened = engine.ready()
            if isinstance(opened, str):
                print(f"  {k} skipped: {opened}")
                engine.stop()
                continue
            info.setdefault(k, {}).setdefault("compile_s", opened)
            engines[k] = engine
        outputs = {k: e.output() for k, e in engines.items()}
        for e in engines.values():  # warm-up
            e.run(3)
        per: dict[str, list[float]] = {k: [] for k in engines}
        for r in range(args.rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for k in order:
                time.sleep(args.pause)
                n = 2 if k == "tvm-none" else args.calls
                per[k].append(statistics.median(engines[k].run(n)) / 1e6)
        return per, outputs
    finally:
        for e in engines.values():
            e.stop()


def _load() -> str:
    return "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenetv2,resnet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=10, help="calls per engine per round")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds between engines in a round (the previous pool stops spinning)")
    parser.add_argument("--tune-minutes", type=float, default=0.0, help="MetaSchedule budget per model; 0 = no tuned row")
    parser.add_argument("--tuning-db", default=str(Path(tempfile.gettempdir()) / "heiti-bench-tvm-tuning"))
    parser.add_argument("--retune", action="store_true")
    parser.add_argument("--skip-none", action="store_true", help="skip TVM without schedule (slow to measure)")
    parser.add_argument("--int8", action="store_true", help="also a static QDQ int8 copy: ORT int8, TVM int8-float, TVM int8")
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = build_models(folder, names)
        for name in names:
            x = np.random.default_rng(0).standard_normal(models[name]["nchw"], dtype=np.float32)
            print(f"\n== {name} {models[name]['nchw']} threads={args.threads} (load {_load()})", flush=True)
            specs, info = engine_specs(models, name, x, args.threads, args, folder)
            print(f"  measuring: {args.rounds} rounds x {args.calls} calls, each engine in its own process "
                  f"(load {_load()})", flush=True)
            per, outputs = measure(specs, x, args, info)
            ref = np.asarray(outputs["onnxruntime"])
            ref8 = np.asarray(outputs["ort-int8"]) if "ort-int8" in outputs else ref
            diffs = {k: float(np.abs(np.asarray(v).reshape(ref.shape) - (ref8 if "int8" in k and k != "ort-int8" else ref)).max())
                     for k, v in outputs.items()}
            ratios = {k: statistics.median(a / b for a, b in zip(v, per["onnxruntime"], strict=True)) for k, v in per.items()}
            print(f"  load average after: {_load()}; |ORT output| max {np.abs(ref).max():.3g}"
                  + (f"; int8 output step {info['step']:.3g} (int8 rows: max |diff| to ORT int8)" if "step" in info else ""))
            print(f"  {'engine':14} {'median ms':>10} {'x ORT':>7} {'compile s':>10} {'max |diff|':>11}")
            for k in per:
                comp = info.get(k, {}).get("compile_s")
                extra = f"  tuned {info[k].get('tune_s')} s, {info[k].get('trials')} trials" if k == "tvm-tuned" else ""
                print(f"  {k:14} {statistics.median(per[k]):10.2f} {ratios[k]:7.2f} {comp if comp is not None else '':>10} "
                      f"{diffs[k]:11.2e}{extra}")

if __name__ == "__main__":
    main()
