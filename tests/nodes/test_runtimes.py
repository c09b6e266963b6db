"""The runtime nodes through the Executor, on real frameworks and the tiny digits models."""

from __future__ import annotations

import gzip
import json
from typing import Any

import numpy as np
import pytest
from heiti.engine import DatasetHandle, ModelArtifact, Node, Out
from heiti.engine.events import NodeFailed, NodeMetric
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph
from heiti.engine.measurements import read_measurements
from heiti.engine.payloads import TargetHandle
from heiti.engine.registry import Registry
from heiti.nodes.runtimes import RUNTIME_NODES
from heiti.nodes.runtimes.backends import open_session
from pydantic import BaseModel, ConfigDict

from tests.nodes import tiny_models


class _P(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GivenDataset(Node):
    """A dataset .npz given by path (test only)."""

    kind = "h2test.dataset"

    class Params(_P):
        path: str
        class_names: list[str] = []

    outputs = {"dataset": Out(DatasetHandle, format="classification")}

    def run(self, ctx):
        return {"dataset": DatasetHandle(path=self.params.path, class_names=self.params.class_names,
                                         input_shape=[1, 8, 8])}


class GivenModel(Node):
    """A model file given by path, format and meta (test only)."""

    kind = "h2test.model"

    class Params(_P):
        path: str
        fmt: str
        meta: dict[str, Any] = {}
        inputs: list[dict[str, Any]] = []

    outputs = {"model": Out(ModelArtifact)}

    @classmethod
    def output_formats(cls, params, input_formats=None):
        return {"model": params.fmt if params else None}

    def run(self, ctx):
        return {"model": ModelArtifact(path=self.params.path, model_format=self.params.fmt,
                                       meta=self.params.meta, inputs=self.params.inputs)}


class GivenTarget(Node):
    """A target handle (test only)."""

    kind = "h2test.target"

    class Params(_P):
        kind: str = "local"
        address: str = ""

    outputs = {"target": Out(TargetHandle)}

    @classmethod
    def output_formats(cls, params, input_formats=None):
        return {"target": params.kind if params else None}

    def run(self, ctx):
        return {"target": TargetHandle(kind=self.params.kind, address=self.params.address)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_models.shared(tmp_path_factory)


@pytest.fixture
def registry():
    reg = Registry()
    for cls in [GivenDataset, GivenModel, GivenTarget, *RUNTIME_NODES]:
        reg.register(cls)
    return reg


def _graph(tiny, runtimes: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]],
           target: dict[str, Any] | None = None, dataset=None, inputs=()) -> Graph:
    """runtimes: node id -> (runtime kind, model format, model meta extra, runtime params)."""
    nodes = [{"id": "data", "kind": "h2test.dataset",
              "params": {"path": str(dataset or tiny.dataset), "class_names": tiny.class_names}}]
    edges = []
    if target:
        nodes.append({"id": "target", "kind": "h2test.target", "params": target})
    for node_id, (kind, fmt, meta, params) in runtimes.items():
        path = tiny.paths[fmt]
        nodes.append({"id": f"m_{node_id}", "kind": "h2test.model",
                      "params": {"path": str(path), "fmt": fmt.split("_")[0], "meta": {**tiny.meta, **meta},
                                 "inputs": list(inputs)}})
        nodes.append({"id": node_id, "kind": kind, "params": params})
        edges += [{"from": [f"m_{node_id}", "model"], "to": [node_id, "model"]},
                  {"from": ["data", "dataset"], "to": [node_id, "dataset"]}]
        if target:
            edges.append({"from": ["target", "target"], "to": [node_id, "target"]})
    return Graph.model_validate({"name": "runtimes", "nodes": nodes, "edges": edges})


def _run(registry, graph, tmp_path, name="run", cache=True):
    executor = Executor(registry, cache_dir=tmp_path / "cache", use_cache=cache)
    events = []
    executor.subscribe(events.append)
    return executor.run(graph, tmp_path / name), events


