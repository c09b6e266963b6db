"""Apache TVM Relax virtual machine on the host CPU, running a compiled library (.so).

Inputs become `tvm.runtime.tensor`s in `prepare`, before the measurement loop, so the timed call is
the VM's `main` alone. Models imported through the torch frontend return a tuple of outputs; the
session flattens whatever nesting comes back into a list of numpy arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from heiti.nodes.runtimes.backends import BaseSession


def _flatten(value: Any, out: list[np.ndarray]) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        out.append(value.numpy())
    elif isinstance(value, np.ndarray):
        out.append(value)
    else:  # an ffi Array / tuple of outputs, possibly nested
        for item in value:
            _flatten(item, out)
    return out


def _physical_cores() -> int:
    import psutil

    return int(psutil.cpu_count(logical=False) or psutil.cpu_count() or 1)


class TVMSession(BaseSession):
    """options: threads (TVM's thread pool size, 0 = TVM's default: TVM_NUM_THREADS or the physical
    cores), entry (function name, "main"),
    inputs / outputs (the ModelArtifact's descriptions, used for names, shapes and dtypes)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        path = Path(model_path)
        if path.suffix == ".tar":
            raise ValueError(f"{path.name} is a cross-compiled archive for another CPU; "
                             "link it on the device or compile for the host to run it here")
        threads = int(options.get("threads", 0) or 0)
        if threads:  # read when TVM's thread pool starts; config_threadpool resizes a pool already running
            os.environ["TVM_NUM_THREADS"] = str(threads)
        import tvm

        # tvm.runtime.vm.VirtualMachine is relax.VirtualMachine, and also works with TVM's
        # runtime-only library (TVM_USE_RUNTIME_LIB=1, as on an emulated board)
        from tvm.runtime.vm import VirtualMachine

        if threads:
            configure = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
            if configure is not None:
                configure(1, threads)  # mode 1 ("big" cores) = every core on a homogeneous CPU
        self.threads = threads or int(os.environ.get("TVM_NUM_THREADS", 0) or 0) or _physical_cores()
        self._dev = tvm.cpu(0)
        self._lib = tvm.runtime.load_module(str(path))
        self._vm = VirtualMachine(self._lib, self._dev)
        self._main = self._vm[str(options.get("entry", "main"))]
        self._tensor = tvm.runtime.tensor
        self.inputs = [dict(d) for d in options.get("inputs") or []]
        self.outputs = [dict(d) for d in options.get("outputs") or []]
        for d in self.inputs:
            d.setdefault("dtype", "float32")
        self.version = tvm.__version__

    def prepare(self, inputs: list[np.ndarray]) -> list[Any]:
        if self.inputs and len(inputs) != len(self.inputs):
            raise ValueError(f"model takes {len(self.inputs)} input(s), got {len(inputs)}")
        dtypes = [d.get("dtype", "float32") for d in self.inputs] or ["float32"] * len(inputs)
        return [self._tensor(np.ascontiguousarray(x, dtype=dt), self._dev)
                for x, dt in zip(inputs, dtypes, strict=True)]

    def run_prepared(self, feed: list[Any]) -> Any:
        return self._main(*feed)

    def finish(self, raw: Any) -> list[np.ndarray]:
        return _flatten(raw, [])

    def close(self) -> None:
        self._main = None
        self._vm = None
        self._lib = None
