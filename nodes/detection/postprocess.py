"""Turn a detector's raw output maps into boxes, in numpy, after whichever runtime ran the network.

Keeping decoding and NMS out of the network means torch, ONNX Runtime, TVM, OpenVINO and LiteRT
all run the same plain convolutional graph, and their detections differ only by what the runtime
computed. The model says how to decode its outputs in `ModelArtifact.meta["postprocess"]`:

    {"type": "centernet", "num_classes": C, "stride": 4, "score_threshold": 0.05,
     "nms_iou": 0.5, "max_detections": 100, "input_size": [H, W]}

A "centernet" output is one map of C + 4 channels at 1/stride of the input: C class heat-map
logits, then the sub-cell offset (x, y) of the box centre, then log(width / stride) and
log(height / stride).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULTS: dict[str, Any] = {"score_threshold": 0.05, "nms_iou": 0.5, "max_detections": 100, "stride": 4}


@dataclass
class Detections:
    """Boxes of one image: xyxy in input pixels, scores in [0, 1], class indices."""

    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.scores)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def _max_pool3(x: np.ndarray) -> np.ndarray:
    """3x3 max over each cell's neighbourhood, per channel (x is (C, H, W))."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    h, w = x.shape[1:]
    out = padded[:, 0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, padded[:, dy : dy + h, dx : dx + w], out=out)
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-scores, kind="mergesort")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while len(order):
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class: boxes of different classes never suppress each other."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    span = float(boxes.max()) + 1.0
    shifted = boxes + (labels.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold)


def output_map(outputs: list[np.ndarray], channels: int) -> np.ndarray:
    """The (C+4, H, W) map of one image from a runtime's outputs, whatever its layout (NCHW/NHWC)."""
    if not outputs:
        raise ValueError("the runtime returned no output")
    arr = np.asarray(outputs[0], dtype=np.float32)
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"expected batch 1, got output shape {arr.shape}")
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a (C, H, W) output map, got shape {arr.shape}")
    if arr.shape[0] == channels:
        return arr
    if arr.shape[-1] == channels:
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
    raise ValueError(f"output shape {arr.shape} has no axis of {channels} channels")


def decode_centernet(out: np.ndarray, config: dict[str, Any]) -> Detections:
    """Peaks of the class heat-maps -> scored boxes, then per-class NMS, best first."""
    cfg = {**DEFAULTS, **config}
    n_cls = int(cfg["num_classes"])
    stride = float(cfg["stride"])
    heat = _sigmoid(out[:n_cls].astype(np.float64))
    peaks = (heat == _max_pool3(heat)) & (heat >= float(cfg["score_threshold"]))
    cls, ys, xs = np.nonzero(peaks)
    scores = heat[cls, ys, xs]
    top = np.argsort(-scores, kind="mergesort")[: 4 * int(cfg["max_detections"])]
    cls, ys, xs, scores = cls[top], ys[top], xs[top], scores[top]
    off = out[n_cls : n_cls + 2, ys, xs].astype(np.float64)
    log_wh = np.clip(out[n_cls + 2 : n_cls + 4, ys, xs].astype(np.float64), -10.0, 10.0)
    cx = (xs + off[0]) * stride
    cy = (ys + off[1]) * stride
    w = np.exp(log_wh[0]) * stride
    h = np.exp(log_wh[1]) * stride
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    if "input_size" in cfg:
        in_h, in_w = cfg["input_size"]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, in_w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, in_h)
    keep = batched_nms(boxes, scores, cls, float(cfg["nms_iou"]))[: int(cfg["max_detections"])]
    return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), cls[keep].astype(np.int64))


DECODERS = {"centernet": decode_centernet}


def decode(outputs: list[np.ndarray], config: dict[str, Any]) -> Detections:
    """Decode one image's runtime outputs as the model's `postprocess` config says."""
    kind = config.get("type", "centernet")
    try:
        decoder = DECODERS[kind]
    except KeyError:
        raise ValueError(f"unknown post-processing type {kind!r}; known: {', '.join(DECODERS)}") from None
    return decoder(output_map(outputs, int(config["num_classes"]) + 4), config)
