"""TensorFlow/Keras started without Keras's unused extras; a .keras file loaded once per worker;
tf2onnx's shortcuts give the same graph as its plain path and fall back to it when they fail. Run in a fresh interpreter: what is imported
depends on what the process imported before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = r"""
import json, shutil, sys
from pathlib import Path
import numpy as np

from heiti.nodes.keras_env import import_keras, load_keras

tf, keras = import_keras()
report = {"trimmed": [m for m in ("sklearn", "matplotlib", "cv2", "scipy") if m in sys.modules]}
import sklearn.utils  # anyone else may still import them
report["sklearn_later"] = "sklearn.utils" in sys.modules

folder = Path(sys.argv[1])
inputs = keras.Input(shape=(8, 8, 3), name="input")
x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.ReLU(6.0)(x)
x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
keras.Model(inputs, keras.layers.Dense(3)(x)).save(folder / "a.keras")
shutil.copyfile(folder / "a.keras", folder / "b.keras")
a, b = load_keras(folder / "a.keras"), load_keras(folder / "b.keras")
report["shared_by_bytes"] = a is b
report["fresh_is_new"] = load_keras(folder / "a.keras", fresh=True) is not a

from heiti.nodes.keras_onnx import tf_function_to_onnx
import onnxruntime as ort
sys.path.insert(0, sys.argv[2])
from tests.onnx_structure import structure
spec = tf.TensorSpec([1, 8, 8, 3], tf.float32, name="input")
sample = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)

def convert(shortcuts):
    function = tf.function(lambda t: a(t, training=False), input_signature=[spec])
    return tf_function_to_onnx(function, spec, 17, ["input:0"], shortcuts=shortcuts)

def outputs(proto):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: sample.transpose(0, 3, 1, 2)})[0]

plain = convert(False)
phases = {}
function = tf.function(lambda t: a(t, training=False), input_signature=[spec], autograph=False)
fast = tf_function_to_onnx(function, spec, 17, ["input:0"], phases=phases)
report["phases"] = sorted(phases)
report["nodes"] = [len(plain.graph.node), len(fast.graph.node)]
report["same_structure"] = structure(plain) == structure(fast)
report["same_outputs"] = bool(np.array_equal(outputs(plain), outputs(fast)))

# an optimizer that fails with the shortcuts (no safety copies): the conversion is retried the plain way
import tf2onnx.optimizer.transpose_optimizer as transpose
calls = []
original = transpose.TransposeOptimizer._optimize
def failing(self, graph):
    calls.append(1)
    raise RuntimeError("optimizer broke")
transpose.TransposeOptimizer._optimize = failing
proto = convert(True)
transpose.TransposeOptimizer._optimize = original
got = outputs(proto)
report["retried"] = len(calls)
import tf2onnx.tf_loader, tf2onnx.optimizer.optimizer_base as base
report["patches_undone"] = all(f.__module__ != "heiti.nodes.keras_onnx" for f in (
    tf2onnx.tf_loader.convert_variables_to_constants_v2, tf2onnx.tf_loader.tf_optimize,
    base.GraphOptimizerBase.optimize))
from tests.tolerance import keras_fp32_atol
report["excess"] = float((np.abs(got - a(sample).numpy()) - keras_fp32_atol(a, sample)).max())
report["env_restored"] = "TF2ONNX_CATCH_ERRORS" not in __import__("os").environ
report["tflite_deferred"] = "tensorflow.lite.python.lite" not in sys.modules  # Keras and tf2onnx never needed it
import tensorflow.lite.python.lite  # as the TFLite converter's imports made ahead do, before tf.lite is used
report["tflite_on_use"] = (callable(tf.lite.TFLiteConverter.from_keras_model) and callable(tf.compat.v1.lite.Interpreter)
                           and tf.lite.Optimize.DEFAULT is not None)  # tf.lite is still the API once loaded
print("REPORT " + json.dumps(report))
"""


def test_keras_starts_lean_loads_once_and_converts_despite_a_failing_optimizer(tmp_path: Path) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF2ONNX_CATCH_ERRORS", None)
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(ROOT)], capture_output=True, text=True,
                          env=env, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["trimmed"] == []
    assert report["sklearn_later"]
    assert report["shared_by_bytes"] and report["fresh_is_new"]
    # same graph (up to tf2onnx's generated names), so ONNX Runtime computes the same bits
    assert report["nodes"][0] == report["nodes"][1] > 4
    assert report["same_structure"] and report["same_outputs"]
    assert report["phases"] == sorted(["trace", "freeze", "grappler", "optimizers", "tf2onnx_rest"])
    # the shortcut path hit the failure (once per pass it ran), the careful path hit it again and skipped it
    assert report["retried"] >= 2
    assert report["env_restored"] and report["patches_undone"]
    assert report["tflite_deferred"] and report["tflite_on_use"]
    assert report["excess"] <= 0, "ONNX Runtime differs from Keras beyond the fp32 rounding bound"


LOAD_SCRIPT = r"""
import json, sys, threading
from pathlib import Path
import numpy as np

from heiti.nodes.keras_env import import_keras
from heiti.nodes import keras_load

