"""The node API: one class per node kind, and the class is the spec.

A node kind declares its stable `kind` id, a pydantic `Params` model (defaults, ranges, help text
for the inspector and the JSON schema), its typed input and output ports, and a `run` method.
Heavy frameworks are imported inside `run`, never at module top, so that listing and validating
nodes stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from heiti.engine.payloads import Payload
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from heiti.engine.context import RunContext


class NoParams(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


@dataclass(frozen=True)
class In:
    """An input port. `formats` limits what it accepts (None = any); `multiple` takes many wires.

    `partial` (with `multiple`): the node still runs when some of the wires' sources failed, with
    the values that did arrive — a report should show the runtimes that worked.
    """

    type: type[Payload] = Payload
    formats: frozenset[str] | None = None
    required: bool = True
    multiple: bool = False
    description: str = ""
    partial: bool = False

    def __init__(
        self,
        type: type[Payload] = Payload,  # noqa: A002 - reads naturally at the call site
        formats: set[str] | frozenset[str] | None = None,
        required: bool = True,
        multiple: bool = False,
        description: str = "",
        partial: bool = False,
    ) -> None:
        object.__setattr__(self, "partial", partial and multiple)
        object.__setattr__(self, "type", type)
        object.__setattr__(self, "formats", frozenset(formats) if formats is not None else None)
        object.__setattr__(self, "required", required)
        object.__setattr__(self, "multiple", multiple)
        object.__setattr__(self, "description", description)


@dataclass(frozen=True)
class Out:
    """An output port. Its format is fixed (`format`), copied from an input (`same_as`), or unknown."""

    type: type[Payload] = Payload
    format: str | None = None
    same_as: str | None = None
    description: str = ""


@dataclass
class PortInfo:
    name: str
    type: str
    formats: list[str] | None
    required: bool = True
    multiple: bool = False
    description: str = ""


class Node:
    """Base class of all node kinds. Subclasses set the class attributes and implement `run`."""

    kind: ClassVar[str] = ""
    title: ClassVar[str] = ""
    category: ClassVar[str] = "Other"
    version: ClassVar[int] = 1
    Params: ClassVar[type[BaseModel]] = NoParams
    inputs: ClassVar[dict[str, In]] = {}
    outputs: ClassVar[dict[str, Out]] = {}
    #: False for nodes whose result depends on the outside world (a device, the clock)
    cacheable: ClassVar[bool] = True
    #: param names whose values are file or folder paths; their contents enter the cache key
    path_params: ClassVar[tuple[str, ...]] = ()
    #: True for nodes that measure: with `--jobs` > 1 nothing else runs while one of them runs
    exclusive: ClassVar[bool] = False
    #: what `run` imports, as "module" or "module:function" (a function called without arguments,
    #: for frameworks that need a set-up); see `warm_up_imports`
    warm_imports: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: BaseModel | dict[str, Any] | None = None) -> None:
        if isinstance(params, BaseModel):
            self.params = params
        else:
            self.params = self.Params(**(params or {}))

    # --- spec helpers -------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> str:
        """First paragraph of the docstring: the one-line help shown in lists and the palette."""
        doc = (cls.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ").strip()

    @classmethod
    def input_formats(cls, params: BaseModel | None) -> dict[str, frozenset[str] | None]:
        """Formats each input accepts; override when they depend on params."""
        return {name: port.formats for name, port in cls.inputs.items()}

    @classmethod
    def output_formats(
        cls, params: BaseModel | None, input_formats: dict[str, str | None] | None = None
    ) -> dict[str, str | None]:
        """Format of each output, computed without running (override when params decide it)."""
        input_formats = input_formats or {}
        result: dict[str, str | None] = {}
        for name, port in cls.outputs.items():
            result[name] = input_formats.get(port.same_as) if port.same_as else port.format
        return result

    @classmethod
    def migrate(cls, params: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Turn params saved by an older version of this kind into the current shape."""
        return params

    @classmethod
    def warm_up_imports(cls, params: BaseModel | None, wired: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """Imports an idle worker may make while this node still waits for its inputs (`wired`: the
        names of its connected inputs), so that it starts at once; override when params decide."""
        return cls.warm_imports

    @classmethod
    def file_problems(cls, params: BaseModel, base: Path | None) -> list[tuple[str, str]]:
        """(param, message) for what a cheap look into the files its params name finds wrong, so
        that `heiti validate` reports it before a run; `base` is the graph's folder. Called only
        when the paths exist; must import no heavy framework (the run checks everything again)."""
        return []

    # --- running --------------------------------------------------------------------------------
    def run(self, ctx: RunContext, **inputs: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__}.run")

    def publish(self, run_dir: Path, node_id: str, outputs: dict[str, Any]) -> None:
        """Copy user-facing results into the run folder; called after a run and after a cache hit."""


class NodeError(Exception):
    """An error a node raises on purpose: its message is shown to the user as is, no traceback."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message} ({hint})" if hint else message)
        self.hint = hint
