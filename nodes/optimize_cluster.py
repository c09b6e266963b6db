"""Weight clustering (weight sharing): the third optimisation family beside pruning and quantisation.

Each Conv/Dense layer's weights are replaced by the nearest of `clusters` shared values found by
k-means on that layer. The model keeps its float format and size on disk, but holds only a few
distinct values per layer, so it compresses well (gzip, or palette/index formats on devices) —
the report's compressed-size column shows the effect.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from heiti.engine import In, ModelArtifact, Node, NodeError, Out
from heiti.nodes.models import step_meta
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

#: at most this many weights of one layer feed k-means; the rest are assigned to the centroids
FIT_SAMPLE = 20_000


def cluster_weights(weights: np.ndarray, clusters: int, seed: int) -> np.ndarray:
    """`weights` with every value replaced by its k-means centroid (1-D k-means on the values)."""
    import numpy as np
    from sklearn.cluster import KMeans

    flat = weights.reshape(-1, 1).astype(np.float64)
    distinct = np.unique(flat)
    if len(distinct) <= clusters:
        return weights.copy()
    rng = np.random.default_rng(seed)
    fit = flat if len(flat) <= FIT_SAMPLE else flat[rng.choice(len(flat), FIT_SAMPLE, replace=False)]
    # linear initialisation over the value range keeps large-magnitude weights, which matter most
    init = np.linspace(flat.min(), flat.max(), clusters).reshape(-1, 1)
    km = KMeans(n_clusters=clusters, init=init, n_init=1, random_state=seed).fit(fit)
    centroids = np.sort(km.cluster_centers_.reshape(-1))
    edges = (centroids[1:] + centroids[:-1]) / 2
    return centroids[np.searchsorted(edges, flat.reshape(-1))].reshape(weights.shape).astype(weights.dtype)


class ClusterWeights(Node):
    """Share weights: k-means per Conv/Linear (Dense) layer, for PyTorch and Keras models."""

    kind = "optimize.cluster"
    title = "Cluster weights"
    category = "Optimizers"

    class Params(BaseModel):
        model_config = ConfigDict(defer_build=True, extra="forbid")
        clusters: int = Field(16, ge=2, le=65536, description="shared values per layer (16 = 4-bit indices)")
        seed: int = Field(0, description="seed of the k-means sampling")

    inputs = {"model": In(ModelArtifact, formats={"torch", "keras"})}
    outputs = {"model": Out(ModelArtifact, same_as="model")}

    def run(self, ctx: Any, model: ModelArtifact) -> dict[str, Any]:
        t0 = time.perf_counter()
        if model.model_format == "torch":
            path, layers = self._torch(ctx, model)
        else:
            path, layers = self._keras(ctx, model)
        if not layers:
            raise NodeError("the model has no Conv or Linear/Dense layer to cluster")
        seconds = time.perf_counter() - t0
        ctx.log(f"clustered {layers} layers to {self.params.clusters} shared values each")
        meta = step_meta(model, ctx, self.kind, seconds, convert_time_s=round(seconds, 4),
                         clusters=self.params.clusters)
        return {"model": model.model_copy(update={"path": path, "meta": meta})}

    def _torch(self, ctx: Any, model: ModelArtifact) -> tuple[Any, int]:
        import torch
        from heiti.nodes.torch_arch import load_model, save_model
        from torch import nn

        module = load_model(model.path, model.meta)
        layers = [m for m in module.modules() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear)]
        with torch.no_grad():
            for i, layer in enumerate(layers):
                ctx.progress(i / max(len(layers), 1), f"layer {i + 1} of {len(layers)}")
                shared = cluster_weights(layer.weight.detach().cpu().numpy(), self.params.clusters, self.params.seed)
                layer.weight.copy_(torch.from_numpy(shared))
        path = ctx.workdir / "model.pt"
        save_model(module, path, model.meta)
        return path, len(layers)

    def _keras(self, ctx: Any, model: ModelArtifact) -> tuple[Any, int]:
        from heiti.nodes.keras_env import import_keras, load_keras

        _tf, keras = import_keras()
        net = load_keras(model.path, fresh=True)  # its weights are replaced below
        kinds = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense,
                 keras.layers.DepthwiseConv2D)
        layers = [layer for layer in _all_layers(net) if isinstance(layer, kinds)]
        for i, layer in enumerate(layers):
            ctx.progress(i / max(len(layers), 1), f"layer {i + 1} of {len(layers)}")
            weights = layer.get_weights()
            weights[0] = cluster_weights(weights[0], self.params.clusters, self.params.seed)  # the kernel
            layer.set_weights(weights)
        path = ctx.workdir / "model.keras"
        net.save(path)
        return path, len(layers)


def _all_layers(net: Any) -> list[Any]:
    """Layers of a Keras model, nested models included."""
    out = []
    for layer in net.layers:
        out.extend(_all_layers(layer) if hasattr(layer, "layers") else [layer])
    return out
