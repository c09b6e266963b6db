"""Validation: every problem at once, tied to nodes and edges, with converter chains proposed."""

from heiti.engine.graph import Graph
from heiti.engine.validate import validate


def codes(result):
    return sorted(p.code for p in result.problems)


def test_valid_graph(registry):
    g = Graph()
    g.add_node("test.source", "a")
    g.add_node("test.add", "b")
    g.connect(("a", "out"), ("b", "values"))
    result = validate(g, registry)
    assert result.ok, result.problems
    assert result.order() == ["a", "b"]


def test_all_problems_reported_at_once(registry):
    g = Graph()
    g.add_node("test.source", "a", {"valeu": 3})
    g.add_node("test.nope", "x")
    g.add_node("test.add", "b")
    g.add_node("test.model", "m")
    g.connect(("a", "missing"), ("b", "values"))
    g.connect(("a", "out"), ("ghost", "in"))
    result = validate(g, registry)
    assert not result.ok
    assert set(codes(result)) >= {"param", "unknown_kind", "unknown_port", "unknown_node", "missing_input"}
    param = next(p for p in result.problems if p.code == "param")
    assert param.node == "a" and param.field == "valeu"
    assert "nodes[0].params.valeu: unknown field — did you mean value?" in param.message


def test_param_out_of_range(registry):
    g = Graph()
    g.add_node("test.source", "a", {"delay": -1})
    result = validate(g, registry)
    assert codes(result) == ["param"]
    assert result.problems[0].field == "delay"


def test_cycle_is_found(registry):
    g = Graph()
    g.add_node("test.add", "a")
    g.add_node("test.add", "b")
    g.connect(("a", "out"), ("b", "values"))
    g.connect(("b", "out"), ("a", "values"))
    result = validate(g, registry)
    assert "cycle" in codes(result)
    assert "a → b → a" in next(p for p in result.problems if p.code == "cycle").message or \
        "b → a → b" in next(p for p in result.problems if p.code == "cycle").message


def test_duplicate_ids(registry):
    g = Graph()
    g.add_node("test.source", "a")
    g.nodes.append(g.nodes[0].model_copy())
    assert "duplicate_id" in codes(validate(g, registry))


def test_several_wires_into_single_input(registry):
    g = Graph()
    g.add_node("test.model", "m1")
    g.add_node("test.model", "m2")
    g.add_node("test.pass", "p")
    g.connect(("m1", "model"), ("p", "model"))
    g.connect(("m2", "model"), ("p", "model"))
    result = validate(g, registry)
    assert codes(result) == ["multiple_wires"]
    assert result.problems[0].edge == 1


def test_type_mismatch(registry):
    g = Graph()
    g.add_node("test.source", "a")
    g.add_node("test.pass", "p")
    g.connect(("a", "out"), ("p", "model"))
    result = validate(g, registry)
    assert codes(result) == ["type_mismatch"]
    assert "Value" in result.problems[0].message and "ModelArtifact" in result.problems[0].message


def test_format_mismatch_proposes_converter_chain(registry):
    g = Graph()
    g.add_node("test.model", "m", {"fmt": "keras"})
    g.add_node("test.tvm", "t")
    g.connect(("m", "model"), ("t", "model"))
    result = validate(g, registry)
    assert codes(result) == ["format_mismatch"]
    problem = result.problems[0]
    assert problem.node == "t" and problem.edge == 0
    assert "accepts onnx, tflite, got keras" in problem.message
    assert problem.suggestion == "wire `keras` → `onnx` through test.keras_to_onnx"


def test_format_flows_through_pass_through_nodes(registry):
    g = Graph()
    g.add_node("test.model", "m", {"fmt": "keras"})
    g.add_node("test.pass", "p")
    g.add_node("test.tvm", "t")
    g.connect(("m", "model"), ("p", "model"))
    g.connect(("p", "model"), ("t", "model"))
    result = validate(g, registry)
    assert codes(result) == ["format_mismatch"] and result.problems[0].node == "t"
    g.set_param("m", "fmt", "onnx")
    assert validate(g, registry).ok


def test_no_chain_says_so(registry):
    g = Graph()
    g.add_node("test.model", "m", {"fmt": "caffe"})
    g.add_node("test.tvm", "t")
    g.connect(("m", "model"), ("t", "model"))
    assert "no converter chain" in validate(g, registry).problems[0].suggestion
