"""Keras 3 (TensorFlow backend) from a `.keras` file loaded with `safe_mode=True`.

The timed call is `predict_on_batch`, which runs Keras's compiled predict function: the way a
Keras user would run one batch, without `predict`'s per-call dataset machinery.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from heiti.nodes.runtimes.backends import BaseSession, describe_dtype


def _threads(n: int) -> None:
    """TensorFlow takes thread counts only before its runtime starts; later calls are ignored."""
    from heiti.nodes.keras_env import import_keras

    tf, _keras = import_keras()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


class KerasSession(BaseSession):
    """options: threads (TensorFlow intra-op threads, only effective before TF starts)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        threads = int(options.get("threads", 0) or 0)
        if threads:
            _threads(threads)
        from heiti.nodes.keras_env import import_keras, load_keras

        _tf, keras = import_keras()
        self._model = load_keras(model_path)
        self.inputs = [{"name": getattr(t, "name", f"input{i}"),
                        "shape": [d if isinstance(d, int) else None for d in t.shape],
                        "dtype": describe_dtype(getattr(t, "dtype", "float32"))}
                       for i, t in enumerate(self._model.inputs)]
        self.outputs = [{"name": getattr(t, "name", f"output{i}"),
                         "shape": [d if isinstance(d, int) else None for d in t.shape],
                         "dtype": describe_dtype(getattr(t, "dtype", "float32"))}
                        for i, t in enumerate(self._model.outputs)]
        self.version = keras.__version__

    def prepare(self, inputs: list[np.ndarray]) -> Any:
        feed = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        return feed[0] if len(feed) == 1 else feed

    def run_prepared(self, feed: Any) -> Any:
        return self._model.predict_on_batch(feed)

    def finish(self, raw: Any) -> list[np.ndarray]:
        if isinstance(raw, dict):
            return [np.asarray(v) for v in raw.values()]
        if isinstance(raw, list | tuple):
            return [np.asarray(v) for v in raw]
        return [np.asarray(raw)]

    def close(self) -> None:
        self._model = None
