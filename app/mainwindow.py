"""The main window: canvas in the middle, palette and inspector on the sides, log, charts and
results below; menus, toolbar, and the hooks tests replace (ask_* and show_error)."""

from __future__ import annotations

import atexit
import functools
from pathlib import Path

import shiboken6
from heiti.app import icons
from heiti.app.canvas.scene import GraphScene
from heiti.app.canvas.view import CanvasView
from heiti.app.docks.charts import ChartsDock
from heiti.app.docks.devices import DevicesDock
from heiti.app.docks.log_dock import LogDock
from heiti.app.docks.results import ResultsDock
from heiti.app.document import GraphDocument, PortRef
from heiti.app.file_ops import FileOps
from heiti.app.inspector import Inspector
from heiti.app.layout import layered_positions
from heiti.app.palette import Palette
from heiti.app.quickadd import QuickAdd
from heiti.app.recovery import Recovery
from heiti.app.run_controller import RunController
from heiti.app.sweep_dialog import open_sweep_dialog
from heiti.engine.graph import loads_graph
from heiti.engine.registry import Registry
from PySide6.QtCore import QMimeData, QPoint, QPointF, QSettings, Qt
from PySide6.QtGui import QAction, QCloseEvent, QCursor, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPushButton,
    QSizePolicy,
    QToolTip,
    QWidget,
)

GRAPH_MIME = "application/x-heiti-graph"


