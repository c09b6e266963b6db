"""tf2onnx's conversion of a tf.function, without the work tf2onnx does for nothing.

Three things tf2onnx does that never change the model it returns, and what they cost on
MobileNetV2 (3.6 s of conversion on a quiet 2-core machine):

- after freezing the variables into constants, it wraps the frozen GraphDef into a new
  ConcreteFunction (every op imported, pruned and lifted into a FuncGraph, in Python) only to read
  the GraphDef back with its shapes: ~1 s. `_freeze` prunes the GraphDef itself and has TensorFlow's
  C++ importer infer the same shapes in a plain tf.Graph; the variables are read with eager ops
  run as kernels (`keras_eager.direct_eager_ops`: ~0.07 s less);
- it deep-copies the whole graph before each of its optimizers (×3 passes), so that one failing
  optimizer can be skipped: the copies are off (TF2ONNX_CATCH_ERRORS=false);
- after each optimizer it rewrites every node's protobuf and counts the nodes for a verbose log
  line, though the protobufs are only read when the final model is made (which rewrites them all
  again): deferred to that point.

If anything fails with the shortcuts, the conversion is repeated the plain way, so the result
never depends on them; tests check that both ways give the same graph (tests/nodes/test_keras_env.py).
"""

from __future__ import annotations

import collections
import contextlib
import os
from collections.abc import Iterator
from typing import Any

#: attributes tracing leaves on nodes that tf2onnx's lifted copy does not carry (they mean nothing to it)
_TRACE_ATTRS = ("_user_specified_name", "_has_manual_control_dependencies")


def tf_function_to_onnx(function: Any, spec: Any, opset: int, inputs_as_nchw: list[str] | None,
                        shortcuts: bool = True, phases: dict[str, float] | None = None) -> Any:
    """The ONNX ModelProto of a tf.function with one input, converted by tf2onnx.

    `phases`, if given, receives the seconds of each step with the shortcuts: trace, freeze,
    grappler, optimizers and the rest of tf2onnx (its TF -> ONNX graph translation).
    """
    import time

    import tf2onnx

    def convert() -> Any:
        return tf2onnx.convert.from_function(function, input_signature=[spec], opset=opset,
                                             inputs_as_nchw=inputs_as_nchw)[0]

    if not shortcuts:
        return convert()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    try:
        function.get_concrete_function(spec)  # traced once here (timed), tf2onnx then finds it traced
        timings["trace"] = time.perf_counter() - started
        with _shortcuts(timings):
            proto = convert()
    except Exception:  # noqa: BLE001 - a shortcut that does not fit this graph: the plain way decides
        return convert()
    total = time.perf_counter() - started
    if phases is not None:
        phases.update(timings)
        phases["tf2onnx_rest"] = total - sum(timings.values())
    return proto


@contextlib.contextmanager
def _shortcuts(timings: dict[str, float]) -> Iterator[None]:
    from tf2onnx import tf_loader
    from tf2onnx.optimizer.optimizer_base import GraphOptimizerBase

    saved_env = os.environ.get("TF2ONNX_CATCH_ERRORS")
    saved_freeze = tf_loader.convert_variables_to_constants_v2
    saved_optimize = GraphOptimizerBase.optimize
    saved_grappler = tf_loader.tf_optimize
    os.environ["TF2ONNX_CATCH_ERRORS"] = "false"
    tf_loader.convert_variables_to_constants_v2 = _timed(_freeze, timings, "freeze")
    tf_loader.tf_optimize = _timed(saved_grappler, timings, "grappler")
    GraphOptimizerBase.optimize = _timed(_deferring(saved_optimize), timings, "optimizers")
    try:
        yield
    finally:
        GraphOptimizerBase.optimize = saved_optimize
        tf_loader.tf_optimize = saved_grappler
        tf_loader.convert_variables_to_constants_v2 = saved_freeze
        if saved_env is None:
            os.environ.pop("TF2ONNX_CATCH_ERRORS", None)
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = saved_env


def _timed(function: Any, timings: dict[str, float], name: str) -> Any:
    import time

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - started

    timed.__module__ = __name__
    return timed


def _deferring(optimize: Any) -> Any:
    """GraphOptimizerBase.optimize without its per-optimizer protobuf rewrite and node counts."""

    def deferred(self: Any, graph: Any, iteration: int) -> Any:
        graph.update_proto = _nothing  # the instance's attributes hide the methods for this call only
        graph.dump_node_statistics = collections.Counter
        try:
            return optimize(self, graph, iteration)
        finally:
            del graph.update_proto, graph.dump_node_statistics

    return deferred


def _nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


class _Frozen:
    """What tf2onnx reads of the frozen ConcreteFunction: `.graph.as_graph_def(add_shapes=True)`."""

    def __init__(self, graph_def: Any) -> None:
        self.graph = self
        self._graph_def = graph_def

    def as_graph_def(self, add_shapes: bool = False) -> Any:
        return self._graph_def


def _freeze(func: Any, lower_control_flow: bool = True, aggressive_inlining: bool = False) -> Any:
    """Variables made constants, the ops the outputs need, with their shapes — no FuncGraph lifted."""
    import tensorflow as tf
    from heiti.nodes.keras_eager import direct_eager_ops
    from tensorflow.python.framework import convert_to_constants as c2c

    with direct_eager_ops():  # reads every variable: ~100 new read kernels for MobileNetV2
        data = c2c._FunctionConverterDataInEager(func=func, lower_control_flow=lower_control_flow,
                                                 aggressive_inlining=aggressive_inlining)
    graph_def, _ = c2c._replace_variables_by_constants(converter_data=data)
    if len(graph_def.library.function):  # functions left un-inlined: let TensorFlow's own path handle them
        raise ValueError("the frozen graph keeps functions")
    feeds = [t.name.split(":")[0] for t in func.inputs if t.dtype != tf.dtypes.resource]
    graph_def = pruned(graph_def, [t.name.split(":")[0] for t in func.outputs], feeds)
    for node in graph_def.node:
        for attr in _TRACE_ATTRS:
            if attr in node.attr:
                del node.attr[attr]
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
    return _Frozen(graph.as_graph_def(add_shapes=True))


def pruned(graph_def: Any, fetches: list[str], feeds: list[str]) -> Any:
    """A copy of `graph_def` with the nodes `fetches` depend on (data and control), up to `feeds`,
    which are kept; in their original order."""
    by_name = {node.name: node for node in graph_def.node}
    keep = set(feeds)
    todo = [name for name in fetches if name not in keep]
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        for ref in by_name[name].input:
            src = ref.lstrip("^").split(":")[0]
            if src not in keep:
                todo.append(src)
    out = type(graph_def)()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    out.node.extend(node for node in graph_def.node if node.name in keep)
    return out
