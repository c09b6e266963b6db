"""Every example graph under resources/graphs loads and validates against the real registry."""

from pathlib import Path

import pytest
from heiti.engine.graph import load_graph
from heiti.engine.registry import default_registry
from heiti.engine.validate import validate

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "resources" / "graphs").glob("*.json"))


def test_there_are_examples():
    assert EXAMPLES, "resources/graphs has no example graph"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path):
    result = validate(load_graph(path), default_registry())
    assert result.ok, [str(p) for p in result.problems]


def test_builtin_node_modules_import_cleanly():
    assert default_registry().load_errors == []
