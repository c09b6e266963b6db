"""The editor and the engine agree on every wire: what the document lets a user draw is exactly
what `validate` accepts, for every pair of installed ports (built-in kinds, the test kinds and a
kind with generic `Payload` ports, where they used to disagree)."""

from __future__ import annotations

import pytest
from heiti.app.document import GraphDocument
from heiti.engine.graph import Graph
from heiti.engine.node import In, Node, Out
from heiti.engine.payloads import Payload, Value
from heiti.engine.registry import Registry
from heiti.engine.validate import validate

from tests import testnodes
from tests.app import appnodes


class Anything(Node):
    """A plug-in passing any payload through: generic ports."""

    kind = "agree.anything"
    inputs = {"x": In(Payload, required=False)}
    outputs = {"y": Out(Payload)}

    def run(self, ctx, x=None):
        return {"y": x}


class Number(Node):
    kind = "agree.number"
    outputs = {"v": Out(Value)}

    def run(self, ctx):
        return {"v": Value(value=1)}


@pytest.fixture(scope="module")
def everything() -> Registry:
    reg = Registry()
    reg.load_builtins()
    assert not reg.load_errors, reg.load_errors
    for cls in (*testnodes.ALL, *appnodes.ALL, Anything, Number):
        reg.register(cls)
    return reg


def _edge_errors(graph: Graph, registry: Registry) -> list[str]:
    return [p.code for p in validate(graph, registry).for_edge(len(graph.edges) - 1) if p.severity == "error"]


def test_editor_accepts_exactly_the_wires_validate_accepts(qapp, everything):
    doc = GraphDocument(everything)
    first = {kind: doc.add_node(kind) for kind in everything.kinds()}
    second = {kind: doc.add_node(kind) for kind in everything.kinds()}
    doc.validate_now()
    pairs = accepted = 0
    for s_kind, s_id in first.items():
        s_cls = everything.get(s_kind)
        for out in s_cls.outputs:
            fitting_kinds = set()
            for d_kind, d_id in second.items():
                for port in everything.get(d_kind).inputs:
                    editor = doc.check_connection((s_id, out), (d_id, port), explain=False)
                    trial = Graph(nodes=[doc.graph.node(s_id), doc.graph.node(d_id)])
                    trial.connect((s_id, out), (d_id, port))
                    engine = _edge_errors(trial, everything)
                    assert (editor is None) == (not engine), (s_kind, out, d_kind, port, editor, engine)
                    pairs += 1
                    if editor is None:
                        accepted += 1
                        fitting_kinds.add(d_kind)
            # a wire dropped on empty canvas offers exactly the kinds some port of which fits
            offered = dict(doc.compatible_kinds((s_id, out, "out")))
            assert set(offered) == fitting_kinds, (s_kind, out)
            for kind, port in offered.items():
                assert doc.check_connection((s_id, out), (second[kind], port), explain=False) is None
    assert pairs > 1000 and 0 < accepted < pairs  # the sweep covered both answers


def test_a_generic_payload_output_only_feeds_generic_inputs(qapp, everything):
    doc = GraphDocument(everything)
    anything, adder, other = doc.add_node("agree.anything"), doc.add_node("test.add"), doc.add_node("agree.anything")
    number = doc.add_node("agree.number")
    assert "gives a Payload, but" in doc.connect((anything, "y"), (adder, "values"))
    assert doc.connect((anything, "y"), (other, "x")) is None
    assert doc.connect((number, "v"), (anything, "x")) is None  # anything fits a generic input
    assert (adder, "values", "in") not in doc.compatible_ports((anything, "y", "out"))
    graph = doc.graph.model_copy(deep=True)
    graph.connect((anything, "y"), (adder, "values"))
    assert _edge_errors(graph, everything) == ["type_mismatch"]


def test_a_repeated_wire_is_refused_by_both(qapp, everything):
    doc = GraphDocument(everything)
    src, add = doc.add_node("test.source"), doc.add_node("test.add")
    assert doc.connect((src, "out"), (add, "values")) is None
    assert "connected already" in doc.connect((src, "out"), (add, "values"))
    graph = doc.graph.model_copy(deep=True)
    graph.connect((src, "out"), (add, "values"))
    assert _edge_errors(graph, everything) == ["duplicate_wire"]
