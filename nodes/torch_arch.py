"""Torch architectures built in code, by name, so a model is (arch, arch_config, state_dict).

A torch model in Heiti is saved as a plain state_dict (`model.pt`, loaded with
`torch.load(weights_only=True)`, never unpickled) plus the name of its architecture and the
config that builds it. Everything that must rebuild the module — training, pruning, export to
ONNX, the torch runtime — goes through this registry. A sidecar `model.json` next to the weights
repeats arch, arch_config, input_shape and class_names so a file alone can be reloaded
(`load_model(weights_path)`).

Registering an architecture (torch is imported lazily: do it inside the functions)::

    register_arch(
        "centernet",
        build=lambda config: MyDetector(**config),          # config dict -> nn.Module
        loss=my_loss,                                        # optional, see below
        make_batches=my_batches,                             # optional, see below
        output_names=["heatmap", "size", "offset"],          # ONNX output names
    )

Hooks (the defaults do classification with cross-entropy over x/y arrays):

- ``make_batches(data, split, batch_size, rng) -> Iterable[batch]``: `data` is the opened dataset
  .npz (a mapping name -> np.ndarray, already loaded), `split` is "train", "val" or "test",
  `rng` is a `numpy.random.Generator` for shuffling (None: keep the order, used for evaluation).
  A batch is whatever the loss understands; the default yields `(x, y)` torch tensors.
- ``loss(model, batch) -> (loss_tensor, stats)``: runs the model on a batch and returns the
  scalar loss to back-propagate and a dict of numbers for this batch. `stats` must hold
  "count" (samples in the batch) and may hold "correct" (samples classified right); when every
  batch has "correct", train.torch reports train_acc / val_acc, otherwise only the losses.

Built-in: "cnn", a small configurable classification CNN (see `build_cnn`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

Batch = Any
MakeBatches = Callable[[Mapping[str, "np.ndarray"], str, int, "np.random.Generator | None"], Iterable[Batch]]
LossFn = Callable[[Any, Batch], tuple[Any, dict[str, float]]]


@dataclass
class Arch:
    name: str
    build: Callable[[dict[str, Any]], Any]
    loss: LossFn
    make_batches: MakeBatches
    output_names: list[str] = field(default_factory=lambda: ["logits"])
    #: optional task metric after each epoch: evaluate(module, dataset, split, meta) -> {name: value},
    #: shown as val_<name> metrics while training and as test_<name> in the model's meta
    evaluate: Callable[..., dict[str, float]] | None = None


_ARCHS: dict[str, Arch] = {}


def classification_batches(data: Mapping[str, np.ndarray], split: str, batch_size: int,
                           rng: np.random.Generator | None) -> Iterable[tuple[Any, Any]]:
    """Default batch maker: (x, y) tensors from x_<split>, y_<split>; shuffled when rng is given."""
    import numpy as np
    import torch

    x, y = data[f"x_{split}"], data[f"y_{split}"]
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield torch.from_numpy(np.ascontiguousarray(x[idx], dtype=np.float32)), torch.from_numpy(y[idx].astype(np.int64))


def classification_loss(model: Any, batch: tuple[Any, Any]) -> tuple[Any, dict[str, float]]:
    """Default loss: cross-entropy of the logits, with the count of right answers."""
    import torch.nn.functional as F

    x, y = batch
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    correct = int((logits.argmax(dim=1) == y).sum())
    return loss, {"count": int(len(y)), "correct": correct}


def register_arch(name: str, build: Callable[[dict[str, Any]], Any], loss: LossFn | None = None,
                  make_batches: MakeBatches | None = None, output_names: list[str] | None = None,
                  collate: MakeBatches | None = None,
                  evaluate: Callable[..., dict[str, float]] | None = None) -> Arch:
    """Register (or replace) an architecture; `collate` is accepted as another name for make_batches."""
    arch = Arch(name=name, build=build, loss=loss or classification_loss,
                make_batches=make_batches or collate or classification_batches,
                output_names=list(output_names or ["logits"]), evaluate=evaluate)
    _ARCHS[name] = arch
    return arch


def get_arch(name: str) -> Arch:
    """The registered arch; on a miss, imports every node module (where archs register) once."""
    if name not in _ARCHS:
        from heiti.engine.registry import default_registry

        default_registry()
    try:
        return _ARCHS[name]
    except KeyError:
        raise KeyError(f"unknown torch architecture {name!r}; known: {', '.join(sorted(_ARCHS))}") from None


def arch_names() -> list[str]:
    return sorted(_ARCHS)


# --- the built-in classification CNN ----------------------------------------------------------------
def cnn_plan(config: Mapping[str, Any]) -> dict[str, Any]:
    """Shapes of the CNN without building it: channels per block, pooling, head, feature count.

    Each block is conv3x3 (+ batch norm) + ReLU, then a 2x2 max-pool while the image is at least
    4 pixels on its short side. The head flattens small maps (<= 16 pixels) and averages larger
    ones globally, so the classifier stays small for any input size.
    """
    c, h, w = (int(v) for v in config["input_shape"])
    widths, pools = [], []
    for i in range(int(config.get("layers", 2))):
        widths.append(int(config.get("channels", 16)) * 2 ** i)
        pool = min(h, w) >= 4
        pools.append(pool)
        if pool:
            h, w = h // 2, w // 2
    head = "flatten" if h * w <= 16 else "avgpool"
    features = widths[-1] * (h * w if head == "flatten" else 1) if widths else c * h * w
    return {"in_channels": c, "widths": widths, "pools": pools, "head": head, "features": features}


def build_cnn(config: Mapping[str, Any]) -> Any:
    """Config keys: input_shape [C,H,W], num_classes, channels (first block), layers, dropout, batchnorm."""
    from torch import nn

    plan = cnn_plan(config)
    blocks: list[nn.Module] = []
    in_ch = plan["in_channels"]
    for width, pool in zip(plan["widths"], plan["pools"], strict=True):
        blocks.append(nn.Conv2d(in_ch, width, 3, padding=1, bias=not config.get("batchnorm", True)))
        if config.get("batchnorm", True):
            blocks.append(nn.BatchNorm2d(width))
        blocks.append(nn.ReLU())
        if pool:
            blocks.append(nn.MaxPool2d(2))
        in_ch = width
    if plan["head"] == "avgpool":
        blocks.append(nn.AdaptiveAvgPool2d(1))
    blocks += [nn.Flatten(), nn.Dropout(float(config.get("dropout", 0.0))),
               nn.Linear(plan["features"], int(config["num_classes"]))]
    return nn.Sequential(*blocks)


register_arch("cnn", build_cnn)


# --- saving and loading -------------------------------------------------------------------------------
def sidecar_path(weights: Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_model(module: Any, weights: Path, meta: Mapping[str, Any]) -> None:
    """Write the state_dict and its sidecar (arch, arch_config, input_shape, class_names, task)."""
    import torch

    weights = Path(weights)
    torch.save(module.state_dict(), weights)
    keep = {k: meta[k] for k in ("arch", "arch_config", "input_shape", "class_names", "task", "layout") if k in meta}
    sidecar_path(weights).write_text(json.dumps(keep, indent=1), encoding="utf-8")


def load_model(weights: Path, meta: Mapping[str, Any] | None = None) -> Any:
    """Rebuild the module from its arch and load the weights safely (eval mode)."""
    import torch

    weights = Path(weights)
    if meta is None or "arch" not in meta:
        meta = json.loads(sidecar_path(weights).read_text(encoding="utf-8"))
    module = get_arch(meta["arch"]).build(dict(meta.get("arch_config", {})))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    module.eval()
    return module
