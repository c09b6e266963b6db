"""`model.torch_detector`: a small CenterNet-style single-stage detector, built in code.

The network maps an image to one output of C + 4 channels at 1/4 of its size: a heat-map logit
per class (a peak at each object's centre), the sub-cell offset of the centre, and the log size of
the box (see postprocess.py). Only conv, batch norm, ReLU, nearest upsampling, add and concat are
used, so it exports to ONNX and compiles with TVM as is; peak picking and NMS run afterwards in
numpy. Training goes through `train.torch` with the loss and batch maker registered here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from heiti.engine.node import In, Node, NodeError, Out
from heiti.engine.payloads import DatasetHandle, ModelArtifact
from heiti.nodes.torch_arch import register_arch
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

ARCH = "centernet"
STRIDE = 4
HEAT_PRIOR = 0.05  # initial heat-map probability: keeps the first steps' focal loss sane


def build_centernet(config: Mapping[str, Any]) -> Any:
    """Config keys: input_shape [C, H, W] (H, W multiples of 8), num_classes, width (base channels)."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class CenterNet(nn.Module):
        def __init__(self, in_ch: int, num_classes: int, w: int) -> None:
            super().__init__()
            self.stem = nn.Sequential(block(in_ch, w, 2), block(w, 2 * w))  # 1/2
            self.down4 = nn.Sequential(block(2 * w, 4 * w, 2), block(4 * w, 4 * w))  # 1/4
            self.down8 = nn.Sequential(block(4 * w, 8 * w, 2), block(8 * w, 8 * w), block(8 * w, 8 * w))  # 1/8
            self.lateral = nn.Conv2d(8 * w, 4 * w, 1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.fuse = block(4 * w, 4 * w)
            self.heat = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4 * w, num_classes, 1))
            self.box = nn.Sequential(nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(4 * w, 4, 1))
            nn.init.constant_(self.heat[-1].bias, -math.log((1 - HEAT_PRIOR) / HEAT_PRIOR))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c4 = self.down4(self.stem(x))
            c8 = self.down8(c4)
            features = self.fuse(c4 + self.up(self.lateral(c8)))
            return torch.cat([self.heat(features), self.box(features)], dim=1)

    c, h, w = (int(v) for v in config["input_shape"])
    if h % 8 or w % 8:
        raise ValueError(f"the detector needs image sides that are multiples of 8, got {h}x{w}")
    return CenterNet(c, int(config["num_classes"]), int(config.get("width", 16)))


# --- training targets and loss ------------------------------------------------------------------------
def make_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, out_hw: tuple[int, int],
                 stride: int = STRIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heat-map (C, h, w) with a gaussian per object, regression targets (4, h, w) and their mask (h, w).

    The centre cell of each box holds 1 in its class channel; the gaussian's spread follows the
    box's size so that near-centre cells are penalised less. Regression is learnt at centre cells.
    """
    import numpy as np

    h, w = out_hw
    heat = np.zeros((num_classes, h, w), dtype=np.float32)
    reg = np.zeros((4, h, w), dtype=np.float32)
    mask = np.zeros((h, w), dtype=np.float32)
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
        bw, bh = max(float(x2 - x1), 1.0) / stride, max(float(y2 - y1), 1.0) / stride
        cx, cy = (x1 + x2) / 2 / stride, (y1 + y2) / 2 / stride
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
        sx, sy = max(bw / 6, 0.4), max(bh / 6, 0.4)
        g = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        np.maximum(heat[int(label)], g, out=heat[int(label)])
        heat[int(label), iy, ix] = 1.0
        reg[:, iy, ix] = (cx - ix, cy - iy, math.log(bw), math.log(bh))
        mask[iy, ix] = 1.0
    return heat, reg, mask


def detection_batches(data: Mapping[str, np.ndarray], split: str, batch_size: int,
                      rng: np.random.Generator | None, augment: bool = True) -> Iterable[tuple[Any, ...]]:
    """(x, heat, reg, mask) tensors; when shuffling (training), images are flipped left-right at random."""
    import numpy as np
    import torch

    x, boxes = data[f"x_{split}"], data[f"boxes_{split}"]
    labels, image_idx = data[f"labels_{split}"], data[f"image_idx_{split}"]
    n, _, h, w = x.shape
    num_classes = int(data["num_classes"]) if "num_classes" in data else int(labels.max(initial=-1)) + 1
    by_image = np.split(np.argsort(image_idx, kind="stable"), np.cumsum(np.bincount(image_idx, minlength=n))[:-1])
    order = rng.permutation(n) if rng is not None else np.arange(n)
    out_hw = (h // STRIDE, w // STRIDE)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        xb = x[idx].astype(np.float32, copy=True)
        flips = (rng.random(len(idx)) < 0.5) if (rng is not None and augment) else np.zeros(len(idx), bool)
        heat, reg, mask = [], [], []
        for j, i in enumerate(idx):
            b = boxes[by_image[i]].astype(np.float64)
            if flips[j]:
                xb[j] = xb[j][:, :, ::-1]
                b = np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], axis=1)
            t = make_targets(b, labels[by_image[i]], num_classes, out_hw)
            heat.append(t[0])
            reg.append(t[1])
            mask.append(t[2])
        yield (torch.from_numpy(np.ascontiguousarray(xb)), torch.from_numpy(np.stack(heat)),
               torch.from_numpy(np.stack(reg)), torch.from_numpy(np.stack(mask)))


def detection_loss(model: Any, batch: tuple[Any, ...]) -> tuple[Any, dict[str, float]]:
    """CenterNet's penalty-reduced focal loss on the heat-map plus L1 on offset and log size."""
    import torch
    import torch.nn.functional as F

    x, heat, reg, mask = batch
    out = model(x)
    n_cls = out.shape[1] - 4
    if heat.shape[1] < n_cls:  # a split without the last classes: pad their (empty) heat-maps
        heat = F.pad(heat, (0, 0, 0, 0, 0, n_cls - heat.shape[1]))
    logits = out[:, :n_cls]
    pos = heat.eq(1.0).float()
    prob = torch.sigmoid(logits)
    pos_loss = -(F.logsigmoid(logits) * (1 - prob) ** 2 * pos).sum()
    neg_loss = -(F.logsigmoid(-logits) * prob ** 2 * (1 - heat) ** 4 * (1 - pos)).sum()
    n_pos = pos.sum().clamp(min=1.0)
    heat_loss = (pos_loss + neg_loss) / n_pos
    m = mask.unsqueeze(1)
    box_loss = (F.l1_loss(out[:, n_cls:], reg, reduction="none") * m).sum() / (m.sum().clamp(min=1.0) * 4)
    loss = heat_loss + box_loss
    return loss, {"count": int(x.shape[0]), "heat_loss": float(heat_loss.detach()), "box_loss": float(box_loss.detach())}


