"""Typed contracts between nodes: DatasetHandle.load_split and ModelArtifact.meta (ModelMeta)."""

import json

import numpy as np
import pytest
from heiti.engine.cache import dump_outputs, load_outputs
from heiti.engine.node import NodeError
from heiti.engine.payloads import DatasetHandle, ModelArtifact, ModelMeta
from heiti.nodes.models import step_meta


class _Ctx:
    node_id = "conv"


def _dataset(tmp_path, **arrays):
    path = tmp_path / "dataset.npz"
    np.savez(path, **arrays)
    return DatasetHandle(path=path, class_names=["a", "b"], input_shape=[1, 2, 2])


def test_load_split_gives_x_and_y_and_sizes_from_headers(tmp_path):
    x = np.arange(5 * 4, dtype=np.float32).reshape(5, 1, 2, 2)
    ds = _dataset(tmp_path, x_train=x, y_train=np.arange(5) % 2, x_test=x[:2], y_test=np.array([1, 0]),
                  x_val=x[:0], y_val=np.zeros(0, dtype=np.int64))
    split = ds.load_split("train")
    assert np.array_equal(split.x, x) and np.array_equal(split.y, np.arange(5) % 2)
    x3, y3 = ds.load_split("train", max_samples=3)
    assert len(x3) == 3 and list(y3) == [0, 1, 0]
    assert ds.split_names() == ["train", "val", "test"]
    assert [ds.split_size(s) for s in ("train", "val", "test", "calib")] == [5, 0, 2, 0]
    assert ds.has_labels("test")


def test_unlabelled_split_has_no_y(tmp_path):
    ds = _dataset(tmp_path, x_test=np.zeros((3, 1, 2, 2), dtype=np.float32))
    split = ds.load_split("test")
    assert split.x.shape == (3, 1, 2, 2) and split.y is None
    assert not ds.has_labels("test")


