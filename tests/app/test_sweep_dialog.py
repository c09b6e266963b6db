"""Run ▸ Sweep…: the dialog builds the grid, and the sweep it starts writes its report."""

from __future__ import annotations

from heiti.app import sweep_dialog
from heiti.app.sweep_dialog import SweepDialog
from PySide6.QtWidgets import QDialog, QDialogButtonBox

from tests import parallelnodes
from tests.app.conftest import save_screenshot


def _graph(win):
    d = win.doc
    prep = d.add_node("ptest.stamp", (0, 0), {"delay": 0.0})
    fast = d.add_node("ptest.runtime", (300, -60), {"accuracy": 0.9, "latency_ms": 1.0})
    good = d.add_node("ptest.runtime", (300, 80), {"accuracy": 0.95, "latency_ms": 3.0})
    d.connect((prep, "out"), (fast, "x"))
    d.connect((prep, "out"), (good, "x"))
    assert d.validate_now().ok
    return fast, good


def _register(registry):
    for cls in parallelnodes.ALL:
        registry.register(cls)


def test_the_dialog_counts_variants_and_refuses_bad_values(window, app_registry, tmp_path):
    _register(app_registry)
    fast, good = _graph(window)
    dialog = SweepDialog(window.doc.graph, app_registry, window)
    ok = dialog.box.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled() and "at least one param" in dialog.summary.text()
    dialog.add_row(fast, "latency_ms", "0.5, 1, 2")
    dialog.add_row(good, "accuracy", "0.96,0.97")
    assert ok.isEnabled() and dialog.summary.text().startswith("6 variant(s)")
    dialog.random_n.setValue(4)
    assert dialog.summary.text().startswith("4 variant(s)")
    spec = dialog.spec()
    assert spec.grid == {f"{fast}.latency_ms": [0.5, 1, 2], f"{good}.accuracy": [0.96, 0.97]}
    assert len(spec.combos) == 4 and spec.random_n == 4 and not spec.interleave
    dialog.interleave.setChecked(True)
    assert dialog.spec().interleave  # the runtimes of each variant take turns (engine.turns)
    dialog.max_latency.setText("fast please")
    assert not ok.isEnabled() and "max latency" in dialog.summary.text()
    dialog.max_latency.setText("2.5")
    dialog.table.cellWidget(0, 2).setText("")
    assert not ok.isEnabled() and "--grid" in dialog.summary.text()
    save_screenshot(dialog, "editor-sweep-dialog.png")


def test_the_sweep_action_runs_variants_and_writes_the_report(window, app_registry, tmp_path, qtbot, monkeypatch):
    _register(app_registry)
    fast, _good = _graph(window)

    def answer(dialog):
        dialog.add_row(fast, "latency_ms", "0.5,1.0")
        dialog.out_dir.setText(str(tmp_path / "sweep"))
        dialog.max_latency.setText("0.8")
        dialog.jobs.setValue(1)
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(SweepDialog, "exec", answer)
    run_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Run")
    assert window.actions_by_name["sweep"] in run_menu.actions()
    window.actions_by_name["sweep"].trigger()
    job = window.sweep_job
    with qtbot.waitSignal(job.finished, timeout=60000) as blocker:
        pass
    status, report = blocker.args
    assert status == "ok"
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert "Best under mean latency ≤ 0.8 ms: variant 1" in md
    assert report.endswith("report.html")
    assert "sweep ok" in window.statusBar().currentMessage()


def test_the_sweep_action_refuses_an_invalid_graph(window, monkeypatch):
    window.doc.add_node("test.add", (0, 0))  # its required input is not wired
    called = []
    monkeypatch.setattr(sweep_dialog.SweepDialog, "exec", lambda d: called.append(d) or 0)
    window.actions_by_name["sweep"].trigger()
    assert called == [] and window.answers.errors and "not valid" in window.answers.errors[0][0]
