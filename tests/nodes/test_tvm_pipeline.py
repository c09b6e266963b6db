"""compile.tvm's Relax passes before scheduling (heiti.nodes.tvm_pipeline) and the default schedule's
tile choices (heiti.nodes.tvm_schedule.TileHeuristic), with real TVM on a MobileNetV2-style block.

The block (made here with onnx.helper, as tf2onnx exports Keras' MobileNetV2): 1x1 expand conv +
Clip(0, 6), an asymmetric zero Pad, a stride-2 depthwise 3x3 conv + Clip(0, 6), a 1x1 projection
with more output channels than pixels, global pooling and a dense layer. TVM's ONNX importer emits
each Clip as call_tir max/min functions and the Pad as a call_tir pad, which ConvertLayout does not
know: transposes around them inside the network, unless the pipeline rewrites them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

SHAPE = (1, 8, 14, 14)


def make_block(path: Path, pad_value: float = 0.0) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def const(name: str, shape: tuple[int, ...], fan_in: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), name)

    inits = [const("we", (32, 8, 1, 1), 8), const("be", (32,), 8), const("wd", (32, 1, 3, 3), 9),
             const("wp", (64, 32, 1, 1), 32), const("wg", (10, 64), 64), const("bg", (10,), 64),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi"),
             numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(pad_value, np.float32), "pad_value")]
    nodes = [helper.make_node("Conv", ["x", "we", "be"], ["e"]),
             helper.make_node("Clip", ["e", "lo", "hi"], ["e6"]),
             helper.make_node("Pad", ["e6", "pads", "pad_value"], ["p"]),
             helper.make_node("Conv", ["p", "wd"], ["d"], group=32, strides=[2, 2]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["d6"]),
             helper.make_node("Conv", ["d6", "wp"], ["c"]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture(scope="module")
def block(tmp_path_factory) -> Path:
    return make_block(tmp_path_factory.mktemp("tvm_pipeline") / "block.onnx")


def prepared(path: Path):
    import onnx
    from heiti.nodes import tvm_pipeline as tp
    from heiti.nodes.compilers import resolve_target
    from tvm.relax.frontend.onnx import from_onnx

    target, _ = resolve_target("host")
    stats = tp.LeftoverStats()
    # prepack=False: marking the weights layout-free (tvm_prepack) renames every function (a suffix)
    mod = tp.prepare(from_onnx(onnx.load(str(path)), shape_dict={"x": list(SHAPE)}), target, stats=stats, prepack=False)
    names = [gv.name_hint for gv, f in mod.functions_items() if type(f).__name__ == "PrimFunc"]
    return names, stats


def test_clip_and_pad_leave_no_transposes_inside_the_network(block, monkeypatch):
    names, stats = prepared(block)
    assert stats.as_dict() == {"clips": 4, "pads": 1}  # two Clips = two max + two min; the one pad
    # transposes only at the ends (the NCHW input; the pooled 1x1 map before Flatten), none around a
    # clip or pad; every clip is fused into its convolution
    transposes = [n for n in names if "transpose" in n]
    assert len(transposes) == 2 and "transpose" in transposes, names
    assert not [n for n in names if "transpose" in n and ("maximum" in n or "minimum" in n)], names
    assert not [n for n in names if "pad" in n], names
    assert sum("conv2d" in n and "maximum" in n and "minimum" in n for n in names) == 2, names

    # without the rewrite, TVM's ONNX importer leaves the layout churn this test guards against
    from heiti.nodes import tvm_pipeline as tp

    monkeypatch.setattr(tp, "rewrite_importer_leftovers", lambda mod: (mod, tp.LeftoverStats()))
    names, _ = prepared(block)
    assert any("transpose" in n and "maximum" in n for n in names), names


def test_a_pad_with_a_nonzero_value_stays_a_pad(tmp_path):
    names, stats = prepared(make_block(tmp_path / "pad1.onnx", pad_value=1.0))
    assert stats.pads == 0 and stats.clips == 4
    assert any("pad" in n for n in names), names


def test_block_compiled_by_the_node_agrees_with_onnxruntime(block, tmp_path):
    import onnxruntime as ort
    from heiti.engine import ModelArtifact
    from heiti.nodes.compilers import TVMCompile

    from tests.nodes.test_tvm_schedule import Ctx, run_tvm
    from tests.tolerance import assert_fp32_close, onnx_fp32_atol

    model = ModelArtifact(path=block, model_format="onnx", inputs=[{"name": "x", "shape": list(SHAPE), "dtype": "float32"}],
                          outputs=[{"name": "y", "shape": [1, 10], "dtype": "float32"}])
    built = TVMCompile({}).run(Ctx(tmp_path), model=model)["model"]
    assert built.meta["tvm_schedule"]["scheduled"] == built.meta["tvm_schedule"]["tasks"]
    assert built.meta["tvm_schedule"]["rewritten"] == {"clips": 4, "pads": 1}
    session = ort.InferenceSession(str(block), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal(SHAPE, dtype=np.float32)
    for threads in (1, 2):
        assert_fp32_close(run_tvm(built.path, x, threads), session.run(None, {"x": x})[0], onnx_fp32_atol(block, x),
                          f"TVM ({threads} threads) against ONNX Runtime")


# --- the default schedule's tile choices (no TVM needed) ---------------------------------------------
def _tiles(heuristic, extents: dict[str, int], reduction: dict[str, int]) -> dict[str, list[int]]:
    """tile_block on a conv's loops (SSRSRS: 4 tiles per spatial loop, 2 per reduction loop)."""
    group = [(name, 4, e) for name, e in extents.items()] + [(name, 2, e) for name, e in reduction.items()]
    return heuristic.tile_block(group)


