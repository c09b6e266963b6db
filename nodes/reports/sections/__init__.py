"""Report sections, in page order. Each module has `build(report) -> Section | None`.

A section returns None when it has nothing to show (no detection entries, no graph...). A section
that fails is replaced by a note, so one odd file never costs the whole report.
"""

from __future__ import annotations

import importlib

from heiti.nodes.reports.blocks import Note, Section
from heiti.nodes.reports.collect import Report

SECTION_MODULES = [
    "summary", "comparison", "runtimes", "classification", "detection", "latency", "drift", "resources",
    "sensors", "environment", "graph",
]


def build_sections(report: Report, only: list[str] | None = None) -> list[Section]:
    sections = []
    for name in only or SECTION_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        try:
            section = module.build(report)
        except Exception as err:  # noqa: BLE001 - keep the rest of the report
            section = Section(id=name, title=name.capitalize(),
                              blocks=[Note(f"this section could not be drawn: {type(err).__name__}: {err}", "error")])
        if section is not None:
            sections.append(section)
    return sections
