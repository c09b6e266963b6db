"""Dataset nodes: turn a source of labelled samples into one classification .npz.

Every dataset node writes the same file (see the dataset convention): x_<split> float32 NCHW,
already normalised, y_<split> int64 class indices, for the splits train, val and test. Splits are
stratified (each class is split with the same fractions) and seeded, so a run is reproducible.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from heiti.engine import DatasetHandle, Node, NodeError, Out
from heiti.engine.files import NpzError, npz_headers, read_npz
from heiti.nodes.dataset_prep import (
    PRESET_HELP,
    flat_images,
    has_array,
    holds_images,
    preset_stats,
    to_layout,
    unlabelled_handle,
    unlabelled_npz,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


class _Params(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")


# --- shared helpers ---------------------------------------------------------------------------
def stratified_split(y: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, np.ndarray]:
    """Index arrays per split: each class is shuffled and cut with the same fractions."""
    import numpy as np

    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise NodeError(f"val_fraction ({val_fraction}) + test_fraction ({test_fraction}) must be below 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    # shuffle across classes so that a split is not sorted by class
    return {s: rng.permutation(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def write_classification(path: Path, x: np.ndarray, y: np.ndarray, split: dict[str, np.ndarray]) -> dict[str, int]:
    """Write x/y per split to `path` (np.savez); returns the sample count per split."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    for name in SPLITS:
        arrays[f"x_{name}"] = np.ascontiguousarray(x[split[name]])
        arrays[f"y_{name}"] = y[split[name]].astype(np.int64)
    np.savez(path, **arrays)
    return {name: int(len(split[name])) for name in SPLITS}


def standardise(x: np.ndarray, train_idx: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """Per-channel (x - mean) / std with statistics of the train split only."""
    import numpy as np

    axes = (0, 2, 3)
    mean = x[train_idx].mean(axis=axes, keepdims=True)
    std = x[train_idx].std(axis=axes, keepdims=True) + 1e-6
    return ((x - mean) / std).astype(np.float32), mean.ravel().tolist(), std.ravel().tolist()


def _handle(ctx: Any, path: Path, x: np.ndarray, class_names: list[str], counts: dict[str, int],
            meta: dict[str, Any]) -> DatasetHandle:
    ctx.log(f"dataset: {counts['train']} train, {counts['val']} val, {counts['test']} test samples, "
            f"{len(class_names)} classes, input {list(x.shape[1:])}")
    return DatasetHandle(path=path, task="classification", class_names=class_names,
                         input_shape=[int(d) for d in x.shape[1:]], layout="NCHW",
                         meta={"counts": counts, "dtype": str(x.dtype), **meta})


# --- scikit-learn digits ----------------------------------------------------------------------
class DigitsDataset(Node):
    """scikit-learn's 8x8 hand-written digits (1,797 images, 10 classes), shipped offline.

    Images are 1x8x8, pixel values 0..16; `normalise` scales them to 0..1 ("unit"), standardises
    with the train split's mean and std ("standard") or keeps them ("none").
    """

    kind = "dataset.digits"
    title = "Digits (8x8)"
    category = "Datasets"

    class Params(_Params):
        val_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="share of each class kept for validation")
        test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="share of each class kept for the test")
        seed: int = Field(0, description="seed of the split")
        normalise: Literal["unit", "standard", "none"] = Field("unit", description="pixel scaling")

    outputs = {"dataset": Out(DatasetHandle, format="classification")}

    def run(self, ctx: Any) -> dict[str, Any]:
        import numpy as np
        from sklearn.datasets import load_digits

        p = self.params
        digits = load_digits()
        x = digits.images.astype(np.float32)[:, None, :, :]
        y = digits.target.astype(np.int64)
        split = stratified_split(y, p.val_fraction, p.test_fraction, p.seed)
        meta: dict[str, Any] = {"source": "sklearn.load_digits", "normalise": p.normalise}
        if p.normalise == "unit":
            x = x / 16.0
        elif p.normalise == "standard":
            x, meta["mean"], meta["std"] = standardise(x, split["train"])
        path = ctx.workdir / "dataset.npz"
        counts = write_classification(path, x.astype(np.float32), y, split)
        return {"dataset": _handle(ctx, path, x, [str(i) for i in range(10)], counts, meta)}