@pytest.mark.parametrize("pixels,channels", [((7, 7), 1280), ((14, 14), 576), ((56, 56), 24), ((112, 112), 96), ((1, 1), 1000)])
def test_register_tile_fills_the_accumulators_the_extents_allow(pixels, channels):
    from heiti.nodes.tvm_schedule import TileHeuristic, _divisors

    h = TileHeuristic(lanes=8, cores=2)
    tiles = _tiles(h, {"n": 1, "h": pixels[0], "w": pixels[1], "c": channels}, {"rc": 320})
    assert all(math.prod(t) == e for t, e in zip(tiles.values(), [1, *pixels, channels, 320], strict=True))
    vectors = tiles["c"][-1] // h.lanes
    assert tiles["c"][-1] % h.lanes == 0 and tiles["c"][-1] <= h.max_vector_tile
    accumulators = vectors * tiles["w"][-1] * tiles["h"][-1]
    assert accumulators <= h.accumulators
    # near the most the divisors allow (>= 3/4: enough chains), never all channels x several pixels
    best = max(v * p for v in _divisors(channels // h.lanes) if v * h.lanes <= h.max_vector_tile
               for p in _divisors(pixels[1]) if v * p <= h.accumulators and (v * h.lanes < channels or p == 1))
    assert 4 * accumulators >= 3 * best
    assert tiles["c"][-1] < channels or tiles["w"][-1] * tiles["h"][-1] == 1


def test_register_tile_reuses_weights_across_pixels():
    """A 3x3 conv 128->128 on 8x8: 2-4 vectors x 2-4 pixels (each weight vector used by several
    pixels), not 8 vectors x 1 pixel, which streams all weights once per pixel (1.7x slower)."""
    from heiti.nodes.tvm_schedule import TileHeuristic

    h = TileHeuristic(lanes=8, cores=2)
    tiles = _tiles(h, {"n": 1, "h": 8, "w": 8, "c": 128}, {"ry": 3, "rx": 3, "rc": 128})
    vectors, pixels = tiles["c"][-1] // h.lanes, tiles["w"][-1] * tiles["h"][-1]
    assert vectors * pixels == h.accumulators and vectors >= 2 and pixels >= 2

def test_weights_heavy_blocks_run_channel_tiles_outermost():
    from heiti.nodes.tvm_schedule import TileHeuristic

    h = TileHeuristic(lanes=8, cores=2)
    deep = _tiles(h, {"n": 1, "h": 7, "w": 7, "c": 1280}, {"rc": 320})  # 1280 channels > 49 pixels
    assert deep["c"][0] > 1 and deep["h"][0] == deep["w"][0] == 1  # every pixel inside one channel tile
    wide = _tiles(h, {"n": 1, "h": 112, "w": 112, "c": 96}, {"rc": 16})  # pixels outermost as before
    assert wide["h"][0] > 1 and wide["c"][0] == 1



def test_register_tile_on_7x7_maps_uses_each_weight_vector_for_a_whole_row():
    """Width 7 allows pixel tiles of 1 or 7: 1 vector x 7 pixels (each weight vector serves the row,
    from L1), not 8 vectors x 1 pixel (a 64-channel weight panel re-read from L2 for every pixel;
    MobileNetV2's 1x1 convs on 7x7 20-38% slower). Maps whose width allows 2 x 4 keep it."""
    from heiti.nodes.tvm_schedule import TileHeuristic

    h = TileHeuristic(lanes=8, cores=2)
    for channels, reduction in ((1280, 320), (160, 960), (960, 9)):
        tiles = _tiles(h, {"n": 1, "h": 7, "w": 7, "c": channels}, {"rc": reduction})
        assert (tiles["c"][-1], tiles["w"][-1], tiles["h"][-1]) == (h.lanes, 7, 1), (channels, tiles)
    tiles = _tiles(h, {"n": 1, "h": 8, "w": 8, "c": 128}, {"rc": 128})
    assert tiles["c"][-1] // h.lanes * tiles["w"][-1] == h.accumulators and tiles["w"][-1] > 1
