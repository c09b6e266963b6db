"""`dataset.coco`: a COCO-format annotation file plus its image folder -> a detection dataset.

The user's own data enters here, so every problem is checked and named before anything is
trained: unreadable JSON, missing sections, annotations pointing at unknown images or
categories, boxes outside their image, missing or unreadable image files. Images are resized
(stretched) to one fixed size with their boxes scaled alike, converted to RGB, normalised with
mean/std, and split into train/val/test with a seeded shuffle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.node import Node, NodeError, Out
from heiti.engine.payloads import DatasetHandle
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

SPLITS = ("train", "val", "test")
#: a box may stick out of its image by this many pixels (rounding in annotation tools)
BOX_TOLERANCE_PX = 1.0
MAX_LISTED = 5


class CocoParams(BaseModel):
    """Resizing, normalisation and splitting shared by dataset.coco and dataset.shapes."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    mean: float = Field(0.5, description="subtracted from pixel values scaled to [0, 1]")
    std: float = Field(0.5, gt=0, description="pixel values are divided by this after subtracting mean")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = Field(0, description="seed of the train/val/test shuffle")


def _listing(problems: list[str]) -> str:
    more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return "; ".join(problems[:MAX_LISTED]) + more


def read_annotations(json_path: Path) -> dict[str, Any]:
    """Parse and structurally check a COCO file; raises NodeError naming what is wrong."""
    try:
        raw = json.loads(Path(json_path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NodeError(f"annotation file not found: {json_path}", "set the annotations param to a COCO JSON file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise NodeError(f"cannot read annotation file {json_path}: {err}") from None
    if not isinstance(raw, dict):
        raise NodeError(f"{json_path}: not a COCO annotation file (expected a JSON object)")
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(raw.get(key), list)]
    if missing:
        raise NodeError(f"{json_path}: missing or invalid section(s) {', '.join(missing)}",
                        "a COCO file has lists 'images', 'annotations' and 'categories'")
    problems: list[str] = []
    for i, img in enumerate(raw["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            problems.append(f"images[{i}] needs 'id' and 'file_name'")
    for i, cat in enumerate(raw["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            problems.append(f"categories[{i}] needs an 'id'")
    for i, ann in enumerate(raw["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            problems.append(f"annotations[{i}] needs 'image_id', 'category_id' and 'bbox'")
        elif not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, int | float) for v in bbox)):
            problems.append(f"annotations[{i}] (id {ann.get('id')}): bbox must be [x, y, width, height], got {bbox!r}")
    if problems:
        raise NodeError(f"{json_path}: {_listing(problems)}")
    image_ids = [img["id"] for img in raw["images"]]
    if len(set(image_ids)) != len(image_ids):
        raise NodeError(f"{json_path}: duplicate image ids")
    if not raw["categories"]:
        raise NodeError(f"{json_path}: no categories")
    known_images = set(image_ids)
    known_cats = {cat["id"] for cat in raw["categories"]}
    for i, ann in enumerate(raw["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id')})"
        if ann["image_id"] not in known_images:
            problems.append(f"{where}: unknown image id {ann['image_id']!r}")
        if ann["category_id"] not in known_cats:
            problems.append(f"{where}: unknown category id {ann['category_id']!r}")
        if ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
            problems.append(f"{where}: empty box {ann['bbox']}")
    if problems:
        raise NodeError(f"{json_path}: {_listing(problems)}",
                        f"known category ids: {sorted(known_cats, key=str)}")
    return raw


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Seeded shuffle of n images into sorted index arrays per split (test first, then val)."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 1 or (test_fraction > 0 and n_test < 1):
        raise NodeError(f"{n} images are too few to split (val {val_fraction}, test {test_fraction})",
                        "add images or lower the fractions")
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test : n_test + n_val]),
            "train": np.sort(order[n_test + n_val :])}


def _load_image(path: Path, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            original = im.size  # (width, height)
            rgb = im.convert("RGB")
            if rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8), original
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise NodeError(f"cannot read image {path}: {err}") from None


def build_dataset(json_path: Path, image_dir: Path, params: CocoParams, size: tuple[int, int],
                  out_path: Path, ctx: Any = None) -> DatasetHandle:
    """Read a COCO file and its images, check them, and write the detection .npz at out_path."""
    import numpy as np

    raw = read_annotations(json_path)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise NodeError(f"image folder not found: {image_dir}", "set the images param to the folder of the COCO images")
    images = sorted(raw["images"], key=lambda im: str(im["id"]))
    missing = [im["file_name"] for im in images if not (image_dir / im["file_name"]).is_file()]
    if missing:
        raise NodeError(f"{len(missing)} image file(s) listed in {json_path} are missing from {image_dir}: "
                        f"{_listing(missing)}")
    categories = sorted(raw["categories"], key=lambda c: (str(type(c["id"])), c["id"]))
    label_of = {c["id"]: k for k, c in enumerate(categories)}
    class_names = [str(c.get("name", c["id"])) for c in categories]
    by_image: dict[Any, list[dict[str, Any]]] = {im["id"]: [] for im in images}
    crowd = 0
    for ann in raw["annotations"]:
        if ann.get("iscrowd"):
            crowd += 1
            continue
        by_image[ann["image_id"]].append(ann)

    size = (int(size[0]), int(size[1]))
    pixels = np.zeros((len(images), size[0], size[1], 3), dtype=np.uint8)
    boxes: list[np.ndarray] = []
    problems: list[str] = []
    for i, im in enumerate(images):
        if ctx is not None:
            ctx.check_cancelled()
            if i % 50 == 0:
                ctx.progress(0.1 + 0.8 * i / len(images), f"reading images {i}/{len(images)}")
        pixels[i], (width, height) = _load_image(image_dir / im["file_name"], size)
        rows = []
        for ann in by_image[im["id"]]:
            x, y, w, h = (float(v) for v in ann["bbox"])
            tol = BOX_TOLERANCE_PX
            if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
                problems.append(f"annotation id {ann.get('id')}: box {ann['bbox']} is outside image "
                                f"{im['file_name']} ({width}x{height})")
                continue
            x1, y1 = max(x, 0.0), max(y, 0.0)
            x2, y2 = min(x + w, float(width)), min(y + h, float(height))
            sx, sy = size[1] / width, size[0] / height
            rows.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy, label_of[ann["category_id"]], i])
        boxes.append(np.asarray(rows, dtype=np.float64).reshape(-1, 6))
    if problems:
        raise NodeError(f"{json_path}: {len(problems)} box(es) outside their image: {_listing(problems)}",
                        "boxes are [x, y, width, height] in pixels of the original image")

    splits = split_indices(len(images), params.val_fraction, params.test_fraction, params.seed)
    arrays: dict[str, np.ndarray] = {}
    for split, idx in splits.items():
        x = pixels[idx].astype(np.float32) / 255.0
        arrays[f"x_{split}"] = ((x - params.mean) / params.std).transpose(0, 3, 1, 2).copy()
        rows = [boxes[j] for j in idx]
        table = np.concatenate(rows) if rows else np.zeros((0, 6))
        new_index = {int(j): n for n, j in enumerate(idx)}
        arrays[f"boxes_{split}"] = table[:, :4].astype(np.float32)
        arrays[f"labels_{split}"] = table[:, 4].astype(np.int64)
        arrays[f"image_idx_{split}"] = np.array([new_index[int(j)] for j in table[:, 5]], dtype=np.int64)
        arrays[f"files_{split}"] = np.array([images[j]["file_name"] for j in idx], dtype=np.str_)
    arrays["num_classes"] = np.array(len(class_names), dtype=np.int64)
    arrays["class_names"] = np.array(class_names, dtype=np.str_)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, **arrays)
    if crowd and ctx is not None:
        ctx.warn(f"{crowd} crowd annotation(s) (iscrowd=1) were left out")
    counts = {s: int(len(splits[s])) for s in SPLITS}
    return DatasetHandle(
        path=Path(out_path), task="detection", class_names=class_names, input_shape=[3, size[0], size[1]],
        layout="NCHW",
        meta={"name": Path(json_path).stem, "images": counts, "boxes": int(sum(len(b) for b in boxes)),
              "mean": params.mean, "std": params.std, "coco_json": str(Path(json_path).resolve()), "image_dir": str(image_dir.resolve()),
              "category_ids": [c["id"] for c in categories], "crowd_skipped": crowd},
    )


class CocoDataset(Node):
    """A detection dataset from a COCO-format JSON file and its image folder (your own data).

    Images are resized to `size` (boxes scaled alike), converted to RGB, normalised with mean/std
    and split into train/val/test with a seeded shuffle. Crowd annotations are left out.
    """

    kind = "dataset.coco"
    title = "COCO dataset"
    category = "Datasets"
    version = 1
    path_params = ("annotations", "images")

    class Params(CocoParams):
        annotations: str = Field(..., description="COCO annotation JSON file (images, annotations, categories)")
        images: str = Field(..., description="folder holding the image files named in the JSON")
        size: list[int] = Field([64, 64], min_length=2, max_length=2,
                                description="[height, width] the images are resized to")

    outputs = {"dataset": Out(DatasetHandle, format="detection")}

    def run(self, ctx, **inputs) -> dict[str, Any]:
        p = self.params
        ctx.progress(0.0, "reading annotations")
        handle = build_dataset(Path(p.annotations).expanduser(), Path(p.images).expanduser(), p,
                               (p.size[0], p.size[1]), ctx.workdir / "dataset.npz", ctx)
        ctx.log(f"{handle.meta['boxes']} boxes in {sum(handle.meta['images'].values())} images, "
                f"classes {handle.class_names}")
        ctx.progress(1.0, "done")
        return {"dataset": handle}
