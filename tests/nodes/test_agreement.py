"""Output agreement: the figures on known differences, and a run where the report fills them in."""

from __future__ import annotations

import json

import numpy as np
import pytest
from heiti.nodes.runtimes.agreement import MIN_COSINE, compare_outputs
from heiti.nodes.runtimes.outputs import load_outputs, save_outputs

EPS32 = float(np.finfo(np.float32).eps)


def _samples(arrays):
    return [[np.asarray(a)[None]] for a in arrays]


def test_identical_outputs_agree_exactly():
    ref = _samples(np.random.default_rng(0).normal(size=(5, 10)))
    a = compare_outputs(ref, ref, classes=True, reference="r")
    assert (a.max_abs, a.max_rel, a.top1, a.within) == (0.0, 0.0, 1.0, True)
    assert a.cosine == pytest.approx(1.0, abs=1e-12)


def test_figures_on_a_known_difference():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(4, 3, 8))
    out = ref.copy()
    out[2, 1, 5] += 0.05  # one element off by 0.05
    a = compare_outputs(_samples(out), _samples(ref), classes=False, tolerance=0.01)
    assert a.max_abs == pytest.approx(0.05, abs=1e-12)
    assert a.max_rel == pytest.approx(0.05 / np.abs(ref).max(), rel=1e-9)
    x, y = out[2].ravel(), ref[2].ravel()
    assert a.cosine == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), abs=1e-12)
    assert a.top1 is None and a.within == (a.max_rel <= 0.01 and a.cosine >= MIN_COSINE)


def test_float32_rounding_is_within_and_int8_like_error_is_not():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(8, 100)).astype(np.float64)
    fp32 = ref.astype(np.float32).astype(np.float64)  # one rounding: |error| <= eps/2 * |x|
    a = compare_outputs(_samples(fp32), _samples(ref), classes=True)
    assert a.max_rel <= EPS32 / 2 and a.within and a.top1 == 1.0
    step = (ref.max() - ref.min()) / 255  # an 8-bit quantisation of the range, off by 3 steps somewhere
    int8 = np.round(ref / step) * step
    int8[0, 0] += 3 * step
    b = compare_outputs(_samples(int8), _samples(ref), classes=True)
    assert b.max_rel > 0.01 and b.within is False


def test_an_all_zero_reference_is_judged_by_the_absolute_difference():
    """A sigmoid map of an image without text is 0 on one runtime and 5e-9 on another: no relative
    figure exists, and a difference far below float32 rounding at unit scale agrees."""
    ref = _samples(np.zeros((2, 1, 4, 4)))
    tiny = _samples(np.full((2, 1, 4, 4), 5.5e-9))
    a = compare_outputs(tiny, ref, classes=False)
    assert a.max_rel is None and a.cosine is None and a.within is True and "all zeros" in a.note
    big = _samples(np.full((2, 1, 4, 4), 0.2))
    assert compare_outputs(big, ref, classes=False).within is False


def test_top1_counts_changed_arg_max():
    ref = np.eye(4)[[0, 1, 2, 3]] + 0.1
    out = ref.copy()
    out[3] = np.eye(4)[0] + 0.1  # the last sample now says class 0
    a = compare_outputs(_samples(out), _samples(ref), classes=True)
    assert a.top1 == 0.75


def test_non_finite_outputs_do_not_agree():
    ref = _samples(np.ones((2, 3)))
    out = _samples(np.array([[1.0, np.nan, 1.0], [1, 1, 1]]))
    a = compare_outputs(out, ref, classes=False)
    assert a.within is False and "non-finite" in a.note


def test_saved_outputs_round_trip_with_odd_shapes(tmp_path):
    outputs = [[np.float32(i), np.full((1, 2, 3), i, np.float32), np.arange(i + 1)] for i in range(3)]
    assert save_outputs(tmp_path / "o.npz", outputs) == 3
    back = load_outputs(tmp_path / "o.npz")
    for got, want in zip(back, outputs, strict=True):
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g, w) and np.asarray(g).shape == np.asarray(w).shape
    assert save_outputs(tmp_path / "cap.npz", outputs, max_bytes=30) == 1  # the cap keeps the first samples


