"""Heiti's numpy detection metrics against pycocotools on the same predictions."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from heiti.nodes.detection.metrics import IOU_THRESHOLDS, Boxes, box_iou, evaluate, match_image


def _coco_eval(gt: Boxes, det: Boxes, n_images: int, n_classes: int, max_dets: int = 100):
    """Run pycocotools' COCOeval on the same boxes; returns (AP@0.5 per class, AP@.5:.95, stats)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    # category ids deliberately not 0-based nor contiguous, as in real COCO files
    cat_ids = [3 + 2 * k for k in range(n_classes)]
    dataset = {
        "images": [{"id": i + 1, "width": 640, "height": 640} for i in range(n_images)],
        "categories": [{"id": c, "name": f"c{c}"} for c in cat_ids],
        "annotations": [
            {"id": j + 1, "image_id": int(gt.image_idx[j]) + 1, "category_id": cat_ids[int(gt.labels[j])],
             "bbox": xywh(gt.boxes[j]), "area": float(np.prod(gt.boxes[j, 2:] - gt.boxes[j, :2])),
             "iscrowd": 0}
            for j in range(len(gt.boxes))
        ],
    }
    results = [
        {"image_id": int(det.image_idx[j]) + 1, "category_id": cat_ids[int(det.labels[j])],
         "bbox": xywh(det.boxes[j]), "score": float(det.scores[j])}
        for j in range(len(det.boxes))
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results) if results else COCO()
        if not results:
            coco_dt.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K) area all, max_dets

    def per_class(p):
        return np.array([p[:, k][p[:, k] > -1].mean() if (p[:, k] > -1).any() else np.nan
                         for k in range(n_classes)])

    ap50 = per_class(precision[0])
    ap50_95 = np.array([np.mean(precision[:, :, k][precision[:, :, k] > -1]) if (precision[:, :, k] > -1).any()
                        else np.nan for k in range(n_classes)])
    _coco_eval.recall = ev.eval["recall"][0, :, 0, -1]  # IoU 0.5, per class, area all, max_dets
    return ap50, ap50_95, ev.stats, precision