# --- a folder of class sub-folders --------------------------------------------------------------
def _check_splits(value: list[float]) -> list[float]:
    if len(value) != 3 or any(v < 0 for v in value) or sum(value) <= 0:
        raise ValueError("give three non-negative shares: train, val, test (e.g. [0.7, 0.15, 0.15])")
    if value[0] <= 0:
        raise ValueError("the train share must be above 0")
    return value


def _load_image(path: Path, size: tuple[int, int], color: str) -> np.ndarray:
    """One image as float32 CHW in 0..1, resized to (height, width)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L" if color == "grey" else "RGB")
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.float32) / 255.0
    return array[None, :, :] if array.ndim == 2 else array.transpose(2, 0, 1)


class ImageFolderDataset(Node):
    """The user's own images: one sub-folder per class holding PNG or JPEG files.

    Images are converted to grey or RGB, resized to `size` (height, width), scaled to 0..1 and
    normalised per channel with `mean`/`std`. Files that cannot be decoded are skipped and counted
    in a warning.
    """

    kind = "dataset.image_folder"
    title = "Image folder"
    category = "Datasets"
    path_params = ("path",)

    class Params(_Params):
        path: str = Field("", description="folder holding one sub-folder of images per class, or the images "
                                          "themselves (unlabelled: latency and output agreement only)")
        size: list[int] = Field([32, 32], min_length=2, max_length=2, description="height, width in pixels")
        color: Literal["grey", "rgb"] = Field("rgb", description="convert every image to grey or RGB")
        preset: Literal["custom", "unit", "symmetric", "imagenet"] = Field("custom", description=PRESET_HELP)
        layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="layout of the arrays written (runtimes convert "
                                                                  "to the model's layout either way)")
        mean: list[float] = Field([0.0], description="per-channel mean subtracted (one value = all channels)")
        std: list[float] = Field([1.0], description="per-channel std divided by (one value = all channels)")
        dtype: Literal["float32", "float16"] = Field("float32", description="element type of the arrays")
        splits: list[float] = Field([0.7, 0.15, 0.15], description="shares of train, val, test")
        seed: int = Field(0, description="seed of the split")

        @field_validator("size")
        @classmethod
        def _positive(cls, value: list[int]) -> list[int]:
            if any(v <= 0 for v in value):
                raise ValueError("size must be two positive integers: height, width")
            return value

        @field_validator("splits")
        @classmethod
        def _splits(cls, value: list[float]) -> list[float]:
            return _check_splits(value)

        @field_validator("std")
        @classmethod
        def _std(cls, value: list[float]) -> list[float]:
            if not value or any(v <= 0 for v in value):
                raise ValueError("std values must be positive")
            return value

    outputs = {"dataset": Out(DatasetHandle, format="classification")}

    def _channel_stats(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        stats = []
        preset = preset_stats(self.params.preset, self.params.mean, self.params.std)
        for name, values in zip(("mean", "std"), preset, strict=True):
            if len(values) == 1:
                values = values * channels
            if len(values) != channels:
                raise NodeError(f"param {name} has {len(values)} values; {self.params.color} images have {channels} channel(s)")
            stats.append(np.asarray(values, dtype=np.float32).reshape(1, channels, 1, 1))
        return stats[0], stats[1]

    def run(self, ctx: Any) -> dict[str, Any]:
        import numpy as np

        p = self.params
        root = Path(p.path).expanduser()
        if not p.path or not root.is_dir():
            raise NodeError(f"image folder not found: {p.path!r}", "set param path to a folder with one sub-folder per class")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if flat_images(root, IMAGE_SUFFIXES) and not any(holds_images(root / c, IMAGE_SUFFIXES) for c in classes):
            return {"dataset": self._unlabelled(ctx, root)}
        if not classes:
            raise NodeError(f"{root} has no class sub-folders", "put the images of each class in their own sub-folder")
        files: dict[str, list[Path]] = {}
        for name in classes:
            files[name] = sorted(f for f in (root / name).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files[name]:
                raise NodeError(f"class folder {root / name} holds no PNG or JPEG image", "remove the folder or add images")
        total = sum(len(v) for v in files.values())
        images: list[np.ndarray] = []
        labels: list[int] = []
        skipped: list[str] = []
        done = 0
        size = (p.size[0], p.size[1])
        for label, name in enumerate(classes):
            kept = 0
            for path in files[name]:
                ctx.check_cancelled()
                try:
                    images.append(_load_image(path, size, p.color))
                    labels.append(label)
                    kept += 1
                except Exception:  # noqa: BLE001 - any decode failure means "unreadable"
                    skipped.append(str(path.relative_to(root)))
                done += 1
                ctx.progress(done / total, f"reading {name}")
            if kept == 0:
                raise NodeError(f"no image of class {name!r} could be read ({len(files[name])} file(s) unreadable)")
        if skipped:
            shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
            ctx.warn(f"skipped {len(skipped)} unreadable image(s) of {total}: {shown}")
        x = np.stack(images).astype(np.float32)
        mean, std = self._channel_stats(x.shape[1])
        x = ((x - mean) / std).astype(p.dtype)
        y = np.asarray(labels, dtype=np.int64)
        shares = np.asarray(p.splits, dtype=np.float64) / sum(p.splits)
        split = stratified_split(y, float(shares[1]), float(shares[2]), p.seed)
        path = ctx.workdir / "dataset.npz"
        counts = write_classification(path, to_layout(x, p.layout), y, split)
        meta = {"source": str(root), "skipped": len(skipped), "color": p.color, "preset": p.preset,
                "mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
        handle = _handle(ctx, path, x, classes, counts, meta)
        handle.layout = p.layout
        return {"dataset": handle}

    def _unlabelled(self, ctx: Any, root: Path) -> DatasetHandle:
        """A flat folder of images: one unlabelled test split, in file-name order."""
        import numpy as np

        p = self.params
        files = flat_images(root, IMAGE_SUFFIXES)
        images, skipped = [], []
        for i, path in enumerate(files):
            ctx.check_cancelled()
            try:
                images.append(_load_image(path, (p.size[0], p.size[1]), p.color))
            except Exception:  # noqa: BLE001 - any decode failure means "unreadable"
                skipped.append(path.name)
            ctx.progress((i + 1) / len(files), "reading images")
        if not images:
            raise NodeError(f"none of the {len(files)} image(s) in {root} could be read")
        if skipped:
            ctx.warn(f"skipped {len(skipped)} unreadable image(s) of {len(files)}: {', '.join(skipped[:5])}")
        x = np.stack(images).astype(np.float32)
        mean, std = self._channel_stats(x.shape[1])
        x = ((x - mean) / std).astype(p.dtype)
        return unlabelled_handle(ctx, x, p.layout, {"source": str(root), "files": [f.name for f in files][:1000],
                                                    "preset": p.preset, "color": p.color,
                                                    "mean": mean.ravel().tolist(), "std": std.ravel().tolist()})


# --- the user's own arrays -------------------------------------------------------------------------
#: arrays that would take more than this many times the .npz file's size in memory (and more than
#: NPZ_RATIO_FLOOR bytes) are refused before anything is decompressed: real data compresses a few
#: times, a zip bomb (2.4 MB of zeros declaring 2.5 GB) a thousand
NPZ_MAX_RATIO = 100
NPZ_RATIO_FLOOR = 256 << 20


def refuse_npz_bomb(source: Path, names: tuple[str, ...]) -> None:
    """NodeError when the named arrays' headers promise far more memory than the file could hold."""
    import numpy as np

    try:
        headers = npz_headers(source)
    except NpzError:
        return  # read_npz names the fault when the node reads the file
    total = sum(int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
                for name, (shape, dtype) in headers.items() if name in names)
    size = max(source.stat().st_size, 1)
    if total > NPZ_RATIO_FLOOR and total > NPZ_MAX_RATIO * size:
        raise NodeError(f"{source}: its arrays would take {total / 2**30:.2f} GiB in memory, {total // size}× the "
                        f"file's {size / 2**20:.1f} MiB; refused as a possible zip bomb",
                        "if the data is real, save it uncompressed with numpy.savez")


