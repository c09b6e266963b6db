"""Unlabelled data and input preprocessing for the dataset nodes.

A pretrained model brought from elsewhere often comes without labelled data in Heiti's format:
runtimes can still be timed and their outputs compared on plain inputs. Such a dataset has task
"none" and one split, `test` (x_test only). Presets give the input scalings pretrained models
expect: ImageNet mean/std (torchvision, PaddleOCR), [0, 1] (YOLO), [-1, 1] (MobileNet, MediaPipe).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine import DatasetHandle, NodeError

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

#: preset -> (mean, std) applied to images scaled to [0, 1]; "custom" uses the node's mean/std params
PRESETS: dict[str, tuple[list[float], list[float]]] = {
    "unit": ([0.0], [1.0]),
    "symmetric": ([0.5], [0.5]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}
PRESET_HELP = ("input scaling: custom = params mean/std; unit = [0, 1]; symmetric = [-1, 1]; "
               "imagenet = ImageNet mean/std per RGB channel")


def preset_stats(preset: str, mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    return (list(mean), list(std)) if preset == "custom" else PRESETS[preset]


def has_array(path: str, key: str) -> bool:
    """Whether the .npz at `path` holds `key` (read from the zip directory; nothing is unpickled)."""
    import zipfile

    source = Path(path).expanduser()
    try:
        with zipfile.ZipFile(source) as archive:
            return f"{key}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return True  # let the node's own reader report the damage


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """NCHW samples in the layout asked for (4-D only)."""
    import numpy as np

    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if x.ndim == 4 and layout == "NHWC" else x


def unlabelled_handle(ctx: Any, x: np.ndarray, layout: str, meta: dict[str, Any]) -> DatasetHandle:
    """Write x (NCHW, float) as the test split of an unlabelled dataset (task none) and describe it."""
    import numpy as np

    if len(x) == 0:
        raise NodeError("the dataset holds no samples")
    path = Path(ctx.workdir) / "dataset.npz"
    stored = to_layout(np.ascontiguousarray(x), layout)
    np.savez(path, x_test=stored)
    ctx.log(f"unlabelled dataset: {len(x)} samples of shape {list(stored.shape[1:])} ({layout}) in split test; "
            "runtimes report latency, resources and output agreement")
    return DatasetHandle(path=path, task="none", class_names=[], input_shape=[int(d) for d in x.shape[1:]],
                         layout=layout if x.ndim == 4 else "NCHW",
                         meta={"counts": {"train": 0, "val": 0, "test": int(len(x))}, "dtype": str(stored.dtype),
                               "unlabelled": True, **meta})


def unlabelled_npz(ctx: Any, source: str, x_key: str, layout: str) -> DatasetHandle:
    """dataset.npz without a labels array: every sample goes to the test split, unlabelled."""
    import numpy as np

    path = Path(source).expanduser()
    from heiti.engine.files import NpzError, npz_headers, read_npz

    try:
        names = list(npz_headers(path))
        if x_key not in names:
            raise NodeError(f"{path.name} has no array {x_key!r} (arrays: {', '.join(names) or 'none'})",
                            "set param x_key")
        x = np.asarray(read_npz(path, [x_key])[x_key])
    except NpzError as err:  # damage, object arrays (no pickle), or too large to read
        raise NodeError(str(err), "save plain numeric arrays with numpy.savez") from None
    if not np.issubdtype(x.dtype, np.number):
        raise NodeError(f"x must be numeric, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim not in (2, 4):
        raise NodeError(f"x has shape {x.shape}; expected (N, F), (N, H, W) or 4-D images")
    ctx.warn(f"{path.name} has no labels array: unlabelled (no accuracy; latency and output agreement only)")
    return unlabelled_handle(ctx, x.astype(np.float32), layout, {"source": str(path)})


def flat_images(root: Path, suffixes: set[str]) -> list[Path]:
    """Images lying directly in `root` (a folder without class sub-folders)."""
    return sorted(f for f in root.iterdir() if f.is_file() and f.suffix.lower() in suffixes)


def holds_images(folder: Path, suffixes: set[str]) -> bool:
    """Whether any image lies in `folder` or below (a class folder, as opposed to __pycache__)."""
    return any(f.is_file() and f.suffix.lower() in suffixes for f in folder.rglob("*"))