def _random_boxes(rng, n, size=640.0, min_side=4.0, max_side=200.0):
    wh = rng.uniform(min_side, max_side, (n, 2))
    xy = rng.uniform(0, size - max_side, (n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _jitter(rng, boxes, scale):
    wh = boxes[:, 2:] - boxes[:, :2]
    out = boxes + rng.normal(0, scale, boxes.shape) * np.concatenate([wh, wh], axis=1)
    out[:, 2:] = np.maximum(out[:, 2:], out[:, :2] + 1.0)
    return out


def _scene(rng, n_images, n_classes, gt_per_image, fp_per_image, miss=0.2, drop_class=None, crowded=False):
    """Ground truth plus noisy detections: jittered true boxes, misses, duplicates, false positives."""
    gts, dets = [], []
    for img in range(n_images):
        n = rng.integers(0, gt_per_image + 1)
        if crowded:
            centre = rng.uniform(100, 400, 2)
            wh = rng.uniform(20, 80, (n, 2))
            xy = centre + rng.normal(0, 15, (n, 2))
            boxes = np.concatenate([xy, xy + wh], axis=1)
        else:
            boxes = _random_boxes(rng, n)
        labels = rng.integers(0, n_classes, n)
        gts += [(b, lab, img) for b, lab in zip(boxes, labels, strict=True)]
        keep = rng.random(n) > miss
        hits = _jitter(rng, boxes[keep], 0.08)
        hit_labels = np.where(rng.random(keep.sum()) < 0.9, labels[keep], rng.integers(0, n_classes, keep.sum()))
        dets += [(b, lab, img, s) for b, lab, s in zip(hits, hit_labels, rng.uniform(0.3, 1.0, len(hits)), strict=True)]
        dup = _jitter(rng, boxes[keep], 0.15)[: rng.integers(0, keep.sum() + 1)]
        dets += [(b, lab, img, s) for b, lab, s in zip(dup, labels[keep], rng.uniform(0.0, 0.7, len(dup)), strict=False)]
        n_fp = rng.integers(0, fp_per_image + 1)
        fps = _random_boxes(rng, n_fp)
        dets += [(b, lab, img, s) for b, lab, s in zip(fps, rng.integers(0, n_classes, n_fp), rng.uniform(0, 0.8, n_fp), strict=True)]
    if drop_class is not None:
        dets = [d for d in dets if d[1] != drop_class]
    gt = Boxes(np.array([g[0] for g in gts]).reshape(-1, 4), [g[1] for g in gts], [g[2] for g in gts])
    det = Boxes(np.array([d[0] for d in dets]).reshape(-1, 4), [d[1] for d in dets], [d[2] for d in dets],
                scores=[d[3] for d in dets])
    return gt, det


CASES = {
    "plain": dict(n_images=30, n_classes=3, gt_per_image=4, fp_per_image=2),
    "no_predictions_for_a_class": dict(n_images=25, n_classes=4, gt_per_image=5, fp_per_image=1, drop_class=2),
    "crowded": dict(n_images=20, n_classes=2, gt_per_image=15, fp_per_image=3, crowded=True),
    "many_false_positives": dict(n_images=20, n_classes=3, gt_per_image=3, fp_per_image=40, miss=0.4),
    "max_dets_truncation": dict(n_images=6, n_classes=1, gt_per_image=30, fp_per_image=120, miss=0.0),
}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("case", sorted(CASES))
def test_map_agrees_with_pycocotools(case, seed):
    rng = np.random.default_rng(seed)
    kwargs = CASES[case]
    gt, det = _scene(rng, **kwargs)
    n_classes = kwargs["n_classes"]
    names = [f"class{k}" for k in range(n_classes)]
    ours = evaluate(gt, det, names)
    ap50, ap50_95, stats, precision = _coco_eval(gt, det, kwargs["n_images"], n_classes)

    # the same algorithm in float64: exact maths, default tolerances
    assert ours.map50 == pytest.approx(stats[1])
    assert ours.map50_95 == pytest.approx(stats[0])
    np.testing.assert_allclose(ours.ap50, ap50)
    np.testing.assert_allclose(ours.ap50_95, ap50_95)
    with_gt = ~np.isnan(ap50)
    np.testing.assert_allclose(ours.pr_precision[with_gt], precision[0][:, with_gt].T, atol=1e-9)
    if case == "no_predictions_for_a_class":
        assert ours.ap50[2] == 0.0


def test_class_without_ground_truth_is_left_out_of_the_mean():
    rng = np.random.default_rng(5)
    gt, det = _scene(rng, n_images=15, n_classes=3, gt_per_image=4, fp_per_image=2)
    gt = Boxes(gt.boxes[gt.labels != 1], gt.labels[gt.labels != 1], gt.image_idx[gt.labels != 1])
    ours = evaluate(gt, det, ["a", "b", "c"])
    _, _, stats, _ = _coco_eval(gt, det, 15, 3)
    assert np.isnan(ours.ap50[1])
    assert ours.map50 == pytest.approx(np.nanmean(ours.ap50))
    assert ours.map50 == pytest.approx(stats[1])  # the same algorithm in float64


def test_perfect_predictions_score_one_and_full_iou():
    rng = np.random.default_rng(3)
    gt, _ = _scene(rng, n_images=10, n_classes=2, gt_per_image=5, fp_per_image=0)
    det = Boxes(gt.boxes, gt.labels, gt.image_idx, scores=rng.uniform(0.5, 1, len(gt.boxes)))
    ours = evaluate(gt, det, ["a", "b"])
    assert ours.map50 == pytest.approx(1.0)
    assert ours.map50_95 == pytest.approx(1.0)
    assert ours.mean_iou == pytest.approx(1.0)


def test_no_detections_at_all_gives_zero():
    rng = np.random.default_rng(4)
    gt, _ = _scene(rng, n_images=5, n_classes=2, gt_per_image=3, fp_per_image=0)
    empty = Boxes(np.zeros((0, 4)), [], [], scores=[])
    ours = evaluate(gt, empty, ["a", "b"])
    assert ours.map50 == 0.0 and ours.mean_iou is None
    _, _, stats, _ = _coco_eval(gt, empty, 5, 2)
    assert stats[1] == pytest.approx(0.0, abs=1e-9)


def test_map_vs_threshold_drops_when_threshold_removes_true_positives():
    rng = np.random.default_rng(6)
    gt, det = _scene(rng, n_images=20, n_classes=2, gt_per_image=4, fp_per_image=5)
    ours = evaluate(gt, det, ["a", "b"])
    assert ours.score_thresholds[0] == 0.0
    assert ours.map50_vs_threshold[0] == pytest.approx(ours.map50)
    # true positives score 0.3..1.0: a threshold of 0.95 must lose most of them
    assert ours.map50_vs_threshold[-1] < ours.map50_vs_threshold[0]
    assert 0.0 <= ours.best_threshold < 1.0


def test_matching_prefers_highest_iou_and_each_truth_once():
    gt_boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)
    det_boxes = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [0, 0, 10, 10]], float)
    matched, ious = match_image(box_iou(det_boxes, gt_boxes), IOU_THRESHOLDS[:1])
    assert matched[0].tolist() == [True, True, False]
    assert ious[0].tolist() == [1.0, 1.0, 0.0]
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)


@pytest.mark.parametrize("case", ["plain", "many_false_positives"])
def test_threshold_curves_agree_with_pycocotools_on_filtered_detections(case):
    rng = np.random.default_rng(11)
    kwargs = CASES[case]
    gt, det = _scene(rng, **kwargs)
    n_classes = kwargs["n_classes"]
    ours = evaluate(gt, det, [str(k) for k in range(n_classes)])
    n_gt = np.bincount(gt.labels, minlength=n_classes)
    for s in (0, 6, 12, 18):
        thr = ours.score_thresholds[s]
        keep = det.scores >= thr
        kept = Boxes(det.boxes[keep], det.labels[keep], det.image_idx[keep], scores=det.scores[keep])
        _, _, stats, _ = _coco_eval(gt, kept, kwargs["n_images"], n_classes)
        assert ours.map50_vs_threshold[s] == pytest.approx(max(stats[1], 0.0))  # exact maths
        recall = _coco_eval.recall
        true_pos = float((np.where(recall > -1, recall, 0) * n_gt).sum())
        assert ours.recall_vs_threshold[s] == pytest.approx(true_pos / n_gt.sum(), abs=1e-9)
        expected_precision = true_pos / keep.sum() if keep.sum() else 0.0
        assert ours.precision_vs_threshold[s] == pytest.approx(expected_precision, abs=1e-9)
    f1 = ours.f1_vs_threshold
    assert ours.best_threshold == ours.score_thresholds[int(np.argmax(f1))]
    # with many low-score false positives the best operating point is above the lowest threshold
    if case == "many_false_positives":
        assert ours.best_threshold > 0.0
