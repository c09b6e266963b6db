"""nodes.runtimes.measure, .loop, .sampler: statistics, the timed loop, latency forwarding, resources."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from heiti.nodes.runtimes.environment import environment_info
from heiti.nodes.runtimes.loop import LatencyForwarder, run_timed_loop
from heiti.nodes.runtimes.measure import classification_quality, latency_stats
from heiti.nodes.runtimes.modelfacts import model_size_bytes
from heiti.nodes.runtimes.sampler import ResourceSampler


def test_latency_stats_agree_with_numpy():
    rng = np.random.default_rng(1)
    values = rng.gamma(2.0, 1.5, size=501)
    stats = latency_stats(values, first=42.0)
    assert stats.count == values.size
    assert stats.mean == pytest.approx(values.mean())
    assert stats.std == pytest.approx(values.std(ddof=1))
    assert stats.median == pytest.approx(np.median(values))
    assert stats.p90 == pytest.approx(np.percentile(values, 90))
    assert stats.p99 == pytest.approx(np.percentile(values, 99))
    assert (stats.min, stats.max) == (values.min(), values.max())
    assert stats.first == 42.0
    assert latency_stats([]) is None
    assert latency_stats([3.0]).std == 0.0


def test_timed_loop_times_only_the_call():
    """stage and finish sleep much longer than the call: none of it may enter the latencies."""
    calls = []

    def run(feed):
        calls.append(feed)
        t = time.perf_counter()
        while time.perf_counter() - t < 0.0005:  # busy 0.5 ms, exact enough
            pass
        return feed * 2

    def slow(_):
        time.sleep(0.003)

    feeds = list(range(20))
    result = run_timed_loop(run, feeds, warmup=3, stage=slow, finish=lambda raw: (slow(raw), raw)[1])
    ms = result.latencies_ns / 1e6
    assert result.completed == len(feeds) == ms.size
    assert np.all(ms >= 0.5) and np.median(ms) < 2.5  # the 3 ms stage/finish sleeps are outside
    assert result.outputs == [f * 2 for f in feeds]
    assert len(calls) == 1 + 3 + len(feeds)  # cold call, warm-up, timed pass
    assert result.first_ns >= 500_000
    assert np.all(result.postprocess_ns / 1e6 >= 3.0)
    assert result.wall_ns / 1e6 > ms.sum() + 20 * 3.0 * 2 * 0.9  # the period includes stage+finish


def test_timed_loop_stops_when_cancelled():
    stop = threading.Event()
    feeds = list(range(1000))

    def run(feed):
        if feed == 100:
            stop.set()
        return feed

    result = run_timed_loop(run, feeds, warmup=0, cancelled=stop.is_set, check_every=16)
    assert 100 < result.completed < 130
    assert result.latencies_ns.size == result.completed


def test_forwarder_sends_every_latency_once_and_caps_bursts():
    lat = np.zeros(300, dtype=np.int64)
    got: list[tuple[str, float, float]] = []
    fwd = LatencyForwarder(lat, lambda *a: got.append(a), max_points=50)
    lat[:10] = np.arange(1, 11) * 1_000_000
    fwd()
    assert [v for _, v, _ in got] == pytest.approx(list(np.arange(1, 11, dtype=float)))
    assert [x for _, _, x in got] == list(range(10))
    fwd()  # nothing new: nothing sent
    assert len(got) == 10
    lat[10:300] = 2_000_000
    fwd()
    burst = got[10:]
    assert len(burst) == 50  # 290 values averaged into at most 50 events
    assert all(v == pytest.approx(2.0) for _, v, _ in burst)
    assert burst[-1][2] == 299 and fwd.sent == 300


def test_sampler_records_and_streams_resources():
    streamed: list[str] = []
    ticks = []
    t0 = time.perf_counter()
    with ResourceSampler(0.02, t0=t0, sink=lambda n, v, t: streamed.append(n), on_tick=lambda: ticks.append(1)) as s:
        end = time.perf_counter() + 0.4
        while time.perf_counter() < end:  # busy, and letting go of the GIL as a runtime's native call does
            sum(range(2000))
            time.sleep(0)
    series = {ts.name: ts for ts in s.stop()}
    for name in ("cpu_percent", "rss_mb", "mem_percent", "cpu_percent_core0"):
        assert len(series[name].values) >= 4, name
        assert len(series[name].t) == len(series[name].values)
    assert np.all(np.diff(series["cpu_percent"].t) > 0)
    assert series["rss_mb"].values[-1] > 1
    assert 0 <= max(series["cpu_percent"].values) <= 100
    assert {"cpu_percent", "rss_mb", "mem_percent"} <= set(streamed)
    assert not any(n.startswith("cpu_percent_core") for n in streamed)  # per-core stays in the file
    assert len(ticks) >= 4


def test_classification_quality_matches_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, size=400)
    scores = rng.normal(size=(400, 8))
    scores[np.arange(400), y] += rng.normal(1.5, 1.0, size=400)  # mostly right
    q = classification_quality(y, scores, [f"c{i}" for i in range(8)])
    pred = scores.argmax(1)
    assert q.accuracy == pytest.approx(accuracy_score(y, pred))
    assert q.f1_mean == pytest.approx(f1_score(y, pred, average="macro"))
    recalls = recall_score(y, pred, average=None)
    assert q.recall_per_class == pytest.approx(list(recalls))
    assert q.g_mean == pytest.approx(float(np.prod(recalls) ** (1 / 8)))
    cm = np.array(q.confusion_matrix)
    assert np.array_equal(cm, confusion_matrix(y, pred)) and cm.sum() == 400
    top5 = np.mean([yi in np.argsort(-s)[:5] for yi, s in zip(y, scores, strict=True)])
    assert q.top5 == pytest.approx(top5) and q.top5 >= q.accuracy
    assert q.class_names == [f"c{i}" for i in range(8)]
    assert q.support_per_class == list(np.bincount(y, minlength=8))


def test_quality_with_few_classes_and_a_missing_one():
    y = np.array([0, 0, 1, 1, 1])
    scores = np.eye(3)[[0, 1, 1, 1, 2]]  # class 2 never true, predicted once
    q = classification_quality(y, scores)
    assert q.top5 is None  # meaningless with three classes
    assert q.class_names == ["0", "1", "2"]
    assert q.recall_per_class[:2] == pytest.approx([0.5, 2 / 3])
    assert q.recall_mean == pytest.approx((0.5 + 2 / 3) / 2)  # the absent class is left out
    assert q.g_mean == pytest.approx(np.sqrt(0.5 * 2 / 3))


def test_model_size_counts_side_files(tmp_path):
    (tmp_path / "m.xml").write_bytes(b"x" * 10)
    (tmp_path / "m.bin").write_bytes(b"x" * 100)
    (tmp_path / "n.onnx").write_bytes(b"x" * 7)
    (tmp_path / "n.onnx.data").write_bytes(b"x" * 70)
    assert model_size_bytes(tmp_path / "m.xml") == 110
    assert model_size_bytes(tmp_path / "n.onnx") == 77
    assert model_size_bytes(tmp_path) == 187
    assert model_size_bytes(tmp_path / "missing.onnx") is None


def test_environment_names_cpu_and_framework_versions():
    env = environment_info("onnxruntime")
    assert env["cores_logical"] >= 1 and env["python"].count(".") == 2
    assert "onnxruntime" in env["frameworks"] and "numpy" in env["frameworks"]
    assert env["cpu"]


def test_a_loop_that_takes_turns_leaves_the_pauses_out_and_rewarms_after_each():
    """Runtimes taking turns (engine.turns): the other runtime's blocks are not this loop's time,
    and after each a few untimed calls refill what it evicted."""
    from heiti.nodes.runtimes.loop import REWARM

    calls, pauses = [], []

    def run(x):
        calls.append(x)
        time.sleep(0.002)

    def pause():
        pauses.append(time.perf_counter())
        time.sleep(0.1)

    result = run_timed_loop(run, list(range(100)), warmup=3, pause=pause, block_s=0.05)
    assert result.completed == 100 and len(pauses) >= 3  # 100 calls of >= 2 ms, a turn every 50 ms
    assert len(calls) == 1 + 3 + 100 + REWARM * len(pauses)
    gaps = result.wall_ns - int(result.latencies_ns.sum())  # what the loop added around its timed calls
    assert gaps < 0.5 * 0.1e9 * len(pauses), "the pauses were counted as the loop's time"


def test_scoring_labels_is_made_ready_before_the_timed_calls():
    """scikit-learn's metrics (~1.5 s to import) are imported while a runtime prepares when there
    are labels to score, and not at all without them."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\nfrom heiti.nodes.runtimes.measure import ready_for_quality\n"
            "ready_for_quality(None)\nbefore = 'sklearn' in sys.modules\n"
            "ready_for_quality(np.zeros(3, np.int64))\nprint(before, 'sklearn.metrics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "True"]
