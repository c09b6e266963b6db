"""Test-only node kinds for the editor tests: a fake runtime that emits the metrics the chart dock
plots (host and device), writes a measurements file and a report, and a kind with every param type."""

from __future__ import annotations

import time
from typing import Literal

from heiti.engine import In, Measurements, Node, Out, ReportArtifact
from heiti.engine.measurements import LatencyStats, MeasurementsFile
from heiti.engine.payloads import Value
from pydantic import BaseModel, ConfigDict, Field


class FakeRuntime(Node):
    """Pretends to time inferences: streams latency, CPU, memory and training metrics."""

    kind = "apptest.runtime"
    title = "Fake runtime"
    category = "Runtimes"
    cacheable = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inferences: int = Field(40, ge=1, le=100000)
        step_s: float = Field(0.002, ge=0)
        device: str = Field("", description="when set, resource figures come from this device")

    inputs = {"x": In(Value, required=False)}
    outputs = {"measurements": Out(Measurements)}

    def run(self, ctx, **inputs):
        latencies = []
        for i in range(self.params.inferences):
            ctx.check_cancelled()
            time.sleep(self.params.step_s)
            latency = 1.0 + (i % 7) * 0.1
            latencies.append(latency)
            ctx.metric("latency_ms", latency, x=i)
            ctx.metric("cpu_percent", 10.0 + i % 5)
            ctx.metric("rss_mb", 100.0 + i * 0.01)
            if self.params.device:
                ctx.metric("cpu_percent", 50.0 + i % 3, source=self.params.device)
            ctx.metric("train_loss", 1.0 / (i + 1), x=i)
            ctx.progress((i + 1) / self.params.inferences, f"inference {i + 1}")
        ctx.log(f"timed {len(latencies)} inferences")
        ordered = sorted(latencies)
        stats = LatencyStats(mean=sum(latencies) / len(latencies), std=0.1, median=ordered[len(ordered) // 2],
                             p90=ordered[int(len(ordered) * 0.9)], p99=ordered[-1], min=ordered[0], max=ordered[-1],
                             count=len(latencies))
        record = MeasurementsFile(node=ctx.node_id, runtime="fake", label=f"Fake ({ctx.node_id})", model_format="onnx",
                                  model_size_bytes=123456, latency_ms=stats, latencies_ms=latencies,
                                  throughput_per_s=1000.0 / stats.mean)
        path = ctx.workdir / "measurements.json"
        record.save(path)
        return {"measurements": Measurements(path=path, runtime="fake")}

    def publish(self, run_dir, node_id, outputs):
        target = run_dir / "measurements" / f"{node_id}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(outputs["measurements"].path.read_bytes())


class FakeReport(Node):
    """Writes report.html into the run folder."""

    kind = "apptest.report"
    title = "Fake report"
    category = "Reports"
    cacheable = False
    inputs = {"measurements": In(Measurements, multiple=True)}
    outputs = {"report": Out(ReportArtifact)}

    def run(self, ctx, measurements):
        path = ctx.workdir / "report.html"
        path.write_text(f"<html><body>{len(measurements)} runtimes</body></html>", encoding="utf-8")
        return {"report": ReportArtifact(path=path)}

    def publish(self, run_dir, node_id, outputs):
        (run_dir / "report.html").write_bytes(outputs["report"].path.read_bytes())


class AllParams(Node):
    """Has one param of each kind the inspector knows."""

    kind = "apptest.params"
    title = "Every param"
    category = "Test"
    path_params = ("weights",)

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str = Field("net", min_length=1, pattern=r"^[a-z_]+$", description="lower-case letters")
        epochs: int = Field(5, ge=1, le=50)
        rate: float = Field(0.01, gt=0, le=1)
        mode: Literal["fast", "exact"] = "fast"
        shuffle: bool = True
        weights: str = Field("", description="a weights file")
        limit: int | None = None

    outputs = {"out": Out(Value)}

    def run(self, ctx):
        return {"out": Value(value=self.params.epochs)}


ALL = [FakeRuntime, FakeReport, AllParams]
