"""compile.tvm's default CPU schedule, tuning and the TVM runtime's threads, with real TVM.

The model is a small ONNX CNN made here with onnx.helper (conv 3x3 + relu, a strided conv + clip,
global pooling, a dense layer): every kind of fused function MobileNet-style models produce, and
it compiles in seconds. Tolerances come from float32 epsilon, the longest reduction in the model
and the magnitude of the reference output (a reordered sum of K terms errs by <= K * eps * sum).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def make_onnx(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, shape: tuple[int, ...], fan_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), name)

    inits = [const("w1", (8, 3, 3, 3), 27), const("b1", (8,), 27), const("w2", (16, 8, 3, 3), 72),
             const("w3", (10, 16), 16), const("b3", (10,), 16),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory) -> Path:
    return make_onnx(tmp_path_factory.mktemp("tvm") / "tiny.onnx")


@pytest.fixture(scope="module")
def default_build(onnx_model, tmp_path_factory):
    """compile.tvm with its defaults, compiled once for the tests that only read or run it."""
    return compile_node(onnx_model, tmp_path_factory.mktemp("default"))[0]


class Ctx:
    """The slice of RunContext compile.tvm uses, recording metrics."""

    def __init__(self, workdir: Path) -> None:
        self.workdir, self.node_id, self.cancelled = workdir, "tvm", False
        self.metrics: list[tuple[str, float, float | None]] = []

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def metric(self, name: str, value: float, x: float | None = None, source: str = "host") -> None:
        self.metrics.append((name, value, x))

    def log(self, message: str, level: str = "info") -> None:
        pass

    def warn(self, message: str) -> None:
        pass


def compile_node(onnx_model: Path, workdir: Path, **params):
    from heiti.engine import ModelArtifact
    from heiti.nodes.compilers import TVMCompile

    workdir.mkdir(parents=True, exist_ok=True)
    model = ModelArtifact(path=onnx_model, model_format="onnx",
                          inputs=[{"name": "x", "shape": [1, 3, 32, 32], "dtype": "float32"}],
                          outputs=[{"name": "y", "shape": [1, 10], "dtype": "float32"}])
    ctx = Ctx(workdir)
    return TVMCompile(params).run(ctx, model=model)["model"], ctx


def ort_reference(onnx_model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def run_tvm(path: Path, x: np.ndarray, threads: int = 1) -> np.ndarray:
    from heiti.nodes.runtimes.backends.tvm import TVMSession

    session = TVMSession(str(path), {"threads": threads, "inputs": [{"name": "x", "shape": list(x.shape)}]})
    try:
        return session.run([x])[0]
    finally:
        session.close()


def assert_agrees(onnx_model: Path, x: np.ndarray, got: np.ndarray, ref: np.ndarray) -> None:
    """TVM and ONNX Runtime differ only in summation order: each output within its fp32 rounding
    bound propagated through the network (tests/tolerance.py), whatever the CPU's vector width."""
    from tests.tolerance import assert_fp32_close, onnx_fp32_atol

    assert_fp32_close(got, ref, onnx_fp32_atol(onnx_model, x), "TVM against ONNX Runtime")


def scheduled_module(onnx_model: Path):
    import onnx
    from heiti.nodes import tvm_schedule as ts
    from heiti.nodes.compilers import resolve_target
    from tvm.relax.frontend.onnx import from_onnx

    target, _ = resolve_target("host")
    mod = ts.prepare(from_onnx(onnx.load(str(onnx_model)), shape_dict={"x": [1, 3, 32, 32]}), target)
    database, stats = ts.default_schedule_database(mod, target)
    return ts.apply_database(mod, target, database), stats


def test_default_schedule_gives_every_function_parallel_vectorised_loops(onnx_model):
    import tvm

    mod, stats = scheduled_module(onnx_model)
    assert stats.tasks >= 4 and stats.scheduled == stats.tasks and not stats.failed
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert funcs
    convs = {name: f.script() for name, f in funcs.items() if "conv2d" in name}
    assert len(convs) == 2
    for name, text in convs.items():
        assert "T.parallel(" in text, f"{name} has no parallel loop"
        assert "T.vectorized(" in text, f"{name} has no vectorised loop"
        assert "conv2d_nhwc" in text, f"{name} is not computed in NHWC"
    for name, f in funcs.items():
        assert f.attrs is not None and f.attrs.get("tirx.is_scheduled", False), f"{name} was left unscheduled"


