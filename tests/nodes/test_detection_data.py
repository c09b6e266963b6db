"""dataset.shapes and dataset.coco: the detection convention, seeded drawing, COCO round trip,
resizing with boxes scaled, and clear errors for bad annotations."""

from __future__ import annotations

import json

import numpy as np
import pytest
from heiti.engine.context import CancelToken, RunContext
from heiti.engine.events import EventBus, NodeLog
from heiti.engine.node import NodeError
from heiti.nodes.detection.coco import CocoDataset
from heiti.nodes.detection.shapes import ShapesDataset
from PIL import Image


def run_node(cls, params, tmp_path, name="node"):
    """Run one node kind directly; returns (outputs, warnings logged)."""
    bus, logs = EventBus(), []
    bus.subscribe(lambda e: logs.append(e) if isinstance(e, NodeLog) else None)
    workdir = tmp_path / name
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(name, workdir, tmp_path, bus, CancelToken())
    outputs = cls(params).run(ctx)
    return outputs, [e.message for e in logs if e.level == "warning"]


def arrays(handle):
    with np.load(handle.path, allow_pickle=False) as data:
        return {k: data[k] for k in data.keys()}


SMALL = {"count": 40, "size": 48, "seed": 3}


def test_shapes_follow_the_detection_convention(tmp_path):
    (out, _) = run_node(ShapesDataset, SMALL, tmp_path)
    handle = out["dataset"]
    assert handle.task == "detection" and handle.layout == "NCHW"
    assert handle.class_names == ["circle", "square", "triangle"] and handle.input_shape == [3, 48, 48]
    data = arrays(handle)
    assert sum(len(data[f"x_{s}"]) for s in ("train", "val", "test")) == 40
    labels = []
    for split in ("train", "val", "test"):
        x, boxes = data[f"x_{split}"], data[f"boxes_{split}"]
        assert x.dtype == np.float32 and x.shape[1:] == (3, 48, 48)
        assert -1.0 <= x.min() and x.max() <= 1.0  # mean 0.5, std 0.5
        assert boxes.dtype == np.float32 and boxes.shape[1] == 4
        assert data[f"labels_{split}"].dtype == np.int64 and data[f"image_idx_{split}"].dtype == np.int64
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert boxes.min() >= 0 and boxes.max() <= 48
        assert data[f"image_idx_{split}"].max(initial=0) < len(x)
        labels += data[f"labels_{split}"].tolist()
    assert set(labels) == {0, 1, 2}
    # the COCO twin: one annotation per box, every PNG present
    coco = json.loads(open(handle.meta["coco_json"]).read())
    assert len(coco["images"]) == 40 and len(coco["annotations"]) == len(labels)
    assert all((tmp_path / "node" / "images" / im["file_name"]).is_file() for im in coco["images"])


def test_shapes_boxes_enclose_the_drawn_shape(tmp_path):
    """Pixels inside a box differ from the background far more than pixels just outside it."""
    (out, _) = run_node(ShapesDataset, {"count": 6, "size": 64, "noise": 0.0, "clutter": 0,
                                        "min_objects": 1, "max_objects": 1, "test_fraction": 0.5,
                                        "val_fraction": 0.0}, tmp_path)
    data = arrays(out["dataset"])
    for img, box in zip(data["image_idx_train"], data["boxes_train"], strict=True):
        x1, y1, x2, y2 = box
        pixels = data["x_train"][img]
        centre = pixels[:, int((y1 + y2) / 2), int((x1 + x2) / 2)]
        corner = pixels[:, 0, 0] if x1 > 2 and y1 > 2 else pixels[:, -1, -1]
        assert np.abs(centre - corner).sum() > 0.3


def test_shapes_are_seeded(tmp_path):
    a = arrays(run_node(ShapesDataset, SMALL, tmp_path, "a")[0]["dataset"])
    b = arrays(run_node(ShapesDataset, SMALL, tmp_path, "b")[0]["dataset"])
    c = arrays(run_node(ShapesDataset, {**SMALL, "seed": 4}, tmp_path, "c")[0]["dataset"])
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x_train"], c["x_train"])


def test_shapes_reject_unknown_classes():
    with pytest.raises(ValueError, match="hexagon"):
        ShapesDataset({"classes": ["circle", "hexagon"]})


def test_coco_reads_back_what_shapes_wrote(tmp_path):
    (out, _) = run_node(ShapesDataset, SMALL, tmp_path, "shapes")
    shapes = out["dataset"]
    (out, _) = run_node(CocoDataset, {"annotations": shapes.meta["coco_json"], "images": shapes.meta["image_dir"],
                                      "size": [48, 48], "seed": 3}, tmp_path, "coco")
    coco = out["dataset"]
    assert coco.class_names == shapes.class_names
    a, b = arrays(shapes), arrays(coco)
    for key in a:
        if a[key].dtype.kind == "f":
            # both paths scale and shift in fp32: at most two roundings each, so two eps of the magnitude apart
            atol = 2 * float(np.finfo(np.float32).eps) * float(np.abs(a[key]).max())
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=atol, err_msg=key)
        else:
            assert np.array_equal(a[key], b[key]), key


def write_coco(root, images, annotations, categories=None):
    """A small COCO folder: images given as (file_name, width, height, rect or None)."""
    (root / "img").mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (name, width, height, rect) in enumerate(images):
        pixels = np.zeros((height, width, 3), np.uint8)
        if rect is not None:
            x, y, w, h = rect
            pixels[y:y + h, x:x + w] = 255
        Image.fromarray(pixels).save(root / "img" / name)
        entries.append({"id": 10 + i, "file_name": name, "width": width, "height": height})
    doc = {"images": entries, "annotations": annotations,
           "categories": categories or [{"id": 7, "name": "box"}, {"id": 3, "name": "blob"}]}
    (root / "ann.json").write_text(json.dumps(doc))
    return {"annotations": str(root / "ann.json"), "images": str(root / "img")}


