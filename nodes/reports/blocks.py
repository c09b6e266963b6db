"""The building blocks a section is made of; templates know how to draw each kind.

Sections produce data, not markup, so the same content renders to HTML and to Markdown and tests
can read the numbers back without parsing HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Cell:
    """A table cell: its text and an optional tone (good, bad, best, muted, baseline)."""

    text: str
    tone: str = ""
    title: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    #: per column: "left" or "right" (numbers)
    align: list[str] = field(default_factory=list)
    caption: str = ""
    kind: str = "table"
    #: columns whose cells may wrap onto several lines (long text), so the table fits the page
    wrap: list[str] = field(default_factory=list)

    @staticmethod
    def build(columns: list[str], rows: list[list[Any]], numeric_from: int = 1, caption: str = "",
              wrap: list[str] | None = None) -> Table:
        """Rows of strings or Cells; columns from `numeric_from` on are right-aligned."""
        cells = [[c if isinstance(c, Cell) else Cell("—" if c is None else str(c)) for c in row] for row in rows]
        align = ["left" if i < numeric_from else "right" for i in range(len(columns))]
        return Table(columns=columns, rows=cells, align=align, caption=caption,
                     wrap=[c for c in (wrap or []) if c in columns])

    def column(self, name: str) -> list[str]:
        index = self.columns.index(name)
        return [row[index].text for row in self.rows]


@dataclass
class Figure:
    """A PNG image; `name` is unique within a report and names the file in the Markdown twin."""

    name: str
    png: bytes
    caption: str = ""
    width: int = 0  # CSS pixels; 0 = natural size, capped at the page width
    kind: str = "figure"


@dataclass
class Text:
    text: str
    tone: str = ""  # "" | muted | lead
    kind: str = "text"


@dataclass
class Note:
    """A callout: `level` is info, warn or error."""

    text: str
    level: str = "info"
    items: list[str] = field(default_factory=list)
    kind: str = "note"


@dataclass
class Card:
    label: str
    value: str
    detail: str = ""
    tone: str = ""


@dataclass
class Cards:
    cards: list[Card]
    kind: str = "cards"


@dataclass
class KeyValues:
    items: list[tuple[str, str]]
    kind: str = "keyvalues"


@dataclass
class Group:
    """A titled group of blocks. Layouts: stack; grid (cards side by side); row (a bordered card whose
    children sit side by side); columns (children side by side, no border)."""

    title: str
    blocks: list[Any]
    subtitle: str = ""
    layout: str = "stack"
    anchor: str = ""
    #: drawn folded (HTML <details>, no script): detail most readers skip
    collapsed: bool = False
    kind: str = "group"


Block = Table | Figure | Text | Note | Cards | KeyValues | Group


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Any]
    intro: str = ""

    def walk(self) -> list[Any]:
        """Every block, groups flattened, in page order."""
        out: list[Any] = []
        stack = list(reversed(self.blocks))
        while stack:
            block = stack.pop()
            out.append(block)
            if isinstance(block, Group):
                stack.extend(reversed(block.blocks))
        return out
