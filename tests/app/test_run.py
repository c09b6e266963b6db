"""Runs from the window: the engine on a worker thread, node states, log, charts, results, Stop."""

from __future__ import annotations

import csv
import time

from heiti.app.bridge import RunBridge
from heiti.engine.events import NodeMetric
from heiti.engine.graph import Graph
from PySide6.QtCore import QPointF
from PySide6.QtWidgets import QApplication

from tests.app.conftest import save_screenshot


def build_pipeline(win) -> dict[str, str]:
    d = win.doc
    ids = {
        "src": d.add_node("test.source", (0, 0), {"value": 2.0}),
        "add": d.add_node("test.add", (280, 0), {"offset": 1.0}),
        "rt1": d.add_node("apptest.runtime", (560, -80), {"inferences": 60}),
        "rt2": d.add_node("apptest.runtime", (560, 120), {"inferences": 60, "device": "board"}),
        "report": d.add_node("apptest.report", (860, 20)),
    }
    d.connect((ids["src"], "out"), (ids["add"], "values"))
    d.connect((ids["add"], "out"), (ids["rt1"], "x"))
    d.connect((ids["add"], "out"), (ids["rt2"], "x"))
    d.connect((ids["rt1"], "measurements"), (ids["report"], "measurements"))
    d.connect((ids["rt2"], "measurements"), (ids["report"], "measurements"))
    assert d.validate_now().ok
    return ids


def test_run_updates_states_log_charts_and_results(window, qtbot):
    win = window
    ids = build_pipeline(win)
    seen_states: dict[str, set[str]] = {}
    win.runs.bridge.node_state.connect(lambda n, s, _t: seen_states.setdefault(n, set()).add(s))
    progress: list[tuple[str, float]] = []
    win.runs.bridge.node_progress.connect(lambda n, f, _m: progress.append((n, f)))
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        assert win.runs.run()
        assert win.actions_by_name["stop"].isEnabled() and not win.actions_by_name["run"].isEnabled()
    assert win.runs.last_status == "ok"
    assert {n: item.state for n, item in win.scene.nodes.items()} == {n: "done" for n in ids.values()}
    assert seen_states[ids["rt1"]] == {"running", "done"}
    assert any(n == ids["rt1"] and 0 < f < 1 for n, f in progress)
    assert win.actions_by_name["run"].isEnabled() and not win.actions_by_name["stop"].isEnabled()
    # log: per node, clicking selects the node
    rows = win.log_dock.rows()
    assert any(node == ids["rt1"] and "timed 60 inferences" in msg for node, _, msg in rows)
    index = next(i for i, (node, _, _) in enumerate(rows) if node == ids["rt2"])
    item = win.log_dock.tree.topLevelItem(index)
    win.log_dock.tree.itemClicked.emit(item, 0)
    assert win.scene.selected_node_ids() == [ids["rt2"]]
    # charts: latency, cpu, memory per runtime node; the device's own CPU replaces the host's for rt2
    qtbot.waitUntil(lambda: win.charts.redraws > 0, timeout=5000)
    series = {(s.node, s.metric, s.source): s for s in win.charts.series.values()}
    assert len(series[(ids["rt1"], "latency_ms", "host")].y) == 60
    assert series[(ids["rt1"], "cpu_percent", "host")].y[:3] == [10.0, 11.0, 12.0]
    visible = {(s.node, s.metric, s.source) for s in win.charts.visible_series()}
    assert (ids["rt2"], "cpu_percent", "board") in visible and (ids["rt2"], "cpu_percent", "host") not in visible
    assert (ids["rt1"], "cpu_percent", "host") in visible
    assert win.charts.plots["loss"].isVisibleTo(win.charts)  # train_loss went to the loss plot
    # results dock: one row per measurements file; the report is offered
    assert win.results.table.rowCount() == 2
    assert win.report_button.isVisibleTo(win) and win.actions_by_name["open_report"].isEnabled()
    assert (win.runs.last_out_dir / "report.html").exists()
    win.charts_dock.raise_()
    win.view.fit_all()
    QApplication.processEvents()
    save_screenshot(win, "editor-after-run-charts.png")
    win.results_dock.raise_()
    QApplication.processEvents()
    save_screenshot(win, "editor-after-run-results.png")


