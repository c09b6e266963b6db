"""Gather what a report needs: measurements entries (labelled), the runs they came from, the baseline.

Reading is lenient everywhere: a file that cannot be read becomes a problem line in the report,
a file with missing sections becomes an entry that says what it lacks.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heiti.engine.measurements import SCHEMA_VERSION, MeasurementsFile, TimeSeries, read_measurements
from heiti.engine.paths import read_capped

#: a run folder's JSON files are read whole; larger ones (or FIFOs, devices) are refused unread
MAX_RUN_FILE_BYTES = 256 << 20
#: runtimes that execute the model in the framework it was written in: the default baseline
NATIVE_RUNTIMES = ("torch", "keras", "tensorflow", "pytorch")


@dataclass
class RunInfo:
    """One run folder (or the run a report node is part of)."""

    name: str
    path: Path | None = None
    graph: dict[str, Any] | None = None
    events: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: node -> state when known without events (a report node's own run: see `run_from_info`)
    states: dict[str, str] | None = None
    #: node -> why it failed, alongside `states`
    messages: dict[str, str] = field(default_factory=dict)


@dataclass
class Entry:
    """One runtime's measurements, labelled for tables: `node`, or `run/node` across runs."""

    name: str
    run: str
    node: str
    data: MeasurementsFile
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: Path | None = None
    color: str = "#1f77b4"

    @property
    def runtime_label(self) -> str:
        label = self.data.label
        return label if label and label != self.node else (self.data.runtime or self.node)

    @property
    def is_native(self) -> bool:
        return self.data.runtime.lower() in NATIVE_RUNTIMES

    @property
    def latency_mean(self) -> float | None:
        return self.data.latency_ms.mean if self.data.latency_ms is not None else None

    def latency(self, statistic: str = "mean") -> float | None:
        """Mean or median milliseconds per inference, None when the file has no latency."""
        stats = self.data.latency_ms
        return None if stats is None else float(getattr(stats, statistic))

    @property
    def source_model(self) -> str:
        """The node that made the model (the pipeline's `model.*` step), to tell lineages apart; "" if unknown."""
        steps = [s for s in self.data.pipeline if isinstance(s, dict)]
        first = next((s for s in steps if str(s.get("kind", "")).startswith("model.")), {})
        return str(first.get("node") or "")

    @property
    def quality(self) -> tuple[str, float] | None:
        """The headline quality figure of the task, as (name, fraction)."""
        d = self.data
        if d.task == "detection" and d.detection is not None:
            return "mAP@0.5", d.detection.map50
        if d.classification is not None:
            return "accuracy", d.classification.accuracy
        return None


@dataclass
class Report:
    title: str
    entries: list[Entry]
    runs: list[RunInfo] = field(default_factory=list)
    baseline: Entry | None = None
    tolerance: float = 0.01
    #: the latency figure that ranks runtimes and gives speed-ups: "mean" or "median"
    statistic: str = "mean"
    problems: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))

    def run(self, name: str) -> RunInfo | None:
        return next((r for r in self.runs if r.name == name), None)

    def failures(self) -> list[str]:
        """Nodes of the runs that failed or were skipped, with why: their runtimes are absent here."""
        from heiti.engine.events import NodeFailed, NodeSkipped

        out = []
        for run in self.runs:
            prefix = f"{run.name}/" if len(self.runs) > 1 else ""
            if run.states is not None:
                out += [prefix + line for line in _declared_failures(run)]
                continue
            for event in run.events:
                if isinstance(event, NodeFailed):
                    out.append(f"{prefix}{event.node} failed: {event.message}")
                elif isinstance(event, NodeSkipped):
                    out.append(f"{prefix}{event.node} did not run: {event.reason}")
        return out


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


# --- reading --------------------------------------------------------------------------------------
def read_entry(path: Path, run: str = "", node: str = "") -> Entry:
    """One measurements file as an entry; raises ValueError with the file name when unreadable."""
    path = Path(path)
    try:
        raw = json.loads(read_capped(path, MAX_RUN_FILE_BYTES).decode("utf-8"))  # FIFOs, devices: refused unread
        result = read_measurements(path)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read measurements ({err})") from err
    except Exception as err:  # noqa: BLE001 - a broken file must not break the report
        raise ValueError(f"{path}: not a valid measurements file ({type(err).__name__}: {err})") from err
    data = result.data
    node = node or data.node or path.stem
    entry = Entry(name=node, run=run, node=node, data=data, missing=list(result.missing), source=path)
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if isinstance(version, int) and version < SCHEMA_VERSION:
        entry.notes.append(f"written with measurements schema version {version} (current {SCHEMA_VERSION})")
    elif isinstance(version, int) and version > SCHEMA_VERSION:
        entry.notes.append(f"written by a newer Heiti (schema version {version}, this reader knows {SCHEMA_VERSION})")
    elif version is None:
        entry.notes.append("no schema version in the file (an early or hand-written file)")
    return entry