def _argmax_reference(tiny, n):
    session = open_session("onnxruntime", str(tiny.paths["onnx"]), {})
    with np.load(tiny.dataset) as data:
        x, y = data["x_test"][:n], data["y_test"][:n]
    return np.concatenate([session.run([x[i:i + 1]])[0] for i in range(len(x))]).argmax(1), y


def _undecided(tiny, n) -> int:
    """Samples whose class another fp32 runtime may legitimately pick differently (tests/tolerance.py)."""
    from tests.tolerance import decided, onnx_fp32_atol

    with np.load(tiny.dataset) as data:
        x = data["x_test"][:n]
    session = open_session("onnxruntime", str(tiny.paths["onnx"]), {})
    logits = np.concatenate([session.run([x[i:i + 1]])[0] for i in range(len(x))])
    return int((~decided(logits, onnx_fp32_atol(tiny.paths["onnx"], x))).sum())


FAST = {"warmup": 2, "max_samples": 60, "sample_period_s": 0.02}
#: latencies_ms are stored to 6 decimals: each value, and so any mean or percentile of them, is off by at most this
STORED_MS = 0.5e-6 + 1e-12


def test_every_runtime_measures_the_same_model(tiny, registry, tmp_path):
    graph = _graph(tiny, {
        "ort": ("runtime.onnxruntime", "onnx", {}, {**FAST, "threads": 1}),
        "ov": ("runtime.openvino", "onnx", {}, FAST),
        "tvm": ("runtime.tvm", "tvm", {}, FAST),
        "torch": ("runtime.torch", "torch", {}, FAST),
        "keras": ("runtime.keras", "keras", {"layout": "NHWC"}, FAST),
        "lite": ("runtime.litert", "tflite", {"layout": "NHWC"}, FAST),
        "lite8": ("runtime.litert", "tflite_int8", {"layout": "NHWC", "convert_time_s": 0.5}, FAST),
    })
    result, events = _run(registry, graph, tmp_path)
    assert result.status == "ok", result.errors
    pred, y = _argmax_reference(tiny, 60)
    expected_acc = float(np.mean(pred == y))
    flippable = _undecided(tiny, 60) / 60  # accuracy the fp32 rounding of another runtime may move
    for node_id in ("ort", "ov", "tvm", "torch", "keras", "lite", "lite8"):
        path = tmp_path / "run" / "measurements" / f"{node_id}.json"
        data = read_measurements(path).data
        assert data.runtime == result.outputs[node_id]["measurements"].runtime
        lat = np.array(data.latencies_ms)
        assert lat.size == data.latency_ms.count == 60
        assert data.latency_ms.mean == pytest.approx(lat.mean(), abs=STORED_MS)
        assert data.latency_ms.p99 == pytest.approx(np.percentile(lat, 99), abs=STORED_MS)
        assert data.latency_ms.min == pytest.approx(lat.min(), abs=STORED_MS)
        assert data.latency_ms.first is not None and data.latency_ms.first > 0
        assert data.loop_period_ms >= data.latency_ms.mean
        assert data.throughput_per_s == pytest.approx(1000 / lat.mean(), rel=STORED_MS / lat.min())
        cls = data.classification
        cm = np.array(cls.confusion_matrix)
        assert cm.sum() == 60 and cm.shape == (10, 10)
        assert cls.accuracy == pytest.approx(np.trace(cm) / 60)
        if node_id != "lite8":  # the float models compute the same logits up to fp32 rounding
            assert cls.accuracy == pytest.approx(expected_acc, abs=flippable + 1e-12)
        else:
            assert cls.accuracy > expected_acc - 0.1
        model_file = tiny.paths[{"ort": "onnx", "ov": "onnx", "lite": "tflite", "lite8": "tflite_int8"}.get(node_id, node_id)]
        assert data.model_size_bytes == model_file.stat().st_size
        assert data.model_gzip_bytes == len(gzip.compress(model_file.read_bytes(), compresslevel=6, mtime=0))
        assert "class_names" not in data.model_meta and data.model_meta["layout"] in ("NCHW", "NHWC")
        assert isinstance(data.environment["int8_dot_product"], list)  # Linux: read from /proc/cpuinfo
        assert data.dataset["samples"] == 60 and data.dataset["split"] == "test"
        assert data.environment["frameworks"] and data.environment["cores_logical"] >= 1
        names = {ts.name for ts in data.resources}
        assert {"cpu_percent", "rss_mb", "mem_percent"} <= names
        load = data.machine_load  # None for loops under 0.5 s (tests/nodes/test_contention.py)
        assert load is None or (load["seconds"] >= 0.5 and load["cores"] >= 1 and load["other_cores"] >= 0)
    lite8 = read_measurements(tmp_path / "run" / "measurements" / "lite8.json").data
    assert lite8.compile_time_s == 0.5 and lite8.model_meta["convert_time_s"] == 0.5
    warnings = {n: read_measurements(tmp_path / "run" / "measurements" / f"{n}.json").data.warnings for n in ("tvm", "ort")}
    quiet = {n: [w for w in ws if "while this runtime was timed" not in w] for n, ws in warnings.items()}  # load: the machine's
    assert any("untuned" in w for w in quiet["tvm"]) and quiet["ort"] == []
    metric_names = {(e.node, e.name) for e in events if isinstance(e, NodeMetric)}
    for node_id in ("ort", "lite"):
        for name in ("latency_ms", "cpu_percent", "rss_mb", "mem_percent"):
            assert (node_id, name) in metric_names
    latency_events = [e for e in events if isinstance(e, NodeMetric) and e.node == "ort" and e.name == "latency_ms"]
    assert len(latency_events) <= 60 and latency_events[-1].x == 59