def test_second_run_uses_the_cache_for_unchanged_nodes(window, qtbot):
    win = window
    ids = build_pipeline(win)
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        win.runs.run()
    win.doc.set_param(ids["rt1"], "inferences", 30)
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        win.runs.run()
    states = {n: item.state for n, item in win.scene.nodes.items()}
    assert states[ids["src"]] == "cached" and states[ids["add"]] == "cached"
    assert states[ids["rt1"]] == "done"


def test_failed_node_shows_failed_and_logs_the_error(window, qtbot):
    win = window
    fail = win.doc.add_node("test.fail", (0, 0))
    after = win.doc.add_node("test.pass", (300, 0))
    src = win.doc.add_node("test.source", (0, 200))
    model = win.doc.add_node("test.model", (0, 400))
    win.doc.connect((model, "model"), (after, "model"))
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        win.runs.run()
    assert win.runs.last_status == "failed"
    assert win.scene.nodes[fail].state == "failed" and win.scene.nodes[src].state == "done"
    assert "always fails" in win.scene.nodes[fail].status_text
    assert any(n == fail and level == "error" and "always fails" in m for n, level, m in win.log_dock.rows())
    win.view.fit_all()
    QApplication.processEvents()
    save_screenshot(win, "editor-failed-node.png")


def test_stop_cancels_a_running_node(window, qtbot):
    win = window
    slow = win.doc.add_node("test.slow", (0, 0), {"steps": 3000, "step_s": 0.01})
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=30000):
        win.runs.run()
        qtbot.waitUntil(lambda: win.scene.nodes[slow].state == "running", timeout=10000)
        started = time.monotonic()
        win.actions_by_name["stop"].trigger()
    assert time.monotonic() - started < 5
    assert win.runs.last_status == "cancelled" and win.scene.nodes[slow].state == "cancelled"


def test_invalid_graph_is_not_run(window):
    win = window
    win.doc.add_node("test.tvm", (0, 0))  # its required input is not connected
    assert not win.runs.run()
    assert win.answers.errors and "not connected" in win.answers.errors[0][1]
    assert not win.runs.running


def test_bridge_delivers_metrics_in_batches_on_the_gui_thread(qapp, app_registry, tmp_path, qtbot):
    bridge = RunBridge(app_registry)
    graph = Graph()
    graph.add_node("apptest.runtime", "rt", params={"inferences": 300, "step_s": 0.0})
    batches: list[list[NodeMetric]] = []
    threads: set[object] = set()
    bridge.metrics.connect(lambda batch: (batches.append(batch), threads.add(QApplication.instance().thread()
                                                                              .currentThread())))
    with qtbot.waitSignal(bridge.stopped, timeout=30000):
        bridge.start(graph, tmp_path / "out", cache_dir=tmp_path / "cache")
    total = sum(len(b) for b in batches)
    assert total == 300 * 4
    assert len(batches) < total  # batched, not one signal per sample
    assert threads == {QApplication.instance().thread()}


def test_chart_export_png_and_csv(window, tmp_path):
    charts = window.charts
    charts.add_metrics([NodeMetric(node="rt", name="latency_ms", value=1.5 + i, x=i) for i in range(10)])
    charts.redraw()
    charts.export_png(tmp_path / "c.png")
    charts.export_csv(tmp_path / "c.csv")
    assert (tmp_path / "c.png").stat().st_size > 1000
    rows = list(csv.reader(open(tmp_path / "c.csv")))
    assert rows[0] == ["node", "metric", "source", "x", "value"] and len(rows) == 11
    assert rows[3][:3] == ["rt", "latency_ms", "host"] and float(rows[3][4]) == 3.5
    charts.set_paused(True)
    before = charts.redraws
    charts.add_metrics([NodeMetric(node="rt", name="latency_ms", value=9.0, x=99)])
    charts.redraw()
    assert charts.redraws == before
    charts.set_paused(False)
    charts.redraw()
    assert charts.redraws == before + 1
    x, _ = charts.curves[("rt", "latency_ms", "host")].getData()
    assert x[-1] == 99


