"""The graph file: one versioned JSON format shared by the editor and the engine.

Loading is parse -> migrate -> build. Every error names the JSON path of what is wrong, so a
user (or the editor) can point at it. Saving is atomic: temp file, fsync, rename.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

FORMAT = "heiti-graph"
VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024
ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$"


class GraphLoadError(Exception):
    """A graph file that cannot be read; `problems` holds one message per fault, path first."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class NodeSpec(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="stable id, chosen when the node is created")
    kind: str = Field(min_length=1, max_length=200, description="node kind, e.g. compile.tvm")
    version: int | None = Field(None, ge=1, description="version of the kind that wrote the params")
    params: dict[str, Any] = Field(default_factory=dict)
    ui: dict[str, Any] = Field(default_factory=dict, description="editor-only data; ignored by the engine")


class EdgeSpec(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", populate_by_name=True)

    src: tuple[str, str] = Field(alias="from", description="[node id, output port]")
    dst: tuple[str, str] = Field(alias="to", description="[node id, input port]")
    ui: dict[str, Any] = Field(default_factory=dict)

    @field_validator("src", "dst")
    @classmethod
    def _non_empty(cls, value: tuple[str, str]) -> tuple[str, str]:
        if not value[0] or not value[1]:
            raise ValueError("node id and port must not be empty")
        return value


class Graph(BaseModel):
    """A whole graph document. The model is the truth; the editor's items observe it."""

    model_config = ConfigDict(defer_build=True, extra="forbid")

    format: Literal["heiti-graph"] = FORMAT
    version: Literal[1] = VERSION
    name: str = Field("untitled", max_length=500)
    description: str = ""
    nodes: list[NodeSpec] = Field(default_factory=list)
    edges: list[EdgeSpec] = Field(default_factory=list)
    ui: dict[str, Any] = Field(default_factory=dict)
    #: folder the file was loaded from or saved to: relative path params are taken from here
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path | None:
        return self._base_dir

    @base_dir.setter
    def base_dir(self, folder: Path | None) -> None:
        self._base_dir = Path(folder).resolve() if folder is not None else None

    def __eq__(self, other: object) -> bool:
        """Same content; where the file lies (base_dir) does not make two graphs differ."""
        if not isinstance(other, Graph):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    # --- queries --------------------------------------------------------------------------------
    def node(self, node_id: str) -> NodeSpec:
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise KeyError(node_id)

    def has_node(self, node_id: str) -> bool:
        return any(spec.id == node_id for spec in self.nodes)

    def edges_into(self, node_id: str) -> list[EdgeSpec]:
        return [e for e in self.edges if e.dst[0] == node_id]

    def edges_from(self, node_id: str) -> list[EdgeSpec]:
        return [e for e in self.edges if e.src[0] == node_id]

    def new_id(self, base: str) -> str:
        """A fresh, readable id: `tvm`, `tvm_2`, `tvm_3`..."""
        base = "".join(c if c.isalnum() or c in "_-." else "_" for c in base) or "node"
        if not base[0].isalpha() and base[0] != "_":
            base = "n_" + base
        taken = {spec.id for spec in self.nodes}
        if base not in taken:
            return base
        i = 2
        while f"{base}_{i}" in taken:
            i += 1
        return f"{base}_{i}"

    # --- edits ----------------------------------------------------------------------------------
    def add_node(self, kind: str, node_id: str | None = None, params: dict[str, Any] | None = None,
                 ui: dict[str, Any] | None = None) -> NodeSpec:
        node_id = node_id or self.new_id(kind.split(".")[-1])
        if self.has_node(node_id):
            raise ValueError(f"a node with id {node_id!r} exists already")
        spec = NodeSpec(id=node_id, kind=kind, params=dict(params or {}), ui=dict(ui or {}))
        self.nodes.append(spec)
        return spec

    def remove_node(self, node_id: str) -> tuple[NodeSpec, list[EdgeSpec]]:
        spec = self.node(node_id)
        removed = [e for e in self.edges if node_id in (e.src[0], e.dst[0])]
        self.edges = [e for e in self.edges if node_id not in (e.src[0], e.dst[0])]
        self.nodes.remove(spec)
        return spec, removed

    def connect(self, src: tuple[str, str], dst: tuple[str, str]) -> EdgeSpec:
        edge = EdgeSpec(**{"from": tuple(src), "to": tuple(dst)})
        self.edges.append(edge)
        return edge

    def disconnect(self, src: tuple[str, str], dst: tuple[str, str]) -> None:
        self.edges = [e for e in self.edges if not (tuple(e.src) == tuple(src) and tuple(e.dst) == tuple(dst))]

    def set_param(self, node_id: str, name: str, value: Any) -> None:
        self.node(node_id).params[name] = value

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        for node in data["nodes"]:
            if not node.get("ui"):
                node.pop("ui", None)
        for edge in data["edges"]:
            if not edge.get("ui"):
                edge.pop("ui", None)
        if not data.get("ui"):
            data.pop("ui", None)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | Path, durable: bool = True) -> None:
        atomic_write_text(Path(path), self.to_json(), durable=durable)

    def copy_deep(self) -> Graph:
        copied = Graph.model_validate(copy.deepcopy(self.to_dict()))
        copied.base_dir = self.base_dir
        return copied


