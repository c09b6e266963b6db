"""PyTorch eager on the CPU: a state_dict rebuilt through its architecture (nodes.torch_arch), or a
`torch.export` program (.pt2). Weights load with `weights_only=True`; nothing is unpickled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from heiti.nodes.runtimes.backends import BaseSession


def _flatten(value: Any, out: list[np.ndarray]) -> list[np.ndarray]:
    if hasattr(value, "detach"):
        out.append(value.detach().cpu().numpy())
    elif isinstance(value, dict):
        for item in value.values():
            _flatten(item, out)
    else:
        for item in value:
            _flatten(item, out)
    return out


class TorchSession(BaseSession):
    """options: threads (torch intra-op threads, 0 = leave as is), meta (arch, arch_config for a
    state_dict), inputs (the ModelArtifact's input descriptions)."""

    def __init__(self, model_path: str, options: dict[str, Any]) -> None:
        import torch

        threads = int(options.get("threads", 0) or 0)
        if threads:
            torch.set_num_threads(threads)
        path = Path(model_path)
        meta = dict(options.get("meta") or {})
        if path.suffix == ".pt2":
            program = torch.export.load(str(path))
            self._module = program.module()
        else:
            from heiti.nodes.torch_arch import load_model

            if "arch" not in meta:
                meta = {}  # let load_model read the sidecar next to the weights
            self._module = load_model(path, meta or None)
        if hasattr(self._module, "eval"):
            try:
                self._module.eval()
            except (NotImplementedError, RuntimeError):
                pass  # exported programs refuse train/eval switching; they are traced in eval
        self._torch = torch
        self._inference = torch.inference_mode
        self.inputs = [dict(d) for d in options.get("inputs") or []]
        self.outputs = [dict(d) for d in options.get("outputs") or []]
        if not self.inputs and meta.get("input_shape"):
            self.inputs = [{"name": "input", "shape": [None, *meta["input_shape"]], "dtype": "float32"}]
        self.version = torch.__version__

    def prepare(self, inputs: list[np.ndarray]) -> list[Any]:
        return [self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in inputs]

    def run_prepared(self, feed: list[Any]) -> Any:
        with self._inference():
            return self._module(*feed)

    def finish(self, raw: Any) -> list[np.ndarray]:
        return _flatten(raw, [])

    def close(self) -> None:
        self._module = None
