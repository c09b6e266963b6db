"""Loading a .keras file without running the initializers of the weights it then overwrites.

`keras.models.load_model` builds every layer from the config — each variable created and filled
by its initializer (random numbers, a few eager ops each) — and then assigns the stored arrays,
throwing all that work away: on MobileNetV2 (262 variables) a third of the load. It also rebuilds
the attribute skip-set of each layer it walks (a fresh `Layer()` and `dir()` per layer), because
Keras 3 caches the set under a key it never reads.

`load_model_fast` runs the same `load_model` with three changes, for the duration of the load:

- in the calling thread only, a variable created eagerly is not filled at creation: the first
  time Keras assigns it the stored array, it is created from that array (same dtype conversion,
  same TensorFlow name scope, same `trainable` flag as it would have had). A variable read eagerly
  before that, or never assigned, is filled by its initializer exactly as in the plain load;
- the skip-set is computed once per type (the same sets, for any thread that saves meanwhile);
- eager ops run as kernels, not one-op functions (`keras_eager.direct_eager_ops`, process-wide,
  the same kernels): creating 262 variables of ~100 shapes meets ~100 new kernels.

MobileNetV2 on a 2-core machine (load average ~2.5): 2.4 s -> 1.1 s (medians of 5 processes).

Anything unexpected (another backend, a distribution strategy, any error) falls back to the plain
`load_model`, which then decides — and raises its own errors for corrupt or unsafe files.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_local = threading.local()
#: one fast load at a time: the class patches are installed for its duration only
_patch_lock = threading.Lock()


def load_model_fast(path: str | Path, fallback: bool = True) -> Any:
    """`keras.models.load_model(path, safe_mode=True, compile=False)`, with the same weights.

    `fallback=False` raises what the fast path met instead of loading the plain way (for tests).
    """
    from heiti.nodes.keras_eager import direct_eager_ops
    from heiti.nodes.keras_env import import_keras

    tf, keras = import_keras()
    inside = getattr(_local, "pending", None) is not None  # a load within a load (a layer that loads one)
    if inside or keras.backend.backend() != "tensorflow" or tf.distribute.has_strategy():
        return keras.models.load_model(path, safe_mode=True, compile=False)
    try:
        with _patch_lock, _patched(tf) as pending, direct_eager_ops():
            model = keras.models.load_model(path, safe_mode=True, compile=False)
            for variable in list(pending.values()):  # not in the file (or not assigned): as the plain load leaves them
                _materialize(variable, pending, tf)
        return model
    except Exception:  # noqa: BLE001 - the plain load decides, with its own error messages
        if not fallback:
            raise
        return keras.models.load_model(path, safe_mode=True, compile=False)


@contextlib.contextmanager
def _patched(tf: Any) -> Iterator[dict[int, Any]]:
    from keras.src.backend.common import KerasVariable
    from keras.src.backend.tensorflow.core import Variable
    from keras.src.saving import saving_lib

    pending: dict[int, Any] = {}
    saved_init = Variable._initialize_with_initializer
    saved_assign = Variable._direct_assign
    saved_value = KerasVariable.value
    saved_skipset = saving_lib.get_attr_skipset
    skipsets: dict[str, Any] = {}

    def deferred_init(self: Any, initializer: Any) -> None:
        if getattr(_local, "pending", None) is None or tf.inside_function():
            return saved_init(self, initializer)
        self._value = None
        self._initializer = initializer
        self._heiti_deferred = (tf.get_current_name_scope(), self._trainable, saved_init)
        pending[id(self)] = self
        return None

    def assign_or_create(self: Any, value: Any) -> None:
        if self._value is None and pending.pop(id(self), None) is not None:
            with _created_as_deferred(self, tf):
                self._initialize(value)  # `value` is already converted to the variable's dtype and checked
            return None
        return saved_assign(self, value)

    def value(self: Any) -> Any:
        if self._value is None and id(self) in pending and not tf.inside_function():
            _materialize(self, pending, tf)  # read eagerly before being loaded: it holds what the plain load gives
        return saved_value.fget(self)

    def skipset(obj_type: str) -> Any:
        if obj_type not in skipsets:
            skipsets[obj_type] = saved_skipset(obj_type)
        return skipsets[obj_type]

    _local.pending = pending
    Variable._initialize_with_initializer = deferred_init
    Variable._direct_assign = assign_or_create
    KerasVariable.value = property(value)
    saving_lib.get_attr_skipset = skipset
    try:
        yield pending
    finally:
        saving_lib.get_attr_skipset = saved_skipset
        KerasVariable.value = saved_value
        Variable._direct_assign = saved_assign
        Variable._initialize_with_initializer = saved_init
        _local.pending = None


@contextlib.contextmanager
def _created_as_deferred(variable: Any, tf: Any) -> Iterator[Any]:
    """Yields Keras's own initializer-filling method, under the TensorFlow name scope and with the
    trainable flag the variable had when Keras created it."""
    scope, trainable, initialize_with_initializer = variable._heiti_deferred
    now = variable._trainable
    variable._trainable = trainable
    try:
        with tf.name_scope(scope + "/" if scope else ""):
            yield initialize_with_initializer
    finally:
        variable._trainable = now
        variable._initializer = None
        del variable._heiti_deferred


def _materialize(variable: Any, pending: dict[int, Any], tf: Any) -> None:
    """Filled by its initializer, as the plain load does at creation."""
    pending.pop(id(variable), None)
    initializer = variable._initializer
    with _created_as_deferred(variable, tf) as initialize_with_initializer:
        initialize_with_initializer(variable, initializer)
