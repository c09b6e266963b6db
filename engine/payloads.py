"""Values that travel along wires.

Each payload is a small pydantic model: it can be written to the cache as JSON and read back, and
the files it names live in the producing node's work folder. Heavy data (arrays, model files)
stays on disk; the payload only points at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

if TYPE_CHECKING:
    import numpy as np


class Payload(BaseModel):
    """Base of every wire value; subclasses register themselves by class name."""

    model_config = ConfigDict(defer_build=True, extra="allow", arbitrary_types_allowed=True)
    registry: ClassVar[dict[str, type[Payload]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Payload.registry[cls.__name__] = cls

    @property
    def format(self) -> str | None:  # overridden by payloads that carry a format
        return None


class Split(NamedTuple):
    """One split of a dataset: samples `x`, and labels `y` (None for unlabelled data)."""

    x: np.ndarray
    y: np.ndarray | None


class DatasetHandle(Payload):
    """A prepared dataset: arrays in one .npz, per split (train, val, test) `x_<split>`, `y_<split>`.

    Read it through `load_split` / `split_arrays` / `split_size`, never by opening the file: they
    read it safely (no pickle, size checked before allocating) and say clearly what is missing.
    Detection sets add `boxes_`, `labels_`, `image_idx_` arrays per split; `y_` may be absent.
    `task` doubles as the port format ("classification", "detection") so that validation can tell a
    detection set from a classification one without loading anything.
    """

    SPLITS: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    path: Path
    task: str = "classification"
    class_names: list[str] = Field(default_factory=list)
    input_shape: list[int] = Field(default_factory=list, description="one sample, without batch")
    layout: str = "NCHW"
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def format(self) -> str | None:
        return self.task

    def _headers(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        from heiti.engine.files import NpzError, npz_headers
        from heiti.engine.node import NodeError

        try:
            return npz_headers(self.path)
        except NpzError as err:
            raise NodeError(f"cannot read the dataset: {err}") from None

    def split_names(self) -> list[str]:
        """The splits the file holds (those with an `x_` array), train/val/test first."""
        names = [k[2:] for k in self._headers() if k.startswith("x_")]
        return sorted(names, key=lambda n: (self.SPLITS.index(n) if n in self.SPLITS else len(self.SPLITS), n))

    def split_size(self, name: str) -> int:
        """Samples in one split (0 when absent), from the file's headers: nothing is loaded."""
        header = self._headers().get(f"x_{name}")
        return int(header[0][0]) if header and header[0] else 0

    def has_labels(self, name: str) -> bool:
        return f"y_{name}" in self._headers()

    def split_arrays(self, name: str, only: tuple[str, ...] | None = None,
                     max_bytes: int | None = None) -> dict[str, np.ndarray]:
        """The arrays of one split by their name without the suffix ({"x", "y", "boxes", ...}); all of
        them, or those named in `only` that the file has."""
        from heiti.engine.files import NpzError, read_npz
        from heiti.engine.node import NodeError

        headers = self._headers()
        keys = [k for k in headers if k.endswith(f"_{name}") and k[: -len(name) - 1]
                and (only is None or k[: -len(name) - 1] in only)]
        if f"x_{name}" not in headers:
            have = ", ".join(self.split_names()) or "none"
            raise NodeError(f"dataset {Path(self.path).name} has no '{name}' split (it has: {have})")
        try:
            arrays = read_npz(self.path, keys, max_bytes=max_bytes)
        except NpzError as err:
            raise NodeError(f"cannot read the dataset: {err}") from None
        return {k[: -len(name) - 1]: v for k, v in arrays.items()}  # type: ignore[misc]

    def load_split(self, name: str, max_samples: int = 0, max_bytes: int | None = None) -> Split:
        """Samples and labels of one split (labels None when the split has none); `max_samples`
        keeps the first ones (0 = all)."""
        from heiti.engine.files import NpzError, read_npz
        from heiti.engine.node import NodeError

        headers = self._headers()
        if f"x_{name}" not in headers:
            have = ", ".join(self.split_names()) or "none"
            raise NodeError(f"dataset {Path(self.path).name} has no '{name}' split (it has: {have})")
        keys = [k for k in (f"x_{name}", f"y_{name}") if k in headers]
        try:
            arrays = read_npz(self.path, keys, max_bytes=max_bytes)
        except NpzError as err:
            raise NodeError(f"cannot read the dataset: {err}") from None
        x, y = arrays[f"x_{name}"], arrays.get(f"y_{name}")
        if max_samples:
            x = x[:max_samples]  # type: ignore[index]
            y = y[:max_samples] if y is not None else None  # type: ignore[index]
        return Split(x, y)  # type: ignore[arg-type]

    def arrays(self, max_bytes: int | None = None) -> dict[str, np.ndarray]:
        """Every array of the file under its stored name (for code that batches over splits)."""
        from heiti.engine.files import NpzError, read_npz
        from heiti.engine.node import NodeError

        try:
            return read_npz(self.path, max_bytes=max_bytes)  # type: ignore[return-value]
        except NpzError as err:
            raise NodeError(f"cannot read the dataset: {err}") from None


class PipelineStep(BaseModel):
    """One step that made a model: which node, of which kind, and how long it took."""

    model_config = ConfigDict(defer_build=True, extra="allow")

    node: str = ""
    kind: str = ""
    seconds: float | None = None


