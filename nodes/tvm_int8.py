"""Integer kernels for quantised models on TVM: a Relax rewrite run before legalization.

TVM 0.27's ONNX importer turns a QDQ model (ONNX Runtime's static quantisation) and its TFLite
importer a full-int8 model into float maths on dequantised values:

    x = dequantize(x_q, s_x, zp_x)            # uint8 / int8 activations, one scale
    w = dequantize(W_q, s_w, zp_w)            # int8 weight constant, scale per tensor or per channel
    y = conv2d(x, w) | matmul(x, w)           # float32
    y = add(y, bias)                          # optional, bias a constant (int32 QDQ, or float)
    y_q = quantize(y, s_y, zp_y)              # next layer's input

This module replaces that with an integer computation: the activation minus its zero point as
int16 (uint8 - zp spans -255..255), the weight minus its zero point as an int16 constant, the
conv2d / matmul accumulating in int32 (`out_dtype="int32"`), the bias added in int32 as
round(bias / (s_x*s_w)), and the requantisation `clip(round(acc * s_x*s_w/s_y) + zp_y)` with
round half to even, as ONNX QuantizeLinear and ONNX Runtime's QLinearConv do. Zero points are
exact: padding with 0 after subtracting zp_x is padding with the real value 0.

Where no quantize follows (a float output, a float consumer), the integer accumulator is scaled
back to float (`acc * s_x*s_w`) and the float graph continues. Everything else (pooling, adds,
activations between quantize/dequantize pairs) stays float; the remaining per-tensor
quantize / dequantize / clip become elementwise arithmetic that ConvertLayout carries through
NHWC. The AVX2 kernel that makes the integer convolutions fast is in tvm_int8_avx2.
Docs: docs/tvm.md ("int8").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUANT_DTYPES = {"int8": (-128, 127), "uint8": (0, 255)}


@dataclass
class Int8Stats:
    """What the rewrite did, for the model meta."""

    quantized: bool = False  # the module has dequantize calls (a QDQ / int8 model)
    conv2d: int = 0  # conv2d calls now computed in integers
    matmul: int = 0
    requantized: int = 0  # of those, the ones ending in an integer requantisation (bias in int32)
    float_conv2d: int = 0  # conv2d / matmul left float (operands not a dequantised pattern)
    float_matmul: int = 0
    skipped: list[str] = field(default_factory=list)  # why a dequantised conv/matmul stayed float

    def as_dict(self) -> dict[str, Any]:
        return {"quantized": self.quantized, "integer_conv2d": self.conv2d, "integer_matmul": self.matmul,
                "requantized": self.requantized, "float_conv2d": self.float_conv2d,
                "float_matmul": self.float_matmul, **({"skipped": self.skipped[:10]} if self.skipped else {})}


def is_quantized(mod: Any) -> bool:
    """True when the Relax module dequantizes something (QDQ ONNX, int8 TFLite)."""
    from tvm import relax

    found: list[bool] = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.dequantize":
            found.append(True)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function) and not found:
            relax.analysis.post_order_visit(func.body, visit)
    return bool(found)


def _shape(expr: Any) -> list[int] | None:
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        return None
    try:
        return [int(v) for v in values]
    except TypeError:  # symbolic dims
        return None


def _dtype(expr: Any) -> str:
    return str(getattr(expr.ty, "dtype", ""))


def _channel_vector(full: np.ndarray, axis: int) -> np.ndarray | None:
    """The values along `axis` when `full` is constant along every other axis, else None."""
    moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
    if moved.shape[1] and not np.all(moved == moved[:, :1]):
        return None
    return moved[:, 0]


def rewrite(mod: Any) -> tuple[Any, Int8Stats]:
    """The module with dequantised conv2d / matmul patterns computed in integers, and what changed."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    stats = Int8Stats(quantized=is_quantized(mod))
    if not stats.quantized:
        return mod, stats

    @dataclass
    class _Acc:
        """An integer accumulator this rewrite emitted: acc * scale[c] is the float conv output."""

        acc: Any  # relax Var, int32
        scale: np.ndarray  # s_x * s_w per output channel (float64)
        axis: int  # output channel axis
        shape: list[int]

    @mutator
    class _Rewrite(PyExprMutator):
        def __init__(self, module: Any) -> None:
            super().__init__(module)
            self.accs: list[_Acc] = []
            self.centred: list[tuple[Any, int, Any]] = []  # (x_q, zp_x, int16 var)

        # --- constant evaluation (numpy) of the operands' chains -------------------------------------
        def _bound(self, expr: Any) -> Any:
            while isinstance(expr, relax.Var):
                bound = self.lookup_binding(expr)
                if bound is None:
                    return expr
                expr = bound
            return expr

        def _const(self, expr: Any) -> np.ndarray | None:
            """A constant chain (const, reshape, permute_dims, astype, expand_dims, dequantize) in numpy."""
            expr = self._bound(expr)
            if isinstance(expr, tvm.ir.GenericConst) and hasattr(expr.value, "numpy"):
                return expr.value.numpy()
            if not isinstance(expr, relax.Call) or not hasattr(expr.op, "name") or not expr.args:
                return None
            name = expr.op.name
            if name == "relax.dequantize":
                q = self._qconst(expr)
                return None if q is None else (q[0] * q[1]).astype(np.float32)
            value = self._const(expr.args[0])
            if value is None:
                return None
            if name in ("relax.reshape", "relax.expand_dims", "relax.squeeze"):
                shape = _shape(expr)
                return None if shape is None else value.reshape(shape)
            if name == "relax.permute_dims":
                axes = expr.attrs.axes
                return np.transpose(value, None if axes is None else [int(a) for a in axes])
            if name == "relax.astype":
                return value.astype(str(expr.attrs.dtype))
            return None

        def _qconst(self, expr: Any) -> tuple[np.ndarray, np.ndarray] | None:
            """(integers minus zero point, scale) of a dequantised constant, both at its full shape."""
            expr = self._bound(expr)
            if not isinstance(expr, relax.Call) or not hasattr(expr.op, "name"):
                return None
            name = expr.op.name
            if name == "relax.dequantize":
                q, scale, zp = (self._const(a) for a in expr.args[:3])
                if q is None or scale is None or zp is None or q.dtype.kind not in "iu":
                    return None
                axis = int(expr.attrs.axis) % max(1, q.ndim)

                def along(v: np.ndarray) -> np.ndarray:
                    v = np.asarray(v)
                    if v.size == 1:
                        return v.reshape(())
                    shape = [1] * q.ndim
                    shape[axis] = v.size
                    return v.reshape(shape)

                ints = q.astype(np.int64) - along(zp).astype(np.int64)
                return ints, np.broadcast_to(along(scale).astype(np.float64), q.shape)
            if name in ("relax.reshape", "relax.permute_dims", "relax.expand_dims", "relax.squeeze"):
                inner = self._qconst(expr.args[0])
                if inner is None:
                    return None
                if name == "relax.permute_dims":
                    axes = expr.attrs.axes
                    axes = None if axes is None else [int(a) for a in axes]
                    return np.transpose(inner[0], axes), np.transpose(inner[1], axes)
                shape = _shape(expr)
                return None if shape is None else (inner[0].reshape(shape), inner[1].reshape(shape))
            return None

        def _activation(self, expr: Any) -> tuple[Any, float, int] | None:
            """(x_q, s_x, zp_x) of dequantize(x_q) with one scale and zero point."""
            call = self._bound(expr)
            if not (isinstance(call, relax.Call) and getattr(call.op, "name", "") == "relax.dequantize"):
                return None
            x_q = call.args[0]
            scale, zp = self._const(call.args[1]), self._const(call.args[2])
            if _dtype(x_q) not in QUANT_DTYPES or scale is None or zp is None or scale.size != 1 or zp.size != 1:
                return None
            return x_q, float(scale.reshape(())), int(zp.reshape(()))

        # --- the rewrite -------------------------------------------------------------------------------
        def _integer(self, call: Any, kind: str) -> Any | None:
            act = self._activation(call.args[0])
            weight = self._qconst(call.args[1])
            if act is None or weight is None:
                if any(getattr(getattr(self._bound(a), "op", None), "name", "") == "relax.dequantize"
                       for a in call.args[:2]):
                    stats.skipped.append(f"{kind}: activation or weight is not a dequantised int tensor/constant")
                return None
            x_q, s_x, zp_x = act
            ints, scales = weight
            out_shape = _shape(call)
            if out_shape is None or ints.min() < -32768 or ints.max() > 32767:
                stats.skipped.append(f"{kind}: dynamic shape or weight range beyond int16")
                return None
            if kind == "conv2d":
                attrs = call.attrs
                klayout, olayout = str(attrs.kernel_layout), str(attrs.out_layout or attrs.data_layout)
                if len(klayout) != 4 or len(olayout) != 4 or "O" not in klayout or "C" not in olayout:
                    stats.skipped.append(f"conv2d: packed layout {klayout}/{olayout}")
                    return None
                w_axis, out_axis = klayout.index("O"), olayout.index("C")
            else:
                if ints.ndim != 2 or len(out_shape) < 2:
                    stats.skipped.append("matmul: weight is not a 2-D constant")
                    return None
                w_axis, out_axis = 1, len(out_shape) - 1
            s_w = _channel_vector(np.asarray(scales), w_axis)
            if s_w is None:
                stats.skipped.append(f"{kind}: weight scale varies along an axis other than the output channel")
                return None
            x16 = next((v for q, zp, v in self.centred if q.same_as(x_q) and zp == zp_x), None)
            if x16 is None:  # x_q - zp_x once per activation, however many convs read it
                x16 = relax.op.astype(x_q, "int16")
                if zp_x:
                    x16 = relax.op.subtract(x16, relax.const(np.int16(zp_x), "int16"))
                x16 = self.builder_.emit(x16, "int8_x")
                self.centred.append((x_q, zp_x, x16))
            if kind == "conv2d" and int(call.attrs.groups) == 1 and ints.shape[str(call.attrs.kernel_layout).index("I")] % 2:
                # an odd input channel count (an RGB image) gets a zero channel: the AVX2 kernel
                # multiplies channel pairs; zeros add nothing, so the result is unchanged
                i_axis, c_axis = str(call.attrs.kernel_layout).index("I"), str(call.attrs.data_layout).index("C")
                ints = np.concatenate([ints, np.zeros_like(np.take(ints, [0], axis=i_axis))], axis=i_axis)
                width = [0] * (2 * len(_shape(x_q) or []))
                width[2 * c_axis + 1] = 1
                x16 = self.builder_.emit(relax.op.nn.pad(x16, width, pad_value=0.0), "int8_x_even")
            w16 = relax.const(ints.astype(np.int16), "int16")
            if kind == "conv2d":
                a = call.attrs
                acc = relax.op.nn.conv2d(x16, w16, strides=[int(v) for v in a.strides],
                                         padding=[int(v) for v in a.padding], dilation=[int(v) for v in a.dilation],
                                         groups=int(a.groups), data_layout=str(a.data_layout),
                                         kernel_layout=str(a.kernel_layout), out_layout=str(a.out_layout or a.data_layout),
                                         out_dtype="int32")
                stats.conv2d += 1
            else:
                acc = relax.op.matmul(x16, w16, out_dtype="int32")
                stats.matmul += 1
            acc = self.builder_.emit(acc, f"int8_{kind}")
            scale = s_x * s_w.astype(np.float64)
            epilogue = relax.op.multiply(relax.op.astype(acc, "float32"),
                                         relax.const(self._along(scale, out_axis, len(out_shape)).astype(np.float32)))
            self.accs.append(_Acc(acc, scale, out_axis, out_shape))
            return self.builder_.normalize(epilogue)

        @staticmethod
        def _along(vector: np.ndarray, axis: int, rank: int) -> np.ndarray:
            shape = [1] * rank
            shape[axis] = vector.size
            return np.asarray(vector).reshape(shape)

        def _acc_of(self, expr: Any) -> _Acc | None:
            expr = self._bound(expr)
            if not (isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.multiply"):
                return None
            cast = self._bound(expr.args[0])
            if not (isinstance(cast, relax.Call) and getattr(cast.op, "name", "") == "relax.astype"):
                return None
            return next((a for a in self.accs if a.acc.same_as(cast.args[0])), None)

        def _requantize(self, call: Any) -> Any | None:
            """quantize([add](integer conv, bias const)) -> integer bias add and requantisation."""
            out_dtype = str(call.attrs.out_dtype)
            s_y, zp_y = self._const(call.args[1]), self._const(call.args[2])
            if out_dtype not in QUANT_DTYPES or s_y is None or zp_y is None or s_y.size != 1 or zp_y.size != 1:
                return None
            inner = self._bound(call.args[0])
            acc, bias = self._acc_of(inner), None
            if acc is None and isinstance(inner, relax.Call) and getattr(inner.op, "name", "") == "relax.add":
                for mine, other in ((0, 1), (1, 0)):
                    acc = self._acc_of(inner.args[mine])
                    if acc is not None:
                        bias = self._const(inner.args[other])
                        if bias is None or list(np.broadcast_shapes(bias.shape, acc.shape)) != acc.shape:
                            return None
                        break
            if acc is None:
                return None
            total = acc.acc
            if bias is not None:
                vector = _channel_vector(np.broadcast_to(bias.astype(np.float64), acc.shape), acc.axis)
                if vector is None:
                    return None
                bias_int = np.round(vector / acc.scale)
                if np.abs(bias_int).max(initial=0) >= 2**31 - 1:
                    return None
                total = relax.op.add(total, relax.const(self._along(bias_int.astype(np.int32), acc.axis, len(acc.shape))))
            multiplier = self._along(acc.scale / float(s_y.reshape(())), acc.axis, len(acc.shape)).astype(np.float32)
            y = relax.op.round(relax.op.multiply(relax.op.astype(total, "float32"), relax.const(multiplier)))
            y = relax.op.add(y, relax.const(np.float32(int(zp_y.reshape(()))), "float32"))
            stats.requantized += 1
            return _saturate(y, out_dtype)

        def visit_call_(self, call: Any) -> Any:
            call = self.builder_.normalize(self.visit_expr_post_order(call))
            name = getattr(call.op, "name", None)
            if name == "relax.nn.conv2d" or name == "relax.matmul":
                kind = "conv2d" if name == "relax.nn.conv2d" else "matmul"
                new = self._integer(call, kind) if _dtype(call) == "float32" else None
                if new is not None:
                    return new
                if _dtype(call) == "float32":
                    if kind == "conv2d":
                        stats.float_conv2d += 1
                    else:
                        stats.float_matmul += 1
            elif name == "relax.quantize":
                new = self._requantize(call)
                if new is not None:
                    return new
            return call

    def _saturate(y: Any, out_dtype: str) -> Any:
        """clip to the integer range and cast; maximum/minimum (unlike clip) follow ConvertLayout."""
        lo, hi = QUANT_DTYPES[out_dtype]
        y = relax.op.minimum(relax.op.maximum(y, relax.const(np.float32(lo))), relax.const(np.float32(hi)))
        return relax.op.astype(y, out_dtype)

    @mutator
    class _Elementwise(PyExprMutator):
        """Per-tensor quantize / dequantize / clip as plain elementwise ops, the maths TVM's
        legalization uses. ConvertLayout knows none of the three, so each one left between NHWC
        convolutions costs a transpose there and back (MobileNetV2: 39 transposes)."""

        def _scalar(self, expr: Any) -> float | None:
            while isinstance(expr, relax.Var) and self.lookup_binding(expr) is not None:
                expr = self.lookup_binding(expr)
            if isinstance(expr, tvm.ir.GenericConst) and hasattr(expr.value, "numpy"):
                value = expr.value.numpy()
                return float(value.reshape(())) if value.size == 1 else None
            return None

        def visit_call_(self, call: Any) -> Any:
            call = self.builder_.normalize(self.visit_expr_post_order(call))
            name = getattr(call.op, "name", None)
            if name == "relax.quantize" and _dtype(call.args[0]) == "float32":
                scale, zp = self._scalar(call.args[1]), self._scalar(call.args[2])
                if scale is not None and zp is not None and str(call.attrs.out_dtype) in QUANT_DTYPES:
                    y = relax.op.round(relax.op.divide(call.args[0], relax.const(np.float32(scale))))
                    y = relax.op.add(y, relax.const(np.float32(zp)))
                    return _saturate(y, str(call.attrs.out_dtype))
            elif name == "relax.dequantize" and str(call.attrs.out_dtype) == "float32":
                scale, zp = self._scalar(call.args[1]), self._scalar(call.args[2])
                if scale is not None and zp is not None and _dtype(call.args[0]) in QUANT_DTYPES:
                    x = relax.op.subtract(relax.op.astype(call.args[0], "float32"), relax.const(np.float32(zp)))
                    return relax.op.multiply(x, relax.const(np.float32(scale)))
            elif name == "relax.clip" and _dtype(call) in ("float32", *QUANT_DTYPES):
                dtype = _dtype(call)
                lo, hi = (float(getattr(v, "value", np.nan)) for v in call.args[1:3])
                if np.isfinite(lo) and np.isfinite(hi):
                    x = relax.op.maximum(call.args[0], relax.const(np.array(lo, dtype)))
                    return relax.op.minimum(x, relax.const(np.array(hi, dtype)))
            return call

    for cls in (_Rewrite, _Elementwise):
        rewriter = cls(mod)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gv] = rewriter.visit_expr(func)
    mod = relax.transform.DeadCodeElimination()(mod)
    return mod, stats


def choose(requested: str, target: Any) -> tuple[str, str]:
    """("integer" | "float", why) for compile.tvm's int8 param on this target.

    auto picks integer kernels where they were measured to pay: x86 with AVX2, where the int16
    convolutions run on vpmaddwd (MobileNetV2 QDQ 2.3-2.6x, ResNet-style 1.8-2.7x faster than
    float maths on dequantised values, 1.5-2.2x faster than fp32; docs/tvm.md). Elsewhere (ARM,
    RISC-V, x86 without AVX2) the integer convolutions would be the generic int32-multiply loops,
    which were slower than float FMAs on x86 and are not measured on those CPUs: float stays.
    """
    from heiti.nodes.tvm_int8_avx2 import has_avx2

    if requested in ("integer", "float"):
        return requested, "requested"
    if has_avx2(target):
        return "integer", "auto: AVX2 CPU, integer convolutions on vpmaddwd (faster than float here)"
    return "float", ("auto: no AVX2 on this target, integer convolutions would be int32 multiplies "
                     "(slower than float FMAs where measured); int8=integer forces them")
