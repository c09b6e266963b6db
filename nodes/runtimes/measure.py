"""Statistics of a measurement: latency summaries and windows over time, drift, and classification
quality. Plain numpy over arrays the loop (nodes.runtimes.loop) recorded; scikit-learn is imported
lazily inside the quality function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from heiti.engine.measurements import ClassificationQuality, LatencyStats, LatencyWindow


def latency_stats(values_ms: Sequence[float] | np.ndarray, first: float | None = None) -> LatencyStats | None:
    """Summary of per-call times in ms (the cold first call passed apart, not in `values_ms`)."""
    arr = np.asarray(values_ms, dtype=np.float64)
    if arr.size == 0:
        return None
    return LatencyStats(
        mean=float(arr.mean()), std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        median=float(np.median(arr)), p90=float(np.percentile(arr, 90)),
        p99=float(np.percentile(arr, 99)), min=float(arr.min()), max=float(arr.max()),
        first=None if first is None else float(first), count=int(arr.size),
    )


def ready_for_quality(y: np.ndarray | None) -> None:
    """Import what scoring labels needs (scikit-learn's metrics: ~1.5 s in a fresh process) while
    a runtime prepares, so that it is not imported after the timed calls: with runtimes in turns
    (--interleave) that import would hold the machine while the others wait."""
    if y is not None:
        import sklearn.metrics  # noqa: F401


def classification_quality(y_true: np.ndarray, scores: np.ndarray,
                           class_names: Sequence[str] = ()) -> ClassificationQuality:
    """Accuracy, top-5, per-class precision/recall/F1, G-mean and the confusion matrix.

    `scores` is (N, classes): logits or probabilities, only their order matters.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).reshape(len(y_true), -1)
    n_classes = max(scores.shape[1], len(class_names), int(y_true.max(initial=-1)) + 1)
    if n_classes > 4096:  # the confusion matrix is classes² integers: a 320x320 map is not 102,400 classes
        raise ValueError(f"{n_classes} classes is not a class vector (at most 4096 are scored); "
                         "use task 'none' for outputs that are not [N, C] scores")
    labels = list(range(n_classes))
    y_pred = scores.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    present = support > 0  # classes absent from the test split would pull the means to zero
    top5 = None
    if scores.shape[1] > 5:
        top = np.argpartition(-scores, 5, axis=1)[:, :5]
        top5 = float(np.mean(np.any(top == y_true[:, None], axis=1)))
    rec = recall[present]
    g_mean = float(np.exp(np.mean(np.log(rec)))) if rec.size and np.all(rec > 0) else 0.0
    names = list(class_names) if len(class_names) == n_classes else [
        class_names[i] if i < len(class_names) else str(i) for i in labels]
    return ClassificationQuality(
        accuracy=float(np.mean(y_pred == y_true)), top5=top5,
        precision_per_class=precision.tolist(), recall_per_class=recall.tolist(),
        f1_per_class=f1.tolist(), support_per_class=[int(s) for s in support],
        precision_mean=float(precision[present].mean()) if present.any() else 0.0,
        recall_mean=float(rec.mean()) if rec.size else 0.0,
        f1_mean=float(f1[present].mean()) if present.any() else 0.0,
        g_mean=g_mean,
        confusion_matrix=confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        class_names=names,
    )



#: per-call latencies kept in a measurements file at most. The statistics (mean, std, percentiles,
#: windows, drift) are computed over every call before thinning; what is kept feeds only the
#: histograms, violins and the call-after-call plot, where 20,000 points resolve a 1 % tail
#: to ~0.07 percentage points (√(0.01·0.99/20,000)) while a day-long `duration_s` run writes
#: ~200 KB of latencies instead of hundreds of MB.
MAX_STORED_LATENCIES = 20_000