@pytest.mark.heavy
def test_report_stores_agreement_and_picks_the_fastest_that_agrees(tmp_path):
    """Unlabelled inputs, a task-none map model on ONNX Runtime (reference) and OpenVINO, and a
    perturbed copy on ONNX Runtime that must be rejected: the verdict names an agreeing runtime."""
    import onnx
    from heiti.engine.executor import Executor
    from heiti.engine.graph import Graph
    from heiti.engine.registry import default_registry
    from onnx import TensorProto, helper, numpy_helper

    def model(path, scale):
        w = numpy_helper.from_array(np.full((4, 3, 3, 3), scale, np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
                                   helper.make_node("Sigmoid", ["y"], ["prob"])], "m",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                                  [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 4, 16, 16])], [w])
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.save(m, str(path))
        return str(path)

    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(size=(6, 3, 16, 16)).astype(np.float32))
    fast = {"warmup": 1, "sample_period_s": 0.02}
    nodes = [{"id": "data", "kind": "dataset.npz", "params": {"path": str(tmp_path / "x.npz")}},
             {"id": "good", "kind": "model.file", "params": {"path": model(tmp_path / "g.onnx", 0.05), "task": "none"}},
             {"id": "bad", "kind": "model.file", "params": {"path": model(tmp_path / "b.onnx", 0.06), "task": "none"}},
             {"id": "ort", "kind": "runtime.onnxruntime", "params": fast},
             {"id": "ov", "kind": "runtime.openvino", "params": {**fast, "precision": "f32"}},
             {"id": "drift", "kind": "runtime.onnxruntime", "params": fast},
             {"id": "report", "kind": "report.html", "params": {"reference": "ort"}}]
    edges = [{"from": ["good", "model"], "to": ["ort", "model"]}, {"from": ["good", "model"], "to": ["ov", "model"]},
             {"from": ["bad", "model"], "to": ["drift", "model"]}]
    edges += [{"from": ["data", "dataset"], "to": [r, "dataset"]} for r in ("ort", "ov", "drift")]
    edges += [{"from": [r, "measurements"], "to": ["report", "measurements"]} for r in ("ort", "ov", "drift")]
    graph = Graph.model_validate({"name": "agree", "nodes": nodes, "edges": edges})
    run = tmp_path / "run"
    Executor(default_registry(), cache_dir=tmp_path / "cache", use_cache=False).run(graph, run)
    got = {r: json.loads((run / "measurements" / f"{r}.json").read_text())["agreement"] for r in ("ort", "ov", "drift")}
    assert got["ort"]["max_abs"] == 0 and got["ort"]["reference"] == "ort"
    # fp32 OpenVINO against ONNX Runtime: a 27-term convolution, |error| <= 27 eps sum|w x| (Higham's
    # gamma_27), with sum|w x| <= 0.05 * 27 * max|x|; the sigmoid's slope is <= 1/4 and max|prob| >= 1/2
    x_max = float(np.abs(np.load(tmp_path / "x.npz")["x"]).max())
    bound = 27 * EPS32 * (0.05 * 27 * x_max) / 4 / 0.5 + 8 * EPS32  # + a few ulp for the sigmoid itself
    assert got["ov"]["max_rel"] <= bound and got["ov"]["within"] is True
    assert got["drift"]["within"] is False and got["drift"]["max_rel"] > 0.01
    markdown = (run / "report.md").read_text()
    assert "agreement" in markdown and "drift" in markdown
    verdict = markdown.split("\n\n")[0:8]
    assert any(("Use ov" in p or "Keep ort" in p or "Use ort" in p) for p in verdict), verdict
