"""Dataset nodes: digits, a folder of images, user arrays — splits, normalisation, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from heiti.nodes.datasets import stratified_split
from PIL import Image

from tests.nodes.data_h1 import build, ok, real_registry, run


def load(handle) -> dict[str, np.ndarray]:
    with np.load(handle.path, allow_pickle=False) as data:
        return {k: data[k] for k in data.keys()}


def one_node(kind: str, params: dict, tmp_path, name: str = "run", events=None):
    return run(build([("d", kind, params)], []), tmp_path, name, registry=REGISTRY, events=events)


REGISTRY = real_registry()


def test_stratified_split_keeps_class_shares_and_uses_every_sample_once():
    y = np.repeat(np.arange(4), [100, 50, 20, 10])
    split = stratified_split(y, 0.2, 0.3, seed=1)
    everything = np.concatenate([split["train"], split["val"], split["test"]])
    assert sorted(everything.tolist()) == list(range(len(y)))
    for label, count in zip(range(4), [100, 50, 20, 10], strict=True):
        assert (y[split["test"]] == label).sum() == round(count * 0.3)
        assert (y[split["val"]] == label).sum() == round(count * 0.2)


def test_stratified_split_is_seeded():
    y = np.repeat(np.arange(3), 30)
    a, b, c = (stratified_split(y, 0.2, 0.2, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["train"], c["train"])


def test_digits_writes_the_classification_convention(tmp_path):
    result = ok(one_node("dataset.digits", {"val_fraction": 0.1, "test_fraction": 0.25, "seed": 3}, tmp_path))
    handle = result.outputs["d"]["dataset"]
    assert handle.task == "classification" and handle.layout == "NCHW"
    assert handle.input_shape == [1, 8, 8] and handle.class_names == [str(i) for i in range(10)]
    data = load(handle)
    assert sum(len(data[f"y_{s}"]) for s in ("train", "val", "test")) == 1797
    assert abs(len(data["y_test"]) / 1797 - 0.25) < 0.01
    for split in ("train", "val", "test"):
        assert data[f"x_{split}"].dtype == np.float32 and data[f"x_{split}"].shape[1:] == (1, 8, 8)
        assert data[f"y_{split}"].dtype == np.int64
        assert set(np.unique(data[f"y_{split}"])) == set(range(10))
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0
    assert handle.meta["counts"]["test"] == len(data["y_test"])


def test_digits_standard_normalisation_uses_train_statistics(tmp_path):
    handle = ok(one_node("dataset.digits", {"normalise": "standard"}, tmp_path)).outputs["d"]["dataset"]
    x = load(handle)["x_train"]
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1.0) < 1e-2


def test_digits_seed_changes_the_split(tmp_path):
    a = load(ok(one_node("dataset.digits", {"seed": 0}, tmp_path, "a")).outputs["d"]["dataset"])
    b = load(ok(one_node("dataset.digits", {"seed": 1}, tmp_path, "b")).outputs["d"]["dataset"])
    assert not np.array_equal(a["y_train"], b["y_train"])


# --- image folder ------------------------------------------------------------------------------------
def make_folder(root, classes=("cat", "dog", "fish"), per_class=10, size=(20, 14)):
    """Class folders of coloured PNG/JPEG images whose colour tells the class."""
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colours[k % 3]) + rng.integers(-5, 5, (size[1], size[0], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_reads_resizes_and_normalises(tmp_path):
    root = make_folder(tmp_path / "images")
    (root / "dog" / "notes.txt").write_text("not an image")
    params = {"path": str(root), "size": [6, 5], "color": "rgb", "mean": [0.5], "std": [0.5],
              "splits": [0.6, 0.2, 0.2], "seed": 0}
    handle = ok(one_node("dataset.image_folder", params, tmp_path)).outputs["d"]["dataset"]
    assert handle.class_names == ["cat", "dog", "fish"] and handle.input_shape == [3, 6, 5]
    data = load(handle)
    assert [len(data[f"y_{s}"]) for s in ("train", "val", "test")] == [18, 6, 6]
    x, y = data["x_train"], data["y_train"]
    assert x.dtype == np.float32 and -1.0 <= x.min() and x.max() <= 1.0
    # the red channel is high only for class 0 ("cat"), after (v - 0.5) / 0.5
    assert np.all(x[y == 0][:, 0].mean(axis=(1, 2)) > 0.8) and np.all(x[y != 0][:, 0].mean(axis=(1, 2)) < -0.8)


def test_image_folder_grey_and_float16(tmp_path):
    root = make_folder(tmp_path / "images", classes=("a", "b"), per_class=6)
    params = {"path": str(root), "size": [4, 4], "color": "grey", "dtype": "float16"}
    handle = ok(one_node("dataset.image_folder", params, tmp_path)).outputs["d"]["dataset"]
    assert handle.input_shape == [1, 4, 4]
    assert load(handle)["x_train"].dtype == np.float16


def test_image_folder_skips_unreadable_images_with_a_warning(tmp_path):
    root = make_folder(tmp_path / "images", classes=("a", "b"), per_class=5)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    good = (root / "b" / "1.png").read_bytes()
    (root / "b" / "truncated.png").write_bytes(good[: len(good) // 3])
    events: list = []
    handle = ok(one_node("dataset.image_folder", {"path": str(root), "size": [8, 8]}, tmp_path, events=events)
                ).outputs["d"]["dataset"]
    assert handle.meta["skipped"] == 2
    warnings = [e.message for e in events if e.type == "node_log" and e.level == "warning"]
    assert any("skipped 2 unreadable image(s) of 12" in w for w in warnings), warnings
    assert sum(handle.meta["counts"].values()) == 10


def test_image_folder_missing_folder_is_a_clear_error(tmp_path):
    from heiti.engine.executor import InvalidGraph

    with pytest.raises(InvalidGraph) as caught:  # found by validation, before anything runs
        one_node("dataset.image_folder", {"path": str(tmp_path / "nowhere")}, tmp_path)
    [problem] = caught.value.result.problems
    assert problem.node == "d" and problem.message == f"dataset folder {tmp_path / 'nowhere'} does not exist"


def test_image_folder_empty_class_is_a_clear_error(tmp_path):
    root = make_folder(tmp_path / "images", classes=("a", "b"), per_class=4)
    (root / "empty").mkdir()
    result = one_node("dataset.image_folder", {"path": str(root)}, tmp_path)
    assert result.status == "failed"
    assert "empty" in result.errors["d"] and "holds no PNG or JPEG" in result.errors["d"]


def test_image_folder_wrong_number_of_channel_stats(tmp_path):
    root = make_folder(tmp_path / "images", classes=("a", "b"), per_class=4)
    result = one_node("dataset.image_folder", {"path": str(root), "mean": [0.1, 0.2]}, tmp_path)
    assert result.status == "failed" and "mean has 2 values" in result.errors["d"]


# --- npz ------------------------------------------------------------------------------------------------
def test_npz_nhwc_arrays_become_nchw_with_names(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((60, 5, 4, 3), dtype=np.float32)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "mine.npz", images=x, labels=y, class_names=np.array(["r", "g", "b"]))
    params = {"path": str(tmp_path / "mine.npz"), "x_key": "images", "y_key": "labels", "layout": "NHWC",
              "test_fraction": 0.25, "val_fraction": 0.0}
    handle = ok(one_node("dataset.npz", params, tmp_path)).outputs["d"]["dataset"]
    assert handle.input_shape == [3, 5, 4] and handle.class_names == ["r", "g", "b"]
    data = load(handle)
    assert len(data["y_test"]) == 15 and len(data["y_val"]) == 0
    # a sample keeps its values, only transposed
    first = data["x_train"][0]
    matches = [i for i in range(60) if np.array_equal(x[i].transpose(2, 0, 1), first)]
    assert len(matches) == 1 and y[matches[0]] == data["y_train"][0]


def test_npz_missing_array_names_the_keys(tmp_path):
    np.savez(tmp_path / "bad.npz", data=np.zeros((4, 2)), y=np.zeros(4, dtype=np.int64))
    result = one_node("dataset.npz", {"path": str(tmp_path / "bad.npz")}, tmp_path)
    assert result.status == "failed" and "no array 'x'" in result.errors["d"] and "data" in result.errors["d"]


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "pickled.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.zeros(4, dtype=np.int64))
    result = one_node("dataset.npz", {"path": str(tmp_path / "pickled.npz")}, tmp_path)
    assert result.status == "failed" and "without pickle" in result.errors["d"]


@pytest.mark.parametrize("labels, message", [(np.array([0.5, 1.0, 0.0, 1.0]), "integer class indices"),
                                              (np.array([0, 1, 2]), "x has 4 samples but y has 3")])
def test_npz_bad_labels(tmp_path, labels, message):
    np.savez(tmp_path / "l.npz", x=np.zeros((4, 2), dtype=np.float32), y=labels)
    result = one_node("dataset.npz", {"path": str(tmp_path / "l.npz")}, tmp_path)
    assert result.status == "failed" and message in result.errors["d"]