def detection_quality(module: Any, dataset: DatasetHandle, split: str, meta: dict[str, Any]) -> dict[str, float]:
    """mAP of the network on one split, decoded exactly as after a runtime (for training curves)."""
    from heiti.nodes.detection import evaluate_detection

    x = dataset.load_split(split).x
    quality = evaluate_detection(dataset, split, predict(module, x), meta)
    return {"map50": quality.map50, "map50_95": quality.map50_95}


register_arch(ARCH, build_centernet, loss=detection_loss, make_batches=detection_batches, output_names=["maps"],
              evaluate=detection_quality)


def predict(module: Any, x: np.ndarray, batch_size: int = 64) -> list[list[np.ndarray]]:
    """Raw outputs per image (as a runtime would give them) of a torch detector on NCHW images."""
    import numpy as np
    import torch

    module.eval()
    outputs: list[list[np.ndarray]] = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out = module(torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size], dtype=np.float32)))
            outputs += [[o[None]] for o in out.numpy()]
    return outputs


# --- the node -------------------------------------------------------------------------------------------
class TorchDetector(Node):
    """A small single-stage PyTorch detector (CenterNet-style), sized from a detection dataset.

    Train it with `train.torch`. Decoding and NMS are not part of the network: they run in numpy
    after any runtime, as described in the model's meta["postprocess"].
    """

    kind = "model.torch_detector"
    title = "PyTorch detector"
    category = "Models"
    version = 1

    class Params(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")
        width: int = Field(16, ge=4, le=128, description="channels of the first layer (the widest has 8x)")
        score_threshold: float = Field(0.05, ge=0, le=1, description="lowest score kept when decoding")
        nms_iou: float = Field(0.5, gt=0, le=1, description="IoU above which a same-class box is suppressed")
        max_detections: int = Field(100, ge=1, le=1000, description="boxes kept per image")
        seed: int = Field(0, description="seed of the initial weights")

    inputs = {"dataset": In(DatasetHandle, formats={"detection"})}
    outputs = {"model": Out(ModelArtifact, format="torch")}

    def run(self, ctx: Any, dataset: DatasetHandle) -> dict[str, Any]:
        import torch
        from heiti.nodes.torch_arch import save_model

        t0 = time.perf_counter()
        p = self.params
        if dataset.task != "detection" or len(dataset.input_shape) != 3:
            raise NodeError(f"the detector needs a detection dataset of C x H x W images; got task {dataset.task!r}")
        c, h, w = (int(v) for v in dataset.input_shape)
        if h % 8 or w % 8:
            raise NodeError(f"image size {h}x{w} is not a multiple of 8", "resize the dataset, e.g. size [64, 64]")
        n_cls = len(dataset.class_names)
        config = {"input_shape": [c, h, w], "num_classes": n_cls, "width": p.width}
        torch.manual_seed(p.seed)
        module = build_centernet(config)
        out_shape = [1, n_cls + 4, h // STRIDE, w // STRIDE]
        postprocess = {"type": "centernet", "num_classes": n_cls, "stride": STRIDE, "input_size": [h, w],
                       "score_threshold": p.score_threshold, "nms_iou": p.nms_iou,
                       "max_detections": p.max_detections}
        meta = {"task": "detection", "class_names": list(dataset.class_names), "layout": "NCHW",
                "input_shape": [c, h, w], "input_name": "input", "arch": ARCH, "arch_config": config,
                "postprocess": postprocess, "trainable_params": sum(t.numel() for t in module.parameters())}
        path = ctx.workdir / "model.pt"
        save_model(module, path, meta)
        from heiti.nodes.models import step_meta

        meta = step_meta(None, ctx, self.kind, time.perf_counter() - t0, **meta)
        ctx.log(f"CenterNet-style detector with {meta['trainable_params']} parameters, output {out_shape}")
        return {"model": ModelArtifact(
            path=path, model_format="torch", meta=meta,
            inputs=[{"name": "input", "shape": [1, c, h, w], "dtype": "float32"}],
            outputs=[{"name": "maps", "shape": out_shape, "dtype": "float32"}])}
