"""The inspector: the selected node's params, generated from its kind's Params schema.

Each edit is checked with the kind's own pydantic model as you type: a valid value becomes an
undoable SetParams command; an invalid one stays in the field with pydantic's message under it.
"""

from __future__ import annotations

from typing import Any

from heiti.app.document import GraphDocument
from heiti.app.inspector_fields import Field, FileChooser, default_file_chooser
from heiti.engine.catalog import describe_kind
from pydantic import ValidationError
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


def is_path_param(name: str, path_params: tuple[str, ...], schema_prop: dict[str, Any]) -> bool:
    if name in path_params or schema_prop.get("format") == "path":
        return True
    return any(option.get("format") == "path" for option in schema_prop.get("anyOf", []))


class Inspector(QWidget):
    def __init__(self, doc: GraphDocument, parent: QWidget | None = None,
                 file_chooser: FileChooser = default_file_chooser) -> None:
        super().__init__(parent)
        self.doc = doc
        self.file_chooser = file_chooser
        self.node_id: str | None = None
        self._committing = False
        self.fields: dict[str, Field] = {}
        self.errors: dict[str, QLabel] = {}
        self.resets: dict[str, QToolButton] = {}
        self.title = QLabel()
        self.title.setObjectName("InspectorTitle")
        self.subtitle = QLabel()
        self.subtitle.setObjectName("InspectorSubtitle")
        self.subtitle.setWordWrap(True)
        self.problems = QLabel()
        self.problems.setObjectName("InspectorProblems")
        self.problems.setWordWrap(True)
        self.body = QWidget()
        self.form = QFormLayout()
        body_layout = QVBoxLayout(self.body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        body_layout.addLayout(self.form)
        body_layout.addStretch(1)  # rows stay at the top
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.form.setFormAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(self.body)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.title)
        layout.addWidget(self.subtitle)
        layout.addWidget(self.problems)
        layout.addWidget(scroll, 1)
        doc.node_changed.connect(self._on_node_changed)
        doc.node_removed.connect(lambda node_id: self.show_node(None) if node_id == self.node_id else None)
        doc.validated.connect(self._on_validated)
        doc.reset.connect(lambda: self.show_node(None))
        doc.info_changed.connect(self._on_info_changed)
        self.show_node(None)

    # --- building -------------------------------------------------------------------------------
    def show_node(self, node_id: str | None) -> None:
        self.node_id = node_id if node_id and self.doc.graph.has_node(node_id) else None
        while self.form.rowCount():
            self.form.removeRow(0)
        self.fields.clear()
        self.errors.clear()
        self.resets.clear()
        if self.node_id is None:
            self._show_graph_info()
            return
        spec = self.doc.graph.node(self.node_id)
        cls = self.doc.node_class(self.node_id)
        if cls is None:
            self.title.setText(spec.kind)
            self.subtitle.setText(f"id {spec.id} — this node kind is not installed")
            self._show_problems()
            return
        info = describe_kind(cls)
        schema_props = info["params_schema"].get("properties", {})
        self.title.setText(info["title"])
        self.subtitle.setText(f"{spec.id} · {cls.kind} · v{cls.version}\n{info['description']}")
        for name, entry in info["params"].items():
            field = Field(name, entry, is_path_param(name, cls.path_params, schema_props.get(name, {})),
                          self.file_chooser)
            field.changed.connect(lambda value, n=name: self._edited(n, value))
            label = QLabel(name)
            label.setToolTip(entry.get("description", ""))
            field.widget.setToolTip(self._help(entry))
            error = QLabel()
            error.setObjectName("FieldError")
            error.setWordWrap(True)
            error.hide()
            reset = QToolButton(text="↺")
            reset.setToolTip(f"Back to the default ({entry.get('default')!r})" if "default" in entry else "Unset")
            reset.setAutoRaise(True)
            policy = reset.sizePolicy()
            policy.setRetainSizeWhenHidden(True)  # keep the fields aligned whether set or not
            reset.setSizePolicy(policy)
            reset.clicked.connect(lambda _=False, n=name: self._reset(n))
            holder = QWidget()
            column = QVBoxLayout(holder)
            column.setContentsMargins(0, 0, 0, 0)
            column.setSpacing(2)
            row = QHBoxLayout()
            row.setSpacing(2)
            row.addWidget(field.widget, 1)
            row.addWidget(reset)
            column.addLayout(row)
            column.addWidget(error)
            self.resets[name] = reset
            self.form.addRow(label, holder)
            self.fields[name] = field
            self.errors[name] = error
        self._load_values()
        self._show_problems()

    def _show_graph_info(self) -> None:
        """Nothing selected: the graph's own name and description, editable."""
        graph = self.doc.graph
        self.title.setText("Graph")
        self.subtitle.setText(f"{len(graph.nodes)} nodes, {len(graph.edges)} wires. "
                              "Select a node to edit its parameters.")
        self.problems.hide()
        self.name_edit = QLineEdit(graph.name)
        self.name_edit.setMaxLength(500)
        self.name_edit.textEdited.connect(lambda text: self._edit_info("name", text))
        self.description_edit = QPlainTextEdit(graph.description)
        self.description_edit.setMaximumHeight(120)
        self.description_edit.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.description_edit.textChanged.connect(
            lambda: self._edit_info("description", self.description_edit.toPlainText()))
        self.form.addRow(QLabel("name"), self.name_edit)
        self.form.addRow(QLabel("description"), self.description_edit)

    def _edit_info(self, field: str, value: str) -> None:
        if self.node_id is None and value != getattr(self.doc.graph, field):
            self._committing = True
            try:
                self.doc.set_graph_info(field, value)
            finally:
                self._committing = False

    def _on_info_changed(self) -> None:
        if self.node_id is None and not self._committing:
            self.show_node(None)

    @staticmethod
    def _help(entry: dict[str, Any]) -> str:
        text = entry.get("description", "")
        limits = [f"{k} {entry[k]}" for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum") if k in entry]
        if limits:
            text += (" — " if text else "") + ", ".join(limits)
        if "default" in entry:
            text += f" (default {entry['default']!r})"
        return text

    def _load_values(self) -> None:
        if self.node_id is None:
            return
        cls = self.doc.node_class(self.node_id)
        params = self.doc.graph.node(self.node_id).params
        for name, field in self.fields.items():
            model_field = cls.Params.model_fields.get(name) if cls else None
            default = model_field.get_default(call_default_factory=True) if model_field else None
            field.set_value(params.get(name, default))
            self._set_error(name, None)
            self.resets[name].setVisible(name in params)

    def _on_validated(self, _result: object) -> None:
        if self.node_id is None:
            graph = self.doc.graph
            self.subtitle.setText(f"{len(graph.nodes)} nodes, {len(graph.edges)} wires. "
                                  "Select a node to edit its parameters.")
        else:
            self._show_problems()

    def _show_problems(self) -> None:
        problems = self.doc.node_problems.get(self.node_id, []) if self.node_id else []
        self.problems.setText("\n".join(f"⚠ {p}" for p in problems))
        self.problems.setVisible(bool(problems))

    # --- editing --------------------------------------------------------------------------------
    def _edited(self, name: str, value: Any) -> None:
        if self.node_id is None:
            return
        error = self.check(name, value)
        self._set_error(name, error)
        if error is None:
            self._committing = True
            try:
                self.doc.set_param(self.node_id, name, value)
            finally:
                self._committing = False
            self.resets[name].setVisible(True)

    def _reset(self, name: str) -> None:
        if self.node_id is not None:
            self.doc.reset_param(self.node_id, name)

    def check(self, name: str, value: Any) -> str | None:
        """pydantic's message for `name` = `value` on the current node, or None when valid."""
        cls = self.doc.node_class(self.node_id) if self.node_id else None
        if cls is None:
            return None
        candidate = {**self.doc.graph.node(self.node_id).params, name: value}
        try:
            cls.Params(**candidate)
        except ValidationError as err:
            mine = [e for e in err.errors() if e["loc"] and e["loc"][0] == name]
            if mine:
                return "; ".join(e["msg"] for e in mine)
        except Exception as err:  # noqa: BLE001 - a kind's own validator may raise anything
            return str(err)
        return None

    def _set_error(self, name: str, message: str | None) -> None:
        label = self.errors.get(name)
        if label is not None:
            label.setText(message or "")
            label.setVisible(bool(message))
        field = self.fields.get(name)
        if field is not None:
            field.set_error(message)

    def _on_node_changed(self, node_id: str) -> None:
        if node_id == self.node_id and not self._committing:
            self._load_values()
