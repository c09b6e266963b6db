"""How far two runtimes' detection metrics may differ, derived from how far their raw outputs may.

Output tolerance (`torch_fp32_atol_propagated`): the same rounding model as tests/tolerance.py —
each layer's sum of n products rounds with independent, mean-zero errors of standard deviation at
most u·√(n+1)·M, M = Σ|w·x| over the layer's *actual* inputs, plus one rounding u·|x| of every
stored input (adds, batch-norm) — but carried to the outputs through the network itself instead
of through the absolute network. On a ten-convolution detector the absolute network compounds
Σ|w| layer after layer and gives 4e7 for outputs of magnitude 4 (useless); the rounding errors,
pushed through the real layers, are what runtimes differ by. The noise is injected `SAMPLES` times
(amplified, in float32: see AMPLIFY); the per-element standard deviation estimated from them is
raised by √(K/χ²_K(1e-9)) (so the true one is below it but with probability 1e-9), times λ = 8 (as
in tests/tolerance.py) and twice for two runtimes. It still tells fp32 from bf16 (the test checks).

Two fp32 runtimes give output maps within that tolerance `atol`. Decoding and NMS then run the same numpy code, so their detections differ only where a decision sits within
that tolerance of its boundary. `fragile_keys` finds those *fragile* detections (keyed by image,
class and heat-map cell) in the reference:

- existence: a class logit within atol of the score threshold's logit, a 3x3 peak whose neighbour is
  within their two tolerances (it may stop or start being the peak), a same-class pair whose IoU is
  within its slack of the NMS threshold, or two overlapping same-class candidates whose scores may
  swap (which one NMS keeps);
- matching: a detection whose IoU with a same-class ground-truth box is within its slack of one of
  the ten IoU thresholds;
- ranking: two same-class detections whose scores may swap order in the pooled precision/recall
  ranking;
- and, as greedy matching cascades, every detection that may match a ground-truth box in an
  (image, class) holding a fragile one.

Tolerances carried through the decoder: a score is σ(logit) and σ' ≤ 1/4, so it moves by at most
atol/4; a box centre moves by stride·atol(offset) and a half-size by (w/2)·(e^atol(log size) − 1),
so every corner by at most their sum (ε); an IoU by at most (ΔI + IoU·ΔU)/(U − ΔU), where a side of
the intersection moves by at most ε of either box.

`compare` then lists, per class, the detections whose existence, rank or true-positive status
(at each IoU threshold) actually differ between a runtime and the reference; every one must be
fragile. AP (COCO's 101-point interpolated precision) depends on nothing else, so with no difference
the figures are equal exactly. Otherwise the runtime's ranked list is the reference's with each
differing detection removed and inserted again (two steps, one when it exists on one side only).
A step at rank j changes the precision of every later rank by at most 1/j, and the
interpolation (a maximum to the right) by no more; a true positive also shifts the recall of later
ranks by 1/G, moving the monotone precision curve sideways by ⌈100/G⌉ of its 101 points: at most
⌈100/G⌉/101 of AP. Steps happen at ranks no lower than a detection's own minus the differing ones
before it. mAP averages over the classes with ground truth, mAP@[.5:.95] over ten thresholds each
bounded alike (a true-positive change counts at its own thresholds only).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
from heiti.nodes.detection.metrics import IOU_THRESHOLDS, Boxes, box_iou, match_image
from heiti.nodes.detection.postprocess import DEFAULTS, decode_centernet

#: noisy forward passes that estimate the output error's spread (16: the estimate is raised ×5.2 so
#: the true spread is below it but with probability 1e-9; still ~60x under bf16's differences)
SAMPLES = 16
#: the simulated rounding noise is injected this many times larger, and the outputs' response scaled
#: back: the network is run in float32 (float64 convolutions are ~10x slower on a CPU), whose own
#: rounding (the size of the unamplified noise) then adds 1/256 to the estimate; the amplified noise
#: (~1e-5 of each layer's magnitudes) is still small enough for the response to be linear
AMPLIFY = 256.0


def torch_fp32_atol_propagated(module: Any, x: np.ndarray, samples: int = SAMPLES, seed: int = 0,
                               amplify: float = AMPLIFY, dtype: str = "float32") -> np.ndarray:
    """Per-element tolerance between two fp32 runtimes of a torch network (Conv/Linear/BN/ReLU/...) on x."""
    import torch
    from scipy.stats import chi2

    from tests.tolerance import LAMBDA, U32

    net = copy.deepcopy(module).eval().to(getattr(torch, dtype))
    gen = torch.Generator().manual_seed(seed)
    spread: dict[int, Any] = {}  # per layer: the rounding noise's standard deviation, from the clean pass
    noisy = {"on": False}

    def rounding(layer: Any, inputs: tuple[Any, ...], output: Any) -> Any:
        if noisy["on"]:
            return output + spread[id(layer)] * torch.randn(output.shape, generator=gen, dtype=output.dtype)
        xin = inputs[0]
        if isinstance(layer, torch.nn.Conv2d):
            fan_in = layer.weight[0].numel()
            m = torch.nn.functional.conv2d(xin.abs(), layer.weight.abs(), None if layer.bias is None else
                                           layer.bias.abs(), layer.stride, layer.padding, layer.dilation, layer.groups)
        elif isinstance(layer, torch.nn.Linear):
            fan_in = layer.weight.shape[1]
            m = torch.nn.functional.linear(xin.abs(), layer.weight.abs(),
                                           None if layer.bias is None else layer.bias.abs())
        else:  # batch norm: a subtraction, a scaling and an addition, each rounded once
            fan_in, m = 2, output.abs() + xin.abs()
        # the sum's rounding, then the stored result's; amplified (the response is scaled back below)
        spread[id(layer)] = amplify * U32 * (np.sqrt(fan_in + 1) * m + output.abs())
        return None

    hooks = [layer.register_forward_hook(rounding) for layer in net.modules()
             if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear | torch.nn.modules.batchnorm._BatchNorm)]
    try:
        with torch.no_grad():
            xs = torch.from_numpy(np.asarray(x, dtype))
            clean = net(xs)
            noisy["on"] = True
            square = sum(((net(xs) - clean).double() / amplify) ** 2 for _ in range(samples))
    finally:
        for hook in hooks:
            hook.remove()
    sigma = np.sqrt(square.numpy() / samples) * np.sqrt(samples / chi2.ppf(1e-9, samples))
    return 2 * LAMBDA * sigma


def _iou_slack(a: np.ndarray, b: np.ndarray, eps_a: float, eps_b: float, iou: float) -> float:
    """How far the IoU of boxes a and b may move when a's corners move by eps_a and b's by eps_b."""
    wa, ha = a[2] - a[0], a[3] - a[1]
    wb, hb = b[2] - b[0], b[3] - b[1]
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    e = max(eps_a, eps_b)  # a side of the intersection is one of the two boxes' sides
    d_inter = 2 * e * (iw + ih + 2 * e)
    d_a = 2 * eps_a * (wa + ha + 2 * eps_a)
    d_b = 2 * eps_b * (wb + hb + 2 * eps_b)
    union = wa * ha + wb * hb - iw * ih
    d_union = d_a + d_b + d_inter
    if union - d_union <= 0:
        return 1.0
    return (d_inter + iou * d_union) / (union - d_union)


def _neighbour_gap(logits: np.ndarray, atol: np.ndarray) -> np.ndarray:
    """Per cell: min over its 8 neighbours of |logit − neighbour| − (atol + neighbour's atol).
    Where it is ≤ 0 the cell's 3x3 peak status may change."""
    c, h, w = logits.shape
    lp = np.pad(logits, ((0, 0), (1, 1), (1, 1)), constant_values=np.inf)
    ap = np.pad(atol, ((0, 0), (1, 1), (1, 1)), constant_values=0.0)
    gap = np.full(logits.shape, np.inf)
    for dy in range(3):
        for dx in range(3):
            if dy == dx == 1:
                continue
            other = lp[:, dy:dy + h, dx:dx + w]
            np.minimum(gap, np.abs(logits - other) - atol - ap[:, dy:dy + h, dx:dx + w], out=gap)
    return gap


Key = tuple[int, int, int, int]  # image, class, heat-map row, column


def _cells(m: np.ndarray, n_cls: int, stride: float, det: Any) -> list[Key]:
    """The (class, y, x) heat-map cell each detection came from: a cell of its class whose score is
    the detection's (decoding keeps scores as computed), the nearest to the box centre on ties."""
    heat = _sigmoid(m[:n_cls].astype(np.float64)).astype(np.float32)
    cells = []
    for score, cls, box in zip(det.scores, det.labels, det.boxes, strict=True):
        ys, xs = np.nonzero(heat[cls] == score)
        if len(ys) == 0:
            raise ValueError(f"no cell of class {cls} holds score {score}")
        centre = ((box[1] + box[3]) / 2 / stride, (box[0] + box[2]) / 2 / stride)
        k = int(np.argmin((ys - centre[0]) ** 2 + (xs - centre[1]) ** 2))
        cells.append((0, int(cls), int(ys[k]), int(xs[k])))
    return cells


def _decoded(maps: np.ndarray, config: dict[str, Any]) -> list[tuple[Any, list[Key]]]:
    cfg = {**DEFAULTS, **config}
    n_cls, stride = int(cfg["num_classes"]), float(cfg["stride"])
    out = []
    for i, m in enumerate(np.asarray(maps, np.float32)):
        det = decode_centernet(m, cfg)
        if len(det) >= int(cfg["max_detections"]):
            raise ValueError(f"image {i}: the detection cap is reached; the comparison does not cover it")
        out.append((det, [(i, c, y, x) for _, c, y, x in _cells(m, n_cls, stride, det)]))
    return out


def ranked_decisions(maps: np.ndarray, config: dict[str, Any], gt: Boxes) -> dict[int, list[tuple[Key, tuple]]]:
    """Per class, the detections in the order AP ranks them, each with its true-positive flags at
    the ten IoU thresholds: everything AP depends on (metrics.evaluate's own ordering and matching)."""
    n_cls = int(config["num_classes"])
    per_class: dict[int, list[tuple[float, Key, tuple]]] = {c: [] for c in range(n_cls)}
    for i, (det, keys) in enumerate(_decoded(maps, config)):
        for c in range(n_cls):
            sel = np.flatnonzero(det.labels == c)
            sel = sel[np.argsort(-det.scores[sel], kind="mergesort")]
            g = gt.boxes[(gt.image_idx == i) & (gt.labels == c)]
            matched, _ = match_image(box_iou(det.boxes[sel], g))
            per_class[c] += [(float(det.scores[d]), keys[d], tuple(bool(v) for v in matched[:, j]))
                             for j, d in enumerate(sel)]
    ranked = {}
    for c, items in per_class.items():  # evaluate: images in order, then a stable sort by score
        order = np.argsort(-np.array([s for s, _, _ in items]), kind="mergesort")
        ranked[c] = [(items[k][1], items[k][2]) for k in order]
    return ranked


def fragile_keys(maps: np.ndarray, atol: np.ndarray, config: dict[str, Any], gt: Boxes) -> tuple[set[Key], float]:
    """The reference's fragile detections and cells (module docstring), and the largest IoU slack."""
    cfg = {**DEFAULTS, **config}
    n_cls, stride, nms_iou = int(cfg["num_classes"]), float(cfg["stride"]), float(cfg["nms_iou"])
    threshold = float(cfg["score_threshold"])
    thr_logit = np.log(threshold / (1 - threshold))
    every = {**cfg, "nms_iou": 1.0, "max_detections": 10**6}  # every candidate, before NMS
    maps = np.asarray(maps, np.float64)
    atol = np.broadcast_to(np.asarray(atol, np.float64), maps.shape)
    fragile: set[Key] = set()
    largest_slack = 0.0
    scored: dict[int, list[tuple[float, float, Key]]] = {c: [] for c in range(n_cls)}
    for i, (m, a) in enumerate(zip(maps, atol, strict=True)):
        logits, dl = m[:n_cls], a[:n_cls]
        maybe = logits >= thr_logit - dl  # cells that are, or may become, detections
        edge = maybe & ((np.abs(logits - thr_logit) <= dl) | (_neighbour_gap(logits, dl) <= 0))
        fragile |= {(i, int(c), int(y), int(x)) for c, y, x in zip(*np.nonzero(edge), strict=True)}
        cand = decode_centernet(m.astype(np.float32), every)
        keys = [(i, c, y, x) for _, c, y, x in _cells(m, n_cls, stride, cand)]
        d_score = np.array([a[c, y, x] / 4 for _, c, y, x in keys])
        eps = np.array([stride * max(a[n_cls, y, x], a[n_cls + 1, y, x]) + 0.5 * max(b[2] - b[0], b[3] - b[1])
                        * np.expm1(max(a[n_cls + 2, y, x], a[n_cls + 3, y, x]))
                        for (_, c, y, x), b in zip(keys, cand.boxes, strict=True)])
        boxes = cand.boxes.astype(np.float64)
        ious = box_iou(boxes, boxes)
        for p in range(len(cand)):  # NMS: same-class pairs near its IoU threshold, or whose order may swap
            for q in range(p + 1, len(cand)):
                if cand.labels[p] != cand.labels[q]:
                    continue
                iou = float(ious[p, q])
                slack = _iou_slack(boxes[p], boxes[q], eps[p], eps[q], iou)
                swap = abs(float(cand.scores[p] - cand.scores[q])) <= d_score[p] + d_score[q]
                if abs(iou - nms_iou) <= slack or (swap and iou + slack > nms_iou):
                    fragile |= {keys[p], keys[q]}
        may_match = np.zeros(len(cand), bool)
        for p in range(len(cand)):  # matching: IoU with a same-class ground-truth box near a threshold
            for g in gt.boxes[(gt.image_idx == i) & (gt.labels == cand.labels[p])]:
                iou = float(box_iou(boxes[p], g)[0, 0])
                slack = _iou_slack(boxes[p], g, eps[p], 0.0, iou)
                largest_slack = max(largest_slack, slack)
                may_match[p] |= iou + slack >= IOU_THRESHOLDS[0]
                if np.any(np.abs(iou - IOU_THRESHOLDS) <= slack):
                    fragile.add(keys[p])
        for p in range(len(cand)):  # greedy matching cascades within an (image, class)
            group = [q for q in range(len(cand)) if cand.labels[q] == cand.labels[p]]
            if any(keys[q] in fragile for q in group) and may_match[p]:
                fragile.add(keys[p])
        for p in range(len(cand)):
            scored[int(cand.labels[p])].append((float(cand.scores[p]), float(d_score[p]), keys[p]))
    widest = max((ds for items in scored.values() for _, ds, _ in items), default=0.0)
    for items in scored.values():  # ranking: same-class scores that may swap, anywhere
        items.sort(reverse=True)
        for k, (s1, d1, key1) in enumerate(items):
            for s2, d2, key2 in items[k + 1:]:
                if s1 - s2 > d1 + widest:
                    break
                if s1 - s2 <= d1 + d2:
                    fragile |= {key1, key2}
    return fragile, largest_slack


@dataclass
class Comparison:
    """What differs between a runtime's ranked decisions and the reference's, and what it allows."""

    #: per class: the keys whose existence, rank or true-positive flags differ, with their rank j
    differing: dict[int, list[tuple[Key, int, int, tuple[bool, ...]]]]  # key, rank, steps, thresholds hit
    gt_per_class: dict[int, int]
    #: the largest IoU slack of any detection: how far mean IoU may move when nothing differs
    iou_slack: float = 0.0

    @property
    def keys(self) -> set[Key]:
        return {key for items in self.differing.values() for key, _, _, _ in items}

    @property
    def appeared(self) -> int:
        """Detections on one side only: the most the detection counts may differ by."""
        return sum(1 for items in self.differing.values() for _, _, steps, _ in items if steps == 1)

    def bound(self, thresholds: slice) -> float:
        """Largest change of the mean AP over `thresholds` (slice of the ten) the differences allow."""
        classes = [c for c, g in self.gt_per_class.items() if g > 0]
        n_thr = len(IOU_THRESHOLDS[thresholds])
        total = 0.0
        for c in classes:
            g = self.gt_per_class[c]
            for _, rank, steps, hit in self.differing.get(c, []):
                share = sum(hit[thresholds]) / n_thr
                total += share * steps * (np.ceil(100 / g) / 101 + 1 / rank)
        return total / len(classes) if classes else 0.0


def compare(reference: dict[int, list[tuple[Key, tuple]]], other: dict[int, list[tuple[Key, tuple]]],
            gt: Boxes) -> Comparison:
    """The detections that differ between two runtimes' ranked decisions (see `ranked_decisions`)."""
    differing = {}
    for c in reference:
        ref, oth = reference[c], other.get(c, [])
        ref_rank = {key: j for j, (key, _) in enumerate(ref, 1)}
        oth_rank = {key: j for j, (key, _) in enumerate(oth, 1)}
        ref_tp, oth_tp = dict(ref), dict(oth)
        ref_order = [key for key, _ in ref if key in oth_rank]
        oth_order = [key for key, _ in oth if key in ref_rank]
        moved = {a for a, b in zip(ref_order, oth_order, strict=True) if a != b}
        moved |= {b for a, b in zip(ref_order, oth_order, strict=True) if a != b}
        items = []
        for key in sorted(set(ref_rank) | set(oth_rank)):
            both = key in ref_rank and key in oth_rank
            flags_differ = both and ref_tp[key] != oth_tp[key]
            if both and not flags_differ and key not in moved:
                continue
            flags = [ref_tp.get(key, (False,) * len(IOU_THRESHOLDS)), oth_tp.get(key, (False,) * len(IOU_THRESHOLDS))]
            # a move or an appearance counts at every threshold; a changed flag at its own thresholds
            hit = tuple(True for _ in IOU_THRESHOLDS) if (not both or key in moved) else tuple(
                a != b for a, b in zip(*flags, strict=True))
            items.append((key, min(ref_rank.get(key, 10**9), oth_rank.get(key, 10**9)), 2 if both else 1, hit))
        items.sort(key=lambda item: item[1])  # a step happens no lower than its rank minus the steps before it
        items = [(key, max(1, rank - n), steps, hit) for n, (key, rank, steps, hit) in enumerate(items)]
        if items:
            differing[c] = items
    return Comparison(differing, {c: int(np.sum(gt.labels == c)) for c in reference})


def _sigmoid(x: Any) -> Any:
    return 1 / (1 + np.exp(-np.clip(x, -60.0, 60.0)))
