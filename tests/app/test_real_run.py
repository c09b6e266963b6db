"""A real pipeline run from the editor: torch training and two runtimes, live charts from the real
metric events, the comparison table from the real measurements files, and the report offered."""

from __future__ import annotations

import pytest
from heiti.engine.registry import default_registry
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from tests.app.conftest import save_screenshot


@pytest.mark.heavy
def test_digits_torch_and_onnxruntime_from_the_editor(qtbot, tmp_path):
    from heiti.app.mainwindow import MainWindow
    from heiti.app.theme import apply_theme

    apply_theme(QApplication.instance())
    win = MainWindow(default_registry(), settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     recovery_dir=tmp_path / "recovery")
    win.show_error = lambda title, text: pytest.fail(f"{title}: {text}")
    win.runs.runs_dir = tmp_path / "runs"
    win.runs.cache_dir = tmp_path / "cache"
    qtbot.addWidget(win)
    win.show()
    d = win.doc
    data = d.add_node("dataset.digits", (0, 100))
    cnn = d.add_node("model.torch_cnn", (260, 0))
    train = d.add_node("train.torch", (520, 0), {"epochs": 3})
    onnx = d.add_node("convert.torch_to_onnx", (780, 0))
    run_torch = d.add_node("runtime.torch", (1040, -100), {"max_samples": 150, "threads": 1, "sample_period_s": 0.05})
    run_ort = d.add_node("runtime.onnxruntime", (1040, 150), {"max_samples": 150, "threads": 1,
                                                              "sample_period_s": 0.05})
    report = d.add_node("report.html", (1300, 50))
    wires = [((data, "dataset"), (cnn, "dataset")), ((cnn, "model"), (train, "model")),
             ((data, "dataset"), (train, "dataset")), ((train, "model"), (onnx, "model")),
             ((train, "model"), (run_torch, "model")), ((data, "dataset"), (run_torch, "dataset")),
             ((onnx, "model"), (run_ort, "model")), ((data, "dataset"), (run_ort, "dataset")),
             ((run_torch, "measurements"), (report, "measurements")),
             ((run_ort, "measurements"), (report, "measurements"))]
    for src, dst in wires:
        assert d.connect(src, dst) is None, (src, dst)
    assert d.validate_now().ok, d.validate_now().problems
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=600_000):
        assert win.runs.run()
    assert win.runs.last_status == "ok", win.log_dock.rows()
    assert {item.state for item in win.scene.nodes.values()} == {"done"}
    metrics = {(s.node, s.metric) for s in win.charts.series.values()}
    assert (run_torch, "latency_ms") in metrics and (run_ort, "latency_ms") in metrics
    assert (run_ort, "cpu_percent") in metrics and (run_ort, "rss_mb") in metrics
    assert any(node == train and "loss" in name for node, name in metrics)
    assert win.results.table.rowCount() == 2
    assert win.report_button.isVisibleTo(win)
    win.view.fit_all()
    win.charts_dock.raise_()
    QApplication.processEvents()
    save_screenshot(win, "editor-real-run-charts.png")
    win.results_dock.raise_()
    QApplication.processEvents()
    save_screenshot(win, "editor-real-run-results.png")
    d.undo_stack.setClean()
