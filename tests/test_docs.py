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
