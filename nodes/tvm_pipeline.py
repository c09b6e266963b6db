"""Relax passes that run before TVM 0.27 schedules a model (compile.tvm's pipeline up to fused TIR).

- numpy constant folding (FoldConstant builds every foldable call with LLVM: 40 s of a 60 s compile);
- importer leftovers made visible to ConvertLayout: the ONNX importer emits `Clip` as `call_tir`
  max/min TIR functions and `Pad` as a `call_tir` pad. ConvertLayout knows neither, so each NHWC
  convolution was followed by transpose -> clip -> transpose (two extra memory passes per ReLU6
  on MobileNetV2, 16-35% of its time). Clips with constant scalar bounds become relax
  `maximum`/`minimum` (elementwise ops ConvertLayout carries and FuseOps fuses into the conv's
  epilogue); a zero spatial pad read by one convolution becomes that convolution's padding.

Docs: docs/tvm.md. Heavy imports stay inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


# --- constant folding ----------------------------------------------------------------------------
def fold_constants_numpy(mod: Any) -> tuple[Any, int]:
    """Fold relax calls whose arguments are all constants with numpy.

    relax.transform.FoldConstant compiles every foldable call with LLVM (0.3-0.6 s each); the ONNX
    importer emits `where(isnan(c), inf, c)` for every Clip bound (140 calls on MobileNetV2) and
    ConvertLayout a permute_dims per weight, which made FoldConstant 40+ s of a 60 s compile.
    Calls this does not know are left for FoldConstant.
    """
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    unary = {"relax.isnan": np.isnan, "relax.sqrt": np.sqrt, "relax.negative": np.negative,
             "relax.exp": np.exp, "relax.abs": np.abs}
    binary = {"relax.add": np.add, "relax.subtract": np.subtract, "relax.multiply": np.multiply,
              "relax.divide": np.divide, "relax.maximum": np.maximum, "relax.minimum": np.minimum}

    @mutator
    class _Fold(PyExprMutator):
        def __init__(self, module: Any) -> None:
            super().__init__(module)
            self.folded = 0

        def _value(self, expr: Any) -> Any:
            if isinstance(expr, relax.Var):
                bound = self.lookup_binding(expr)
                expr = bound if bound is not None else expr
            if isinstance(expr, tvm.ir.GenericConst) and hasattr(expr.value, "numpy"):
                return expr.value.numpy()
            return None

        def visit_call_(self, call: Any) -> Any:
            call = self.visit_expr_post_order(call)
            name = getattr(call.op, "name", None)
            if name is None or not call.args:
                return call
            values = [self._value(a) for a in call.args]
            if any(v is None for v in values):
                return call
            try:
                if name in unary:
                    out = unary[name](values[0])
                elif name in binary:
                    out = binary[name](values[0], values[1])
                elif name == "relax.where":
                    out = np.where(*values)
                elif name == "relax.permute_dims":
                    axes = call.attrs.axes
                    out = np.transpose(values[0], None if axes is None else [int(a) for a in axes])
                else:
                    return call
                ty = self.builder_.normalize(call).ty
                dtype = str(ty.dtype)
                out = np.array(out, dtype=dtype, order="C")  # keeps 0-d arrays 0-d
                if list(out.shape) != [int(d) for d in ty.shape.values]:
                    return call
            except Exception:  # noqa: BLE001 - anything odd is left to FoldConstant
                return call
            self.folded += 1
            return relax.const(out, dtype)

    folder = _Fold(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = folder.visit_expr(func)
    return mod, folder.folded


# --- importer leftovers -> relax ops ------------------------------------------------------------
@dataclass
class LeftoverStats:
    clips: int = 0  # call_tir maximum/minimum with a constant scalar bound -> relax ops
    pads: int = 0  # call_tir zero pads merged into the following conv2d's padding

    def as_dict(self) -> dict[str, int]:
        return {"clips": self.clips, "pads": self.pads}


def _single_block(func: Any) -> Any | None:
    """The only block of a one-block TIR function (what emit_te of one topi op gives), else None."""
    import tvm.s_tir

    try:
        sch = tvm.s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - not a plain one-block function
        return None
    return sch.get(blocks[0]) if len(blocks) == 1 else None


def scalar_bound_kind(func: Any) -> str | None:
    """"maximum"/"minimum" when `func` is out[i] = max|min(a[i], b[()]) (topi.maximum/minimum with a
    0-d second operand), else None."""
    from tvm import tirx

    if len(func.params) != 3:
        return None
    block = _single_block(func)
    value = getattr(getattr(block, "body", None), "value", None)
    kind = "maximum" if isinstance(value, tirx.Max) else "minimum" if isinstance(value, tirx.Min) else None
    if kind is None:
        return None
    a, b = value.a, value.b
    params = list(func.params)  # TVM 0.27: the params are the buffers
    if not (hasattr(a, "source") and hasattr(b, "source") and a.source.same_as(params[0])
            and b.source.same_as(params[1]) and len(b.indices) == 0):
        return None
    if [iv.var for iv in block.iter_vars] != list(a.indices):  # elementwise: a read at the output index
        return None
    return kind


def zero_pad_widths(func: Any) -> list[tuple[int, int]] | None:
    """[(before, after)] per axis when `func` is topi.nn.pad with value 0 (constant mode), else None."""
    from tvm import tirx
    from tvm.sym.analyzer import Analyzer

    if len(func.params) != 2:
        return None
    block = _single_block(func)
    value = getattr(getattr(block, "body", None), "value", None)
    if getattr(getattr(value, "op", None), "name", "") != "prim.if_then_else" or len(value.args) != 3:
        return None
    load, fill = value.args[1], value.args[2]
    src, dst = func.params
    if not (hasattr(load, "source") and load.source.same_as(src) and isinstance(fill, tirx.FloatImm)
            and float(fill.value) == 0.0 and len(src.shape) == len(dst.shape) == len(load.indices)):
        return None
    analyzer = Analyzer()
    for iv in block.iter_vars:
        analyzer.bind(iv.var, 0)
    try:
        before = [-int(analyzer.simplify(i)) for i in load.indices]
        widths = [(b, int(o) - int(s) - b) for b, s, o in zip(before, src.shape, dst.shape, strict=True)]
    except (TypeError, ValueError):  # a symbolic shape or an index that is not var - const
        return None
    return widths if all(b >= 0 and a >= 0 for b, a in widths) else None


def rewrite_importer_leftovers(mod: Any) -> tuple[Any, LeftoverStats]:
    """call_tir max/min with a constant scalar -> relax maximum/minimum; zero pad -> conv2d padding.

    Run after constant folding (the Clip bounds are `where(isnan(c), inf, c)` until then) and
    before ConvertLayout.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    stats = LeftoverStats()
    kinds: dict[str, str] = {}
    pads: dict[str, list[tuple[int, int]]] = {}
    for gv, func in mod.functions_items():
        if type(func).__name__ != "PrimFunc":
            continue
        if (kind := scalar_bound_kind(func)) is not None:
            kinds[gv.name_hint] = kind
        elif (widths := zero_pad_widths(func)) is not None:
            pads[gv.name_hint] = widths
    uses: dict[Any, int] = {}

    def count(expr: Any) -> None:
        if isinstance(expr, relax.Var):
            uses[expr] = uses.get(expr, 0) + 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, count)

    @mutator
    class _Rewrite(PyExprMutator):
        def _bound(self, expr: Any) -> Any:
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else None
            return bound if bound is not None else expr

        def visit_call_(self, call: Any) -> Any:
            call = self.visit_expr_post_order(call)
            name = getattr(call.op, "name", "")
            if name == "relax.call_tir" and call.args[0].name_hint in kinds:
                x, bound = call.args[1].fields
                constant = self._bound(bound)
                if isinstance(constant, tvm.ir.GenericConst) and x.ty.dtype == constant.ty.dtype:
                    stats.clips += 1
                    op = relax.op.maximum if kinds[call.args[0].name_hint] == "maximum" else relax.op.minimum
                    return op(x, constant)
            if name == "relax.nn.conv2d" and call.attrs.data_layout == "NCHW" and isinstance(call.args[0], relax.Var):
                pad = self._bound(call.args[0])
                if (isinstance(pad, relax.Call) and getattr(pad.op, "name", "") == "relax.call_tir"
                        and pad.args[0].name_hint in pads and uses.get(call.args[0], 0) == 1):
                    widths = pads[pad.args[0].name_hint]
                    if widths[0] == widths[1] == (0, 0) and len(widths) == 4:
                        top, left, bottom, right = (int(v) for v in call.attrs.padding)
                        (h0, h1), (w0, w1) = widths[2], widths[3]
                        stats.pads += 1
                        return relax.op.nn.conv2d(
                            pad.args[1].fields[0], call.args[1], strides=call.attrs.strides,
                            padding=[top + h0, left + w0, bottom + h1, right + w1], dilation=call.attrs.dilation,
                            groups=call.attrs.groups, data_layout="NCHW", kernel_layout=call.attrs.kernel_layout,
                            out_layout=call.attrs.out_layout, out_dtype=call.attrs.out_dtype)
            return call

    rewriter = _Rewrite(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = rewriter.visit_expr(func)
    mod = relax.transform.DeadCodeElimination()(mod)  # the pads and unused call_tir functions
    return mod, stats


def prepare(mod: Any, target: Any, layout: str = "NHWC", stats: LeftoverStats | None = None,
            prepack: bool = True) -> Any:
    """Relax module -> fused TIR functions (what MetaSchedule extracts tasks from and schedules).

    `stats`, when given, receives what rewrite_importer_leftovers changed. `prepack`: the weights
    are marked layout-free, so the schedules repack them into the order their loops read them
    (heiti.nodes.tvm_prepack; tvm_schedule.apply_database folds the repack into the constants).
    """
    import tvm
    from tvm import relax

    with target:
        mod = tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                        relax.transform.CanonicalizeBindings()])(mod)
    mod, _ = fold_constants_numpy(mod)
    mod, changed = rewrite_importer_leftovers(mod)
    if stats is not None:
        stats.clips, stats.pads = changed.clips, changed.pads
    if layout == "NHWC":
        with target:
            mod = relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})(mod)
        mod, _ = fold_constants_numpy(mod)
    with target:
        mod = relax.pipeline.zero_pipeline()(mod)
    if prepack:
        from heiti.nodes import tvm_prepack

        mod = tvm_prepack.attach(mod)
    return mod
