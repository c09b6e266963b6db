"""Detection quality in pure numpy: IoU matching, AP per class, mAP@0.5 and mAP@[.5:.95].

The evaluation follows the COCO protocol (area "all", at most `max_dets` detections per image and
class, greedy matching in score order, 101-point interpolated precision) so that figures agree
with pycocotools, without needing it at run time. On top of COCO's figures it gives the
precision-recall curve of each class, mAP@0.5 as a function of the score threshold (to pick the
threshold a deployment should use) and the mean IoU of the matched pairs.

Boxes are xyxy in pixels. Ground truth and detections are flat arrays with an image index each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
SCORE_THRESHOLDS = np.round(np.arange(0.0, 1.0, 0.05), 2)


@dataclass
class Boxes:
    """A flat set of boxes over many images (ground truth when `scores` is None)."""

    boxes: np.ndarray  # (N, 4) xyxy
    labels: np.ndarray  # (N,) int class index
    image_idx: np.ndarray  # (N,) int image index
    scores: np.ndarray | None = None  # (N,) for detections

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.image_idx = np.asarray(self.image_idx, dtype=np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = len(self.boxes)
        if len(self.labels) != n or len(self.image_idx) != n or (self.scores is not None and len(self.scores) != n):
            raise ValueError("boxes, labels, image_idx (and scores) must have the same length")


@dataclass
class DetectionMetrics:
    """Every figure of one evaluation. Per-class values are NaN for classes without ground truth."""

    class_names: list[str]
    ap50: np.ndarray  # (C,)
    ap50_95: np.ndarray  # (C,)
    ap_per_iou: np.ndarray  # (T, C)
    map50: float
    map50_95: float
    pr_precision: np.ndarray  # (C, 101) interpolated precision at IoU 0.5 on RECALL_POINTS
    score_thresholds: np.ndarray
    map50_vs_threshold: np.ndarray
    precision_vs_threshold: np.ndarray  # all classes pooled, IoU 0.5
    recall_vs_threshold: np.ndarray
    mean_iou: float | None
    extra: dict = field(default_factory=dict)

    @property
    def f1_vs_threshold(self) -> np.ndarray:
        p, r = self.precision_vs_threshold, self.recall_vs_threshold
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)

    @property
    def best_threshold(self) -> float:
        """The score threshold a deployment should use: best F1 of precision and recall at IoU 0.5.

        (mAP itself only grows as the threshold falls, since extra low-score boxes can only add
        recall at the tail of the ranking, so it cannot pick an operating point.)
        """
        return float(self.score_thresholds[int(np.argmax(self.f1_vs_threshold))])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes; empty boxes have IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def match_image(ious: np.ndarray, thresholds: np.ndarray = IOU_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of detections (rows, already in score order) to ground truth (cols).

    Each detection takes the unmatched ground-truth box of highest IoU at or above the threshold
    (the later one on ties, as pycocotools does). Returns, per threshold, whether each detection
    matched (T, D) and the IoU of its match (T, D; 0 when unmatched).
    """
    n_det, n_gt = ious.shape
    matched = np.zeros((len(thresholds), n_det), dtype=bool)
    match_iou = np.zeros((len(thresholds), n_det))
    if n_det == 0 or n_gt == 0:
        return matched, match_iou
    for t, thr in enumerate(thresholds):
        taken = np.zeros(n_gt, dtype=bool)
        floor = min(float(thr), 1 - 1e-10)
        for d in range(n_det):
            row = np.where(taken, -1.0, ious[d])
            best = row.max()
            if best < floor:
                continue
            g = n_gt - 1 - int(np.argmax(row[::-1] == best))  # last index holding the maximum
            taken[g] = True
            matched[t, d] = True
            match_iou[t, d] = best
    return matched, match_iou


def interpolated_precision(tp: np.ndarray, fp: np.ndarray, n_gt: int) -> np.ndarray:
    """Precision at the 101 recall points, made monotone from the right (COCO's interpolation)."""
    tp_sum = np.cumsum(tp).astype(np.float64)
    fp_sum = np.cumsum(fp).astype(np.float64)
    recall = tp_sum / n_gt
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    q = np.zeros(len(RECALL_POINTS))
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    valid = idx < len(precision)
    q[valid] = precision[idx[valid]]
    return q


