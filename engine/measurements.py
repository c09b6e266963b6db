"""The measurements file: what one runtime did on one dataset, as `<out>/measurements/<node>.json`.

A versioned pydantic schema shared by the runtime nodes (which write it) and the reports (which
read it). Every section is optional so that a report can render what a partial or older file
holds and say what is missing. Bump SCHEMA_VERSION and add an upgrade step when fields change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA = "heiti-measurements"
SCHEMA_VERSION = 1


class _Open(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="allow")


class LatencyStats(_Open):
    """Milliseconds per inference, timed around the runtime call only, after warm-up."""

    mean: float
    std: float
    median: float
    p90: float
    p99: float
    min: float
    max: float
    first: float | None = Field(None, description="the cold first call, kept out of the other figures")
    count: int = 0


class LatencyWindow(_Open):
    """One stretch of consecutive timed calls: how latency moved over a long run."""

    start: int = Field(description="index of the window's first timed call")
    count: int
    median: float
    mean: float | None = None
    p90: float | None = None
    t_s: float | None = Field(None, description="the window's middle, seconds since the timed loop began (estimated)")


class TimeSeries(_Open):
    """Samples of one quantity over time; `t` in seconds on the run clock."""

    name: str
    unit: str = ""
    t: list[float] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)
    source: str = "host"


class ClassificationQuality(_Open):
    accuracy: float
    top5: float | None = None
    precision_per_class: list[float] = Field(default_factory=list)
    recall_per_class: list[float] = Field(default_factory=list, description="sensitivity")
    f1_per_class: list[float] = Field(default_factory=list)
    support_per_class: list[int] = Field(default_factory=list)
    precision_mean: float | None = None
    recall_mean: float | None = None
    f1_mean: float | None = None
    g_mean: float | None = None
    confusion_matrix: list[list[int]] = Field(default_factory=list, description="rows: true, cols: predicted")
    class_names: list[str] = Field(default_factory=list)


class DetectionQuality(_Open):
    map50: float
    map50_95: float
    ap_per_class: dict[str, float] = Field(default_factory=dict, description="AP@0.5 per class name")
    ap50_95_per_class: dict[str, float] = Field(default_factory=dict)
    pr_curves: dict[str, dict[str, list[float]]] = Field(
        default_factory=dict, description="class -> {recall: [...], precision: [...]} at IoU 0.5")
    map_vs_threshold: dict[str, list[float]] = Field(
        default_factory=dict, description="{threshold: [...], map50: [...]}")
    mean_iou: float | None = None
    class_names: list[str] = Field(default_factory=list)


class Agreement(_Open):
    """How closely this runtime's outputs match a reference runtime's on the same inputs.

    max_rel is max |out - ref| divided by max |ref| of that output (relative to the output's
    magnitude, so near-zero elements do not blow it up); cosine is the worst per-sample cosine
    similarity; top1 the share of samples whose arg-max class agrees (class outputs only);
    map50_delta this runtime's mAP@0.5 minus the reference's (detection only). `within` says
    whether cosine and max_rel pass the report's agreement tolerance.
    """

    reference: str
    samples: int = 0
    max_abs: float | None = None
    max_rel: float | None = None
    cosine: float | None = None
    top1: float | None = None
    map50_delta: float | None = None
    within: bool | None = None
    outputs: list[dict[str, Any]] = Field(default_factory=list, description="the same figures per output")
    note: str = ""


class TargetInfo(_Open):
    kind: str = "local"  # local | tcp | serial
    address: str = ""
    device: dict[str, Any] = Field(default_factory=dict, description="cpu, cores, os, machine, ...")


class MeasurementsFile(_Open):
    schema_: str = Field(SCHEMA, alias="schema")
    schema_version: int = SCHEMA_VERSION
    node: str = ""
    runtime: str = Field("", description="runtime kind: onnxruntime, litert, tvm, openvino, torch, keras")
    label: str = Field("", description="human name for tables, e.g. 'TVM (llvm, O3)'")
    model_format: str = ""
    model_path: str = ""
    model_size_bytes: int | None = None
    model_gzip_bytes: int | None = Field(
        None, description="the model gzip'ed (level 6, in 1 MiB blocks on all cores as pigz does; several files as one tar): what pruning and clustering save")
    model_meta: dict[str, Any] = Field(
        default_factory=dict, description="how the model was made: quantization, tuned_trials, tune_time_s, sparsity, ...")
    task: str = "classification"
    dataset: dict[str, Any] = Field(default_factory=dict, description="name, split, samples, input shape")
    options: dict[str, Any] = Field(default_factory=dict)
    target: TargetInfo = Field(default_factory=TargetInfo)
    environment: dict[str, Any] = Field(default_factory=dict, description="cpu, cores, os, python, framework versions")
    compile_time_s: float | None = Field(None, description="time spent converting/compiling upstream, summed")
    pipeline: list[dict[str, Any]] = Field(default_factory=list, description="upstream steps: kind, node, seconds")
    latency_ms: LatencyStats | None = None
    device_latency_ms: LatencyStats | None = Field(None, description="as timed on the device, when remote")
    preprocess_ms: LatencyStats | None = None
    postprocess_ms: LatencyStats | None = None
    latencies_ms: list[float] = Field(default_factory=list, description="timed inferences, in order: every one, or "
                                      "at most 20,000 drawn evenly over the run (latency_count says how many there were)")
    latency_count: int | None = Field(None, description="timed inferences in all (latency_ms is over every one); "
                                      "None in older files, where latencies_ms holds them all")
    throughput_per_s: float | None = None
    latency_windows: list[LatencyWindow] = Field(
        default_factory=list, description="latency over time: medians of consecutive windows of calls")
    latency_drift: float | None = Field(
        None, description="last window's median against the first's, relative (+0.1 = 10 % slower)")
    passes: float | None = Field(None, description="timed calls over the split's size (repeat / duration_s)")
    loop_period_ms: float | None = Field(
        None, description="wall time of the timed loop per call: the timed call plus what Heiti adds around it")
    batch_size: int = 1
    resources: list[TimeSeries] = Field(default_factory=list)
    turns: int | None = Field(None, description="timed in turns with the other runtimes ready at the same time "
                                                "(heiti run --interleave): how often it gave the machine to them")
    machine_load: dict[str, float] | None = Field(
        None, description="while the runtime was timed: cores other programs kept busy on average (other_cores), "
                          "the hypervisor's steal_percent, cores, seconds (local runs of at least 0.5 s)")
    classification: ClassificationQuality | None = None
    detection: DetectionQuality | None = None
    agreement: Agreement | None = Field(None, description="outputs against a reference runtime's (set by the report)")
    outputs_file: str | None = Field(None, description="raw outputs of the evaluated samples (.npz beside this file)")
    warnings: list[str] = Field(default_factory=list)

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def save(self, path: Path) -> None:
        from heiti.engine.graph import atomic_write_text

        atomic_write_text(Path(path), self.model_dump_json(by_alias=True, indent=1, exclude_none=False),
                          durable=False)  # a run folder's file


class MeasurementsReadResult(BaseModel):
    """A file read as far as possible: the data, plus what was missing or wrong in it."""

    model_config = ConfigDict(defer_build=True, arbitrary_types_allowed=True)
    data: MeasurementsFile
    missing: list[str] = Field(default_factory=list)


def upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """Bring an older file to the current schema (no older versions exist yet)."""
    raw = dict(raw)
    raw.setdefault("schema", SCHEMA)
    raw["schema_version"] = SCHEMA_VERSION
    return raw


def read_measurements(path: Path) -> MeasurementsReadResult:
    """Read a measurements file leniently: broken sections are dropped and named in `missing`."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a measurements file (expected a JSON object)")
    raw = upgrade(raw)
    missing: list[str] = []
    for name, field in MeasurementsFile.model_fields.items():
        key = field.alias or name
        if key not in raw or raw[key] is None:
            if name in ("latency_ms", "model_size_bytes") or (name == "classification" and raw.get("task", "classification") == "classification") or (name == "detection" and raw.get("task") == "detection"):
                missing.append(key)
            continue
        try:
            MeasurementsFile.model_validate({key: raw[key]})
        except Exception:  # noqa: BLE001 - drop the section, keep the rest
            missing.append(f"{key} (unreadable)")
            raw.pop(key)
    return MeasurementsReadResult(data=MeasurementsFile.model_validate(raw), missing=missing)
