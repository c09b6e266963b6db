"""tests/detection_agreement.py: output maps moved within a tolerance change only the detections it
calls fragile, and mAP by no more than the bound it derives from those that did change."""

from __future__ import annotations

import numpy as np
import pytest
from heiti.nodes.detection.metrics import Boxes, evaluate

from tests.detection_agreement import compare, fragile_keys, ranked_decisions

CONFIG = {"type": "centernet", "num_classes": 3, "stride": 4, "score_threshold": 0.05, "nms_iou": 0.5,
          "max_detections": 100, "input_size": [32, 32]}


def _maps(seed: int, images: int = 12) -> np.ndarray:
    """Smooth random output maps (N, 3 + 4, 8, 8): blobs of class logits, offsets and log sizes."""
    rng = np.random.default_rng(seed)
    maps = rng.normal(0.0, 1.0, (images, 7, 8, 8)).astype(np.float32)
    maps[:, :3] = maps[:, :3] * 1.5 - 2.5  # scores around the 0.05 threshold and above
    maps[:, 3:5] = rng.uniform(0.0, 1.0, (images, 2, 8, 8))
    maps[:, 5:] = rng.uniform(0.3, 1.2, (images, 2, 8, 8))  # boxes of 5-13 px at stride 4
    return maps


def _truth(maps: np.ndarray, seed: int) -> Boxes:
    """Ground truth near some of the detections, shifted so their IoUs spread over the thresholds."""
    from heiti.nodes.detection.postprocess import decode_centernet

    rng = np.random.default_rng(seed)
    boxes, labels, images = [], [], []
    for i, m in enumerate(maps):
        det = decode_centernet(m, CONFIG)
        for box, label in zip(det.boxes[:4], det.labels[:4], strict=True):
            boxes.append(box + rng.uniform(-1.5, 1.5, 4))
            labels.append(label)
            images.append(i)
    return Boxes(np.array(boxes), labels, images)


def _map(maps: np.ndarray, gt: Boxes) -> tuple[float, float]:
    from heiti.nodes.detection import decode_outputs

    m = evaluate(gt, decode_outputs([[x[None]] for x in maps], {"postprocess": CONFIG}), ["a", "b", "c"])
    return m.map50, m.map50_95


@pytest.mark.parametrize("seed", [0, 1])
def test_moves_within_the_tolerance_change_only_fragile_detections_and_map_within_the_bound(seed):
    reference = _maps(seed)
    gt = _truth(reference, seed)
    atol = np.full(reference.shape, 2e-3, dtype=np.float64)
    fragile, _ = fragile_keys(reference, atol, CONFIG, gt)
    decisions = ranked_decisions(reference, CONFIG, gt)
    base = _map(reference, gt)
    rng = np.random.default_rng(100 + seed)
    changed = 0
    for _ in range(4):
        moved = (reference + atol * rng.uniform(-1.0, 1.0, reference.shape)).astype(np.float32)
        found = compare(decisions, ranked_decisions(moved, CONFIG, gt), gt)
        assert found.keys <= fragile, sorted(found.keys - fragile)[:5]
        now = _map(moved, gt)
        assert abs(now[0] - base[0]) <= found.bound(slice(0, 1)) + 1e-12
        assert abs(now[1] - base[1]) <= found.bound(slice(None)) + 1e-12
        changed += len(found.keys)
    assert changed > 0  # the moves did change decisions: the check above was not vacuous


def test_no_difference_no_bound():
    reference = _maps(3)
    gt = _truth(reference, 3)
    decisions = ranked_decisions(reference, CONFIG, gt)
    found = compare(decisions, ranked_decisions(reference.copy(), CONFIG, gt), gt)
    assert found.keys == set() and found.bound(slice(None)) == 0.0 and found.appeared == 0
