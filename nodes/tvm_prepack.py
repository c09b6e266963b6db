"""Weights pre-packed at compile time for TVM 0.27's CPU kernels (fp32 and everything scheduled
through MetaSchedule's llvm design space).

MetaSchedule's `RewriteLayout` postprocessor (in `Postproc.create("llvm")`, so in every default
schedule and every tuned candidate) rewrites the layout of a function's *layout-free* buffers —
the weights — into the order the scheduled loop nest reads them: a 1x1 conv scheduled with
64-channel tiles and a 64-wide reduction split reads `W[oc/64, ic/64, ic%64, oc%64]`, one
contiguous stream per tile, where HWIO strided by the output channels. It only does so for
buffers named in the function's `layout_free_buffers` attribute, which nothing in
`tvm.compile`'s default pipeline sets, and it leaves the repack as a block at the top of the
kernel that runs on every call. So:

- `attach` (before task extraction): relax's `AttachAttrLayoutFreeBuffers` marks every call_tir
  argument that is a constant (the weights) as layout-free;
- `fold` (after the schedules are applied): `SplitLayoutRewritePreproc` moves each repack into a
  function of its own called on the constant, and those calls are evaluated here, all of them in
  one LLVM build, so the module holds the packed constants and the kernels read them directly.
  (relax's FoldConstant does the same one LLVM build per call: 5 s on MobileNetV2.)

MobileNetV2-224 at one thread, per function, interleaved A/B: the deep 1x1 convolutions 10-25%
faster, the classifier's dense 1280->1000 a third faster. Docs: docs/tvm.md.
"""

from __future__ import annotations

from typing import Any

PACKED_SUFFIX = "_weight_prepack"  # SplitLayoutRewritePreproc's name for a split-off repack


def attach(mod: Any) -> Any:
    """Mark the constant arguments of every call_tir as layout-free (RewriteLayout may repack them)."""
    from tvm import relax

    return relax.transform.AttachAttrLayoutFreeBuffers()(mod)


def _constant_calls(mod: Any) -> dict[str, Any]:
    """{name: GlobalVar} of the split-off repacks that some call_tir applies to constants only (the
    weights; a repack of a non-constant argument stays a call and runs per call, still correct)."""
    import tvm
    from tvm import relax

    found: dict[str, Any] = {}
    call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit(expr: Any) -> None:
        if (isinstance(expr, relax.Call) and expr.op.same_as(call_tir) and len(expr.args) == 2
                and isinstance(expr.args[1], relax.Tuple) and expr.args[1].fields
                and all(isinstance(a, tvm.ir.GenericConst) for a in expr.args[1].fields)
                and expr.args[0].name_hint.endswith(PACKED_SUFFIX)):
            found[expr.args[0].name_hint] = expr.args[0]

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return found


def fold(mod: Any) -> tuple[Any, int]:
    """Split the repacks off the scheduled kernels and evaluate them on the weights at compile time.

    Returns the module and the number of weights packed. A module without repacks is unchanged.
    """
    import numpy as np
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    mod = relax.transform.SplitLayoutRewritePreproc()(mod)
    funcs = _constant_calls(mod)
    if not funcs:
        return mod, 0
    tir_mod = tvm.IRModule({name: mod[gv].with_attr("global_symbol", name) for name, gv in funcs.items()})
    # a repack only moves float bits, so running it here is right for any target (cross builds too)
    built = tvm.compile(tir_mod, target=tvm.target.Target("llvm"))
    dev = tvm.cpu(0)
    call_tir = tvm.ir.Op.get("relax.call_tir")

    @mutator
    class _Fold(PyExprMutator):
        packed = 0

        def visit_call_(self, call: Any) -> Any:
            call = self.visit_expr_post_order(call)
            if not (call.op.same_as(call_tir) and len(call.args) == 2 and call.args[0].name_hint in funcs
                    and all(isinstance(a, tvm.ir.GenericConst) for a in call.args[1].fields)):
                return call
            ty = self.builder_.normalize(call).ty
            types = list(ty.fields) if hasattr(ty, "fields") else [ty]  # a repack of several weights
            outs = [tvm.runtime.empty([int(d) for d in t.shape.values], str(t.dtype), dev) for t in types]
            built[call.args[0].name_hint](*[a.value for a in call.args[1].fields], *outs)
            self.packed += len(outs)
            consts = [relax.const(np.ascontiguousarray(o.numpy()), str(t.dtype)) for o, t in zip(outs, types, strict=True)]
            return relax.Tuple(consts) if hasattr(ty, "fields") else consts[0]

    folder = _Fold(mod)
    for gv, func in list(mod.functions_items()):
        if isinstance(func, relax.Function):
            mod[gv] = folder.visit_expr(func)
    mod = relax.transform.CanonicalizeBindings()(mod)  # tuple items of folded repacks -> constants
    return relax.transform.DeadCodeElimination()(mod), folder.packed
