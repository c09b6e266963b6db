"""Values that travel along wires.

Each payload is a small pydantic model: it can be written to the cache as JSON and read back, and
the files it names live in the producing node's work folder. Heavy data (arrays, model files)
stays on disk; the payload only points at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Payload(BaseModel):
    """Base of every wire value; subclasses register themselves by class name."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)
    registry: ClassVar[dict[str, type[Payload]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Payload.registry[cls.__name__] = cls

    @property
    def format(self) -> str | None:  # overridden by payloads that carry a format
        return None


class DatasetHandle(Payload):
    """A prepared dataset: arrays in one .npz (x_train, y_train, x_val, y_val, x_test, y_test).

    `task` doubles as the port format ("classification", "detection") so that validation can tell a
    detection set from a classification one without loading anything.
    """

    path: Path
    task: str = "classification"
    class_names: list[str] = Field(default_factory=list)
    input_shape: list[int] = Field(default_factory=list, description="one sample, without batch")
    layout: str = "NCHW"
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def format(self) -> str | None:
        return self.task


class ModelArtifact(Payload):
    """A model file (or folder) in one format, with what is known of its inputs and outputs."""

    path: Path
    model_format: str = Field(description="onnx, tflite, keras, torch, pt2, tvm, openvino, ...")
    inputs: list[dict[str, Any]] = Field(default_factory=list, description="[{name, shape, dtype}]")
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    meta: dict[str, Any] = Field(default_factory=dict, description="task, class names, layout, ...")

    @property
    def format(self) -> str | None:
        return self.model_format


class Measurements(Payload):
    """Results of one runtime on one dataset; the full record is the JSON file at `path`."""

    path: Path
    runtime: str = ""
    summary: dict[str, Any] = Field(default_factory=dict)


class TargetHandle(Payload):
    """Where a runtime runs: in-process, or a device running `heiti serve`."""

    kind: str = "local"  # local | tcp | serial
    address: str = ""
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def format(self) -> str | None:
        return self.kind


class ReportArtifact(Payload):
    """A rendered report (HTML with a Markdown twin beside it)."""

    path: Path
    extra: dict[str, Any] = Field(default_factory=dict)


class Value(Payload):
    """A plain JSON value, for small utility nodes and tests."""

    value: Any = None