def load_run(path: Path, name: str | None = None) -> RunInfo:
    """The run's graph and events, when present (a report renders without them)."""
    from heiti.engine.events import read_events

    path = Path(path)
    info = RunInfo(name=name or path.name, path=path)
    graph_file = path / "graph.json"
    if graph_file.is_file():
        try:
            info.graph = json.loads(read_capped(graph_file, MAX_RUN_FILE_BYTES).decode("utf-8"))
        except (OSError, ValueError) as err:
            info.problems.append(f"{graph_file}: unreadable ({err})")
    events_file = path / "events.jsonl"
    if events_file.is_file():
        try:
            read_capped(events_file, MAX_RUN_FILE_BYTES)  # refuse a huge or special file before reading it
            info.events = read_events(events_file)
        except OSError as err:
            info.problems.append(f"{events_file}: unreadable ({err})")
        except Exception as err:  # noqa: BLE001 - a torn last line must not hide the report
            info.events = _read_events_tolerant(events_file)
            info.problems.append(f"{events_file}: partly unreadable ({type(err).__name__})")
    return info


def run_from_info(info: Any) -> RunInfo:
    """A report node's own run, from the engine's `RunInfo` (which enters the node's cache key):
    the graph's name and shape and its upstream nodes' outcomes, never files of the run folder."""
    graph = {"name": info.graph, "nodes": [dict(n) for n in info.nodes],
             "edges": [{"from": [src, ""], "to": [dst, ""]} for src, dst in info.edges]}
    return RunInfo(name=info.graph or "run", graph=graph, states=dict(info.states), messages=dict(info.messages))


def _declared_failures(run: RunInfo) -> list[str]:
    """Failed and skipped upstream nodes of a run known by its states (see `run_from_info`)."""
    states = run.states or {}
    parents: dict[str, list[str]] = {}
    for edge in (run.graph or {}).get("edges", []):
        parents.setdefault(edge["to"][0], []).append(edge["from"][0])
    out = []
    for node, state in states.items():
        if state == "failed":
            out.append(f"{node} failed: {run.messages.get(node, '')}".rstrip(": "))
        elif state == "cancelled":
            out.append(f"{node} did not run: run cancelled")
        elif state == "skipped":
            blocked = sorted({p for p in parents.get(node, []) if states.get(p) != "done"})
            out.append(f"{node} did not run: upstream {', '.join(blocked)} did not finish" if blocked
                       else f"{node} did not run")
    return out


def _read_events_tolerant(path: Path) -> list[Any]:
    from heiti.engine.events import event_from_dict

    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            events.append(event_from_dict(json.loads(line)))
        except Exception:  # noqa: BLE001, S112 - skip the broken line only
            continue
    return events


def measurement_files(run_dir: Path) -> list[Path]:
    """`<run>/measurements/*.json`; when absent, any measurements file under `<run>/nodes/`."""
    files = sorted((run_dir / "measurements").glob("*.json"))
    if files:
        return files
    found = []
    for candidate in sorted((run_dir / "nodes").glob("*/**/*.json")):
        try:
            head = read_capped(candidate, MAX_RUN_FILE_BYTES)[:400].decode("utf-8", errors="replace")
        except OSError:
            continue
        if '"heiti-measurements"' in head:
            found.append(candidate)
    return found


# --- completing entries ---------------------------------------------------------------------------
def fill_from_events(entry: Entry, run: RunInfo | None) -> None:
    """Use the run's metric events when the file lacks resource samples or per-call latencies."""
    if run is None or not run.events:
        return
    from heiti.engine.events import NodeMetric

    series: dict[str, tuple[list[float], list[float], str]] = {}
    device: dict[str, list[tuple[float, float]]] = {}
    for event in run.events:
        if isinstance(event, NodeMetric) and event.node == entry.node:
            if event.source not in ("", "host"):  # a device's own STATS (its name may change mid-run)
                device.setdefault(event.name, []).append((event.x, event.value))
                continue
            t, v, _ = series.setdefault(event.name, ([], [], event.source))
            t.append(event.x)
            v.append(event.value)
    target = entry.data.target
    if device and target.kind not in ("", "local") and not any(s.source not in ("", "host") for s in entry.data.resources):
        name = str(target.device.get("hostname") or target.address or "device")
        added = [TimeSeries(name=metric, unit=_unit_of(metric), t=[x for x, _ in sorted(points)],
                            values=[v for _, v in sorted(points)], source=name)
                 for metric, points in device.items() if resource_kind(metric, _unit_of(metric)) is not None]
        if added:
            entry.data.resources = list(entry.data.resources) + added
            entry.notes.append(f"device CPU/memory taken from {name}'s reports during the run")
    if not entry.data.resources:
        picked = [TimeSeries(name=name, unit=_unit_of(name), t=t, values=v, source=src)
                  for name, (t, v, src) in series.items() if resource_kind(name, _unit_of(name)) is not None]
        if picked:
            entry.data.resources = picked
            entry.notes.append("CPU/memory timelines taken from the run's events")
    if not entry.data.latencies_ms:
        for name in ("latency_ms", "latency"):
            if name in series and len(series[name][1]) > 1:
                entry.data.latencies_ms = list(series[name][1])
                entry.notes.append("per-inference latencies taken from the run's events")
                break


