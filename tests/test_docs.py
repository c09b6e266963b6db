"""The node catalogue in docs/ is generated from the registry and must not drift from it."""

from pathlib import Path

from heiti.engine.catalog import catalog_markdown
from heiti.engine.registry import default_registry

ROOT = Path(__file__).resolve().parents[1]


def test_node_catalogue_is_current():
    expected = catalog_markdown(default_registry())
    assert (ROOT / "docs" / "nodes.md").read_text() == expected, "run `make docs` to regenerate docs/nodes.md"


def test_readme_opens_with_the_two_commands():
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("make ")]
    assert [line.split()[1] for line in lines[:2]] == ["demo", "test"]


def test_design_references_point_at_sections_that_exist():
    """Code and docs cite docs/architecture.md by section title (the design notes are not in the repo)."""
    import re

    titles = {line[3:].strip() for line in (ROOT / "docs" / "architecture.md").read_text().splitlines()
              if line.startswith("## ")}
    cited, stale = set(), []
    files = [p for folder in ("engine", "nodes", "app", "bench", "docs", "tests") for p in (ROOT / folder).rglob("*")
             if p.suffix in (".py", ".md") and "__pycache__" not in p.parts] + [ROOT / "README.md"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        if "DESIGN " + "§" in text:
            stale.append(str(path.relative_to(ROOT)))
        cited |= {m.group(1) for m in re.finditer(r"docs/architecture\.md, ([A-Z][A-Za-z ]+?)\)", text)}
    assert stale == []
    assert cited and cited <= titles, cited - titles
