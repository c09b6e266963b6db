"""The Devices dock against a real `heiti serve` on 127.0.0.1, and the charts after a cached run
(filled from the stored measurements, legends under the plots, GPU/temperature/frequency plots)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from heiti.engine.events import NodeMetric
from heiti.engine.measurements import read_measurements
from heiti.nodes.devices.targets import SerialTarget, TcpTarget
from heiti.nodes.runtimes import RUNTIME_NODES
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from tests.nodes.device_helpers import ServerThread, make_onnx
from tests.nodes.test_runtimes import GivenDataset, GivenModel
from tests.nodes.tiny_models import digits_npz

SHOTS = Path("/tmp/heiti-h9-shots")
pytestmark = pytest.mark.timeout(180)


def _shot(widget, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / name
    assert widget.grab().save(str(path), "PNG")
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_devices_dock_watches_this_machine_and_a_served_device(window, qtbot, tmp_path):
    win = window
    for cls in (TcpTarget, SerialTarget):
        win.doc.registry.register(cls)
    server = ServerThread(tmp_path / "device")
    try:
        board = win.doc.add_node("target.tcp", (0, 0), {"address": server.address})
        dead = win.doc.add_node("target.tcp", (0, 200), {"address": f"127.0.0.1:{_free_port()}", "timeout_s": 1.0})
        dock = win.devices
        assert [key for key, _, _ in dock.targets] == ["local", board, dead]  # read from the graph as it changed
        ticks: list[float] = []
        beat = QTimer()
        beat.setInterval(20)
        beat.timeout.connect(lambda: ticks.append(time.perf_counter()))
        beat.start()
        dock.set_watching(True)
        assert dock.watch_button.isChecked() and dock.watch_button.text() == "Stop"

        def enough() -> bool:
            hist = dock.history
            return all(len(hist.get(k, {}).get("cpu_percent", ([], []))[0]) >= 3 for k in ("local", board))

        qtbot.waitUntil(enough, timeout=30_000)
        qtbot.waitUntil(lambda: "retrying" in dock.statuses.get(dead, ""), timeout=15_000)
        beat.stop()
        gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
        assert max(gaps) < 1.0  # the window kept running while links connected, streamed and failed
        dock.redraw()
        rows = {dock.table.item(r, 0).text(): r for r in range(dock.table.rowCount())}
        r = rows[f"■ {board}"]
        assert dock.table.item(r, 2).text() == server.server.device_info()["hostname"]
        assert dock.table.item(r, 3).text().endswith("%")
        for c in (5, 6):  # temperature and frequency: a figure, or explicitly n/a
            text = dock.table.item(r, c).text()
            assert text == "n/a" or text.endswith(("°C", "MHz")), text
        assert "cannot reach" in dock.table.item(rows[f"■ {dead}"], 2).text()
        assert (board, "cpu_percent") in dock.curves and ("local", "mem_percent") in dock.curves
        win.resize(1400, 900)
        win.devices_dock.raise_()
        win.resizeDocks([win.devices_dock], [420], Qt.Orientation.Vertical)
        QApplication.processEvents()
        _shot(win.devices, "devices-dock.png")
    finally:
        win.devices.stop()
        server.stop()
    assert not any(w.isRunning() for w in win.devices.watchers.values()) and not win.devices.watching


def test_charts_after_a_cached_run_come_from_the_stored_measurements(window, qtbot, tmp_path):
    win = window
    for cls in [GivenDataset, GivenModel, *RUNTIME_NODES]:
        if cls.kind not in win.doc.registry.kinds():
            win.doc.registry.register(cls)
    win.runs.runs_dir = tmp_path / "runs"
    win.runs.cache_dir = tmp_path / "cache"
    data, names = digits_npz(tmp_path / "digits.npz")
    model = make_onnx(tmp_path / "m.onnx", (1, 1, 8, 8))
    d = win.doc
    ds = d.add_node("h2test.dataset", (0, 0), {"path": str(data), "class_names": names})
    m = d.add_node("h2test.model", (0, 200), {"path": str(model), "fmt": "onnx"})
    ort = d.add_node("runtime.onnxruntime", (300, 100), {"warmup": 1, "max_samples": 40, "threads": 1,
                                                         "sample_period_s": 0.05, "repeat": 3})
    assert d.connect((m, "model"), (ort, "model")) is None and d.connect((ds, "dataset"), (ort, "dataset")) is None
    for _ in range(2):
        with qtbot.waitSignal(win.runs.bridge.stopped, timeout=120_000):
            assert win.runs.run()
        assert win.runs.last_status == "ok"
    assert win.scene.nodes[ort].state == "cached"
    stored = read_measurements(win.runs.last_out_dir / "measurements" / f"{ort}.json").data
    series = {(s.node, s.metric, s.source): s for s in win.charts.series.values()}
    assert series[(ort, "latency_ms", "host")].y == pytest.approx(stored.latencies_ms)
    assert len(stored.latencies_ms) == 120  # three passes over 40 samples
    cpu = next(ts for ts in stored.resources if ts.name == "cpu_percent")
    assert series[(ort, "cpu_percent", "host")].x == pytest.approx(cpu.t)
    assert "from stored measurements" in win.charts.status.text()
    for ts in stored.resources:  # the sensors this host has are drawn in their own plots
        if ts.name in ("temp_c", "freq_mhz"):
            plot = {"temp_c": "temp", "freq_mhz": "freq"}[ts.name]
            assert win.charts.plots[plot].isVisibleTo(win.charts)
            assert ort in win.charts.legends[plot].text()
    win.resize(1400, 900)
    win.charts_dock.raise_()
    win.resizeDocks([win.charts_dock], [420], Qt.Orientation.Vertical)
    QApplication.processEvents()
    plots = {key: win.charts.plots[key].mapTo(win.charts, win.charts.plots[key].rect().center())
             for key, cell in win.charts._cells.items() if not cell.isHidden()}
    for key, centre in plots.items():  # no plot drawn over another
        others = [k for k in plots if k != key and win.charts._cells[k].geometry().contains(
            win.charts._cells[k].parentWidget().mapFrom(win.charts, centre))]
        assert not others, (key, others)
    _shot(win.charts, "charts-cached.png")


def test_gpu_temperature_frequency_plots_and_legends_below_the_curves(qtbot):
    from heiti.app.docks.charts import ChartsDock

    charts = ChartsDock()
    qtbot.addWidget(charts)
    charts.resize(1300, 700)
    charts.show()
    events = []
    for node in ("onnxruntime", "tvm", "litert (int8, a long label)"):
        for i in range(40):
            t = i * 0.25
            events += [NodeMetric(node=node, name="latency_ms", value=1.0 + i % 3, x=i),
                       NodeMetric(node=node, name="cpu_percent", value=40 + i % 7, x=t),
                       NodeMetric(node=node, name="rss_mb", value=300 + i, x=t),
                       NodeMetric(node=node, name="gpu_percent", value=60 + i % 5, x=t),
                       NodeMetric(node=node, name="gpu_mem_mb", value=900 + i, x=t),
                       NodeMetric(node=node, name="temp_c", value=55 + i * 0.2, x=t),
                       NodeMetric(node=node, name="freq_mhz", value=2400 - i * 5, x=t)]
    events += [NodeMetric(node="tvm", name="cpu_percent", value=80.0, x=i * 0.5, source="pi") for i in range(20)]
    charts.add_metrics(events)
    charts.redraw()
    QApplication.processEvents()
    for key in ("latency", "cpu", "memory", "temp", "freq", "gpu", "gpu_mem"):
        plot, legend = charts.plots[key], charts.legends[key]
        assert plot.isVisibleTo(charts), key
        assert "onnxruntime" in legend.text(), key
        below = legend.mapTo(charts, legend.rect().topLeft()).y()
        assert below >= plot.mapTo(charts, plot.rect().bottomLeft()).y(), key  # under the plot, not over it
    assert "tvm @ pi" in charts.legends["cpu"].text()
    _shot(charts, "charts-gpu-sensors.png")
