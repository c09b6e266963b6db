"""Long runs: repeat and duration_s keep timing every call past the split's size, quality stays once
per sample, latency is cut into windows over time, and a drift beyond the tolerance is reported."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from heiti.engine.executor import Executor
from heiti.engine.graph import Graph
from heiti.engine.measurements import read_measurements
from heiti.engine.registry import Registry
from heiti.nodes.runtimes import RUNTIME_NODES
from heiti.nodes.runtimes.loop import LatencyBuffer, LatencyForwarder, run_timed_loop
from heiti.nodes.runtimes.measure import drift_warning, latency_drift, latency_windows, thin_latencies

from tests.nodes.device_helpers import make_onnx
from tests.nodes.test_runtimes import GivenDataset, GivenModel
from tests.nodes.tiny_models import digits_npz


def _busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def test_repeat_times_every_pass_and_keeps_first_pass_outputs():
    calls = []
    feeds = list(range(7))

    def run(feed):
        calls.append(feed)
        return feed * 10

    result = run_timed_loop(run, feeds, warmup=2, repeat=3, finish=lambda raw: raw + 1)
    assert result.completed == 21 == result.latencies_ns.size and not result.cancelled
    assert np.all(result.latencies_ns > 0)
    assert result.outputs == [f * 10 + 1 for f in feeds]  # one output per sample, from the first pass
    assert result.postprocess_ns.size == len(feeds)
    assert calls[3:] == feeds * 3  # after the cold call and two warm-up calls: three passes in order


def test_duration_cycles_the_split_past_its_size():
    feeds = list(range(5))
    seen = []
    t = time.perf_counter()
    result = run_timed_loop(lambda f: _busy(0.2), feeds, warmup=0, duration_s=0.3,
                            after_call=seen.append, latencies_ns=LatencyBuffer(5, chunk=16))
    elapsed = time.perf_counter() - t
    assert result.completed > 3 * len(feeds)  # at ~0.2 ms a call, 0.3 s is hundreds of calls
    assert result.latencies_ns.size == result.completed and np.all(result.latencies_ns >= 200_000)
    assert seen == list(range(result.completed))  # after_call gets every call's index
    assert len(result.outputs) == len(feeds)
    assert result.wall_ns / 1e9 >= 0.3 and elapsed < 0.3 + 2.0  # stops once the time is up


def test_duration_run_can_be_cancelled_after_the_first_pass():
    stop = threading.Event()
    feeds = list(range(4))
    count = [0]

    def run(feed):
        count[0] += 1
        if count[0] == 50:
            stop.set()

    result = run_timed_loop(run, feeds, warmup=0, duration_s=30, cancelled=stop.is_set, check_every=4)
    assert result.cancelled and 45 < result.completed < 60


def test_forwarder_reads_across_grown_chunks_once_each():
    buf = LatencyBuffer(4, chunk=3)
    got = []
    fwd = LatencyForwarder(buf, lambda *a: got.append(a), max_points=100)
    buf.chunks[0][:] = [1, 2, 3, 4]
    c = buf.grow()
    c[:2] = [5, 6]
    fwd()
    assert [round(v * 1e6) for _, v, _ in got] == [1, 2, 3, 4, 5, 6]
    c[2] = 7
    buf.grow()[0] = 8
    fwd()
    assert [x for _, _, x in got] == list(range(8)) and fwd.sent == 8
    assert list(buf.values(8)) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_windows_and_drift_on_synthetic_latencies():
    rng = np.random.default_rng(0)
    steady = rng.normal(1.0, 0.15, size=1000)  # 15 % spread, no drift
    windows = latency_windows(steady, wall_s=2.0)
    assert len(windows) == 10 and sum(w.count for w in windows) == 1000
    assert windows[0].start == 0 and windows[-1].start == 900
    assert windows[0].t_s < windows[-1].t_s <= 2.0
    assert drift_warning(latency_drift(windows), windows, 0.10) is None

    throttled = np.concatenate([steady[:700], steady[700:] * 1.25])  # clocks drop for the last 30 %
    windows = latency_windows(throttled, wall_s=2.0)
    drift = latency_drift(windows)
    assert drift == pytest.approx(windows[-1].median / windows[0].median - 1)
    assert 0.15 < drift < 0.35
    text = drift_warning(drift, windows, 0.10)
    assert text is not None and f"{drift:+.1%}" in text
    assert drift_warning(drift, windows, 0.5) is None  # a looser tolerance accepts it
    assert latency_windows(steady[:80]) == []  # under two windows of 50 calls: no verdict


def test_thinning_keeps_order_and_every_stretch_and_sees_through_the_feed_cycle():
    """A 5-sample split cycled 2,000 times, latency = the sample's index: 10,000 calls kept as 1,000."""
    calls = np.tile(np.arange(5.0), 2000)
    kept = thin_latencies(calls, 1000)
    assert kept.size == 1000
    assert np.array_equal(kept, thin_latencies(calls, 1000))  # seeded: the same run writes the same file
    # a stride of 10 calls (= 2 passes) would keep one sample only; a draw per stretch sees all five,
    # each about equally often: a fifth of 1,000 draws, ± 5 binomial standard deviations √(1000·0.2·0.8)
    counts = np.bincount(kept.astype(int), minlength=5)
    assert np.all(np.abs(counts - 200) <= 5 * np.sqrt(1000 * 0.2 * 0.8))
    # in call order, one from each stretch of 10 consecutive calls
    index = np.arange(calls.size, dtype=float) + calls / 10  # value encodes its own position
    picked = thin_latencies(index, 1000)
    assert np.all(np.diff(picked) > 0) and np.array_equal(np.floor(picked) // 10, np.arange(1000))
    short = np.arange(30.0)
    assert np.array_equal(thin_latencies(short, 30), short)  # at or under the cap: everything
    with pytest.raises(ValueError, match="at least 1"):
        thin_latencies(short, 0)


def test_report_draws_a_thinned_run_and_says_so(tmp_path):
    from heiti.engine.measurements import MeasurementsFile
    from heiti.nodes.reports.render import report_from_runs
    from heiti.nodes.reports.sections import build_sections

    from tests.report_samples import latency_stats

    lat = np.random.default_rng(2).lognormal(0.0, 0.1, size=400)
    runs = tmp_path / "run" / "measurements"
    runs.mkdir(parents=True)
    MeasurementsFile(node="long", runtime="onnxruntime", latency_ms=latency_stats(lat, first=3.0),
                     latencies_ms=thin_latencies(lat, 100).tolist(), latency_count=lat.size).save(runs / "long.json")
    blocks = {b.kind: b for b in build_sections(report_from_runs([tmp_path / "run"]), only=["latency"])[0].blocks}
    assert "long 100 of 400 calls" in blocks["text"].text
    assert blocks["figure"].png.startswith(b"\x89PNG")


@pytest.fixture
def registry():
    reg = Registry()
    for cls in [GivenDataset, GivenModel, *RUNTIME_NODES]:
        reg.register(cls)
    return reg


def test_runtime_duration_run_exceeds_the_split(registry, tmp_path, monkeypatch):
    """A run longer than the cap keeps `cap` latencies, with statistics and windows over every call."""
    from heiti.nodes.runtimes import measure

    cap = 50  # 0.4 s of a tiny model is thousands of calls, far above it
    monkeypatch.setattr(measure, "MAX_STORED_LATENCIES", cap)
    data, names = digits_npz(tmp_path / "digits.npz")
    model = make_onnx(tmp_path / "m.onnx", (1, 1, 8, 8))
    graph = Graph.model_validate({"name": "long", "nodes": [
        {"id": "data", "kind": "h2test.dataset", "params": {"path": str(data), "class_names": names}},
        {"id": "m", "kind": "h2test.model", "params": {"path": str(model), "fmt": "onnx"}},
        {"id": "ort", "kind": "runtime.onnxruntime",
         "params": {"warmup": 1, "max_samples": 20, "duration_s": 0.4, "threads": 1, "sample_period_s": 0.05}},
    ], "edges": [{"from": ["m", "model"], "to": ["ort", "model"]},
                 {"from": ["data", "dataset"], "to": ["ort", "dataset"]}]})
    result = Executor(registry, cache_dir=tmp_path / "cache").run(graph, tmp_path / "run")
    assert result.status == "ok", result.errors
    m = read_measurements(tmp_path / "run" / "measurements" / "ort.json").data
    assert m.latency_count == m.latency_ms.count > max(20 * 3, 2 * cap)
    assert len(m.latencies_ms) == cap
    stored = np.array(m.latencies_ms)
    assert m.latency_ms.min <= stored.min() and stored.max() <= m.latency_ms.max
    # the mean is over every call: throughput (from the sum of all latencies) is its inverse, to float rounding
    assert m.throughput_per_s == pytest.approx(1e3 / m.latency_ms.mean, rel=1e-9)
    assert m.passes == pytest.approx(m.latency_count / 20, abs=5e-4)  # stored to 3 decimals
    assert np.array(m.classification.confusion_matrix).sum() == 20  # quality once per sample
    assert m.dataset["samples"] == 20
    assert len(m.latency_windows) >= 2 and sum(w.count for w in m.latency_windows) == m.latency_count
    assert m.latency_drift == pytest.approx(m.latency_windows[-1].median / m.latency_windows[0].median - 1)
    assert m.options["duration_s"] == 0.4


def test_report_shows_windows_and_warns_on_drift(tmp_path):
    from heiti.engine.measurements import MeasurementsFile
    from heiti.nodes.reports.render import report_from_runs
    from heiti.nodes.reports.sections import build_sections

    rng = np.random.default_rng(1)
    steady = rng.normal(1.0, 0.1, size=600)
    runs = tmp_path / "run" / "measurements"
    runs.mkdir(parents=True)
    for name, lat in (("steady", steady), ("hot", np.concatenate([steady[:300], steady[300:] * 1.3]))):
        windows = latency_windows(lat, wall_s=1.0)
        MeasurementsFile(node=name, runtime="onnxruntime", latencies_ms=lat.tolist(), latency_windows=windows,
                         latency_drift=latency_drift(windows), passes=6.0,
                         options={"drift_tolerance": 0.1}).save(runs / f"{name}.json")
    sections = {s.id: s for s in build_sections(report_from_runs([tmp_path / "run"]), only=["drift", "sensors"])}
    blocks = sections["drift"].blocks
    note = next(b for b in blocks if b.kind == "note")
    assert note.level == "warn" and len(note.items) == 1 and note.items[0].startswith("hot: +")
    table = next(b for b in blocks if b.kind == "table")
    verdicts = dict(zip(table.column("runtime"), table.column("verdict"), strict=True))
    assert verdicts == {"hot": "drifted", "steady": "ok"}
    assert any(b.kind == "figure" and b.png.startswith(b"\x89PNG") for b in blocks)
    assert "sensors" in sections  # says what it has, or that nothing was sampled
