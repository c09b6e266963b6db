"""The `report.html` node: every measurements wire in, one report out, published to the run folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from heiti.engine.context import RunContext
from heiti.engine.node import In, Node, NodeError, Out
from heiti.engine.payloads import Measurements, ReportArtifact, RunInfo
from pydantic import BaseModel, ConfigDict, Field

REPORT_NAME = "report"
AGREEMENT_FILE = "agreement.json"


class ReportNode(Node):
    """Compare runtimes: self-contained HTML report (and Markdown twin) with a verdict, tables and plots.

    Writes `<run>/report.html`, `<run>/report.md` and `<run>/report_files/` (PNGs and the raw
    measurements). The verdict names the fastest, the smallest and the most accurate runtime, and
    the fastest one whose accuracy stays within the tolerance of the baseline.
    """

    kind = "report.html"
    warm_imports = ("heiti.nodes.reports.render:warm", "heiti.nodes.reports.plots", "matplotlib.figure",
                    "matplotlib.backends.backend_agg", "jinja2")
    title = "Compare report"
    category = "Reports"
    version = 1

    class Params(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")

        title: str = Field("", description="page title (default: the graph's name)")
        baseline: str = Field("", description="node id of the runtime to compare against; "
                                              "empty = the native framework (torch/keras) if present, else the first")
        latency_statistic: Literal["mean", "median"] = Field(
            "mean", description="latency figure that ranks runtimes and gives speed-ups; the median ignores "
                                "a few slow calls on a busy machine")
        accuracy_drop_tolerance: float = Field(
            0.01, ge=0.0, le=1.0,
            description="largest accepted drop in accuracy (or mAP@0.5) against the baseline, as a fraction: "
                        "0.01 = one percentage point")
        reference: str = Field("", description="node id of the runtime whose outputs the others are compared with "
                                               "(output agreement); empty = the native framework (torch/keras) if "
                                               "present, else the first ONNX Runtime branch")
        agreement_tolerance: float = Field(
            0.01, ge=0.0, le=1.0,
            description="largest max |out - ref| / max |ref| accepted as agreeing (with cosine >= 0.999); judges "
                        "runtimes that have no quality figure (task none, unlabelled data). 0.01 is far above fp32 "
                        "rounding (~1e-5), admits fp16/bf16 and rejects int8 errors beyond ~2.5 quantisation steps")

    inputs = {"measurements": In(Measurements, multiple=True, partial=True,
                                 description="one wire per runtime; runs with those that finished")}
    outputs = {"report": Out(ReportArtifact, format="html")}
    #: the graph's name and the upstream outcomes come from the executor's RunInfo (in the cache
    #: key), never from graph.json or events.jsonl read behind the cache's back
    wants_run_info = True

    def run(self, ctx: RunContext, measurements: list[Measurements] | Measurements,
            run_info: RunInfo | None = None) -> dict[str, Any]:
        from heiti.nodes.reports.collect import run_from_info
        from heiti.nodes.reports.render import NoMeasurements, render, report_from_files

        items = measurements if isinstance(measurements, list) else [measurements]
        files = [(Path(m.path), _node_of(m)) for m in items]
        ctx.progress(0.05, f"reading {len(files)} measurements file(s)")
        run = run_from_info(run_info) if run_info is not None else None
        try:
            report = report_from_files(files, run, baseline=self.params.baseline, title=self.params.title,
                                       tolerance=self.params.accuracy_drop_tolerance,
                                       statistic=self.params.latency_statistic)
        except NoMeasurements as err:
            raise NodeError(str(err)) from None
        except ValueError as err:  # an unknown baseline
            raise NodeError(f"param baseline: {err}") from None
        from heiti.nodes.runtimes.agreement import attach_agreement, write_agreement

        try:
            agreements = attach_agreement(report.entries, self.params.reference, self.params.agreement_tolerance)
        except ValueError as err:  # an unknown reference
            raise NodeError(f"param reference: {err}") from None
        write_agreement(ctx.workdir / AGREEMENT_FILE, agreements)
        for problem in report.problems:
            ctx.warn(problem)
        ctx.progress(0.2, "drawing plots")
        rendered = render(report, ctx.workdir / f"{REPORT_NAME}.html")
        from heiti.nodes.reports import drawing

        ctx.log(f"report rendered in {rendered.seconds:.2f}s: {len(report.entries)} runtime(s), figures drawn "
                f"by {drawing.last_processes} process(es) (CPU {drawing.last_cpu[0]:.2f} s here, "
                f"{drawing.last_cpu[1]:.2f} s in helpers)")
        ctx.progress(1.0, "report written")
        return {"report": ReportArtifact(path=rendered.html, extra={
            "markdown": rendered.markdown.name, "runtimes": len(report.entries),
            "baseline": report.baseline.name if report.baseline else ""})}

    def publish(self, run_dir: Path, node_id: str, outputs: dict[str, Any]) -> None:
        """Copy the page, its Markdown twin and their files to the run folder (also on a cache hit)."""
        html = Path(outputs["report"].path)
        run_dir = Path(run_dir)
        agreement = html.parent / AGREEMENT_FILE
        if agreement.is_file():  # into each runtime's measurements file of this run
            import json

            from heiti.nodes.runtimes.agreement import merge_into_measurements

            merge_into_measurements(run_dir, json.loads(agreement.read_text(encoding="utf-8")))
        for name in (html.name, html.with_suffix(".md").name):
            if (html.parent / name).is_file():
                shutil.copyfile(html.parent / name, run_dir / name)
        files = html.with_name(html.stem + "_files")
        if files.is_dir():
            target = run_dir / files.name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(files, target)


def _node_of(m: Measurements) -> str:
    """The runtime's node id: from the file when it says, else the file's name."""
    import json

    try:
        with open(m.path, encoding="utf-8") as fh:
            node = json.load(fh).get("node", "")
        if isinstance(node, str) and node:
            return node
    except (OSError, ValueError, AttributeError):
        pass
    path = Path(m.path)
    return path.stem if path.stem not in ("measurements", "") else path.parent.name