def test_cache_hit_publishes_the_file_again(tiny, registry, tmp_path):
    graph = _graph(tiny, {"ort": ("runtime.onnxruntime", "onnx", {}, FAST)})
    first, _ = _run(registry, graph, tmp_path, "one")
    second, _ = _run(registry, graph, tmp_path, "two")
    assert first.states["ort"] == "done" and second.states["ort"] == "cached"
    a = json.loads((tmp_path / "one" / "measurements" / "ort.json").read_text())
    b = json.loads((tmp_path / "two" / "measurements" / "ort.json").read_text())
    assert a["latencies_ms"] == b["latencies_ms"]
    # the run summary rounds accuracy to 4 decimals
    assert second.outputs["ort"]["measurements"].summary["accuracy"] == pytest.approx(a["classification"]["accuracy"], abs=5e-5)


def test_batches_cover_every_sample(tiny, registry, tmp_path):
    graph = _graph(tiny, {"ort": ("runtime.onnxruntime", "onnx", {}, {**FAST, "max_samples": 50, "batch_size": 8})})
    result, _ = _run(registry, graph, tmp_path, cache=False)
    assert result.status == "ok", result.errors
    data = read_measurements(tmp_path / "run" / "measurements" / "ort.json").data
    assert data.latency_ms.count == 7  # 50 samples in calls of 8, the last one padded
    assert np.array(data.classification.confusion_matrix).sum() == 50
    pred, y = _argmax_reference(tiny, 50)  # one sample per call there: another summation order
    assert data.classification.accuracy == pytest.approx(np.mean(pred == y), abs=_undecided(tiny, 50) / 50 + 1e-12)
    throughput = 50 / (np.sum(data.latencies_ms) / 1000)  # from latencies stored to 6 decimals
    assert data.throughput_per_s == pytest.approx(throughput, rel=STORED_MS / min(data.latencies_ms))


def _failure(events, node_id):
    return next(e for e in events if isinstance(e, NodeFailed) and e.node == node_id)


