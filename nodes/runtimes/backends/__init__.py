"""Runtime back-ends: one small class per inference framework, shared by the in-process runtime
nodes and by `heiti serve` on a device, so that both run a model exactly the same way.

Contract (kept free of framework imports at module top):

    session = open_session("onnxruntime", "/path/model.onnx", {"threads": 2})
    session.inputs   -> [{"name": str, "shape": [int|None, ...], "dtype": "float32"|"int8"|...}]
    session.outputs  -> same shape of description
    outs = session.run([np.ndarray, ...])   # float inputs in, float outputs out (int8 models
                                            # are quantised/dequantised inside the session)
    session.close()

The measurement loop splits `run` into steps so that only the framework's own call is timed:

    feed = session.prepare(inputs)      # before the loop: dtype casts, quantisation, tensors
    session.stage(feed)                 # untimed: copy into the runtime's input buffers
    raw = session.run_prepared(feed)    # TIMED: the runtime call itself
    outs = session.finish(raw)          # untimed (post-processing): fetch, dequantise, to numpy

Sessions derived from `BaseSession` get these steps (and `run`) for free; a session with only
`run` (a remote one, say) still works: `session_steps` wraps it.

Options every back-end understands (others ignore what they do not use): `threads` (0 = the
framework's default), `batch_size` (LiteRT resizes a batch-1 model), `meta` (the ModelArtifact's
meta: torch's arch, OpenVINO's precision hint), `inputs`/`outputs` (the ModelArtifact's
descriptions, which TVM needs for names and dtypes). Back-end specific ones are documented on
each session class.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np


class Session(Protocol):
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None: ...


class BaseSession:
    """Shared shape of the in-process sessions: `run` composed from the four steps."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]

    def prepare(self, inputs: list[np.ndarray]) -> Any:
        return [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]

    def stage(self, feed: Any) -> None:
        """Copy a prepared feed into input buffers (runtimes that have them)."""

    def run_prepared(self, feed: Any) -> Any:
        raise NotImplementedError

    def finish(self, raw: Any) -> list[np.ndarray]:
        return [np.asarray(x) for x in raw]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        feed = self.prepare(inputs)
        self.stage(feed)
        return self.finish(self.run_prepared(feed))

    def close(self) -> None:
        """Release the runtime; the default drops references and lets the GC do it."""

    def __enter__(self) -> BaseSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def session_steps(session: Any) -> tuple[Any, Any, Any, Any]:
    """(prepare, stage, run_prepared, finish) of any session; a run-only one gets pass-throughs."""
    if all(hasattr(session, name) for name in ("prepare", "stage", "run_prepared", "finish")):
        stage = session.stage
        if getattr(type(session), "stage", None) is BaseSession.stage:
            stage = None  # a no-op: spare the loop a call per inference
        return session.prepare, stage, session.run_prepared, session.finish
    return (lambda inputs: [np.ascontiguousarray(x) for x in inputs]), None, session.run, None


def describe_dtype(dtype: Any) -> str:
    """A numpy-style dtype name for any framework's dtype object."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).replace("tensor(", "").replace(")", "").replace("torch.", "")


class BackendUnavailable(RuntimeError):
    """The framework for this runtime is not installed here (reported in HELLO as unavailable)."""


def _runtime_classes() -> dict[str, Any]:
    """Runtime name -> node class, from the registered kinds: each class names its session."""
    from heiti.nodes.runtimes import runtime_classes

    return runtime_classes()


def load_session(runtime_class: Any, model_path: str, options: dict[str, Any] | None = None) -> Session:
    """Open the session a runtime class declares (`session = "module:Class"`)."""
    module_name, _, factory = str(runtime_class.session).partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise BackendUnavailable(f"runtime {runtime_class.runtime!r} is not available here: {err}") from err
    return getattr(module, factory)(str(model_path), dict(options or {}))


def open_session(runtime: str, model_path: str, options: dict[str, Any] | None = None) -> Session:
    classes = _runtime_classes()
    if runtime not in classes:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(sorted(classes))}")
    return load_session(classes[runtime], model_path, options)


def available_runtimes() -> list[str]:
    """Runtimes whose framework can be imported here (looked up without importing it)."""
    return [name for name, cls in _runtime_classes().items() if cls.available()]
