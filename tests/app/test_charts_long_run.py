"""The latency chart of a long run filled from its measurements file: the file keeps at most 20,000
latencies (one per equal stretch of calls) plus latency_count, and each must be drawn at the call it
came from, not at its position in the list."""

from __future__ import annotations

import numpy as np
import pytest
from heiti.engine.measurements import MeasurementsFile
from heiti.nodes.runtimes.measure import MAX_STORED_LATENCIES, latency_stats, thin_latencies


def _latency_of(calls: np.ndarray) -> np.ndarray:
    """A latency that names its call: 1 ms plus call/1000 (distinct after the file's 6 decimals)."""
    return 1.0 + calls / 1000.0


def _write(folder, node: str, latencies: np.ndarray, thin: bool) -> None:
    kept = thin_latencies(latencies, MAX_STORED_LATENCIES) if thin else latencies
    MeasurementsFile(node=node, runtime="onnxruntime", latency_ms=latency_stats(latencies),
                     latencies_ms=[round(v, 6) for v in kept.tolist()],  # as the runtime nodes store them
                     latency_count=int(latencies.size) if thin else None).save(folder / f"{node}.json")


def _curve_xy(charts, node: str) -> tuple[np.ndarray, np.ndarray]:
    curve = charts.curves[(node, "latency_ms", "host")]
    return np.asarray(curve.xData), np.asarray(curve.yData)


def test_thinned_latencies_are_drawn_at_their_calls(qtbot, tmp_path):
    from heiti.app.docks.charts import MAX_SAMPLES, ChartsDock

    calls = 50_000
    folder = tmp_path / "run" / "measurements"
    folder.mkdir(parents=True)
    _write(folder, "long", _latency_of(np.arange(calls)), thin=True)
    _write(folder, "old", _latency_of(np.arange(300)), thin=False)  # an older file: no latency_count

    charts = ChartsDock()
    qtbot.addWidget(charts)
    charts.show()
    charts.window.setValue(MAX_SAMPLES)  # every stored point on the curve, not the latest 600
    assert sorted(charts.fill_from_run(tmp_path / "run")) == ["long", "old"]

    x, y = _curve_xy(charts, "long")
    assert x.size == MAX_STORED_LATENCIES
    assert np.array_equal(x, np.round((y - 1.0) * 1000.0))  # each latency at the call it was measured on
    assert np.all(np.diff(x) > 0)
    stretch = calls / MAX_STORED_LATENCIES  # 2.5 calls: one kept from each
    k = np.arange(x.size)
    assert np.all((x >= np.floor(k * stretch)) & (x < np.ceil((k + 1) * stretch)))
    assert x[0] <= stretch and x[-1] >= calls - stretch  # the axis runs over the whole run, to ~50,000

    x_old, y_old = _curve_xy(charts, "old")
    assert np.array_equal(x_old, np.arange(300)) and y_old == pytest.approx(_latency_of(np.arange(300)))
    assert charts.plots["latency"].getAxis("bottom").labelText == "call"
