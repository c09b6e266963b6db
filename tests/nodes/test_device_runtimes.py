"""Every runtime measured through `heiti serve`: what the runtime nodes send in LOAD (their params,
the model's full meta and tensor descriptions) must pass the device's options schema."""

from __future__ import annotations

import pytest
from heiti.engine.measurements import read_measurements

from tests.nodes.device_helpers import ServerThread
from tests.nodes.test_runtimes import FAST, _graph, _run, registry, tiny  # noqa: F401 - fixtures


@pytest.mark.heavy  # torch, TensorFlow and OpenVINO load in one server: ~40 s on 2 busy cores
def test_every_runtime_kind_loads_on_a_device_with_the_host_options(tiny, registry, tmp_path):  # noqa: F811
    server = ServerThread(tmp_path / "device")
    try:
        graph = _graph(tiny, {
            "ov": ("runtime.openvino", "onnx", {}, {**FAST, "threads": 1}),
            "torch": ("runtime.torch", "torch", {}, FAST),
            "keras": ("runtime.keras", "keras", {"layout": "NHWC"}, FAST),
            "lite": ("runtime.litert", "tflite", {"layout": "NHWC"}, FAST),
        }, target={"kind": "tcp", "address": server.address})
        result, events = _run(registry, graph, tmp_path, cache=False)
    finally:
        server.stop()
    assert result.status == "ok", result.errors
    for node in ("ov", "torch", "keras", "lite"):
        data = read_measurements(tmp_path / "run" / "measurements" / f"{node}.json").data
        assert data.target.kind == "tcp" and data.device_latency_ms is not None
        assert data.classification.accuracy > 0