# --- loading ------------------------------------------------------------------------------------
Migration = Any  # a function dict -> dict
MIGRATIONS: dict[int, Migration] = {}  # from_version -> migrate to from_version + 1


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pretty_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple("from" if p == "src" else "to" if p == "dst" else p for p in loc)


def format_validation_error(err: ValidationError, prefix: tuple[Any, ...] = (),
                            model: type[BaseModel] | None = None, data: Any = None) -> list[str]:
    """pydantic errors as `path: message`, with a did-you-mean for unknown fields."""
    messages = []
    for item in err.errors():
        loc = prefix + _pretty_loc(tuple(item["loc"]))
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
            fields = _known_fields(model, item["loc"][:-1], data)
            guess = difflib.get_close_matches(str(item["loc"][-1]), fields, n=1, cutoff=0.6)
            if guess:
                msg += f" — did you mean {guess[0]}?"
            elif fields:
                msg += f" (known: {', '.join(sorted(fields))})"
        elif item["type"] == "literal_error" and item["loc"][-1:] == ("version",):
            msg = f"unsupported version {item.get('input')!r}: this Heiti reads versions up to {VERSION}"
        messages.append(f"{_format_loc(loc)}: {msg}")
    return messages


def _known_fields(model: type[BaseModel] | None, loc: tuple[Any, ...], data: Any) -> list[str]:
    if model is None:
        return []
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        current = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return []
    fields = list(getattr(current, "model_fields", {}))
    aliases = [f.alias for f in getattr(current, "model_fields", {}).values() if f.alias]
    return [a for a in aliases] + [f for f in fields if f not in ("src", "dst")]


def _migrate(data: dict[str, Any], source: str) -> dict[str, Any]:
    version = data.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise GraphLoadError(source, [f"version: must be a whole number, got {version!r}"])
    if version > VERSION:
        raise GraphLoadError(
            source, [f"version: this file is version {version}, written by a newer Heiti; this one reads up to {VERSION}"]
        )
    if version < VERSION and version not in MIGRATIONS:
        raise GraphLoadError(source, [f"version: {version} is not a graph version this Heiti can read"])
    while version < VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["version"] = version
    return data


def parse_graph(data: Any, source: str = "<graph>") -> Graph:
    """Build a Graph from already-decoded JSON, migrating older versions first."""
    if not isinstance(data, dict):
        raise GraphLoadError(source, [f"(top level): expected a JSON object, got {type(data).__name__}"])
    fmt = data.get("format")
    if fmt != FORMAT:
        raise GraphLoadError(
            source, [f"format: expected {FORMAT!r}, got {fmt!r} — is this a Heiti graph file?"]
        )
    data = _migrate(dict(data), source)
    try:
        return Graph.model_validate(data)
    except ValidationError as err:
        raise GraphLoadError(source, format_validation_error(err, model=Graph, data=data)) from None
    except RecursionError:
        raise GraphLoadError(source, ["(top level): nested too deeply"]) from None


def loads_graph(text: str | bytes, source: str = "<graph>") -> Graph:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise GraphLoadError(source, [f"not UTF-8 text (byte {err.start})"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise GraphLoadError(source, [f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"]) from None
    except RecursionError:
        raise GraphLoadError(source, ["not a usable graph: JSON nested too deeply"]) from None
    return parse_graph(data, source)


def load_graph(path: str | Path) -> Graph:
    """Read a graph file of at most MAX_FILE_BYTES; FIFOs, devices and folders are refused unread."""
    from heiti.engine.paths import FileRefused, read_capped

    path = Path(path)
    source = str(path)
    try:
        raw = read_capped(path, MAX_FILE_BYTES)
    except FileRefused as err:
        message = str(err)
        if message.startswith(source):
            message = message[len(source):].lstrip(" :") or message
        raise GraphLoadError(source, [message.replace("regular file", "graph file")]) from None
    graph = loads_graph(raw, source)
    graph.base_dir = path.parent
    return graph


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    """Write a file so that a crash leaves either the old or the new content, never half.

    `durable` also flushes it to disk before and after the rename (a user's document). A run
    folder's own files pass False: a flush there made ext4 write out every dirty page of the
    run first (0.15 s per small file after a cached re-run copied 150 MB), and a run folder can
    be made again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def graph_json_schema() -> dict[str, Any]:
    """JSON Schema of the graph file (node params are checked per kind; see `heiti nodes --json`)."""
    schema = Graph.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Heiti graph file"
    return schema
