"""A runtime is one class: a plug-in runtime in this one file, loaded through HEITI_PLUGINS.

The plug-in is a least-squares linear classifier stored as an .npz (`linear_npz` format) and a
numpy "runtime" that runs it. Nothing else in Heiti is edited for it, yet it is listed by
`heiti nodes`, validates, runs and is measured, shows in the report, is offered in a device's
HELLO, names numpy in the environment section and has its editor colour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from heiti.engine import DatasetHandle, In, ModelArtifact, Node, Out
from heiti.engine.files import read_npz
from heiti.nodes.runtimes import RuntimeNode
from heiti.nodes.runtimes.backends import BaseSession

PLUGIN = __name__  # this module is the plug-in: HEITI_PLUGINS=tests.nodes.test_plugin_runtime
ROOT = Path(__file__).resolve().parents[2]
COLOUR = "#12a4b6"


# --- the plug-in -------------------------------------------------------------------------------
class LinearSession(BaseSession):
    """scores = x.reshape(n, -1) @ w + b, from the model's w and b arrays."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        arrays = read_npz(model_path, ["w", "b"])
        self.w, self.b = arrays["w"], arrays["b"]
        self.inputs = [{"name": "x", "shape": [None, *options.get("meta", {}).get("input_shape", [])],
                        "dtype": "float32"}]
        self.outputs = [{"name": "scores", "shape": [None, len(self.b)], "dtype": "float32"}]

    def run_prepared(self, feed: Any) -> Any:
        x = feed[0]
        return [x.reshape(len(x), -1) @ self.w + self.b]


class NumpyLinearRun(RuntimeNode):
    """Run a linear .npz model with numpy (a test plug-in)."""

    kind = "runtime.numpy_linear"
    title = "numpy linear"
    runtime = "numpy_linear"
    formats = ("linear_npz",)
    session = f"{PLUGIN}:LinearSession"
    probe = "numpy"
    dists = ("numpy",)
    colours = {"linear_npz": COLOUR}


class LinearModel(Node):
    """Least-squares linear classifier on the train split's one-hot labels (a test plug-in)."""

    kind = "model.numpy_linear"
    title = "Linear (numpy)"
    category = "Models"
    inputs = {"dataset": In(DatasetHandle, formats={"classification"})}
    outputs = {"model": Out(ModelArtifact, format="linear_npz")}

    def run(self, ctx: Any, dataset: DatasetHandle) -> dict[str, Any]:
        x, y = dataset.load_split("train")
        features = np.hstack([x.reshape(len(x), -1), np.ones((len(x), 1), dtype=x.dtype)]).astype(np.float64)
        onehot = np.eye(len(dataset.class_names))[y]
        solution = np.linalg.lstsq(features, onehot, rcond=None)[0].astype(np.float32)
        path = ctx.workdir / "model.npz"
        np.savez(path, w=solution[:-1], b=solution[-1])
        return {"model": ModelArtifact(path=path, model_format="linear_npz", meta={
            "task": "classification", "class_names": dataset.class_names, "layout": dataset.layout,
            "input_shape": dataset.input_shape})}


# --- the tests ---------------------------------------------------------------------------------
def _heiti(*args: str, cwd: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HEITI_PLUGINS": PLUGIN, "HEITI_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT),
           **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "heiti.engine.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.heavy  # three CLI processes and a digits run: ~60 s on a loaded 2-core machine
