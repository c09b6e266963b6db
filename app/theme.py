"""One consistent dark theme: Fusion style, a dark palette, and a few style-sheet touches."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

STYLE_SHEET = """
QMainWindow::separator { background: #2a2e36; width: 3px; height: 3px; }
QDockWidget { titlebar-close-icon: none; }
QDockWidget::title { background: #2a2e36; padding: 4px 8px; color: #c5ccd6; }
QToolBar { background: #262a31; border: none; spacing: 4px; padding: 3px; }
QToolButton { padding: 4px 8px; border-radius: 4px; }
QToolButton:hover { background: #353b46; }
QToolButton:checked { background: #3e4654; }
QStatusBar { background: #262a31; color: #c5ccd6; }
QLabel#InspectorTitle { font-size: 15px; font-weight: bold; color: #e6e9ef; }
QLabel#InspectorSubtitle { color: #9aa3b2; }
QLabel#InspectorProblems { color: #ff8a8a; background: #3a2326; border-radius: 4px; padding: 4px; }
QLabel#FieldError { color: #ff8a8a; font-size: 11px; }
QLabel#QuickAddTitle { color: #9aa3b2; font-weight: bold; }
QFrame#QuickAdd { background: #2a2e36; border: 1px solid #4a515e; border-radius: 6px; }
*[invalid="true"] { border: 1px solid #e5484d; border-radius: 3px; }
QLabel#Refusal { color: #ff8a8a; }
QTreeWidget, QTableWidget, QListWidget, QPlainTextEdit { background: #1f2329; alternate-background-color: #242830; }
QHeaderView::section { background: #2a2e36; color: #c5ccd6; border: none; padding: 3px 6px; }
"""


def dark_palette() -> QPalette:
    p = QPalette()
    colours = {
        QPalette.ColorRole.Window: "#262a31",
        QPalette.ColorRole.WindowText: "#e6e9ef",
        QPalette.ColorRole.Base: "#1f2329",
        QPalette.ColorRole.AlternateBase: "#242830",
        QPalette.ColorRole.ToolTipBase: "#2f343d",
        QPalette.ColorRole.ToolTipText: "#e6e9ef",
        QPalette.ColorRole.Text: "#e6e9ef",
        QPalette.ColorRole.Button: "#2f343d",
        QPalette.ColorRole.ButtonText: "#e6e9ef",
        QPalette.ColorRole.BrightText: "#ff6b6b",
        QPalette.ColorRole.Highlight: "#3e7bd6",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.Link: "#6ea8ff",
        QPalette.ColorRole.PlaceholderText: "#7d8696",
    }
    for role, colour in colours.items():
        p.setColor(role, QColor(colour))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7280"))
    return p


def apply_theme(app: QApplication) -> None:
    if app.property("heiti_theme"):
        return  # re-applying a style sheet re-polishes every live widget
    app.setProperty("heiti_theme", True)
    app.setStyle("Fusion")
    app.setPalette(dark_palette())
    app.setStyleSheet(STYLE_SHEET)
