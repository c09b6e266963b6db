"""Opening a runtime's session (in process or on a device) and turning what it measured into
results: the device's STATS as time series, the node's summary, detection quality."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.node import NodeError

if TYPE_CHECKING:
    import numpy as np
    from heiti.engine.context import RunContext
    from heiti.engine.measurements import MeasurementsFile, TimeSeries
    from heiti.engine.payloads import DatasetHandle, ModelArtifact, TargetHandle


def device_series(samples: list[dict[str, Any]]) -> list[TimeSeries]:
    """The device's STATS samples as time series (source = the device's name)."""
    from heiti.engine.measurements import TimeSeries
    from heiti.nodes.runtimes.sampler import UNITS

    series: dict[str, TimeSeries] = {}
    for sample in list(samples):
        for key, value in sample.items():
            if key in ("x", "source"):
                continue
            ts = series.setdefault(key, TimeSeries(name=key, unit=UNITS.get(key, ""), source=sample["source"]))
            ts.t.append(round(sample["x"], 4))
            ts.values.append(round(value, 3))
    return list(series.values())


def summary(record: MeasurementsFile) -> dict[str, Any]:
    summary: dict[str, Any] = {"samples": record.dataset.get("samples", 0)}
    if record.latency_ms:
        summary.update(mean_ms=round(record.latency_ms.mean, 4), p99_ms=round(record.latency_ms.p99, 4))
    if record.classification:
        summary["accuracy"] = round(record.classification.accuracy, 4)
    if record.detection:
        summary["map50"] = round(record.detection.map50, 4)
    if record.model_size_bytes:
        summary["size_bytes"] = record.model_size_bytes
    return summary


def detection_quality(dataset: DatasetHandle, split: str, outputs: list[list[np.ndarray]],
                       meta: dict[str, Any]) -> Any:
    try:
        from heiti.nodes.detection import evaluate_detection
    except ImportError as err:
        raise NodeError(f"detection quality needs nodes.detection.evaluate_detection: {err}") from err
    return evaluate_detection(dataset, split, outputs, meta)


def open_session(node: Any, model: ModelArtifact, options: dict[str, Any], target: TargetHandle | None,
          ctx: RunContext, stats_seen: list[dict[str, Any]]) -> Any:
    """A session in process, or on the target's device; every failure becomes a NodeError."""
    runtime = node.runtime
    name = Path(model.path).name
    if target is not None:
        try:
            from heiti.nodes.devices.targets import open_remote_session
        except ImportError as err:
            raise NodeError(f"running on a {target.kind} target needs nodes.devices.targets, which is not "
                            f"available here: {err}") from err
        device: dict[str, str] = {"name": target.address or target.kind}

        def on_stats(stats: dict[str, Any]) -> None:
            """A device STATS sample ({t on this host's perf_counter clock, cpu_percent, ...})."""
            t = stats.get("t")
            x = float(t) - ctx.t0 if isinstance(t, int | float) else time.perf_counter() - ctx.t0
            values = {k: float(v) for k, v in stats.items() if k not in ("t", "device_t")
                      and isinstance(v, int | float) and not isinstance(v, bool)}
            stats_seen.append({"x": x, "source": device["name"], **values})
            for key, value in values.items():
                ctx.metric(key, value, x=x, source=device["name"])

        try:
            session = open_remote_session(target, runtime, model, options, on_stats)
        except NodeError:
            raise
        except Exception as err:  # noqa: BLE001 - link or device errors, shown as they are
            raise NodeError(f"could not open {runtime} on {target.kind} {target.address}: {err}") from err
        info = getattr(session, "device_info", None) or {}
        device["name"] = str(info.get("name") or info.get("hostname") or device["name"])
        return session
    from heiti.nodes.runtimes.backends import BackendUnavailable, load_session

    try:
        return load_session(type(node), str(model.path), options)
    except BackendUnavailable as err:
        raise NodeError(str(err), "install the framework or run on a device that has it") from err
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: say which and why
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise NodeError(f"{runtime} could not load {name}: {first_line}",
                        "the file may be truncated, corrupt, or not a " + model.model_format + " model") from err
