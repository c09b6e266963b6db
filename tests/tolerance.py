"""Numeric tolerances derived from the model, valid on any x86-64 CPU.

fp32 — two runtimes evaluating the same network differ because they sum in different orders
(tiling, SIMD width, threads), fuse differently and use FMA or not. An fp32 sum of n products
x_i·w_i carries a rounding error of at most λ·√n·u·Σ|x_i·w_i| with probability at least
1 − 2·exp(−λ²/2) (Higham & Mary 2019, rounding errors as independent, mean-zero; the deterministic
worst case n·u is never approached in practice but would be the bound for adversarial data);
u = 2⁻²⁴ is fp32's unit roundoff. We take λ = 8: a spurious failure has probability below 3e-14
per output element. Errors made in a layer travel to the outputs through later layers, bounded by
the absolute values of their weights, so with M = the outputs of the *absolute network* (every
float weight |w|, batch-norm means −|μ|, input |x|: the magnitude of the accumulated terms, per
output element) an output element of either runtime is within λ·u·M·Σ_l √(n_l + 1) of the exact
value, n_l being the fan-in of layer l (one more rounding for its bias). Two runtimes: twice that.
ReLU and max-pooling are 1-Lipschitz and exact; they do not add error.

The bound is conservative: the absolute network adds every term with the same sign, while real
errors cancel. On trained networks it sits a few hundred times above the errors seen and still
fails a runtime computing in bf16 (tests/nodes/test_tolerance_helper.py); on random untrained
networks, whose outputs cancel to near zero, it is far looser.

int8 — see `qdq_output_step` and `tflite_output_step`: the quantisation step of the output, read
from the model; tests add arg-max agreement.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

#: fp32 unit roundoff (half the machine epsilon)
U32 = float(np.finfo(np.float32).eps) / 2
#: probabilistic-bound confidence: P(one element exceeds) <= 2·exp(-LAMBDA²/2) ≈ 2.5e-14
LAMBDA = 8.0
#: ops through which the absolute network bounds the magnitude of accumulated terms
_ONNX_OPS = {"Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "MaxPool", "AveragePool", "GlobalAveragePool",
             "Flatten", "Reshape", "Transpose", "Identity", "Concat", "BatchNormalization", "Squeeze", "Unsqueeze",
             "Shape", "Gather", "Constant", "Cast", "Pad", "ReduceMean", "ReduceSum", "Clip"}


def fp32_atol(magnitude: np.ndarray | float, root_terms: float, implementations: int = 2) -> np.ndarray:
    """Per-element tolerance between fp32 results: implementations·λ·u·M·Σ√(n_l+1)."""
    return implementations * LAMBDA * U32 * np.asarray(magnitude, dtype=np.float64) * root_terms


def assert_fp32_close(actual: np.ndarray, reference: np.ndarray, atol: np.ndarray, what: str = "") -> None:
    """Every element within its own derived tolerance; the message says by how much it missed."""
    actual, reference = np.asarray(actual, np.float64), np.asarray(reference, np.float64)
    assert actual.shape == reference.shape, f"{what} shapes {actual.shape} != {reference.shape}"
    diff = np.abs(actual - reference)
    bound = np.broadcast_to(atol, diff.shape)
    worst = np.unravel_index(np.argmax(diff - bound), diff.shape)
    assert np.all(diff <= bound), (f"{what} differs by {diff[worst]:.3g} at {worst}, over its fp32 tolerance "
                                   f"{bound[worst]:.3g} (largest difference {diff.max():.3g})")


# --- ONNX ------------------------------------------------------------------------------------------
def onnx_fp32_atol(path: Path | str, x: np.ndarray, output: int = 0) -> np.ndarray:
    """Tolerance per output element of an fp32 ONNX model on inputs `x` (a float array, the first input)."""
    import onnx

    model = onnx.load(str(path))
    return fp32_atol(_onnx_magnitude(model, x, output), _onnx_root_terms(model))


def _onnx_root_terms(model: Any) -> float:
    import onnx
    from onnx import numpy_helper

    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.input, *inferred.value_info, *inferred.output]}
    total = 0.0
    for node in model.graph.node:
        if node.op_type in ("ReduceMean", "ReduceSum"):  # a sum over the reduced axes
            shape = shapes.get(node.input[0])
            axes = weights.get(node.input[1]) if len(node.input) > 1 else next(
                (list(a.ints) for a in node.attribute if a.name == "axes"), None)
            if shape is None or None in shape:
                raise ValueError(f"{node.op_type} over an unknown shape: cannot count its terms")
            reduced = range(len(shape)) if axes is None else [int(a) % len(shape) for a in np.ravel(axes)]
            total += np.sqrt(np.prod([shape[a] for a in reduced]) + 1)
            continue
        w = weights.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and w is not None:
            total += np.sqrt(np.prod(w.shape[1:]) + 1)
        elif node.op_type == "Gemm" and w is not None:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            total += np.sqrt(w.shape[1 if trans_b else 0] + 1)
        elif node.op_type == "MatMul" and w is not None:
            total += np.sqrt(w.shape[-2] + 1)
        elif node.op_type == "Add":
            total += 1.0  # one rounding
    if total == 0:
        raise ValueError("no Conv, Gemm, MatMul or reduction: cannot derive an fp32 tolerance")
    return float(total)


def _bound_clips(model: Any) -> None:
    """Clip adds no rounding and |clip(v, lo, hi)| <= min(|v|, max(|lo|, |hi|)): in the absolute
    network it becomes clip(v, 0, max(|lo|, |hi|)), a bound on the magnitude (ReLU6: unchanged)."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Clip" or len(node.input) < 2:
            continue  # opset < 11 keeps min/max as attributes; none of the tests' models is that old
        bounds = [np.abs(values[name]).max() for name in node.input[1:3] if name]
        if any(name and name not in values for name in node.input[1:3]):
            raise ValueError("a Clip whose bounds are computed: cannot bound it")
        for k, value in ((1, 0.0), (2, max(bounds, default=np.inf))):
            name = f"__abs_clip{i}_{k}"
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
            if len(node.input) > k:
                node.input[k] = name
            else:
                node.input.append(name)