def _unit_of(metric: str) -> str:
    """The unit a metric event implies by its name (events carry no unit)."""
    low = metric.lower()
    return "%" if "percent" in low else "MB" if low.endswith("_mb") else ""


def resource_kind(name: str, unit: str) -> str | None:
    """'cpu', 'memory' or None, from a series' name and unit (per-core series are left out)."""
    low = name.lower()
    if "core" in low or "gpu" in low:
        return None  # per-core detail and GPUs are not drawn (yet)
    if "cpu" in low:
        return "cpu"
    if unit.strip() == "%" or "percent" in low:
        return None  # memory as a share of the system: not comparable across machines
    if any(word in low for word in ("rss", "mem", "ram")) or unit.lower() in ("mb", "mib", "bytes", "b"):
        return "memory"
    return None


#: preferred series per panel, best first; others of the same kind are used only when these are absent
PREFERRED = {"cpu": ("cpu_percent", "process_cpu_percent", "proc_cpu_percent"), "memory": ("rss_mb",)}


def pick_series(series: list[TimeSeries], kind: str) -> TimeSeries | None:
    """The one series of an entry that stands for `kind` ('cpu' or 'memory') in plots; a device's
    own samples win over the host's (the host only waits for the device)."""
    usable = [s for s in series if resource_kind(s.name, s.unit) == kind and s.t and len(s.t) == len(s.values)]
    remote = [s for s in usable if s.source not in ("", "host")]
    usable = remote or usable
    for name in PREFERRED[kind]:
        for s in usable:
            if s.name == name:
                return s
    return usable[0] if usable else None


def check_completeness(entry: Entry) -> None:
    """Name what the report cannot show for this entry (beyond what the reader already found)."""
    d = entry.data
    wanted = [
        (not d.latencies_ms, "latencies_ms (per-inference times: no histogram or violin)"),
        (not d.resources, "resources (CPU and memory samples)"),
        (not d.environment and not d.target.device, "environment (CPU, OS, framework versions)"),
    ]
    if d.task == "classification" and d.classification is not None:
        c = d.classification
        wanted += [(not c.confusion_matrix, "classification.confusion_matrix"),
                   (not c.precision_per_class, "classification per-class precision/recall/F1")]
    if d.task == "detection" and d.detection is not None:
        q = d.detection
        wanted += [(not q.pr_curves, "detection.pr_curves"), (not q.map_vs_threshold, "detection.map_vs_threshold"),
                   (not q.ap_per_class, "detection.ap_per_class")]
    for lacking, what in wanted:
        if lacking and what not in entry.missing:
            entry.missing.append(what)


def label_entries(entries: list[Entry], several_runs: bool) -> None:
    """`node` in a single run, `run/node` across runs; unique either way; colours by order."""
    seen: dict[str, int] = {}
    for i, entry in enumerate(entries):
        base = f"{entry.run}/{entry.node}" if several_runs and entry.run else entry.node
        count = seen.get(base, 0)
        seen[base] = count + 1
        entry.name = base if count == 0 else f"{base}#{count + 1}"
        entry.color = PALETTE[i % len(PALETTE)]


def resolve_baseline(entries: list[Entry], spec: str = "") -> Entry | None:
    """The entry to compare against: by label, node id or run name; default the native runtime."""
    if not entries:
        return None
    spec = (spec or "").strip()
    if not spec:
        return next((e for e in entries if e.is_native), None) or next(
            (e for e in entries if e.latency_mean is not None), entries[0])
    for match in (
        [e for e in entries if e.name == spec],
        [e for e in entries if e.node == spec],
        [e for e in entries if e.run == spec or e.run == Path(spec.rstrip("/")).name],
    ):
        if match:
            return next((e for e in match if e.is_native), match[0])
    names = ", ".join(e.name for e in entries)
    raise ValueError(f"baseline {spec!r} matches no runtime in the report; choose one of: {names}")


def finish(report: Report, baseline: str = "") -> Report:
    """Label, complete from events, check completeness and choose the baseline."""
    label_entries(report.entries, several_runs=len({e.run for e in report.entries}) > 1)
    for entry in report.entries:
        fill_from_events(entry, report.run(entry.run))
        check_completeness(entry)
    report.baseline = resolve_baseline(report.entries, baseline)
    return report
