"""The detector: targets and decoding agree, NMS, layouts, ONNX export, evaluation glue, learning."""

from __future__ import annotations

import numpy as np
import pytest
from heiti.nodes.detection import evaluate_detection
from heiti.nodes.detection.detector import (
    STRIDE,
    build_centernet,
    detection_batches,
    detection_loss,
    make_targets,
)
from heiti.nodes.detection.metrics import box_iou
from heiti.nodes.detection.postprocess import batched_nms, decode, nms, output_map

from tests.tolerance import assert_fp32_close, torch_fp32_atol

CONFIG = {"type": "centernet", "num_classes": 3, "stride": STRIDE, "input_size": [64, 64],
          "score_threshold": 0.05, "nms_iou": 0.5, "max_detections": 100}


def ideal_output(boxes, labels, num_classes=3, hw=(16, 16)):
    """The output map a perfect network would produce for these boxes: logits from the targets."""
    heat, reg, _ = make_targets(np.asarray(boxes, float), np.asarray(labels), num_classes, hw)
    logits = np.log(np.clip(heat, 1e-6, 1 - 1e-6) / (1 - np.clip(heat, 1e-6, 1 - 1e-6)))
    return np.concatenate([logits, reg])[None].astype(np.float32)


def test_decoding_inverts_the_training_targets():
    boxes = np.array([[4.0, 6.0, 20.0, 30.0], [30.5, 33.0, 60.0, 50.0], [40.0, 2.0, 52.0, 14.0]])
    labels = np.array([0, 2, 1])
    det = decode([ideal_output(boxes, labels)], CONFIG)
    assert len(det) == 3
    order = np.argsort(det.labels)
    np.testing.assert_array_equal(det.labels[order], [0, 1, 2])
    ious = box_iou(det.boxes[order], boxes[np.argsort(labels)])
    assert np.diag(ious).min() > 0.999
    assert det.scores.min() > 0.99


def test_output_map_accepts_nchw_and_nhwc():
    out = ideal_output([[4.0, 6.0, 20.0, 30.0]], [1])
    a = decode([out], CONFIG)
    b = decode([out.transpose(0, 2, 3, 1)], CONFIG)
    np.testing.assert_allclose(a.boxes, b.boxes)
    with pytest.raises(ValueError, match="no axis of 7 channels"):
        output_map([np.zeros((1, 5, 16, 16), np.float32)], 7)


def test_nms_suppresses_overlaps_within_a_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]
    labels = np.array([0, 0, 1, 0])
    assert sorted(batched_nms(boxes, scores, labels, 0.5).tolist()) == [0, 2, 3]


def test_score_threshold_and_max_detections_apply():
    boxes = [[4.0 * i, 0.0, 4.0 * i + 8, 8.0] for i in range(14)]
    out = ideal_output(boxes, [0] * 14)
    assert len(decode([out], {**CONFIG, "max_detections": 5})) == 5
    assert len(decode([out], {**CONFIG, "score_threshold": 1.0})) == 0


def shapes_handle(tmp_path, count=60, size=64):
    from heiti.nodes.detection.coco import CocoParams, build_dataset
    from heiti.nodes.detection.shapes import write_shapes_coco

    json_path, image_dir = write_shapes_coco(tmp_path, count, size, ["circle", "square", "triangle"], (1, 4),
                                             (0.15, 0.45), 0.3, 0.06, 2, seed=1)
    return build_dataset(json_path, image_dir, CocoParams(), (size, size), tmp_path / "ds.npz")