def ann(i, image_id, bbox, category=7, **extra):
    return {"id": i, "image_id": image_id, "category_id": category, "bbox": bbox, **extra}


def test_coco_resizes_images_and_scales_boxes(tmp_path):
    images = [(f"{i}.png", 40, 20, (8, 4, 16, 8)) for i in range(4)]
    annotations = [ann(i, 10 + i, [8, 4, 16, 8], category=7 if i % 2 else 3) for i in range(4)]
    params = write_coco(tmp_path, images, annotations)
    (out, _) = run_node(CocoDataset, {**params, "size": [32, 16], "test_fraction": 0.25, "val_fraction": 0.25},
                        tmp_path, "coco")
    handle = out["dataset"]
    # categories are ordered by id: 3 -> label 0 "blob", 7 -> label 1 "box"
    assert handle.class_names == ["blob", "box"] and handle.input_shape == [3, 32, 16]
    data = arrays(handle)
    for split in ("train", "val", "test"):
        assert data[f"x_{split}"].shape[1:] == (3, 32, 16)
        for box, img in zip(data[f"boxes_{split}"], data[f"image_idx_{split}"], strict=True):
            np.testing.assert_allclose(box, [8 * 16 / 40, 4 * 32 / 20, 24 * 16 / 40, 12 * 32 / 20])
            bright = data[f"x_{split}"][img, 0] > 0.5  # mean 0.5 std 0.5: white is 1, black -1
            ys, xs = np.nonzero(bright)
            assert abs(xs.min() - box[0]) <= 1 and abs(xs.max() + 1 - box[2]) <= 1
            assert abs(ys.min() - box[1]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
    files = set(np.concatenate([data[f"files_{s}"] for s in ("train", "val", "test")]).tolist())
    assert files == {f"{i}.png" for i in range(4)}


def test_coco_keeps_images_without_boxes_and_skips_crowds(tmp_path):
    images = [(f"{i}.png", 16, 16, None) for i in range(5)]
    annotations = [ann(1, 10, [1, 1, 5, 5]), ann(2, 11, [2, 2, 6, 6], iscrowd=1)]
    params = write_coco(tmp_path, images, annotations)
    (out, warnings) = run_node(CocoDataset, {**params, "size": [16, 16], "test_fraction": 0.2,
                                             "val_fraction": 0.2}, tmp_path, "coco")
    data = arrays(out["dataset"])
    assert sum(len(data[f"x_{s}"]) for s in ("train", "val", "test")) == 5
    assert sum(len(data[f"boxes_{s}"]) for s in ("train", "val", "test")) == 1
    assert any("crowd" in w for w in warnings)


@pytest.mark.parametrize(("annotations", "message"), [
    ([ann(1, 10, [30, 2, 20, 5])], "outside image 0.png"),
    ([ann(1, 10, [-5, 2, 4, 4])], "outside"),
    ([ann(1, 10, [2, 2, 4, 4], category=99)], "unknown category id 99"),
    ([ann(1, 77, [2, 2, 4, 4])], "unknown image id 77"),
    ([ann(1, 10, [2, 2, 0, 4])], "empty box"),
    ([ann(1, 10, [2, 2, 4])], "bbox must be"),
    ([{"id": 1, "image_id": 10, "bbox": [1, 1, 2, 2]}], "needs 'image_id', 'category_id'"),
])
def test_coco_names_bad_annotations(tmp_path, annotations, message):
    params = write_coco(tmp_path, [("0.png", 40, 20, None), ("1.png", 40, 20, None), ("2.png", 40, 20, None)],
                        annotations)
    with pytest.raises(NodeError, match=message) as err:
        run_node(CocoDataset, {**params, "test_fraction": 0.0, "val_fraction": 0.0}, tmp_path, "coco")
    assert "ann.json" in str(err.value)


def test_coco_names_missing_image_files(tmp_path):
    params = write_coco(tmp_path, [("0.png", 16, 16, None), ("1.png", 16, 16, None)], [])
    (tmp_path / "img" / "1.png").unlink()
    with pytest.raises(NodeError, match=r"missing from .*img: 1\.png"):
        run_node(CocoDataset, {**params, "test_fraction": 0.0, "val_fraction": 0.0}, tmp_path, "coco")


def test_coco_names_unreadable_files(tmp_path):
    params = write_coco(tmp_path, [("0.png", 16, 16, None), ("1.png", 16, 16, None)], [])
    (tmp_path / "img" / "1.png").write_bytes(b"not a png")
    with pytest.raises(NodeError, match=r"cannot read image .*1\.png"):
        run_node(CocoDataset, {**params, "test_fraction": 0.0, "val_fraction": 0.0}, tmp_path, "coco")


@pytest.mark.parametrize(("content", "message"), [
    (None, "annotation file not found"),
    ("{not json", "cannot read annotation file"),
    ("[1, 2]", "not a COCO annotation file"),
    ('{"images": []}', "missing or invalid section"),
])
def test_coco_names_broken_files(tmp_path, content, message):
    (tmp_path / "img").mkdir()
    path = tmp_path / "ann.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(NodeError, match=message):
        run_node(CocoDataset, {"annotations": str(path), "images": str(tmp_path / "img")}, tmp_path, "coco")


def test_coco_names_a_missing_image_folder(tmp_path):
    params = write_coco(tmp_path, [("0.png", 16, 16, None)], [])
    with pytest.raises(NodeError, match="image folder not found"):
        run_node(CocoDataset, {**params, "images": str(tmp_path / "nope")}, tmp_path, "coco")
