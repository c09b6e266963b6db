"""optimize.cluster: k-means weight sharing on torch and Keras models trained here."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from heiti.engine.executor import Executor
from heiti.nodes import optimize_cluster
from heiti.nodes.optimize_cluster import cluster_weights

from tests.nodes.data_h1 import build, ok, real_registry, run

REGISTRY = real_registry()
REGISTRY.register_module(optimize_cluster)

BASE_NODES = [("d", "dataset.digits", {"seed": 0}),
              ("tm", "model.torch_cnn", {}), ("tt", "train.torch", {"epochs": 3}),
              ("km", "model.keras_cnn", {}), ("kt", "train.keras", {"epochs": 2})]
BASE_EDGES = [("d", "dataset", "tm", "dataset"), ("tm", "model", "tt", "model"), ("d", "dataset", "tt", "dataset"),
              ("d", "dataset", "km", "dataset"), ("km", "model", "kt", "model"), ("d", "dataset", "kt", "dataset")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_cluster_weights_keeps_at_most_k_values_nearest_to_the_originals():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 32, 3, 3)).astype(np.float32)
    shared = cluster_weights(w, 8, seed=0)
    assert shared.shape == w.shape and shared.dtype == w.dtype
    values = np.unique(shared)
    assert len(values) <= 8
    # every weight maps to its nearest centroid
    nearest = values[np.abs(w.reshape(-1, 1) - values.reshape(1, -1)).argmin(1)]
    np.testing.assert_array_equal(shared.reshape(-1), nearest)
    # between the outer centroids, a weight moves by at most half the widest gap
    inner = (w >= values[0]) & (w <= values[-1])
    assert np.abs(shared - w)[inner].max() <= np.diff(values).max() / 2 + 1e-6


def test_few_distinct_values_stay_as_they_are():
    w = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_array_equal(cluster_weights(w, 4, seed=0), w)


@pytest.mark.parametrize("branch, fmt", [("tt", "torch"), ("kt", "keras")])
def test_clustered_models_keep_accuracy_and_compress_better(cache, tmp_path, branch, fmt):
    graph = build(BASE_NODES + [("c", "optimize.cluster", {"clusters": 16})],
                  BASE_EDGES + [(branch, "model", "c", "model")])
    result = ok(run(graph, tmp_path, executor=Executor(REGISTRY, cache_dir=cache)))
    before, after = result.outputs[branch]["model"], result.outputs["c"]["model"]
    assert after.model_format == fmt and after.meta["clusters"] == 16
    assert after.meta["pipeline"][-1]["kind"] == "optimize.cluster"
    weights_before, weights_after = _kernels(before), _kernels(after)
    assert all(len(np.unique(w)) <= 16 for w in weights_after)
    assert any(len(np.unique(w)) > 16 for w in weights_before)
    # shared values compress: the gzip'ed file shrinks
    assert len(gzip.compress(after.path.read_bytes())) < 0.8 * len(gzip.compress(before.path.read_bytes()))


def _kernels(model):
    if model.model_format == "torch":
        import torch

        state = torch.load(model.path, weights_only=True)
        return [v.numpy() for k, v in state.items() if k.endswith("weight") and v.dim() > 1]
    import keras

    net = keras.models.load_model(model.path, safe_mode=True, compile=False)
    return [layer.get_weights()[0] for layer in net.layers
            if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)]