def test_missing_split_and_damaged_file_are_clear_errors(tmp_path):
    ds = _dataset(tmp_path, x_test=np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(NodeError, match=r"dataset dataset\.npz has no 'train' split \(it has: test\)"):
        ds.load_split("train")
    ds.path.write_bytes(b"not a zip")
    with pytest.raises(NodeError, match=r"cannot read the dataset: .*dataset\.npz is not an \.npz file"):
        ds.load_split("test")


def test_split_arrays_keeps_a_detection_set_together(tmp_path):
    ds = _dataset(tmp_path, x_val=np.zeros((2, 3, 8, 8), dtype=np.float32),
                  boxes_val=np.ones((3, 4)), labels_val=np.array([0, 1, 1]), image_idx_val=np.array([0, 0, 1]),
                  boxes_test=np.ones((1, 4)), class_names=np.array(["a", "b"]))
    arrays = ds.split_arrays("val")
    assert set(arrays) == {"x", "boxes", "labels", "image_idx"}
    assert set(ds.split_arrays("val", only=("boxes", "labels"))) == {"boxes", "labels"}


def test_model_meta_is_typed_and_still_reads_like_the_old_dict():
    meta = ModelMeta.model_validate({"layout": "NHWC", "input_shape": [3, 8, 8], "tuned_trials": 0,
                                     "pipeline": [{"node": "m", "kind": "model.x", "seconds": 0.5}],
                                     "my_plugin": {"k": 1}, "test_loss": None})
    assert meta.layout == "NHWC" and meta.pipeline[0].seconds == 0.5 and meta.tuned_trials == 0
    assert meta["layout"] == "NHWC" and meta.get("input_shape") == [3, 8, 8]
    assert meta["pipeline"] == [{"node": "m", "kind": "model.x", "seconds": 0.5}]
    assert meta["my_plugin"] == {"k": 1} and meta.my_plugin == {"k": 1}
    # keys never set are absent, as in the dict it replaces; keys set to None are present
    assert "arch" not in meta and meta.get("arch", "none") == "none" and "test_loss" in meta
    with pytest.raises(KeyError):
        meta["postprocess"]
    assert set(meta.keys()) == {"layout", "input_shape", "tuned_trials", "pipeline", "my_plugin", "test_loss"}


def test_old_cached_outputs_read_back_unchanged(tmp_path):
    """A ModelArtifact written by the old code (meta a plain dict) restores; only set keys are written."""
    old = {"model": {"type": "ModelArtifact", "data": {
        "path": str(tmp_path / "nodes" / "m" / "model.onnx"), "model_format": "onnx", "inputs": [], "outputs": [],
        "meta": {"task": "classification", "class_names": ["0", "1"], "layout": "NCHW", "input_shape": [1, 8, 8],
                 "pipeline": [{"node": "m", "kind": "model.torch_cnn", "seconds": 0.1}], "history": [{"epoch": 1}],
                 "ov_config": {"INFERENCE_PRECISION_HINT": "f32"}}}}}
    outputs = load_outputs(json.loads(json.dumps(old)), tmp_path / "nodes", {})
    model = outputs["model"]
    assert isinstance(model.meta, ModelMeta) and model.meta.class_names == ["0", "1"]
    assert model.meta.ov_config == {"INFERENCE_PRECISION_HINT": "f32"}
    again = dump_outputs(outputs, tmp_path / "nodes", {})
    assert again["model"]["data"]["meta"] == old["model"]["data"]["meta"]


def test_step_meta_appends_the_step_and_drops_step_times(tmp_path):
    upstream = ModelArtifact(path=tmp_path / "m.pt", model_format="torch", meta={
        "arch": "cnn", "convert_time_s": 2.0, "pipeline": [{"node": "m", "kind": "model.torch_cnn", "seconds": 1.0}]})
    meta = step_meta(upstream, _Ctx(), "convert.torch_to_onnx", 0.25, convert_time_s=0.25, quantization="fp32")
    assert isinstance(meta, ModelMeta) and meta.arch == "cnn" and meta.quantization == "fp32"
    assert [(s.node, s.seconds) for s in meta.pipeline] == [("m", 1.0), ("conv", 0.25)]
    assert meta.compile_seconds() == 0.25
    assert ModelMeta(pipeline=meta.pipeline).compile_seconds() == pytest.approx(1.25)
    assert upstream.meta.convert_time_s == 2.0  # the upstream artifact is not changed


def test_run_info_holds_ancestors_outcomes_only_and_its_key_ignores_cache_hits():
    from heiti.engine.payloads import RunInfo

    edges = [("data", "model"), ("model", "rt1"), ("model", "rt2"), ("rt1", "report"), ("rt2", "report"),
             ("data", "other")]
    kinds = {"data": "dataset.digits", "model": "model.x", "rt1": "runtime.a", "rt2": "runtime.b",
             "report": "report.html", "other": "runtime.c"}
    order = ["data", "model", "other", "rt1", "rt2", "report"]

    def info(states, errors=None, name="g"):
        return RunInfo.upstream_of("report", name, order, kinds, edges, states, errors or {})

    ran = info({"data": "done", "model": "done", "other": "failed", "rt1": "done", "rt2": "failed"},
               {"other": "boom", "rt2": "no such op"})
    assert ran.states == {"data": "done", "model": "done", "rt1": "done", "rt2": "failed"}  # not "other"
    assert ran.messages == {"rt2": "no such op"} and ran.nodes[2] == {"id": "other", "kind": "runtime.c"}
    cached = info({"data": "cached", "model": "cached", "other": "failed", "rt1": "cached", "rt2": "failed"},
                  {"other": "another failure", "rt2": "no such op"})
    assert cached.key() == ran.key()
    assert info(cached.states, cached.messages, name="renamed").key() != ran.key()
    assert info({**cached.states, "rt2": "done"}).key() != ran.key()