class NpzDataset(Node):
    """The user's own arrays in an .npz file: samples `x` and integer labels `y`, split here.

    x may be (N, H, W) (one channel is added), (N, C, H, W) or (N, H, W, C) with `layout` NHWC, or
    (N, F) for plain feature vectors. Class names come from param `class_names`, from an array
    `class_names` in the file, or are the label numbers.
    """

    kind = "dataset.npz"
    title = "Arrays (.npz)"
    category = "Datasets"
    path_params = ("path",)

    class Params(_Params):
        path: str = Field("", description=".npz file holding arrays x and y")
        x_key: str = Field("x", description="name of the samples array")
        y_key: str = Field("y", description="name of the labels array; without it the data is unlabelled (all in "
                                            "the test split: latency and output agreement only)")
        layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="layout of 4-D x in the file")
        class_names: list[str] = Field(default_factory=list, description="names of the classes, in label order")
        val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
        test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
        seed: int = 0

    outputs = {"dataset": Out(DatasetHandle, format="classification")}

    def _read(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        import numpy as np

        p = self.params
        source = Path(p.path).expanduser()
        if not p.path or not source.is_file():
            raise NodeError(f"npz file not found: {p.path!r}", "set param path to an .npz holding x and y")
        try:
            keys = list(npz_headers(source))
            missing = [k for k in (p.x_key, p.y_key) if k not in keys]
            if missing:
                raise NodeError(f"{source.name} has no array {missing[0]!r} (arrays: {', '.join(keys) or 'none'})",
                                "set params x_key / y_key")
            wanted = [p.x_key, p.y_key] + (["class_names"] if "class_names" in keys else [])
            data = read_npz(source, wanted)
        except NpzError as err:
            raise NodeError(str(err), "save plain numeric arrays with numpy.savez") from None
        x, y = np.asarray(data[p.x_key]), np.asarray(data[p.y_key])
        names = [str(n) for n in data["class_names"]] if "class_names" in data else []
        return x, y, list(p.class_names) or names

    def run(self, ctx: Any) -> dict[str, Any]:
        import numpy as np

        p = self.params
        if p.path:
            refuse_npz_bomb(Path(p.path).expanduser(), (p.x_key, p.y_key))
        if p.path and not has_array(p.path, p.y_key):  # no labels: an unlabelled test split
            return {"dataset": unlabelled_npz(ctx, p.path, p.x_key, p.layout)}
        x, y, names = self._read()
        if len(x) != len(y):
            raise NodeError(f"x has {len(x)} samples but y has {len(y)} labels")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise NodeError(f"y must be a 1-D array of non-negative integer class indices, got {y.dtype} {y.shape}")
        if not np.issubdtype(x.dtype, np.number):
            raise NodeError(f"x must be numeric, got {x.dtype}")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and p.layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
        elif x.ndim not in (2, 4):
            raise NodeError(f"x has shape {x.shape}; expected (N, F), (N, H, W) or 4-D images")
        n_classes = int(y.max()) + 1 if y.size else 0
        if names and len(names) < n_classes:
            raise NodeError(f"{len(names)} class names given but labels go up to {n_classes - 1}")
        names = names or [str(i) for i in range(n_classes)]
        split = stratified_split(y.astype(np.int64), p.val_fraction, p.test_fraction, p.seed)
        path = ctx.workdir / "dataset.npz"
        x = x.astype(np.float32)
        counts = write_classification(path, x, y.astype(np.int64), split)
        return {"dataset": _handle(ctx, path, x, names, counts, {"source": str(Path(p.path).expanduser())})}
