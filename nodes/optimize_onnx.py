"""ONNX simplification (onnxslim): constant folding and shape inference with fixed input shapes.

Exporters such as Paddle2ONNX compute shapes inside the graph (Shape -> Gather -> Concat ->
Reshape). ONNX Runtime runs that, but compilers that want static shapes do not: TVM's Relax
frontend stops with "Reshape requires the input new shape to be Shape". With the input shapes
fixed, onnxslim folds those subgraphs into constants. compile.tvm and compile.openvino call
`import_simplified` so that this happens by itself when `fix_shape` is set or when the first
import fails, and the error that remains gets a hint matching what actually went wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from heiti.engine import In, ModelArtifact, Node, NodeError, Out
from pydantic import BaseModel, ConfigDict, Field

QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd",
                 "QLinearMul", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid"}
SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "NonZero"}


def simplify_onnx(source: Path, target: Path, shapes: dict[str, list[int]] | None = None) -> dict[str, Any]:
    """Write the simplified model to `target`; returns {nodes_before, nodes_after, seconds}."""
    import onnx
    import onnxslim

    t0 = time.perf_counter()
    model = onnx.load(str(source))
    before = len(model.graph.node)
    specs = [f"{name}:{','.join(str(d) for d in dims)}" for name, dims in (shapes or {}).items()]
    try:
        slim = onnxslim.slim(model, input_shapes=specs or None)
    except Exception as err:  # noqa: BLE001 - onnxslim raises anything on odd graphs
        raise NodeError(f"onnxslim could not simplify {Path(source).name}: {type(err).__name__}: {str(err)[:300]}",
                        "check fix_shape against the model's inputs") from err
    onnx.save(slim, str(target))
    return {"nodes_before": before, "nodes_after": len(slim.graph.node), "seconds": time.perf_counter() - t0}


def computes_shapes(path: Path) -> int:
    """How many Shape-like operators an ONNX model holds (0 when it cannot be read)."""
    try:
        import onnx

        return sum(n.op_type in SHAPE_OPS for n in onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001 - the importer will say what is wrong with the file
        return 0


def import_hint(error: str, model_path: Path | None) -> str:
    """A hint that matches the error: QOperator quantisation only when the model holds such ops."""
    ops: set[str] = set()
    if model_path is not None and Path(model_path).suffix == ".onnx":
        try:
            import onnx

            ops = {n.op_type for n in onnx.load(str(model_path), load_external_data=False).graph.node}
        except Exception:  # noqa: BLE001 - no hint beats a crash in the hint
            ops = set()
    if ops & QOPERATOR_OPS:
        found = ", ".join(sorted(ops & QOPERATOR_OPS))
        return f"the model is QOperator-quantised ({found}), which does not import; quantise with QDQ instead"
    if "Reshape" in error or "shape" in error.lower() or ops & SHAPE_OPS:
        return ("the model computes shapes in the graph (Shape/Reshape); set fix_shape (e.g. 1,3,224,224) so that "
                "onnxslim folds them into constants, or add an optimize.onnx_simplify node before")
    return "try an optimize.onnx_simplify node with fix_shape before this one"


def import_simplified(ctx: Any, model: ModelArtifact, fix_shape: str, shapes: dict[str, list[int]],
                      importer: Callable[[Path], Any], what: str) -> Any:
    """`importer(path)` on the model, simplified first when `fix_shape` is set, or simplified and
    retried when the plain import fails; a NodeError with a matching hint when nothing works."""
    from heiti.nodes.models import parse_fix_shape

    source = Path(model.path)
    names = [str(i["name"]) for i in model.inputs]
    fixed = {**shapes, **parse_fix_shape(fix_shape, names)} if fix_shape else {}
    static = bool(shapes) and all(d is not None for d in sum(shapes.values(), []))
    shape_ops = computes_shapes(source) if not fixed and static and model.model_format == "onnx" else 0
    if shape_ops:  # such graphs may import and still fail to build (TVM: "CodeGenVM cannot emit ...")
        ctx.log(f"the model computes shapes in the graph ({shape_ops} Shape-like ops): simplifying with onnxslim "
                f"before the {what} import, with shapes {shapes}")
        fixed = dict(shapes)
    if not fixed:
        try:
            return importer(source)
        except NodeError:
            raise
        except Exception as err:  # noqa: BLE001 - frontends raise anything on unsupported graphs
            first = f"{type(err).__name__}: {str(err).strip()[:300]}"
            if model.model_format != "onnx" or any(d is None for d in sum(shapes.values(), [])):
                raise NodeError(f"{what} cannot import this {model.model_format} model: {first}",
                                import_hint(first, source)) from err
            ctx.log(f"{what} import failed ({first.splitlines()[0][:160]}); retrying after onnxslim simplification "
                    f"with shapes {shapes}")
            fixed = dict(shapes)
    else:
        ctx.log(f"fix_shape {fix_shape!r}: simplifying with onnxslim before the {what} import")
    target = Path(ctx.workdir) / "simplified.onnx"
    stats = simplify_onnx(source, target, fixed)
    ctx.log(f"onnxslim: {stats['nodes_before']} -> {stats['nodes_after']} nodes in {stats['seconds']:.1f} s")
    try:
        return importer(target)
    except NodeError:
        raise
    except Exception as err:  # noqa: BLE001
        first = f"{type(err).__name__}: {str(err).strip()[:300]}"
        raise NodeError(f"{what} cannot import this model, even simplified: {first}", import_hint(first, source)) from err


def shapes_for(model: ModelArtifact, batch: int, fix_shape: str,
               fallback: Callable[[ModelArtifact, int], dict[str, list[int]]] | None = None) -> dict[str, list[int]]:
    """Input shapes for a compiler: fix_shape's where given, the rest from `fallback` (which may
    insist on static shapes) or, without one, those already static (a free batch set to `batch`)."""
    from heiti.nodes.models import parse_fix_shape

    fixed = parse_fix_shape(fix_shape, [str(i["name"]) for i in model.inputs]) if fix_shape else {}
    rest = [i for i in model.inputs if i["name"] not in fixed]
    if fallback is not None and rest:
        return {**fallback(model.model_copy(update={"inputs": rest}), batch), **fixed}
    for item in rest:
        shape = [batch if i == 0 and d is None else d for i, d in enumerate(item.get("shape") or [])]
        if shape and all(d is not None for d in shape):
            fixed[str(item["name"])] = [int(d) for d in shape]
    return fixed


class _Params(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


class OnnxSimplify(Node):
    """Simplify an ONNX model with onnxslim: constant folding and shape inference with fixed shapes.

    Use it before compilers that need static shapes (TVM, OpenVINO) on models from exporters that
    compute shapes in the graph, such as Paddle2ONNX. `fix_shape` pins dynamic input sizes.
    """

    kind = "optimize.onnx_simplify"
    warm_imports = ("onnx", "onnxslim")
    title = "ONNX simplify (onnxslim)"
    category = "Optimizers"

    class Params(_Params):
        fix_shape: str = Field("", description="input shape(s) to fix, e.g. 1,3,640,640 or x:1,3,640,640; "
                                               "empty = keep the model's (a free batch becomes 1)")

    inputs = {"model": In(ModelArtifact, formats={"onnx"})}
    outputs = {"model": Out(ModelArtifact, format="onnx")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        from heiti.nodes.models import parse_fix_shape, step_meta

        names = [str(i["name"]) for i in model.inputs]
        shapes = parse_fix_shape(self.params.fix_shape, names)
        for item in model.inputs:  # free batch -> 1 where no fix_shape is given
            shape = list(item.get("shape") or [])
            if item["name"] not in shapes and shape and shape[0] is None and all(d is not None for d in shape[1:]):
                shapes[item["name"]] = [1, *shape[1:]]
        target = Path(ctx.workdir) / "model.onnx"
        ctx.progress(0.1, "simplifying")
        stats = simplify_onnx(Path(model.path), target, shapes)
        import onnx
        from heiti.nodes.model_io import onnx_io

        inputs, outputs = onnx_io(onnx.load(str(target), load_external_data=False))
        ctx.log(f"onnxslim: {stats['nodes_before']} -> {stats['nodes_after']} nodes in {stats['seconds']:.1f} s")
        meta = step_meta(model, ctx, self.kind, stats["seconds"], convert_time_s=round(stats["seconds"], 3),
                         simplified_nodes=[stats["nodes_before"], stats["nodes_after"]])
        return {"model": ModelArtifact(path=target, model_format="onnx", inputs=inputs, outputs=outputs, meta=meta)}