def test_corrupt_model_is_a_clear_node_error(tiny, registry, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny.paths["onnx"].read_bytes()[:200])  # truncated
    tiny_copy = tiny_models.TinyModels(root=tiny.root, dataset=tiny.dataset, class_names=tiny.class_names,
                                       paths={**tiny.paths, "onnx": broken}, meta=tiny.meta)
    graph = _graph(tiny_copy, {"ort": ("runtime.onnxruntime", "onnx", {}, FAST)})
    result, events = _run(registry, graph, tmp_path, cache=False)
    failed = _failure(events, "ort")
    assert result.states["ort"] == "failed"
    assert failed.error_type == "NodeError" and not failed.traceback
    assert "broken.onnx" in failed.message and "onnxruntime" in failed.message


def test_fixed_batch_model_refuses_a_bigger_batch(tiny, registry, tmp_path):
    graph = _graph(tiny, {"tvm": ("runtime.tvm", "tvm", {}, {**FAST, "batch_size": 4})},
                   inputs=[{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}])
    result, events = _run(registry, graph, tmp_path, cache=False)
    failed = _failure(events, "tvm")
    assert failed.error_type == "NodeError" and "batch size is fixed at 1" in failed.message


def test_wrong_layout_is_named(tiny, registry, tmp_path):
    graph = _graph(tiny, {"lite": ("runtime.litert", "tflite", {"layout": "NCHW"}, FAST)})
    result, events = _run(registry, graph, tmp_path, cache=False)
    failed = _failure(events, "lite")
    assert failed.error_type == "NodeError" and "layout" in failed.message


def test_remote_run_records_device_timing(tiny, registry, tmp_path):
    from tests.nodes.device_helpers import ServerThread

    server = ServerThread(tmp_path / "device")
    try:
        graph = _graph(tiny, {"ort": ("runtime.onnxruntime", "onnx", {}, {**FAST, "max_samples": 0})},
                       target={"kind": "tcp", "address": server.address})
        result, events = _run(registry, graph, tmp_path, cache=False)
    finally:
        server.stop()
    assert result.status == "ok", result.errors
    data = read_measurements(tmp_path / "run" / "measurements" / "ort.json").data
    assert data.target.kind == "tcp" and data.target.address == server.address
    assert data.target.device.get("runtimes")
    host, device = data.latency_ms, data.device_latency_ms
    assert device is not None and device.count == host.count == 300  # the whole test split
    assert device.mean < host.mean  # the round trip holds the device's call
    pred, y = _argmax_reference(tiny, 300)
    assert data.classification.accuracy == pytest.approx(np.mean(pred == y), abs=_undecided(tiny, 300) / 300 + 1e-12)
    device_metrics = [e for e in events if isinstance(e, NodeMetric) and e.source != "host"]
    assert device_metrics and {e.name for e in device_metrics} >= {"cpu_percent"}
    device_series = [ts for ts in data.resources if ts.source != "host"]
    assert {ts.name for ts in device_series} >= {"cpu_percent"}


