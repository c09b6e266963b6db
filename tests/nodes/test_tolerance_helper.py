"""tests/tolerance.py itself: the fp32 bound holds against exact maths and rejects reduced precision."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tolerance import onnx_fp32_atol, torch_fp32_atol


@pytest.fixture(scope="module")
def net_and_x():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(32 * 2 * 2, 10)).eval()
    with torch.no_grad():  # a batch norm that does something
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    return net, x


def test_fp32_bound_holds_against_float64(net_and_x):
    import copy

    import torch

    net, x = net_and_x
    with torch.no_grad():
        exact = copy.deepcopy(net).double()(torch.from_numpy(x).double()).numpy()
        fp32 = net(torch.from_numpy(x)).numpy()
    assert np.all(np.abs(fp32 - exact) <= torch_fp32_atol(net, x) / 2)  # one implementation against exact maths


def _bf16_inference(net, x):
    """The network as a bf16 runtime computes it: weights, inputs and every layer's output rounded to bf16."""
    import copy

    import torch

    rounded = copy.deepcopy(net)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(torch.bfloat16).float())
        for layer in rounded:
            layer.register_forward_hook(lambda module, args, out: out.to(torch.bfloat16).float())
        return rounded(torch.from_numpy(x).to(torch.bfloat16).float()).numpy()


def test_fp32_bound_of_a_trained_cnn_tells_fp32_from_bf16(tmp_path):
    """On a trained network (outputs not cancelling to near zero) the bound is tight enough to catch
    a runtime that silently computes in bf16, as OpenVINO does by default on bf16-capable CPUs."""
    import copy

    import torch
    from heiti.nodes.torch_arch import load_model

    from tests.nodes import tiny_models

    tiny = tiny_models.build_all(tmp_path, ("torch",))
    net = load_model(tiny.paths["torch"]).eval()
    with np.load(tiny.dataset) as data:
        x = data["x_test"][:100]
    with torch.no_grad():
        exact = copy.deepcopy(net).double()(torch.from_numpy(x).double()).numpy()
        fp32 = net(torch.from_numpy(x)).numpy()
    bound = torch_fp32_atol(net, x)
    assert np.all(np.abs(fp32 - exact) <= bound / 2)
    assert np.any(np.abs(_bf16_inference(net, x) - exact) > bound)


def test_onnx_and_torch_give_the_same_bound(net_and_x, tmp_path):
    import torch

    net, x = net_and_x
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.from_numpy(x[:1]),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    # the exporter folds the batch norm into the convolution: its magnitudes can only shrink
    onnx_bound, torch_bound = onnx_fp32_atol(path, x), torch_fp32_atol(net, x)
    assert np.all(onnx_bound <= torch_bound * (1 + 1e-5)) and np.all(onnx_bound >= 0.5 * torch_bound)
