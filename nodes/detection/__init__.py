"""Object detection: the shapes and COCO datasets, a small trainable detector, its post-processing
and COCO-style metrics. The runtime nodes call `evaluate_detection` on the raw network outputs.

Nothing heavy is imported here (listing the kinds loads this package): numpy and the measurements
schema inside the functions, torch inside those that need it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heiti.engine.node import NodeError
from heiti.engine.payloads import DatasetHandle

if TYPE_CHECKING:
    import numpy as np
    from heiti.engine.measurements import DetectionQuality

#: the modules holding detection kinds
NODE_MODULES = ("coco", "detector", "shapes")

__all__ = ["evaluate_detection", "load_ground_truth", "decode_outputs"]


def load_ground_truth(dataset: DatasetHandle, split: str):
    """The boxes of one split of a detection dataset as a `metrics.Boxes`, plus its image count."""
    from heiti.nodes.detection.metrics import Boxes

    arrays = dataset.split_arrays(split, only=("boxes", "labels", "image_idx"))
    missing = [name for name in ("boxes", "labels", "image_idx") if name not in arrays]
    if missing:
        raise NodeError(f"{dataset.path}: no detection arrays for split {split!r} (missing {', '.join(missing)})",
                        "a detection dataset holds x_, boxes_, labels_ and image_idx_ arrays per split")
    return Boxes(arrays["boxes"], arrays["labels"], arrays["image_idx"]), dataset.split_size(split)


def decode_outputs(raw_outputs: list[list[np.ndarray]], model_meta: dict[str, Any]):
    """Decode every image's raw outputs into one flat `metrics.Boxes` of detections."""
    import numpy as np
    from heiti.nodes.detection.metrics import Boxes
    from heiti.nodes.detection.postprocess import decode

    config = model_meta.get("postprocess")
    if not config:
        raise NodeError("the model has no post-processing description (meta['postprocess'])",
                        "detection models from model.torch_detector carry one; a model file needs it added")
    boxes, scores, labels, image_idx = [], [], [], []
    for i, outputs in enumerate(raw_outputs):
        try:
            det = decode(list(outputs), config)
        except ValueError as err:
            raise NodeError(f"cannot decode the outputs of test image {i}: {err}") from err
        boxes.append(det.boxes)
        scores.append(det.scores)
        labels.append(det.labels)
        image_idx.append(np.full(len(det), i, dtype=np.int64))
    if not boxes:
        return Boxes(np.zeros((0, 4)), [], [], scores=[])
    return Boxes(np.concatenate(boxes), np.concatenate(labels), np.concatenate(image_idx),
                 scores=np.concatenate(scores))


def evaluate_detection(
    dataset: DatasetHandle, split: str, raw_outputs: list[list[np.ndarray]], model_meta: dict[str, Any]
) -> DetectionQuality:
    """COCO-style quality of a detector on `split`, from the network outputs of each image (batch 1).

    When fewer images were run than the split holds, only those images' ground truth counts.
    Classes without any ground-truth box in the evaluated images have no AP and are left out of
    the per-class dictionaries and of the means. `map_vs_threshold` also holds the pooled
    precision, recall and F1 at IoU 0.5 per score threshold; `best_score_threshold` is the one of
    best F1 (the operating point to deploy with).
    """
    import numpy as np
    from heiti.engine.measurements import DetectionQuality
    from heiti.nodes.detection.metrics import RECALL_POINTS, Boxes, evaluate

    gt, _ = load_ground_truth(dataset, split)
    n_run = len(raw_outputs)
    inside = gt.image_idx < n_run
    gt = Boxes(gt.boxes[inside], gt.labels[inside], gt.image_idx[inside])
    det = decode_outputs(raw_outputs, model_meta)
    names = list(dataset.class_names or model_meta.get("class_names") or [])
    if not names:
        n_cls = int(model_meta["postprocess"]["num_classes"])
        names = [f"class {k}" for k in range(n_cls)]
    m = evaluate(gt, det, names)
    has_gt = ~np.isnan(m.ap50)
    recall = [round(float(r), 4) for r in RECALL_POINTS]
    return DetectionQuality(
        map50=m.map50,
        map50_95=m.map50_95,
        ap_per_class={n: float(m.ap50[k]) for k, n in enumerate(names) if has_gt[k]},
        ap50_95_per_class={n: float(m.ap50_95[k]) for k, n in enumerate(names) if has_gt[k]},
        pr_curves={n: {"recall": recall, "precision": [float(p) for p in m.pr_precision[k]]}
                   for k, n in enumerate(names) if has_gt[k]},
        map_vs_threshold={"threshold": [float(t) for t in m.score_thresholds],
                          "map50": [float(v) for v in m.map50_vs_threshold],
                          "precision": [float(v) for v in m.precision_vs_threshold],
                          "recall": [float(v) for v in m.recall_vs_threshold],
                          "f1": [float(v) for v in m.f1_vs_threshold]},
        mean_iou=m.mean_iou,
        class_names=names,
        best_score_threshold=m.best_threshold,
        images=n_run,
        ground_truth_boxes=int(len(gt.boxes)),
        detections=int(len(det.boxes)),
        score_threshold=float(model_meta["postprocess"].get("score_threshold", 0.05)),
    )