tf, keras = import_keras()
from keras.src.backend.tensorflow.core import Variable
originals = (Variable._initialize_with_initializer, Variable._direct_assign, keras.Variable.value)
folder = Path(sys.argv[1])
rng = np.random.default_rng(1)
inputs = keras.Input(shape=(8, 8, 3), name="input")
x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
frozen = keras.layers.BatchNormalization()
x = frozen(x)
x = keras.layers.ReLU(6.0)(x)
x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
x = keras.Sequential([keras.layers.Conv2D(5, 1), keras.layers.BatchNormalization()], name="inner")(x)
x = keras.layers.GlobalAveragePooling2D()(x)
x = keras.layers.Dropout(0.5, seed=3)(x)
model = keras.Model(inputs, keras.layers.Dense(3)(x))
frozen.trainable = False
for v in model.weights:  # stored values unlike any initializer's (BatchNorm's ones and zeros too)
    if v.dtype == "float32":
        values = rng.normal(size=v.shape).astype("float32")
        v.assign(np.abs(values) + 0.5 if "variance" in v.path else values)
model.save(folder / "m.keras")

fast = keras_load.load_model_fast(folder / "m.keras", fallback=False)
restored = (Variable._initialize_with_initializer, Variable._direct_assign, keras.Variable.value) == originals
plain = keras.models.load_model(folder / "m.keras", safe_mode=True, compile=False)
a, b = fast.weights, plain.weights
report = {
    "paths": [v.path for v in a] == [v.path for v in b],
    "tf_names": [v.value.name for v in a] == [v.value.name for v in b],
    "tf_trainable": [v.value.trainable for v in a] == [v.value.trainable for v in b],
    "keras_trainable": [v.trainable for v in a] == [v.trainable for v in b],
    "frozen_layer_vars": sum(not v.trainable for v in a),
}
# values: the weights and the Dropout's (seeded) generator state, whose name numbers differ per load
a, b = fast.variables, plain.variables
report |= {
    "count": [len(a), len(b)],
    "equal": [bool(np.array_equal(x.numpy(), y.numpy())) for x, y in zip(a, b)],
    "dtypes": [str(x.numpy().dtype) == str(y.numpy().dtype) for x, y in zip(a, b)],
    "same_as_saved_weights": all(bool(np.array_equal(x.numpy(), y.numpy())) for x, y in zip(fast.weights, model.weights)),
    "restored": restored,
}
sample = rng.random((2, 8, 8, 3), dtype=np.float32)
report["same_predictions"] = bool(np.array_equal(fast(sample).numpy(), plain(sample).numpy()))
report["same_as_saved"] = bool(np.array_equal(fast(sample).numpy(), model(sample).numpy()))

# while a load is deferring in this thread, a variable another thread creates is filled at once
created = {}
with keras_load._patched(tf):
    mine = keras.Variable(keras.initializers.Ones(), shape=(2,), name="mine")
    worker = threading.Thread(target=lambda: created.update(v=keras.Variable(keras.initializers.Ones(), shape=(2,))))
    worker.start(); worker.join()
    report["other_thread_filled"] = created["v"]._value is not None
    report["this_thread_deferred"] = mine._value is None
    report["read_before_load"] = mine.numpy().tolist()  # an eager read fills it with its initializer
report["restored_after_patch"] = (Variable._initialize_with_initializer, Variable._direct_assign,
                                  keras.Variable.value) == originals

# eager ops run as kernels inside the block compute what the one-op functions compute; nesting is fine
from heiti.nodes.keras_eager import direct_eager_ops
m1, m2 = rng.random((37, 53), dtype=np.float32), rng.random((53, 29), dtype=np.float32)
outside = tf.nn.relu(tf.matmul(m1, m2) - 10.0).numpy()
with direct_eager_ops():
    with direct_eager_ops():
        inside = tf.nn.relu(tf.matmul(m1, m2) - 10.0).numpy()
    again = tf.nn.relu(tf.matmul(m2.T, m1.T) - 10.0).numpy()
report["direct_same"] = bool(np.array_equal(outside, inside)) and bool(np.array_equal(
    again, tf.nn.relu(tf.matmul(m2.T, m1.T) - 10.0).numpy()))

def error(load, path):
    try:
        load(path)
    except Exception as err:
        return [type(err).__name__, str(err)]
    return None

(folder / "corrupt.keras").write_bytes((folder / "m.keras").read_bytes()[:2000])
lam = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
lam.save(folder / "lambda.keras")
for name in ("corrupt", "lambda"):
    path = folder / f"{name}.keras"
    report[name] = [error(keras_load.load_model_fast, path),
                    error(lambda p: keras.models.load_model(p, safe_mode=True, compile=False), path)]
report["restored_after_errors"] = (Variable._initialize_with_initializer, Variable._direct_assign,
                                   keras.Variable.value) == originals
print("REPORT " + json.dumps(report))
"""


def test_fast_keras_load_gives_the_plain_loads_weights_bit_for_bit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, done.stderr[-3000:]
    report = json.loads(lines[-1][len("REPORT "):])
    count = report["count"][0]
    # conv, 2 x 4 BatchNorm, depthwise x2, nested conv x2, dense x2, Dropout's seed state
    assert report["count"] == [count, count] and count >= 16
    assert report["paths"] and report["tf_names"] and report["tf_trainable"] and report["keras_trainable"]
    assert report["frozen_layer_vars"] >= 4
    assert report["equal"] == [True] * count and report["dtypes"] == [True] * count
    assert report["same_as_saved_weights"]
    assert report["same_predictions"] and report["same_as_saved"]
    assert report["other_thread_filled"] and report["this_thread_deferred"]
    assert report["read_before_load"] == [1.0, 1.0]
    assert report["direct_same"]
    assert report["restored"] and report["restored_after_patch"] and report["restored_after_errors"]
    for name in ("corrupt", "lambda"):
        fast, plain = report[name]
        assert plain is not None and fast == plain, name
    assert "safe_mode" in report["lambda"][1][1] or "lambda" in report["lambda"][1][1].lower()