def test_plugin_runtime_is_listed_validates_runs_is_measured_and_reported(tmp_path):
    listed = _heiti("nodes", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    kinds = {n["kind"]: n for n in json.loads(listed.stdout)}
    model_port = next(p for p in kinds["runtime.numpy_linear"]["inputs"] if p["name"] == "model")
    assert model_port["formats"] == ["linear_npz"]

    graph = {"format": "heiti-graph", "version": 1, "name": "plugin runtime", "nodes": [
        {"id": "data", "kind": "dataset.digits", "params": {}},
        {"id": "linear", "kind": "model.numpy_linear", "params": {}},
        {"id": "np", "kind": "runtime.numpy_linear", "params": {"warmup": 2}},
        {"id": "report", "kind": "report.html", "params": {}}],
        "edges": [{"from": ["data", "dataset"], "to": ["linear", "dataset"]},
                  {"from": ["linear", "model"], "to": ["np", "model"]},
                  {"from": ["data", "dataset"], "to": ["np", "dataset"]},
                  {"from": ["np", "measurements"], "to": ["report", "measurements"]}]}
    (tmp_path / "g.json").write_text(json.dumps(graph), encoding="utf-8")
    checked = _heiti("validate", "g.json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    ran = _heiti("run", "g.json", "--out", "run", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    record = json.loads((tmp_path / "run" / "measurements" / "np.json").read_text(encoding="utf-8"))
    assert record["runtime"] == "numpy_linear" and record["model_format"] == "linear_npz"
    assert record["latency_ms"]["mean"] > 0
    assert record["environment"]["frameworks"]["numpy"] == np.__version__
    # the measured accuracy is exactly the model's own argmax accuracy on the test split
    test = DatasetHandle(path=tmp_path / "run" / "nodes" / "data" / "dataset.npz").load_split("test")
    model = read_npz(tmp_path / "run" / "nodes" / "linear" / "model.npz")
    # one sample per call, as the runtime ran them (batch_size 1): the same float32 sums, bit for bit
    predicted = [int(np.argmax(row.reshape(1, -1) @ model["w"] + model["b"])) for row in test.x.astype(np.float32)]
    assert record["classification"]["accuracy"] == float(np.mean(predicted == test.y))
    assert record["classification"]["accuracy"] > 0.5  # far above the 0.1 of chance: the model is real
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "numpy_linear" in html and "Heiti report — plugin runtime" in html


def test_plugin_runtime_is_in_a_devices_hello_without_importing_frameworks(tmp_path):
    script = (
        "import json, sys\n"
        "from heiti.nodes.devices.server import DeviceServer\n"
        "from heiti.nodes.runtimes.backends import open_session\n"
        f"info = DeviceServer({str(tmp_path / 'device')!r}).device_info()\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'onnxruntime', 'tvm', 'openvino', 'keras') if m in sys.modules]\n"
        "print(json.dumps({'runtimes': info['runtimes'], 'heavy': heavy}))\n")
    env = {**os.environ, "HEITI_PLUGINS": PLUGIN, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert "numpy_linear" in result["runtimes"] and "onnxruntime" in result["runtimes"]
    assert result["heavy"] == []


def test_plugin_runtime_opens_its_session_by_name(tmp_path):
    from heiti.engine.registry import default_registry
    from heiti.nodes.runtimes.backends import available_runtimes, open_session

    registry = default_registry()
    added = [cls for cls in (NumpyLinearRun, LinearModel) if cls.kind not in registry]
    for cls in added:
        registry.register(cls)
    try:
        np.savez(tmp_path / "m.npz", w=np.eye(3, dtype=np.float32), b=np.ones(3, dtype=np.float32))
        assert "numpy_linear" in available_runtimes()
        session = open_session("numpy_linear", str(tmp_path / "m.npz"), {"meta": {"input_shape": [3]}})
        [scores] = session.run([np.array([[1.0, 2.0, 3.0]], dtype=np.float32)])
        assert scores.tolist() == [[2.0, 3.0, 4.0]]
    finally:
        for cls in added:
            registry.unregister(cls.kind)


def test_plugin_runtime_has_its_editor_colour(tmp_path, monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    from heiti.app.canvas import style
    from heiti.engine.registry import default_registry
    from PySide6.QtGui import QColor

    registry = default_registry()
    before = style.format_colour("linear_npz")
    registry.register(NumpyLinearRun)
    try:
        assert style.format_colour("linear_npz") == QColor(COLOUR) != before
        assert style.format_colour("onnx") == QColor("#4f8ef7")  # the built-in runtimes' own colours
    finally:
        registry.unregister(NumpyLinearRun.kind)
