"""Collect measurements from run folders (or a report node's inputs) and write the report files:
`<name>.html` (self-contained), `<name>.md` with its PNGs and the raw measurements in `<name>_files/`.
"""

from __future__ import annotations

import base64
import functools
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from heiti.nodes.reports.blocks import Figure, Section
from heiti.nodes.reports.collect import (
    Entry,
    Report,
    RunInfo,
    finish,
    load_run,
    measurement_files,
    read_entry,
)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class Rendered:
    html: Path
    markdown: Path
    files: Path
    sections: list[Section] = field(default_factory=list)
    seconds: float = 0.0


class NoMeasurements(ValueError):
    """Nothing to report on: every input was missing or unreadable."""


# --- collecting -----------------------------------------------------------------------------------
def report_from_runs(run_dirs: list[Path], baseline: str = "", title: str = "", tolerance: float = 0.01,
                     statistic: str = "mean") -> Report:
    """Every measurements file of every run folder (a path may also name one measurements file)."""
    report = Report(title=title, entries=[], tolerance=tolerance, statistic=statistic)
    names: set[str] = set()
    for path in map(Path, run_dirs):
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run folder")
        if path.is_file():
            run = RunInfo(name=_unique(path.stem, names))
            files = [path]
        else:
            run = load_run(path, _unique(path.name or path.resolve().name, names))
            files = measurement_files(path)
            if not files:
                report.problems.append(f"{path}: no measurements (looked in {path / 'measurements'})")
        names.add(run.name)
        report.runs.append(run)
        report.problems += run.problems
        entries = []
        for file in files:
            try:
                entries.append(read_entry(file, run=run.name))
            except ValueError as err:
                report.problems.append(str(err))
        report.entries += sorted(entries, key=_order_key(run))
    if not report.entries:
        raise NoMeasurements("no readable measurements in " + ", ".join(map(str, run_dirs))
                             + ("" if not report.problems else ": " + "; ".join(report.problems)))
    if not report.title:
        only = report.runs[0]
        report.title = "Heiti report — " + ((_graph_name(only) or only.name) if len(report.runs) == 1 else
                                             f"{len(report.runs)} runs compared")
    return finish(report, baseline)


def report_from_files(files: list[tuple[Path, str]], run: RunInfo | None, baseline: str = "", title: str = "",
                      tolerance: float = 0.01, statistic: str = "mean") -> Report:
    """A report node's view: the measurements wired into it, plus what it was told of its run."""
    run = run if run is not None else RunInfo(name="")
    report = Report(title=title, entries=[], runs=[run], tolerance=tolerance, statistic=statistic,
                    problems=list(run.problems))
    for path, node in files:
        try:
            report.entries.append(read_entry(path, run=run.name, node=node))
        except ValueError as err:
            report.problems.append(str(err))
    if not report.entries:
        raise NoMeasurements("none of the measurements could be read: " + "; ".join(report.problems))
    report.entries.sort(key=_order_key(run))
    report.title = report.title or "Heiti report" + (f" — {_graph_name(run)}" if _graph_name(run) else "")
    return finish(report, baseline)


def _order_key(run: RunInfo):
    """Entries in the order their nodes ran (else as the graph lists them, else by name)."""
    from heiti.engine.events import RunStarted

    order: list[str] = next((list(e.order) for e in run.events if isinstance(e, RunStarted)), [])
    if not order and run.graph:
        order = [n.get("id") for n in run.graph.get("nodes", []) if isinstance(n, dict)]
    where = {node: i for i, node in enumerate(order)}
    return lambda entry: (where.get(entry.node, len(where)), entry.node)


def _graph_name(run: RunInfo) -> str:
    return str(run.graph.get("name", "")) if run.graph else ""


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


# --- rendering ------------------------------------------------------------------------------------
def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "item"


def _sections_drawn_at_once(report: Report) -> list[Section]:
    """The sections, their figures drawn all at once (nodes.reports.drawing) once every section
    has said what to draw. If a figure fails, the sections are built again the ordinary way, so
    the failure costs its section a note, as it always did."""
    from heiti.nodes.reports import deferral
    from heiti.nodes.reports.sections import build_sections

    with deferral.deferred() as pending:
        sections = build_sections(report)
    pngs = deferral.draw_pending(pending)
    figures = [f for f in _figures(sections) if isinstance(f.png, deferral.Pending)]
    if any(pngs.get(id(f.png)) is None for f in figures):
        return build_sections(report)
    for figure in figures:
        figure.png = pngs[id(figure.png)]  # type: ignore[assignment]
    return sections


def _figures(sections: list[Section]) -> list[Figure]:
    return [block for section in sections for block in section.walk() if isinstance(block, Figure)]


def _name_figures(sections: list[Section]) -> list[Figure]:
    figures, taken = _figures(sections), set()
    for figure in figures:
        figure.name = _unique(slug(figure.name), taken)
        taken.add(figure.name)
    return figures


def warm() -> None:
    """A report node's warm-up, made before its inputs arrive: compile the page templates (~0.1 s),
    import the sections and draw one small figure (plots.warm: ~0.04 s off the first figures of this
    process and of the helpers it forks)."""
    import importlib

    from heiti.nodes.reports import plots
    from heiti.nodes.reports.sections import SECTION_MODULES

    env = _environment()
    for name in ("report.html.j2", "report.md.j2"):
        env.get_template(name)
    for name in SECTION_MODULES:
        importlib.import_module(f"heiti.nodes.reports.sections.{name}")
    importlib.import_module("heiti.nodes.runtimes.agreement")
    plots.warm()


@functools.lru_cache(maxsize=1)
def _environment():
    """One environment per process: jinja keeps the compiled templates (and checks their files'
    times, so an edited template is read again)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(["html.j2"]), trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["b64"] = lambda data: base64.b64encode(data).decode("ascii")
    env.filters["md_cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    return env


def render(report: Report, out_html: Path, sections: list[Section] | None = None) -> Rendered:
    """Write the HTML page, its Markdown twin, the PNGs and copies of the raw measurements."""
    started = time.perf_counter()
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    files = out_html.with_name(out_html.stem + "_files")
    if sections is None:
        sections = _sections_drawn_at_once(report)
    figures = _name_figures(sections)

    if files.exists():
        shutil.rmtree(files)
    (files / "measurements").mkdir(parents=True)
    for figure in figures:
        (files / f"{figure.name}.png").write_bytes(figure.png)
    raw = _copy_raw(report.entries, files / "measurements")

    env = _environment()
    context = {"report": report, "sections": sections, "files": files.name, "raw": raw,
               "baseline": report.baseline.name if report.baseline else ""}
    _write(out_html, env.get_template("report.html.j2").render(**context))
    markdown = out_html.with_suffix(".md")
    _write(markdown, env.get_template("report.md.j2").render(**context))
    return Rendered(out_html, markdown, files, sections, time.perf_counter() - started)


def _copy_raw(entries: list[Entry], folder: Path) -> list[tuple[str, str]]:
    """(entry name, relative path) for every measurements file copied next to the report."""
    out = []
    for entry in entries:
        if entry.source is None or not entry.source.is_file():
            continue
        target = folder / f"{slug(entry.name.replace('/', '__'))}.json"
        shutil.copyfile(entry.source, target)
        out.append((entry.name, f"{folder.parent.name}/measurements/{target.name}"))
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
