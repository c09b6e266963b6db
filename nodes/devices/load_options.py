"""The options a LOAD request may carry, one pydantic schema per runtime.

A device must not build whatever a request describes: options reach framework constructors
(torch builds the architecture from `meta.arch_config`, so `num_classes=2.5e8` would hold 6 GB).
Unknown keys are refused and every number is bounded; what the host's runtime nodes send passes.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_CLASSES = 100_000
MAX_DIM = 65_536
MAX_ELEMENTS = 1 << 28  # one input of 256 M elements (1 GiB of float32)


def max_threads() -> int:
    return 4 * (os.cpu_count() or 1)


def _check_threads(value: int) -> int:
    if value > max_threads():
        raise ValueError(f"{value} threads is more than 4 x this device's {os.cpu_count()} CPUs")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class TensorSpec(BaseModel):
    """A tensor description (name, shape, dtype) as ModelArtifact carries it; extra keys are
    informational (quantisation parameters and the like) and kept small by the JSON cap."""

    model_config = ConfigDict(defer_build=True, extra="allow")

    name: str = Field("", max_length=256)
    shape: list[int | str | None] = Field(default_factory=list, max_length=16)
    dtype: str = Field("float32", max_length=32)

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int | str | None]) -> list[int | str | None]:
        for dim in shape:
            if isinstance(dim, int) and not 0 <= dim <= MAX_DIM:
                raise ValueError(f"dimension {dim} out of 0..{MAX_DIM}")
            if isinstance(dim, str) and len(dim) > 64:
                raise ValueError("symbolic dimension name too long")
        return shape


class ArchConfig(_Strict):
    """The torch architectures' build config (torch_arch.build_cnn, the CenterNet detector)."""

    input_shape: list[int] = Field(min_length=3, max_length=3)
    num_classes: int = Field(ge=1, le=MAX_CLASSES)
    channels: int = Field(16, ge=1, le=1024)
    layers: int = Field(2, ge=0, le=16)
    width: int = Field(16, ge=1, le=1024)
    dropout: float = Field(0.0, ge=0.0, le=1.0)
    batchnorm: bool = True

    @field_validator("input_shape")
    @classmethod
    def _image(cls, shape: list[int]) -> list[int]:
        if not all(1 <= d <= 8192 for d in shape) or math.prod(shape) > MAX_ELEMENTS:
            raise ValueError(f"input shape {shape} out of bounds (each 1..8192)")
        return shape


class Meta(BaseModel):
    """Model metadata: free-form (class names, task, post-processing) except what builds things."""

    model_config = ConfigDict(defer_build=True, extra="allow")

    arch: str | None = Field(None, max_length=64)
    arch_config: ArchConfig | None = None
    input_shape: list[int | None] | None = Field(None, max_length=8)  # None: a dynamic dimension
    precision_hint: str | None = Field(None, max_length=16)

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, shape: list[int | None] | None) -> list[int | None] | None:
        if shape is not None and not all(d is None or 0 <= d <= MAX_DIM for d in shape):
            raise ValueError(f"input shape {shape} out of bounds")
        return shape


class CommonOptions(_Strict):
    threads: int = Field(0, ge=0)
    batch_size: int = Field(1, ge=1, le=MAX_DIM)
    meta: Meta = Field(default_factory=Meta)
    inputs: list[TensorSpec] = Field(default_factory=list, max_length=256)
    outputs: list[TensorSpec] = Field(default_factory=list, max_length=256)

    @model_validator(mode="after")
    def _threads(self) -> CommonOptions:
        for name in ("threads", "inter_threads"):
            value = getattr(self, name, None)
            if isinstance(value, int):
                _check_threads(value)
        return self


class OnnxRuntimeOptions(CommonOptions):
    inter_threads: int = Field(0, ge=0)
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"


class LiteRTOptions(CommonOptions):
    xnnpack: bool = True


class OpenVINOOptions(CommonOptions):
    precision: Literal["", "f32", "f16", "bf16"] = ""
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"


class TVMOptions(CommonOptions):
    entry: str = Field("main", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


SCHEMAS: dict[str, type[CommonOptions]] = {
    "onnxruntime": OnnxRuntimeOptions,
    "litert": LiteRTOptions,
    "openvino": OpenVINOOptions,
    "tvm": TVMOptions,
    "torch": CommonOptions,
    "keras": CommonOptions,
}


def schema_for(runtime: str) -> type[BaseModel]:
    """The built-in runtimes' schemas; a plug-in runtime class may declare its own as
    `load_options` (a CommonOptions subclass), else it gets the common options only."""
    if runtime in SCHEMAS:
        return SCHEMAS[runtime]
    from heiti.nodes.runtimes import runtime_classes

    cls = runtime_classes().get(runtime)
    if cls is None:
        raise ValueError(f"unknown runtime {runtime!r}")
    declared = getattr(cls, "load_options", None)
    if isinstance(declared, type) and issubclass(declared, CommonOptions):
        return declared
    return CommonOptions


def validate_options(runtime: str, options: Any) -> dict[str, Any]:
    """The LOAD options checked against the runtime's schema; ValueError says what is wrong."""
    schema = schema_for(runtime)
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError("options must be a JSON object")
    try:
        checked = schema.model_validate(options)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in err.errors()[:5])
        raise ValueError(f"{runtime} options refused: {problems}") from None
    out = checked.model_dump(exclude_unset=True)
    # keep the sender's free-form meta and tensor descriptions as sent (validated above)
    for key in ("meta", "inputs", "outputs"):
        if key in options:
            out[key] = options[key]
    return out


def with_model_meta(runtime: str, model: Path, options: dict[str, Any]) -> dict[str, Any]:
    """For torch, the architecture may come from the upload's sidecar (`model.json` beside
    `model.pt`) rather than from the request: it is checked by the same schema and passed on
    explicitly, so the backend never builds from an unchecked file."""
    meta = options.get("meta") or {}
    if runtime != "torch" or model.suffix == ".pt2" or "arch" in meta:
        return options
    sidecar = model.with_suffix(".json")
    if not sidecar.is_file():
        return options
    if sidecar.stat().st_size > 1 << 20:
        raise ValueError(f"{sidecar.name} is over 1 MiB: not a model description")
    try:
        described = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{sidecar.name} is not JSON: {err}") from None
    if not isinstance(described, dict):
        raise ValueError(f"{sidecar.name} is not a JSON object")
    checked = validate_options(runtime, {"meta": described})
    return {**options, "meta": checked["meta"]}