def thin_latencies(latencies: Sequence[float] | np.ndarray, limit: int = MAX_STORED_LATENCIES,
                   seed: int = 0) -> np.ndarray:
    """At most `limit` of the calls, in call order: the calls cut into `limit` consecutive strata of
    equal count (±1) and one call drawn from each, with a fixed seed (same run, same file).

    Not a plain stride: passes visit the split in the same order, so a stride that divides the
    split's size would keep one sample's latency over and over. Not a reservoir: uniform, but it
    clumps in time, leaving gaps in the call-after-call plot. One draw per stratum is even in time
    and draws every call with the same probability (to the ±1 of the strata sizes), so the kept
    values are an unbiased sample of the distribution the histograms show.
    """
    arr = np.asarray(latencies)
    calls = thinned_calls(arr.size, limit, seed)
    return arr if calls.size == arr.size else arr[calls]


def thinned_calls(count: int, limit: int = MAX_STORED_LATENCIES, seed: int = 0) -> np.ndarray:
    """The call indices (ascending) that `thin_latencies` keeps of `count` calls: every one up to
    `limit`, else one seeded draw per stratum. A reader of a measurements file gets each kept
    latency's call back from `latency_count` and how many were kept; nothing more is stored."""
    count, limit = int(count), int(limit)
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if count <= limit:
        return np.arange(count, dtype=np.int64)
    bounds = np.arange(limit + 1, dtype=np.int64) * count // limit
    sizes = np.diff(bounds)
    return bounds[:-1] + np.minimum((np.random.default_rng(seed).random(limit) * sizes).astype(np.int64), sizes - 1)

#: calls per window at least: the median of m calls has a standard error of about 1.25·σ/√m, so
#: with m = 50 and a per-call spread σ of 15 % of the median (small models on a quiet CPU) two
#: windows' medians differ by ~3.7 % (one standard error) from noise alone
MIN_WINDOW_CALLS = 50
MAX_WINDOWS = 10


def latency_windows(latencies_ms: Sequence[float] | np.ndarray, wall_s: float | None = None,
                    windows: int = MAX_WINDOWS, min_calls: int = MIN_WINDOW_CALLS) -> list[LatencyWindow]:
    """The calls cut into up to `windows` consecutive windows of equal count (each of at least
    `min_calls`), with the median of each: latency over time, to see throttling and drift.

    `t_s` (the window's middle, in seconds since the timed loop began) is the share of the timed
    time spent before it, scaled to the loop's wall time `wall_s`: the loop records no clock per
    call beyond the latency itself, so as not to add work between calls.
    """
    arr = np.asarray(latencies_ms, dtype=np.float64)
    count = min(int(windows), arr.size // max(int(min_calls), 1))
    if count < 2:
        return []
    bounds = np.linspace(0, arr.size, count + 1).astype(int)
    cumulative = np.concatenate([[0.0], np.cumsum(arr)])
    total = cumulative[-1] or 1.0
    scale = (wall_s / (total / 1e3)) if wall_s else 1.0
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = arr[a:b]
        middle = (cumulative[a] + cumulative[b]) / 2 / 1e3 * scale
        out.append(LatencyWindow(start=int(a), count=int(b - a), median=float(np.median(part)),
                                 mean=float(part.mean()), p90=float(np.percentile(part, 90)),
                                 t_s=round(float(middle), 4)))
    return out


def latency_drift(windows: Sequence[LatencyWindow]) -> float | None:
    """Relative change of the median from the first window to the last (+0.2 = 20 % slower)."""
    if len(windows) < 2 or windows[0].median <= 0:
        return None
    return windows[-1].median / windows[0].median - 1.0


def drift_warning(drift: float | None, windows: Sequence[LatencyWindow], tolerance: float) -> str | None:
    """A sentence for the report when the drift exceeds the tolerance (either way), else None."""
    if drift is None or abs(drift) <= tolerance:
        return None
    first, last = windows[0], windows[-1]
    way = "slower" if drift > 0 else "faster"
    return (f"latency drifted {drift:+.1%} over the run: the last window's median ({last.median:.4g} ms, "
            f"calls {last.start}-{last.start + last.count - 1}) is {abs(drift):.1%} {way} than the first's "
            f"({first.median:.4g} ms), beyond the {tolerance:.0%} tolerance — throttling or other work on the "
            "machine; see the CPU frequency and temperature, and let the runtimes take turns (heiti run "
            "--interleave) so that each meets the same drift")
