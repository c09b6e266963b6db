"""Malformed graph files always give a clear error, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from heiti.engine.graph import GraphLoadError, loads_graph
from heiti.engine.validate import validate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
VALID = json.dumps({
    "format": "heiti-graph", "version": 1, "name": "fuzz",
    "nodes": [{"id": "a", "kind": "test.source", "params": {"value": 1}}, {"id": "b", "kind": "test.add"}],
    "edges": [{"from": ["a", "out"], "to": ["b", "values"]}],
})

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def load_and_validate(text, registry):
    """Either a GraphLoadError, or a graph that validation can judge without raising."""
    try:
        graph = loads_graph(text)
    except GraphLoadError as err:
        assert err.problems and all(isinstance(p, str) and p for p in err.problems)
        return
    validate(graph, registry)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_random_bytes(registry, data):
    load_and_validate(data, registry)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=len(VALID)))
def test_truncated_files(registry, cut):
    load_and_validate(VALID[:cut], registry)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["format", "version", "name", "nodes", "edges", "ui", "extra"]), json_values)
def test_wrong_types_at_top_level(registry, key, value):
    data = json.loads(VALID)
    data[key] = value
    load_and_validate(json.dumps(data), registry)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 1), st.sampled_from(["id", "kind", "params", "ui", "version", "bogus"]), json_values)
def test_wrong_types_in_nodes(registry, index, key, value):
    data = json.loads(VALID)
    data["nodes"][index][key] = value
    load_and_validate(json.dumps(data), registry)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["from", "to", "ui"]), json_values)
def test_wrong_types_in_edges(registry, key, value):
    data = json.loads(VALID)
    data["edges"][0][key] = value
    load_and_validate(json.dumps(data), registry)


def test_deep_nesting(registry):
    deep = '{"format": "heiti-graph", "version": 1, "nodes": [], "edges": [], "ui": ' + "[" * 100000 + "]" * 100000 + "}"
    load_and_validate(deep, registry)
    params = '{"format":"heiti-graph","version":1,"nodes":[{"id":"a","kind":"test.source","params":{"value":' + \
        "[" * 5000 + "]" * 5000 + "}}],\"edges\":[]}"
    load_and_validate(params, registry)


def test_huge_strings(registry):
    data = json.loads(VALID)
    data["name"] = "x" * 2_000_000
    with pytest.raises(GraphLoadError, match="name"):
        loads_graph(json.dumps(data))
    data = json.loads(VALID)
    data["nodes"][0]["kind"] = "k" * 100_000
    with pytest.raises(GraphLoadError, match=r"nodes\[0\]\.kind"):
        loads_graph(json.dumps(data))


@pytest.mark.parametrize("content", [
    "not json at all",
    VALID[: len(VALID) // 2],
    json.dumps({"format": "heiti-graph", "version": 99, "nodes": [], "edges": []}),
    json.dumps({"format": "heiti-graph", "version": 1, "nodes": "many", "edges": []}),
    "[" * 50000,
    "\xff\xfe garbage",
])
def test_cli_gives_clear_error_and_exit_1(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content)
    for command in ("validate", "run"):
        result = subprocess.run([sys.executable, "-m", "heiti.engine.cli", command, str(path)], capture_output=True,
                                text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert "cannot load" in result.stdout + result.stderr