def test_scene_rect_grows_for_far_nodes(window):
    node = window.doc.add_node("test.source", (9000, 9000))
    assert window.scene.sceneRect().contains(window.scene.nodes[node].sceneBoundingRect())
    assert window.scene.sceneRect().contains(QPointF(0, 0))


def test_changing_a_param_clears_the_states_downstream(window, qtbot):
    win = window
    ids = build_pipeline(win)
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        win.runs.run()
    win.doc.set_param(ids["add"], "offset", 5.0)
    states = {n: item.state for n, item in win.scene.nodes.items()}
    assert states[ids["src"]] == "done"
    assert {states[ids[k]] for k in ("add", "rt1", "rt2", "report")} == {"idle"}


def test_results_table_reads_measurement_files_and_names_bad_ones(window, tmp_path):
    from heiti.engine.measurements import LatencyStats, MeasurementsFile

    folder = tmp_path / "run" / "measurements"
    folder.mkdir(parents=True)
    MeasurementsFile(node="a", runtime="onnxruntime", label="ORT", model_format="onnx", model_size_bytes=2_000_000,
                     latency_ms=LatencyStats(mean=1.5, std=0.1, median=1.5, p90=1.7, p99=1.9, min=1.2, max=2.0),
                     ).save(folder / "a.json")
    (folder / "b.json").write_text("{not json")
    assert window.results.load(tmp_path / "run") == 2
    table = window.results.table
    rows = {table.item(r, 1).text(): [table.item(r, c).text() for c in range(table.columnCount())]
            for r in range(table.rowCount())}
    assert rows["a"][0] == "ORT" and rows["a"][4] == "2.00" and rows["a"][5] == "1.500"
    assert "unreadable" in rows["b"][-1]
    assert not window.results.open_button.isEnabled()  # no report.html in that folder


def test_bridge_states_are_the_engines_reduction_of_the_run(qtbot, app_registry, tmp_path):
    from heiti.engine.events import read_events
    from heiti.engine.states import states_of

    g = Graph(name="mixed")
    g.add_node("test.source", "a", {"value": 2})
    g.add_node("test.add", "sum")
    g.add_node("test.fail", "cancel_me")  # the word in a reason must not make anything "cancelled"
    g.add_node("test.add", "after")
    g.connect(("a", "out"), ("sum", "values"))
    g.connect(("cancel_me", "out"), ("after", "values"))
    bridge = RunBridge(app_registry)
    signalled: dict[str, str] = {}
    bridge.node_state.connect(lambda n, s, _t: signalled.__setitem__(n, s))
    with qtbot.waitSignal(bridge.stopped, timeout=60000):
        bridge.start(g, tmp_path / "run", cache_dir=tmp_path / "cache")
    QApplication.processEvents()
    expected = {"a": "done", "sum": "done", "cancel_me": "failed", "after": "skipped"}
    assert signalled == expected and bridge.states == expected
    assert states_of(read_events(tmp_path / "run" / "events.jsonl")) == expected


def test_the_window_runs_nodes_in_workers_and_can_let_runtimes_take_turns(window, qtbot):
    """Run ▸ Run nodes in parallel (on by default, as `heiti run`) and Runtimes take turns (--interleave)."""
    win = window
    build_pipeline(win)
    win.actions_by_name["interleave"].setChecked(True)
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        assert win.runs.run()
    executor = win.runs.bridge.executor
    cores = __import__("os").cpu_count() or 1
    assert win.runs.last_status == "ok" and executor.jobs == cores and executor.interleave == (cores > 1)
    win.actions_by_name["parallel"].setChecked(False)
    with qtbot.waitSignal(win.runs.bridge.stopped, timeout=60000):
        assert win.runs.run()
    executor = win.runs.bridge.executor
    assert win.runs.last_status == "ok" and executor.jobs == 1 and not executor.interleave