def test_default_schedule_agrees_with_onnxruntime(onnx_model, default_build):
    model = default_build
    meta = model.meta
    assert meta["tvm_schedule"]["schedule"] == "default"
    assert meta["tvm_schedule"]["scheduled"] == meta["tvm_schedule"]["tasks"]
    assert meta["compile_time_s"] > 0 and meta["tune_time_s"] == 0 and meta["tuned"] is False
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((1, 3, 32, 32), dtype=np.float32)
        ref = ort_reference(onnx_model, x)
        assert_agrees(onnx_model, x, run_tvm(model.path, x), ref)


def test_schedule_none_is_tvms_own_pipeline(onnx_model, tmp_path):
    model, _ = compile_node(onnx_model, tmp_path / "none", schedule="none")
    assert model.meta["tvm_schedule"] == {"schedule": "none", "layout": "NHWC",
                                          "version": model.meta["tvm_schedule"]["version"],
                                          "build_s": model.meta["tvm_schedule"]["build_s"]}
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32), dtype=np.float32)
    ref = ort_reference(onnx_model, x)
    assert_agrees(onnx_model, x, run_tvm(model.path, x), ref)


@pytest.mark.parametrize("threads", [1, 2])
def test_runtime_threads_param_sizes_tvms_pool(default_build, threads):
    """TVM's pool runs `threads - 1` workers beside the calling thread; counted in a fresh process."""
    model = default_build
    script = f"""
import json, numpy as np, psutil
from heiti.nodes.runtimes.backends.tvm import TVMSession
before = len(psutil.Process().threads())
s = TVMSession({str(model.path)!r}, {{"threads": {threads}, "inputs": [{{"name": "x", "shape": [1, 3, 32, 32]}}]}})
s.run([np.zeros((1, 3, 32, 32), np.float32)])
print(json.dumps({{"added": len(psutil.Process().threads()) - before, "threads": s.threads}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**_env(), "TVM_NUM_THREADS": "7"})  # the param wins over the environment
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"added": threads - 1, "threads": threads}


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.mark.heavy
def test_tuning_records_progress_and_reuse(onnx_model, tmp_path):
    """A few trials: best-latency metrics stream, records land in the shared database, a re-compile reuses them."""
    pytest.importorskip("xgboost")
    db = tmp_path / "db"
    model, ctx = compile_node(onnx_model, tmp_path / "tune", tune_trials=8, tuning_db=str(db))
    # issue 10: unmarked seeds made the search abort and the node fall back (test_tvm_tuning_seeds.py)
    assert "tuning_failed" not in model.meta["tvm_schedule"], model.meta["tvm_schedule"]["tuning_failed"]
    tuning = model.meta["tvm_schedule"]["tuning"]
    assert tuning["cost_model"] == "xgb" and not tuning["reused"] and tuning["trials"] > 0
    assert model.meta["tuned"] is True and model.meta["tune_time_s"] > 0
    duel = tuning["duel"]  # the tuned build was timed against the default one and the faster kept
    assert duel["tuned_ms"] > 0 and duel["default_ms"] > 0
    if duel["tuned_ms"] != duel["default_ms"]:  # the figures are rounded: equal ones may have decided either way
        assert duel["kept"] == ("tuned" if duel["tuned_ms"] < duel["default_ms"] else "default")
    best = [v for name, v, _ in ctx.metrics if name == "tvm_tuning_best_ms"]
    assert best and all(b > 0 for b in best) and best[-1] <= best[0]
    assert (db / "database_tuning_record.json").stat().st_size > 0
    x = np.random.default_rng(3).standard_normal((1, 3, 32, 32), dtype=np.float32)
    ref = ort_reference(onnx_model, x)
    assert_agrees(onnx_model, x, run_tvm(model.path, x), ref)
    again, _ = compile_node(onnx_model, tmp_path / "again", tune_minutes=5, tuning_db=str(db))
    assert again.meta["tvm_schedule"]["tuning"]["reused"] is True
    assert again.meta["tune_time_s"] < 60
