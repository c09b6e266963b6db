"""One editor widget per param, chosen from the param's JSON schema (as heiti.engine.catalog describes it).

numbers with ranges -> spin boxes, enums -> combo boxes, bools -> check boxes, paths -> a line
edit with a file-dialog button, text -> a line edit, anything else -> JSON in a line edit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

INT_LIMIT = 2_147_483_647
#: replaced by tests; (parent, title, start) -> chosen path or ""
FileChooser = Callable[[QWidget, str, str, bool], str]


def default_file_chooser(parent: QWidget, title: str, start: str, folder: bool) -> str:
    if folder:
        return QFileDialog.getExistingDirectory(parent, title, start)
    return QFileDialog.getOpenFileName(parent, title, start)[0]


def _bounds(entry: dict[str, Any], integer: bool) -> tuple[float, float]:
    low = entry.get("minimum", entry.get("exclusiveMinimum"))
    high = entry.get("maximum", entry.get("exclusiveMaximum"))
    step = 1 if integer else 1e-9
    if "exclusiveMinimum" in entry and "minimum" not in entry:
        low = low + step
    if "exclusiveMaximum" in entry and "maximum" not in entry:
        high = high - step
    limit = INT_LIMIT if integer else 1e15
    return (low if low is not None else -limit, high if high is not None else limit)


class CompactDoubleSpinBox(QDoubleSpinBox):
    """Shows 0.25 rather than 0.250000."""

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt's name
        return format(value, ".8g")

    def valueFromText(self, text: str) -> float:  # noqa: N802
        try:
            return float(text.replace(",", "."))
        except ValueError:
            return self.value()


class Field(QObject):
    """Wraps one editor: `changed(value)` when the user edits, `set_value` to show a value."""

    changed = Signal(object)

    def __init__(self, name: str, entry: dict[str, Any], is_path: bool, chooser: FileChooser) -> None:
        super().__init__()
        self.name = name
        self.entry = entry
        self.kind = self._kind(entry, is_path)
        self.chooser = chooser
        self.widget = self._build()

    @staticmethod
    def _kind(entry: dict[str, Any], is_path: bool) -> str:
        typ = entry.get("type")
        if is_path:
            return "path"
        if "enum" in entry:
            return "enum"
        if typ in ("integer", "number", "boolean", "string"):
            return typ
        return "json"

    def _build(self) -> QWidget:
        entry = self.entry
        if self.kind == "integer":
            box = QSpinBox()
            low, high = _bounds(entry, True)
            box.setRange(int(max(low, -INT_LIMIT)), int(min(high, INT_LIMIT)))
            box.setKeyboardTracking(True)
            box.valueChanged.connect(lambda v: self.changed.emit(int(v)))
            return box
        if self.kind == "number":
            box = CompactDoubleSpinBox()
            box.setDecimals(9)
            low, high = _bounds(entry, False)
            box.setRange(low, high)
            box.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
            box.valueChanged.connect(lambda v: self.changed.emit(float(v)))
            return box
        if self.kind == "boolean":
            box = QCheckBox()
            box.toggled.connect(lambda v: self.changed.emit(bool(v)))
            return box
        if self.kind == "enum":
            box = QComboBox()
            for value in entry["enum"]:
                box.addItem(str(value), value)
            box.currentIndexChanged.connect(lambda i: self.changed.emit(box.itemData(i)))
            return box
        line = QLineEdit()
        if self.kind == "path":
            holder = QWidget()
            row = QHBoxLayout(holder)
            row.setContentsMargins(0, 0, 0, 0)
            row.setSpacing(2)
            button = QToolButton(text="…")
            button.setToolTip("Choose a file")
            button.clicked.connect(self._choose)
            row.addWidget(line)
            row.addWidget(button)
            self.line = line
            line.textEdited.connect(lambda t: self.changed.emit(t))
            return holder
        if self.kind == "json":
            line.setPlaceholderText("none" if "null" in (entry.get("type") or []) else "JSON value")
            line.textEdited.connect(lambda t: self.changed.emit(self._parse_json(t)))
        else:
            line.textEdited.connect(lambda t: self.changed.emit(t))
        self.line = line
        return line

    @staticmethod
    def _parse_json(text: str) -> Any:
        text = text.strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text

    def _choose(self) -> None:
        folder = any(word in self.name.lower() for word in ("dir", "folder"))
        path = self.chooser(self.widget, f"Choose {self.name}", self.line.text(), folder)
        if path:
            self.line.setText(path)
            self.changed.emit(path)

    def set_value(self, value: Any) -> None:
        w = self.widget
        w.blockSignals(True)
        try:
            if self.kind == "integer" and isinstance(value, int | float):
                w.setValue(int(value))
            elif self.kind == "number" and isinstance(value, int | float) and math.isfinite(value):
                w.setValue(float(value))
            elif self.kind == "boolean":
                w.setChecked(bool(value))
            elif self.kind == "enum":
                index = w.findData(value)
                w.setCurrentIndex(index if index >= 0 else w.findText(str(value)))
            elif self.kind == "json":
                self.line.setText("" if value is None else json.dumps(value))
            else:
                self.line.blockSignals(True)
                self.line.setText("" if value is None else str(value))
                self.line.blockSignals(False)
        finally:
            w.blockSignals(False)

    def set_error(self, message: str | None) -> None:
        target = self.line if self.kind in ("path", "string", "json") else self.widget
        target.setProperty("invalid", bool(message))
        target.setToolTip(message or self.entry.get("description", ""))
        target.style().unpolish(target)
        target.style().polish(target)
