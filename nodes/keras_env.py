"""Importing TensorFlow/Keras without the extras Keras pulls in, and loading a .keras file once.

Keras imports scikit-learn (for its scikit-learn wrappers) and matplotlib.pyplot (for its image
gallery helpers) as soon as it is imported, when they are installed — and Heiti installs both.
Neither is used by Heiti's Keras paths, and together they add ~2.5 s (scipy.stats included) to every
TensorFlow start on a 2-core machine. `import_keras` refuses those two imports *only when a
keras.src module asks for them*, which Keras handles as "not installed"; any other import of
scikit-learn or matplotlib, before or after, is untouched.

`load_keras` keeps the last few models a worker process loaded, keyed by the file's bytes: a
`model.file` node and the converter after it run in the same worker, and loading MobileNetV2 takes
~2 s. Callers that change a model (training, clustering) load their own copy with `fresh=True`.
Both go through `keras_load.load_model_fast` (the same weights, without running the initializers
the stored weights replace).
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

#: imports Keras (and TensorFlow's own legacy tf.keras) make at import time that Heiti never needs,
#: each inside a `try: ... except ImportError` of the importing module: scikit-learn wrappers, the
#: image gallery (matplotlib), bounding-box drawing (OpenCV), sparse inputs of the v1 training loop
#: (scipy)
_TRIMMED = frozenset({"sklearn", "matplotlib", "matplotlib.pyplot", "cv2", "scipy", "scipy.sparse"})
#: the modules whose imports of `_TRIMMED` are refused
_TRIMMING_IMPORTERS = ("keras.src", "tensorflow.python.keras")
#: TensorFlow's API packages for TFLite (tf.lite, tf.compat.v1.lite, tf.compat.v2.lite). TensorFlow's
#: own __init__ imports them, and with them the TFLite converter and its 1 MB flatbuffer schema:
#: ~0.3 s of every TensorFlow start, unused by Keras, tf2onnx and every Heiti path but the TFLite
#: converter. Each is made to run its code on its first attribute use (`_LoadOnUse`).
_DEFERRED = frozenset({"tensorflow._api.v2.lite", "tensorflow._api.v2.compat.v1.lite",
                       "tensorflow._api.v2.compat.v2.lite"})
_KEEP_MODELS = 2
_models: OrderedDict[str, Any] = OrderedDict()
_lock = threading.Lock()


class _KerasExtrasBlocker:  # a meta path finder: only find_spec is asked for
    """Says "not installed" for `_TRIMMED` modules when the importing module is part of Keras, and
    gives the `_DEFERRED` packages a lazy loader."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname in _TRIMMED and _importer_is_keras():
            raise ModuleNotFoundError(f"{fullname} is not imported for Keras inside Heiti", name=fullname)
        if fullname in _DEFERRED:
            import importlib.machinery

            spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _LoadOnUseLoader(spec.loader)
                return spec
        return None


class _LoadOnUseLoader:
    """Makes the module, and leaves running its code to its first attribute use (as
    importlib.util.LazyLoader does; that one refuses the wrapper TensorFlow's API modules put in
    sys.modules in their own place when they run)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        module.__class__ = _LoadOnUse


class _LoadOnUse(types.ModuleType):
    """A module whose code has not run yet: the first attribute asked for runs it (once, under a lock)."""

    def __getattribute__(self, attr: str) -> Any:
        with _deferred_lock:
            if type(self) is _LoadOnUse:
                self.__class__ = types.ModuleType
                self.__spec__.loader.exec_module(self)
        return getattr(self, attr)


_deferred_lock = threading.RLock()


def _importer_is_keras() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if not name.startswith(("importlib", "_frozen_importlib")) and name != __name__:
            return name.startswith(_TRIMMING_IMPORTERS)
        frame = frame.f_back
    return False


def import_keras() -> tuple[Any, Any]:
    """(tensorflow, keras), imported once per process with Keras's unused extras left out."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "keras" in sys.modules and "tensorflow" in sys.modules:
        return sys.modules["tensorflow"], sys.modules["keras"]
    blocker = _KerasExtrasBlocker()
    sys.meta_path.insert(0, blocker)
    try:
        import keras
        import tensorflow as tf
    finally:
        sys.meta_path.remove(blocker)
    api = vars(tf).get("lite")
    import tensorflow.lite.python  # noqa: F401 - empty packages, imported before any TFLite module is

    if api is not None:  # importing the package tensorflow.lite named it tf.lite: TensorFlow's name is its API's
        tf.lite = api
    return tf, keras


def load_keras(path: str | Path, fresh: bool = False) -> Any:
    """A Keras model loaded with safe_mode (no arbitrary code); shared unless `fresh`.

    A shared model must not be changed by the caller: it may be handed to the next node.
    """
    from heiti.engine.files import file_sha256
    from heiti.nodes.keras_load import load_model_fast

    if fresh:
        return load_model_fast(path)
    key = file_sha256(Path(path))
    with _lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    model = load_model_fast(path)
    with _lock:
        _models[key] = model
        while len(_models) > _KEEP_MODELS:
            _models.popitem(last=False)
    return model