class ModelMeta(BaseModel):
    """What later nodes need to know of a model without opening its file.

    Attribute access is typed (`meta.layout`, `meta.pipeline[0].seconds`); plug-ins may add keys of
    their own (extra fields are kept). Item access (`meta["layout"]`, `meta.get("x")`, `"x" in
    meta`) still works and behaves like the plain dict this used to be: only keys that were set are
    present, and values come back as plain JSON (a copy). Only set fields are written out, so old
    cached outputs and measurements read back unchanged.
    """

    model_config = ConfigDict(defer_build=True, extra="allow")

    # what the model computes and takes
    task: str | None = Field(None, description="classification or detection")
    class_names: list[str] = Field(default_factory=list)
    layout: str | None = Field(None, description="NCHW or NHWC: the layout of the model's image input")
    input_shape: list[int | None] | None = Field(None, description="one sample, without batch (None = dynamic)")
    input_name: str | None = None
    arch: str | None = Field(None, description="registered torch architecture (torch models)")
    arch_config: dict[str, Any] | None = None
    postprocess: dict[str, Any] | None = Field(None, description="how to decode raw outputs (detection)")
    # how it was made
    pipeline: list[PipelineStep] = Field(default_factory=list, description="the steps that made it, in order")
    convert_time_s: float | None = Field(None, description="seconds of the last conversion step")
    compile_time_s: float | None = Field(None, description="seconds of the compile step that made it")
    train_time_s: float | None = None
    trainable_params: int | None = None
    quantization: str | None = Field(None, description="quantisation applied (e.g. int8, dynamic)")
    sparsity: float | None = None
    precision_hint: str | None = None
    # compiled for
    target: dict[str, Any] | None = Field(None, description="compiler target, as the compiler describes it")
    target_name: str | None = None
    cross: bool | None = Field(None, description="built for another CPU than this one")
    opt_level: int | None = None
    tuned_trials: int | None = Field(None, description="tuning trials run (0 = default schedules)")
    source_format: str | None = None
    # training results
    epochs: int | None = None
    history: list[dict[str, Any]] | None = None
    test_loss: float | None = None
    test_accuracy: float | None = None

    @model_serializer(mode="wrap")
    def _only_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set or k in (self.model_extra or {})}

    # --- the dict-like view ---------------------------------------------------------------------
    def as_dict(self) -> dict[str, Any]:
        """The set keys as plain JSON values (what the meta dict used to be)."""
        return self.model_dump(mode="json")

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.model_fields_set or key in (self.model_extra or {}))

    def __getitem__(self, key: str) -> Any:
        if key not in self:
            raise KeyError(key)
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def keys(self) -> list[str]:
        return list(self.as_dict())

    def items(self) -> list[tuple[str, Any]]:
        return list(self.as_dict().items())

    def updated(self, **changes: Any) -> ModelMeta:
        """A copy with keys set (validated, so typed fields stay typed)."""
        return ModelMeta.model_validate({**self.as_dict(), **changes})

    def compile_seconds(self) -> float | None:
        """Time to make this model from its source: the last conversion, else the sum of the steps."""
        if self.convert_time_s is not None:
            return float(self.convert_time_s)
        steps = [s.seconds for s in self.pipeline if s.seconds is not None]
        return float(sum(steps)) if steps else None


class ModelArtifact(Payload):
    """A model file (or folder) in one format, with what is known of its inputs and outputs."""

    path: Path
    model_format: str = Field(description="onnx, tflite, keras, torch, pt2, tvm, openvino, ...")
    inputs: list[dict[str, Any]] = Field(default_factory=list, description="[{name, shape, dtype}]")
    outputs: list[dict[str, Any]] = Field(default_factory=list)
    meta: ModelMeta = Field(default_factory=ModelMeta, description="task, class names, layout, pipeline, ...")

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


class RunInfo(Payload):
    """What the executor tells a node about its run, for kinds that set `wants_run_info = True`.

    It arrives as the `run_info` input and enters the node's cache key, so a node that shows the
    graph's name or its upstream nodes' outcomes (a report) re-runs when they change and is
    restored from the cache when they do not. Only facts that make the content are here: a node
    restored from the cache counts as done, and no clock times.
    """

    graph: str = Field("", description="the graph's name")
    nodes: list[dict[str, str]] = Field(default_factory=list, description="[{id, kind}] in execution order")
    edges: list[tuple[str, str]] = Field(default_factory=list, description="(from node, to node), sorted")
    states: dict[str, str] = Field(default_factory=dict,
                                   description="upstream node -> done | failed | skipped | cancelled")
    messages: dict[str, str] = Field(default_factory=dict, description="upstream node -> why it failed")

    def key(self) -> str:
        import hashlib
        import json

        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    @classmethod
    def upstream_of(cls, node_id: str, graph_name: str, order: list[str], kinds: dict[str, str],
                    edges: list[tuple[str, str]], states: dict[str, Any], errors: dict[str, str]) -> RunInfo:
        """The run seen from `node_id`: the whole graph's shape, and the outcomes of its ancestors."""
        parents: dict[str, set[str]] = {}
        for src, dst in edges:
            parents.setdefault(dst, set()).add(src)
        ancestors: set[str] = set()
        stack = [node_id]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in ancestors:
                    ancestors.add(parent)
                    stack.append(parent)
        outcome = {n: ("done" if str(s) in ("done", "cached") else str(s)) for n, s in states.items() if n in ancestors}
        return cls(graph=graph_name, nodes=[{"id": n, "kind": kinds.get(n, "")} for n in order],
                   edges=sorted(set(edges)), states=dict(sorted(outcome.items())),
                   messages={n: errors[n] for n in sorted(ancestors) if n in errors and outcome.get(n) != "done"})