def _onnx_magnitude(model: Any, x: np.ndarray, output: int) -> np.ndarray:
    import onnxruntime as ort
    from onnx import numpy_helper

    absolute = copy.deepcopy(model)
    unknown = {n.op_type for n in absolute.graph.node} - _ONNX_OPS
    if unknown:
        raise ValueError(f"the absolute network does not bound ops {sorted(unknown)}")
    bn_means = {n.input[3] for n in absolute.graph.node if n.op_type == "BatchNormalization"}
    for tensor in absolute.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.dtype.kind == "f":
            array = -np.abs(array) if tensor.name in bn_means else np.abs(array)
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    for node in absolute.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            array = numpy_helper.to_array(node.attribute[0].t)
            if array.dtype.kind == "f":
                node.attribute[0].t.CopyFrom(numpy_helper.from_array(np.abs(array), node.attribute[0].t.name))
    _bound_clips(absolute)
    session = ort.InferenceSession(absolute.SerializeToString(), providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    batch = first.shape[0] if first.shape and isinstance(first.shape[0], int) else len(x)
    x = np.abs(x).astype(np.float32)
    return np.concatenate([session.run(None, {first.name: x[i:i + batch]})[output] for i in range(0, len(x), batch)])


# --- torch -----------------------------------------------------------------------------------------
def torch_fp32_atol(module: Any, x: np.ndarray) -> np.ndarray:
    """Tolerance per output element of a torch network (eval mode) on inputs `x`."""
    import torch

    absolute = copy.deepcopy(module).eval()
    root_terms = 0.0
    with torch.no_grad():
        for layer in absolute.modules():
            if isinstance(layer, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Conv3d | torch.nn.Linear):
                root_terms += float(np.sqrt(layer.weight[0].numel() + 1))
            elif isinstance(layer, torch.nn.Softmax | torch.nn.Sigmoid | torch.nn.Tanh):
                raise ValueError(f"the absolute network does not bound {type(layer).__name__}")
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.running_mean is not None:
                layer.running_mean.copy_(-layer.running_mean.abs())
        for param in absolute.parameters():
            param.abs_()
        magnitude = absolute(torch.from_numpy(np.abs(x).astype(np.float32)))
    magnitude = magnitude[0] if isinstance(magnitude, tuple | list) else magnitude
    return fp32_atol(magnitude.numpy(), root_terms)


# --- Keras -----------------------------------------------------------------------------------------
def keras_fp32_atol(model: Any, x: np.ndarray) -> np.ndarray:
    """Tolerance per output element of a Keras network (Conv/Dense/pooling/ReLU) on inputs `x`."""
    import keras

    absolute = keras.models.clone_model(model)
    root_terms = 0.0
    for layer, original in zip(absolute.layers, model.layers, strict=True):
        weights = original.get_weights()
        activation = getattr(layer, "activation", None)
        if activation is not None and activation.__name__ not in ("linear", "relu"):
            raise ValueError(f"the absolute network does not bound activation {activation.__name__}")
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense) and weights:
            root_terms += float(np.sqrt(np.prod(weights[0].shape[:-1]) + 1))
        if isinstance(layer, keras.layers.BatchNormalization):
            weights = [np.abs(w) for w in weights]
            weights[-2] = -weights[-2]  # moving mean
        else:
            weights = [np.abs(w) for w in weights]
        layer.set_weights(weights)
    magnitude = np.asarray(absolute.predict(np.abs(x).astype(np.float32), verbose=0))
    return fp32_atol(magnitude, root_terms)


# --- int8 ------------------------------------------------------------------------------------------
def qdq_output_step(path: Path | str) -> float:
    """The quantisation step of a QDQ ONNX model's output: the scale of the DequantizeLinear producing it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
                   if n.op_type == "Constant"})
    producer = {out: n for n in model.graph.node for out in n.output}
    node = producer[model.graph.output[0].name]
    while node.op_type != "DequantizeLinear":  # e.g. a float Flatten/Reshape after the last DQ
        node = producer[node.input[0]]
    return float(np.max(consts[node.input[1]]))


def dequantised_atol(steps: float, scale: float, values: np.ndarray) -> float:
    """`steps` quantisation steps, plus the fp32 rounding of (q − zero)·scale on either side."""
    return steps * scale + 2 * U32 * float(np.abs(values).max())


def decided(reference: np.ndarray, atol: np.ndarray) -> np.ndarray:
    """Rows whose arg-max no fp32 difference within `atol` can change: the top two reference logits are
    further apart than their two tolerances. Elsewhere two correct runtimes may pick different classes."""
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    atol = np.broadcast_to(np.asarray(atol, np.float64).reshape(len(reference), -1), reference.shape)
    top2 = np.argsort(reference, axis=1)[:, -2:]
    rows = np.arange(len(reference))
    margin = reference[rows, top2[:, 1]] - reference[rows, top2[:, 0]]
    return margin > atol[rows, top2[:, 1]] + atol[rows, top2[:, 0]]