def _groups(labels: np.ndarray, image_idx: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Indices of the boxes of each (class, image) pair, in their original order."""
    order = np.lexsort((np.arange(len(labels)), image_idx, labels))
    keys = np.stack([labels[order], image_idx[order]], axis=1)
    if not len(keys):
        return {}
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    ends = np.r_[starts[1:], len(keys)]
    return {(int(keys[a, 0]), int(keys[a, 1])): order[a:b] for a, b in zip(starts, ends, strict=True)}


def evaluate(
    gt: Boxes,
    det: Boxes,
    class_names: list[str],
    max_dets: int = 100,
    score_thresholds: np.ndarray = SCORE_THRESHOLDS,
) -> DetectionMetrics:
    """COCO-style evaluation of detections against ground truth (see the module docstring)."""
    if det.scores is None:
        raise ValueError("detections need scores")
    n_cls = len(class_names)
    n_thr = len(IOU_THRESHOLDS)
    ap = np.full((n_thr, n_cls), np.nan)
    pr_precision = np.zeros((n_cls, len(RECALL_POINTS)))
    ap_vs_score = np.full((len(score_thresholds), n_cls), np.nan)
    matched_ious: list[np.ndarray] = []
    true_pos = np.zeros(len(score_thresholds))
    false_pos = np.zeros(len(score_thresholds))

    gt_groups = _groups(gt.labels, gt.image_idx)
    det_groups = _groups(det.labels, det.image_idx)
    for k in range(n_cls):
        n_gt = int((gt.labels == k).sum())
        images = sorted({img for cls, img in gt_groups if cls == k} | {img for cls, img in det_groups if cls == k})
        scores_all: list[np.ndarray] = []
        matched_all: list[np.ndarray] = []
        empty = np.zeros(0, dtype=np.int64)
        for img in images:
            g_boxes = gt.boxes[gt_groups.get((k, img), empty)]
            d_sel = det_groups.get((k, img), empty)
            order = np.argsort(-det.scores[d_sel], kind="mergesort")[:max_dets]
            d_sel = d_sel[order]
            matched, match_iou = match_image(box_iou(det.boxes[d_sel], g_boxes))
            scores_all.append(det.scores[d_sel])
            matched_all.append(matched)
            matched_ious.append(match_iou[0][matched[0]])
        scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
        matched = np.concatenate(matched_all, axis=1) if matched_all else np.zeros((n_thr, 0), bool)
        for s, thr in enumerate(score_thresholds):
            keep = scores >= thr
            true_pos[s] += matched[0][keep].sum()
            false_pos[s] += (~matched[0][keep]).sum()
        if n_gt == 0:
            continue
        order = np.argsort(-scores, kind="mergesort")
        scores, matched = scores[order], matched[:, order]
        for t in range(n_thr):
            q = interpolated_precision(matched[t], ~matched[t], n_gt)
            ap[t, k] = q.mean()
            if t == 0:
                pr_precision[k] = q
        for s, thr in enumerate(score_thresholds):
            keep = scores >= thr
            ap_vs_score[s, k] = interpolated_precision(matched[0][keep], ~matched[0][keep], n_gt).mean()

    with_gt = ~np.isnan(ap[0])
    map50 = float(ap[0, with_gt].mean()) if with_gt.any() else 0.0
    map50_95 = float(ap[:, with_gt].mean()) if with_gt.any() else 0.0
    map_vs = ap_vs_score[:, with_gt].mean(axis=1) if with_gt.any() else np.zeros(len(score_thresholds))
    ious = np.concatenate(matched_ious) if matched_ious else np.zeros(0)
    n_gt_all = int(np.isin(gt.labels, np.arange(n_cls)).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision_vs = np.where(true_pos + false_pos > 0, true_pos / (true_pos + false_pos), 0.0)
    recall_vs = true_pos / n_gt_all if n_gt_all else np.zeros(len(score_thresholds))
    return DetectionMetrics(
        class_names=list(class_names),
        ap50=ap[0],
        ap50_95=ap.mean(axis=0),
        ap_per_iou=ap,
        map50=map50,
        map50_95=map50_95,
        pr_precision=pr_precision,
        score_thresholds=np.asarray(score_thresholds, dtype=np.float64),
        map50_vs_threshold=map_vs,
        precision_vs_threshold=precision_vs,
        recall_vs_threshold=recall_vs,
        mean_iou=float(ious.mean()) if len(ious) else None,
    )