def test_remote_device_down_is_a_node_error(tiny, registry, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    graph = _graph(tiny, {"ort": ("runtime.onnxruntime", "onnx", {}, FAST)},
                   target={"kind": "tcp", "address": address})
    result, events = _run(registry, graph, tmp_path, cache=False)
    failed = _failure(events, "ort")
    assert not failed.traceback and address in failed.message  # a NodeError (DeviceError is one)


def test_cancel_stops_the_loop(tiny, registry, tmp_path):
    with np.load(tiny.dataset) as data:  # a long test split, so the loop is caught running
        arrays = {k: data[k] for k in data.files}
    arrays["x_test"] = np.tile(arrays["x_test"], (200, 1, 1, 1))
    arrays["y_test"] = np.tile(arrays["y_test"], 200)
    np.savez(tmp_path / "long.npz", **arrays)
    graph = _graph(tiny, {"ort": ("runtime.onnxruntime", "onnx", {}, {"warmup": 0, "sample_period_s": 0.01})},
                   dataset=tmp_path / "long.npz")
    executor = Executor(registry, cache_dir=tmp_path / "cache", use_cache=False)
    seen = []

    def stop_on_first_latency(event):
        if isinstance(event, NodeMetric) and event.name == "latency_ms":
            seen.append(event.x)
            executor.cancel()

    executor.subscribe(stop_on_first_latency)
    result = executor.run(graph, tmp_path / "run")
    assert result.status == "cancelled"
    assert seen and max(seen) < 60_000 - 1
    assert not (tmp_path / "run" / "measurements" / "ort.json").exists()


def test_data_prepared_ahead_is_taken_once_and_only_for_the_same_file(tiny, registry, tmp_path):
    """prepare_ahead (a worker does it while the node waits for its model) holds the split; the run
    takes it instead of reading the file — shown by blanking the held copy — unless the file changed."""
    import os
    import shutil

    from heiti.nodes.runtimes import OnnxRuntimeRun, ahead

    data_path = tmp_path / "digits.npz"
    shutil.copyfile(tiny.dataset, data_path)
    params = {**FAST, "max_samples": 30}
    graph = _graph(tiny, {"ort": ("runtime.onnxruntime", "onnx", {}, params)}, dataset=data_path)
    handle = DatasetHandle(path=str(data_path), class_names=tiny.class_names, input_shape=[1, 8, 8])

    def predicted_columns(name: str) -> int:
        result, _ = _run(registry, graph, tmp_path, name=name, cache=False)
        assert result.status == "ok", result.errors
        cm = np.array(read_measurements(tmp_path / name / "measurements" / "ort.json").data.classification.confusion_matrix)
        assert cm.sum() == 30
        return int((cm.sum(axis=0) > 0).sum())

    OnnxRuntimeRun.prepare_ahead(OnnxRuntimeRun.Params(**params), {"dataset": handle})
    assert ahead.held() == 1
    x, _y, layout = next(iter(ahead._held.values()))
    assert layout == "NCHW" and x.shape[0] == 30
    x[:] = 0.0  # every sample the same: one predicted class if, and only if, the run used this copy
    assert predicted_columns("held") == 1
    assert ahead.held() == 0  # handed over once
    assert predicted_columns("read") > 1  # read from the file again

    OnnxRuntimeRun.prepare_ahead(OnnxRuntimeRun.Params(**params), {"dataset": handle})
    next(iter(ahead._held.values()))[0][:] = 0.0
    st = os.stat(data_path)
    os.utime(data_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file changed since
    assert predicted_columns("changed") > 1
    assert ahead.held() == 0


def test_runtimes_interleaved_take_turns_over_the_same_stretch_of_time(tiny, registry, tmp_path):
    """`heiti run --interleave`: two runtimes ready together are timed block by block in turns, so
    both sample the same stretch of the machine's time (engine.turns), and each still makes its calls."""
    params = {**FAST, "threads": 1, "duration_s": 1.2}
    graph = _graph(tiny, {"ort_a": ("runtime.onnxruntime", "onnx", {}, params),
                          "ort_b": ("runtime.onnxruntime", "onnx", {}, {**params, "label": "b"})})
    executor = Executor(registry, cache_dir=tmp_path / "cache", use_cache=False, jobs=2, interleave=True)
    result = executor.run(graph, tmp_path / "run")
    assert result.status == "ok", result.errors
    spans = {}
    for node_id in ("ort_a", "ort_b"):
        data = read_measurements(tmp_path / "run" / "measurements" / f"{node_id}.json").data
        assert data.latency_count >= 60 and data.passes >= 1
        assert data.machine_load is not None and data.machine_load["seconds"] >= 1.0  # its own turns only
        cpu = next(s for s in data.resources if s.name == "cpu_percent")
        spans[node_id] = (cpu.t[0], cpu.t[-1])
    (a0, a1), (b0, b1) = spans["ort_a"], spans["ort_b"]
    assert max(a0, b0) < min(a1, b1), spans  # timed over the same stretch, not one after the other
    turns = [read_measurements(tmp_path / "run" / "measurements" / f"{n}.json").data.turns for n in spans]
    assert all(t is not None and t >= 1 for t in turns), turns