def test_perfect_outputs_evaluate_to_full_map(tmp_path):
    handle = shapes_handle(tmp_path)
    with np.load(handle.path) as data:
        boxes, labels, idx, n = data["boxes_test"], data["labels_test"], data["image_idx_test"], len(data["x_test"])
    raw = [[ideal_output(boxes[idx == i], labels[idx == i])] for i in range(n)]
    quality = evaluate_detection(handle, "test", raw, {"postprocess": CONFIG})
    assert quality.map50 == pytest.approx(1.0)
    assert quality.map50_95 > 0.9  # box sides are rounded by nothing, but gaussians of nearby objects merge
    assert quality.mean_iou > 0.95
    assert set(quality.ap_per_class) <= set(handle.class_names) and quality.class_names == handle.class_names
    assert quality.map_vs_threshold["map50"][0] == pytest.approx(quality.map50)
    curve = quality.pr_curves[handle.class_names[0]]
    assert len(curve["recall"]) == len(curve["precision"]) == 101
    # only the first images were run: only their boxes count
    half = evaluate_detection(handle, "test", raw[: n // 2], {"postprocess": CONFIG})
    assert half.ground_truth_boxes == int((idx < n // 2).sum()) and half.map50 == pytest.approx(1.0)
    # outputs for nothing: zero, not a crash
    empty = [[np.full((1, 7, 16, 16), -20.0, np.float32)] for _ in range(n)]
    assert evaluate_detection(handle, "test", empty, {"postprocess": CONFIG}).map50 == 0.0


def test_evaluation_needs_a_postprocess_description(tmp_path):
    from heiti.engine.node import NodeError

    handle = shapes_handle(tmp_path, count=10)
    with pytest.raises(NodeError, match="post-processing"):
        evaluate_detection(handle, "test", [[np.zeros((1, 7, 16, 16))]], {})


def test_network_exports_to_onnx_and_matches_torch(tmp_path):
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    model = build_centernet({"input_shape": [3, 64, 64], "num_classes": 3, "width": 8}).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / "det.onnx"
    torch.onnx.export(model, (x[:1],), str(path), input_names=["input"], output_names=["maps"], dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ops = {node.op_type for node in __import__("onnx").load(str(path)).graph.node}
    assert ops <= {"Conv", "Relu", "Add", "Concat", "Resize", "BatchNormalization", "Constant", "Identity"}, ops
    ours = session.run(None, {"input": x[:1].numpy()})[0]
    assert_fp32_close(ours, model(x[:1]).detach().numpy(), torch_fp32_atol(model, x[:1].numpy()), "ORT vs torch")
    assert ours.shape == (1, 7, 16, 16)


def test_sizes_not_multiple_of_eight_are_refused():
    with pytest.raises(ValueError, match="multiples of 8"):
        build_centernet({"input_shape": [3, 60, 64], "num_classes": 3})


def test_flip_augmentation_mirrors_boxes_with_the_image():
    data = {"x_train": np.zeros((1, 3, 32, 32), np.float32), "boxes_train": np.array([[2, 4, 10, 12]], np.float32),
            "labels_train": np.array([1]), "image_idx_train": np.array([0]), "num_classes": np.array(2)}
    data["x_train"][0, :, 4:12, 2:10] = 1.0
    flipped = None
    for seed in range(10):
        x, heat, _, _ = next(iter(detection_batches(data, "train", 1, np.random.default_rng(seed))))
        if x[0, 0, 8, 3] == 0:  # this draw flipped the image
            flipped = (x, heat)
    assert flipped is not None
    x, heat = flipped
    assert x[0, 0, 8, 32 - 3] == 1.0
    iy, ix = np.unravel_index(int(heat[0, 1].argmax()), heat.shape[2:])
    assert (iy, ix) == (int(8 / STRIDE), int((32 - 6) / STRIDE))


def test_training_steps_lower_the_loss(tmp_path):
    """A quick check that loss and targets fit together (the quality target is the heavy flow test)."""
    import torch

    torch.set_num_threads(2)
    handle = shapes_handle(tmp_path, count=80)
    with np.load(handle.path) as npz:
        data = {k: npz[k] for k in npz.files}
    torch.manual_seed(0)
    model = build_centernet({"input_shape": [3, 64, 64], "num_classes": 3, "width": 8})
    optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(6):
        model.train()
        for batch in detection_batches(data, "train", 8, rng):
            optimizer.zero_grad()
            loss, stats = detection_loss(model, batch)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            assert stats["count"] == len(batch[0]) and stats["heat_loss"] > 0 and stats["box_loss"] > 0
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_detector_node_writes_a_loadable_model_with_its_postprocessing(tmp_path):
    import torch
    from heiti.engine.context import CancelToken, RunContext
    from heiti.engine.events import EventBus
    from heiti.engine.node import NodeError
    from heiti.nodes.detection.detector import TorchDetector
    from heiti.nodes.torch_arch import load_model

    handle = shapes_handle(tmp_path / "data", count=12, size=32)
    ctx = RunContext("det", tmp_path, tmp_path, EventBus(), CancelToken())
    model = TorchDetector({"width": 4, "nms_iou": 0.4}).run(ctx, dataset=handle)["model"]
    assert model.model_format == "torch"
    meta = model.meta
    assert meta["task"] == "detection" and meta["arch"] == "centernet" and meta["layout"] == "NCHW"
    assert meta["class_names"] == ["circle", "square", "triangle"] and meta["input_shape"] == [3, 32, 32]
    assert meta["postprocess"] == {"type": "centernet", "num_classes": 3, "stride": 4, "input_size": [32, 32],
                                   "score_threshold": 0.05, "nms_iou": 0.4, "max_detections": 100}
    module = load_model(model.path)  # from the sidecar alone
    out = module(torch.zeros(1, 3, 32, 32))
    assert list(out.shape) == model.outputs[0]["shape"] == [1, 7, 8, 8]
    with pytest.raises(NodeError, match="multiple of 8"):
        TorchDetector({}).run(ctx, dataset=handle.model_copy(update={"input_shape": [3, 30, 32]}))
    with pytest.raises(NodeError, match="detection dataset"):
        TorchDetector({}).run(ctx, dataset=handle.model_copy(update={"task": "classification"}))