class MainWindow(QMainWindow):
    def __init__(self, registry: Registry, settings: QSettings | None = None, recovery_dir: Path | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.registry = registry
        self.settings = settings or QSettings("Heiti", "Heiti editor")
        self.doc = GraphDocument(registry, self)
        self.scene = GraphScene(self.doc)
        self.view = CanvasView(self.scene)
        self.setCentralWidget(self.view)
        self.palette = Palette(registry)
        self.inspector = Inspector(self.doc)
        self.log_dock = LogDock()
        self.charts = ChartsDock()
        self.results = ResultsDock()
        self.devices = DevicesDock(lambda: self.doc.graph)
        self.quick_add = QuickAdd(registry, self)
        self.files = FileOps(self, self.settings, Recovery(recovery_dir))
        self.runs = RunController(self)
        self.last_refusal: str | None = None
        self._paste_count = 0
        self._pending_wire: tuple[PortRef, QPointF] | None = None
        self._quick_pos = QPointF()

        self.palette_dock = self._dock("Nodes", self.palette, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.inspector_dock = self._dock("Inspector", self.inspector, Qt.DockWidgetArea.RightDockWidgetArea)
        self.log_dock_widget = self._dock("Log", self.log_dock, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.charts_dock = self._dock("Live charts", self.charts, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.results_dock = self._dock("Results", self.results, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.log_dock_widget, self.charts_dock)
        self.tabifyDockWidget(self.charts_dock, self.results_dock)
        self.devices_dock = self._dock("Devices", self.devices, Qt.DockWidgetArea.BottomDockWidgetArea)
        for changed in (self.doc.node_added, self.doc.node_removed, self.doc.node_changed, self.doc.reset):
            changed.connect(lambda *_: self.devices.refresh_targets())
        self.tabifyDockWidget(self.results_dock, self.devices_dock)
        self.log_dock_widget.raise_()
        self.resizeDocks([self.palette_dock, self.inspector_dock], [220, 300], Qt.Orientation.Horizontal)
        self.resizeDocks([self.log_dock_widget], [230], Qt.Orientation.Vertical)

        self.refusal_label = QLabel()
        self.refusal_label.setObjectName("Refusal")
        self.report_button = QPushButton("Open report")
        self.report_button.setVisible(False)
        self.problems_label = QLabel()
        self.problems_label.setObjectName("ProblemCount")
        self.problems_label.setMinimumWidth(110)
        self.problems_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.refusal_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.statusBar().addWidget(self.refusal_label, 1)
        self.statusBar().addPermanentWidget(self.problems_label)
        self.statusBar().addPermanentWidget(self.report_button)

        self._build_actions()
        self._connect()
        self.resize(1400, 860)
        self._update_title()

    # --- hooks (tests replace these) ------------------------------------------------------------
    def ask_save_changes(self) -> str:
        answer = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.doc.graph.name}?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard | QMessageBox.StandardButton.Cancel)
        return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
            answer, "cancel")

    def ask_restore(self, description: str) -> bool:
        answer = QMessageBox.question(
            self, "Restore unsaved work?",
            f"The editor did not close properly last time. Restore {description}?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def ask_open_path(self) -> str | None:
        return QFileDialog.getOpenFileName(self, "Open graph", "", "Heiti graphs (*.json)")[0] or None

    def ask_save_path(self) -> str | None:
        start = str(self.doc.path or f"{self.doc.graph.name}.json")
        return QFileDialog.getSaveFileName(self, "Save graph as", start, "Heiti graphs (*.json)")[0] or None

    def show_error(self, title: str, text: str) -> None:
        QMessageBox.warning(self, title, text)

    # --- building -------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title.replace(" ", "_"))
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _action(self, text: str, slot, shortcut: QKeySequence | str | None = None, tip: str = "") -> QAction:  # noqa: ANN001
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
        action.setStatusTip(tip or text.replace("&", ""))
        action.triggered.connect(lambda _=False: slot())
        return action

    def _build_actions(self) -> None:
        SK = QKeySequence.StandardKey
        a = self.actions_by_name = {}
        a["new"] = self._action("&New", self.files.new, SK.New)
        a["open"] = self._action("&Open…", self.files.open, SK.Open)
        a["save"] = self._action("&Save", self.files.save, SK.Save)
        a["save_as"] = self._action("Save &as…", self.files.save_as, SK.SaveAs)
        a["quit"] = self._action("&Quit", self.close, SK.Quit)
        a["undo"] = self.doc.undo_stack.createUndoAction(self, "&Undo")
        a["undo"].setShortcut(SK.Undo)
        a["redo"] = self.doc.undo_stack.createRedoAction(self, "&Redo")
        a["redo"].setShortcut(SK.Redo)
        stack = self.doc.undo_stack
        a["tb_undo"] = self._action("Undo", stack.undo, None, "Undo the last edit")
        a["tb_redo"] = self._action("Redo", stack.redo, None, "Redo")
        a["tb_undo"].setEnabled(False)
        a["tb_redo"].setEnabled(False)
        stack.canUndoChanged.connect(a["tb_undo"].setEnabled)
        stack.canRedoChanged.connect(a["tb_redo"].setEnabled)
        a["cut"] = self._action("Cu&t", self.cut, SK.Cut)
        a["copy"] = self._action("&Copy", self.copy, SK.Copy)
        a["paste"] = self._action("&Paste", self.paste, SK.Paste)
        a["duplicate"] = self._action("&Duplicate", self.duplicate, "Ctrl+D")
        a["delete"] = self._action("De&lete", self.delete_selection, SK.Delete)
        a["delete"].setShortcuts([QKeySequence(SK.Delete), QKeySequence(Qt.Key.Key_Backspace)])
        a["select_all"] = self._action("Select &all", self.select_all, SK.SelectAll)
        a["quick_add"] = self._action("Add node…", lambda: self.open_quick_add(self.view.cursor_scene_pos()),
                                      None, "Add a node at the cursor (Tab)")
        a["fit"] = self._action("&Fit graph", self.view.fit_all, "F", "Show the whole graph")
        a["arrange"] = self._action("&Arrange nodes", self.arrange, "Ctrl+L", "Lay the graph out in columns")
        a["zoom_in"] = self._action("Zoom &in", lambda: self.view.zoom_by(1.25), SK.ZoomIn)
        a["zoom_out"] = self._action("Zoom &out", lambda: self.view.zoom_by(0.8), SK.ZoomOut)
        a["zoom_reset"] = self._action("Actual size", self.view.reset_zoom, "Ctrl+0")
        a["snap"] = self._action("Snap to grid", lambda: None)
        a["snap"].setCheckable(True)
        a["snap"].setChecked(self.scene.snap_to_grid)
        a["snap"].toggled.connect(lambda on: setattr(self.scene, "snap_to_grid", on))
        a["run"] = self._action("▶ Run", self.runs.run, "F5", "Run the graph (only changed nodes execute)")
        a["stop"] = self._action("■ Stop", self.runs.stop, "Shift+F5", "Stop the run")
        a["stop"].setEnabled(False)
        a["use_cache"] = self._action("Use cache", lambda: None)
        a["use_cache"].setCheckable(True)
        a["use_cache"].setChecked(True)
        a["use_cache"].toggled.connect(lambda on: setattr(self.runs, "use_cache", on))
        a["parallel"] = self._action("Run nodes in parallel", lambda: None, None,
                                     "Independent nodes at once, each in its own process (measuring nodes alone)")
        a["parallel"].setCheckable(True)
        a["parallel"].setChecked(self.runs.parallel)
        a["parallel"].toggled.connect(lambda on: setattr(self.runs, "parallel", on))
        a["interleave"] = self._action("Runtimes take turns", lambda: None, None,
                                       "Runtimes ready together are timed in turns, block by block, so that a machine "
                                       "whose speed drifts affects each alike (needs parallel runs)")
        a["interleave"].setCheckable(True)
        a["interleave"].setChecked(self.runs.interleave)
        a["interleave"].toggled.connect(lambda on: setattr(self.runs, "interleave", on))
        a["open_report"] = self._action("Open &report", self.results.open_report)
        a["sweep"] = self._action("S&weep…", lambda: open_sweep_dialog(self), None,
                                  "Run variants of this graph over chosen param values and compare them")
        a["open_report"].setEnabled(False)
        for action in (a["delete"], a["copy"], a["paste"], a["cut"], a["duplicate"], a["select_all"]):
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            self.view.addAction(action)

        menu = self.menuBar().addMenu("&File")
        menu.addActions([a["new"], a["open"]])
        self.recent_menu = menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(lambda: self.files.fill_recent_menu(self.recent_menu))
        self.examples_menu = menu.addMenu("&Examples")
        self.examples_menu.aboutToShow.connect(lambda: self.files.fill_examples_menu(self.examples_menu))
        menu.addSeparator()
        menu.addActions([a["save"], a["save_as"]])
        menu.addSeparator()
        menu.addAction(a["quit"])
        menu = self.menuBar().addMenu("&Edit")
        menu.addActions([a["undo"], a["redo"]])
        menu.addSeparator()
        menu.addActions([a["cut"], a["copy"], a["paste"], a["duplicate"], a["delete"]])
        menu.addSeparator()
        menu.addActions([a["select_all"], a["quick_add"]])
        menu = self.menuBar().addMenu("&View")
        menu.addActions([a["fit"], a["arrange"], a["zoom_in"], a["zoom_out"], a["zoom_reset"], a["snap"]])
        menu.addSeparator()
        for dock in (self.palette_dock, self.inspector_dock, self.log_dock_widget, self.charts_dock, self.results_dock,
                     self.devices_dock):
            menu.addAction(dock.toggleViewAction())
        menu = self.menuBar().addMenu("&Run")
        menu.addActions([a["run"], a["stop"], a["use_cache"], a["parallel"], a["interleave"], a["open_report"]])
        menu.addAction(a["sweep"])

        for name, icon_name in (("new", "new"), ("open", "open"), ("save", "save"), ("tb_undo", "undo"),
                                ("tb_redo", "redo"), ("run", "run"), ("stop", "stop"), ("fit", "fit"),
                                ("snap", "snap"), ("use_cache", "cache")):
            a[name].setIcon(icons.icon(icon_name))
        a["run"].setText("Run")
        a["stop"].setText("Stop")
        bar = self.addToolBar("Main")
        bar.setObjectName("MainToolbar")
        bar.setMovable(False)
        bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        bar.addActions([a["new"], a["open"], a["save"]])
        bar.addSeparator()
        bar.addActions([a["tb_undo"], a["tb_redo"]])
        bar.addSeparator()
        bar.addActions([a["fit"], a["snap"]])
        bar.addSeparator()
        bar.addActions([a["run"], a["stop"], a["use_cache"]])

    def _connect(self) -> None:
        self.doc.modified_changed.connect(lambda _: self._update_title())
        self.doc.path_changed.connect(lambda _: self._update_title())
        self.doc.reset.connect(self._update_title)
        self.doc.info_changed.connect(self._update_title)
        self.doc.validated.connect(self._show_problem_count)
        self.scene.selectionChanged.connect(self._selection_changed)
        self.scene.connection_refused.connect(self.show_refusal)
        self.scene.message.connect(lambda text: self.statusBar().showMessage(text, 4000))
        self.scene.wire_dropped.connect(self._wire_dropped)
        self.view.quick_add_requested.connect(self.open_quick_add)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.palette.kind_activated.connect(self.add_kind_at_centre)
        self.quick_add.chosen.connect(self._quick_chosen)
        self.log_dock.node_clicked.connect(self.focus_node)
        self.runs.state_changed.connect(self._running_changed)
        self.runs.report_ready.connect(self._report_ready)
        self.report_button.clicked.connect(self.results.open_report)

    def _show_problem_count(self, result) -> None:  # noqa: ANN001 - engine.validate.ValidationResult
        errors = [p for p in result.problems if p.severity == "error"]
        if not self.doc.graph.nodes:
            self.problems_label.setText("")
        elif errors:
            self.problems_label.setText(f"⚠ {len(errors)} problem{'s' if len(errors) != 1 else ''}")
            self.problems_label.setStyleSheet("color: #ff8a8a;")
        else:
            self.problems_label.setText("✓ valid")
            self.problems_label.setStyleSheet("color: #5ee08a;")
        self.problems_label.setToolTip("<br>".join(f"• {p}" for p in errors[:40]))

    def show_dock(self, dock: QDockWidget) -> None:
        dock.show()
        dock.raise_()

    def _update_title(self) -> None:
        where = str(self.doc.path) if self.doc.path else "not saved"
        self.setWindowTitle(f"{self.doc.graph.name} — {where}[*] — Heiti")
        self.setWindowModified(self.doc.modified)

    # --- canvas interactions --------------------------------------------------------------------
    def _selection_changed(self) -> None:
        if not shiboken6.isValid(self.scene) or not shiboken6.isValid(self.inspector):
            return  # the window is being torn down
        ids = self.scene.selected_node_ids()
        self.inspector.show_node(ids[0] if len(ids) == 1 else None)

    def show_refusal(self, reason: str) -> None:
        self.last_refusal = reason
        self.refusal_label.setText(f"Wire refused: {reason}")
        self.refusal_label.setToolTip(reason)
        QToolTip.showText(QCursor.pos(), f"Wire refused: {reason}", self.view)

    def focus_node(self, node_id: str) -> None:
        item = self.scene.nodes.get(node_id)
        if item is not None:
            self.scene.select_nodes([node_id])
            self.view.ensureVisible(item, 80, 80)

    def add_kind_at_centre(self, kind: str) -> str:
        centre = self.view.mapToScene(self.view.viewport().rect().center())
        offset = 20 * (len(self.doc.graph.nodes) % 5)
        return self.view.add_kind_at(kind, QPointF(centre.x() + offset, centre.y() + offset))

    def open_quick_add(self, scene_pos: QPointF, candidates: list[tuple[str, str | None]] | None = None,
                       title: str = "Add node") -> None:
        self._quick_pos = scene_pos
        if candidates is None:
            self._pending_wire = None
            candidates = [(kind, None) for kind in self.registry.kinds()]
        global_pos = self.view.viewport().mapToGlobal(self.view.mapFromScene(scene_pos))
        self.quick_add.open_for(candidates, global_pos, title)

    def _wire_dropped(self, ref: PortRef, scene_pos: QPointF) -> None:
        kinds = self.doc.compatible_kinds(ref)
        if not kinds:
            self.show_refusal(f"no installed node kind can connect to {ref[0]}.{ref[1]}")
            return
        self.open_quick_add(scene_pos, kinds, f"Connect {ref[0]}.{ref[1]} to…")
        self._pending_wire = (ref, scene_pos)

    def _quick_chosen(self, kind: str, port: str | None) -> None:
        pos = self._quick_pos
        if self._pending_wire is not None and port is not None:
            ref, _ = self._pending_wire
            self._pending_wire = None
            x = pos.x() if ref[2] == "out" else pos.x() - 190
            node_id = self.doc.add_node_wired(kind, (x, pos.y() - 40), ref, port)
            self.scene.select_nodes([node_id])
        else:
            self.view.add_kind_at(kind, pos)

    def _context_menu(self, pos: QPoint) -> None:
        scene_pos = self.view.mapToScene(pos)
        node = self.scene._node_at(scene_pos)
        if node is not None and not node.isSelected():
            self.scene.select_nodes([node.node_id])
        menu = QMenu(self)
        a = self.actions_by_name
        if self.scene.selectedItems():
            menu.addActions([a["copy"], a["cut"], a["duplicate"], a["delete"]])
            if node is not None:
                reset = menu.addAction("Reset params to defaults")
                reset.triggered.connect(lambda: self.reset_params(node.node_id))
            menu.addSeparator()
        menu.addAction(a["paste"])
        add = menu.addAction("Add node here…")
        add.triggered.connect(lambda: self.open_quick_add(scene_pos))
        menu.addAction(a["fit"])
        menu.popup(self.view.viewport().mapToGlobal(pos))
        self._last_menu = menu

    def arrange(self) -> None:
        """Lay every node out in columns by generation, as one undoable move."""
        sizes = {n: (item.width, item.height) for n, item in self.scene.nodes.items()}
        left = min((item.x() for item in self.scene.nodes.values()), default=0.0)
        top = min((item.y() for item in self.scene.nodes.values()), default=0.0)
        targets = layered_positions(self.doc.graph, sizes, (left, top))
        moves = {n: ((item.x(), item.y()), targets[n]) for n, item in self.scene.nodes.items() if n in targets}
        self.doc.move_nodes(moves)
        self.view.fit_all()

    def reset_params(self, node_id: str) -> None:
        self.doc.set_params(node_id, {})

    # --- editing --------------------------------------------------------------------------------
    def delete_selection(self) -> None:
        self.doc.remove_items(self.scene.selected_node_ids(), self.scene.selected_edge_keys())

    def select_all(self) -> None:
        for item in self.scene.nodes.values():
            item.setSelected(True)

    def copy(self) -> bool:
        ids = self.scene.selected_node_ids()
        if not ids:
            return False
        text = self.doc.fragment(ids).to_json()
        mime = QMimeData()
        mime.setData(GRAPH_MIME, text.encode("utf-8"))
        mime.setText(text)
        QApplication.clipboard().setMimeData(mime)
        _release_clipboard_at_exit()
        self._paste_count = 0
        return True

    def cut(self) -> None:
        if self.copy():
            self.delete_selection()

    def paste(self) -> list[str]:
        mime = QApplication.clipboard().mimeData()
        raw = bytes(mime.data(GRAPH_MIME)).decode("utf-8") if mime.hasFormat(GRAPH_MIME) else mime.text()
        if not raw.strip():
            return []
        try:
            part = loads_graph(raw, "clipboard")
        except Exception:  # noqa: BLE001 - the clipboard holds something else
            self.statusBar().showMessage("the clipboard holds no Heiti nodes", 4000)
            return []
        self._paste_count += 1
        step = 40.0 * self._paste_count
        ids = self.doc.insert_fragment(part, (step, step))
        self.scene.select_nodes(ids)
        return ids

    def duplicate(self) -> list[str]:
        ids = self.scene.selected_node_ids()
        if not ids:
            return []
        new_ids = self.doc.insert_fragment(self.doc.fragment(ids), (40.0, 40.0))
        self.scene.select_nodes(new_ids)
        return new_ids

    # --- runs -----------------------------------------------------------------------------------
    def _running_changed(self, running: bool) -> None:
        self.actions_by_name["run"].setEnabled(not running)
        self.actions_by_name["stop"].setEnabled(running)
        if running:
            self.report_button.setVisible(False)
            self.actions_by_name["open_report"].setEnabled(False)

    def _report_ready(self, path: str) -> None:
        self.report_button.setVisible(True)
        self.report_button.setToolTip(path)
        self.actions_by_name["open_report"].setEnabled(True)
        self.statusBar().showMessage(f"report ready: {path}", 15000)

    # --- closing --------------------------------------------------------------------------------
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.files.maybe_save():
            event.ignore()
            return
        if self.runs.running:
            self.runs.stop()
            self.runs.bridge.wait(10000)
        self.devices.stop()
        self.files.recovery.discard()
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        event.accept()

    def restore_layout(self) -> None:
        geometry = self.settings.value("geometry")
        state = self.settings.value("window_state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)


@functools.cache
def _release_clipboard_at_exit() -> None:
    """Qt deletes the clipboard's QMimeData from a C++ exit handler, after Python has shut down,
    and shiboken then touches the dead interpreter (a segfault on exit). Clearing the clipboard
    while Python still runs deletes it in time."""

    def release() -> None:
        app = QApplication.instance()
        if app is not None:
            app.clipboard().clear()

    atexit.register(release)

