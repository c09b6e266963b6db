"""`dataset.shapes`: procedurally drawn detection images (circles, squares, triangles), seeded.

Needs nothing from the internet and trains a small detector in minutes, yet is not trivial:
random colours, scales, rotations, partial overlaps, and noisy gradient backgrounds with clutter.
The images are written as PNG files with a COCO-format annotation file in the node's folder and
read back through the same code as `dataset.coco`, so the example exercises the path users take
with their own data.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.node import Node, NodeError, Out
from heiti.engine.payloads import DatasetHandle
from heiti.nodes.detection.coco import CocoParams, build_dataset
from pydantic import Field, field_validator

if TYPE_CHECKING:  # numpy loads when a node runs, not when the kinds are listed
    import numpy as np

SHAPES = ("circle", "square", "triangle")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Corners of a square or triangle of circumradius r around (cx, cy), rotated by angle."""
    n = 4 if kind == "square" else 3
    return [(cx + r * math.cos(angle + 2 * math.pi * i / n), cy + r * math.sin(angle + 2 * math.pi * i / n))
            for i in range(n)]


def _covered_fraction(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """How much of the smaller of two boxes the other covers (0..1): a small shape hidden
    behind a big one has a low IoU but is covered entirely."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 0.0


def _background(rng: np.random.Generator, size: int, noise: float) -> np.ndarray:
    """A random colour gradient with gaussian noise, as float RGB in [0, 255]."""
    import numpy as np

    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = (math.cos(angle) * xx + math.sin(angle) * yy)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return img + rng.normal(0, noise * 255, img.shape)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour far enough from the background's mean colour to be seen."""
    import numpy as np

    mean = background.reshape(-1, 3).mean(axis=0)
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.abs(colour - mean).sum() > 150:
            break
        colour = rng.uniform(0, 255, 3)
    return tuple(int(v) for v in colour)  # type: ignore[return-value]


def draw_image(rng: np.random.Generator, size: int, classes: list[str], n_objects: int,
               scale: tuple[float, float], max_overlap: float, noise: float, clutter: int):
    """One image (uint8 HxWx3) and its objects as [(x, y, w, h), class index] pairs."""
    import numpy as np
    from PIL import Image, ImageDraw

    background = _background(rng, size, noise)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(clutter):  # thin lines: edges that are not objects
        pts = rng.uniform(0, size, 4)
        draw.line([(pts[0], pts[1]), (pts[2], pts[3])], fill=_contrasting_colour(rng, background), width=1)
    placed: list[tuple[float, float, float, float]] = []
    objects: list[tuple[tuple[float, float, float, float], int]] = []
    for _ in range(n_objects):
        for _attempt in range(30):
            label = int(rng.integers(len(classes)))
            kind = classes[label]
            side = rng.uniform(*scale) * size
            r = side / 2 if kind == "circle" else side / 2 * (1.25 if kind == "square" else 1.3)
            cx, cy = rng.uniform(r, size - r, 2) if size > 2 * r else (size / 2, size / 2)
            if kind == "circle":
                pts = [(cx - r, cy - r), (cx + r, cy + r)]
            else:
                pts = _polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi))
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), size), min(max(ys), size))
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            if all(_covered_fraction(box, other) <= max_overlap for other in placed):
                break
        else:
            continue
        colour = _contrasting_colour(rng, background)
        if kind == "circle":
            draw.ellipse(pts, fill=colour)
        else:
            draw.polygon(pts, fill=colour)
        placed.append(box)
        objects.append(((box[0], box[1], box[2] - box[0], box[3] - box[1]), label))
    pixels = np.asarray(image, dtype=np.float64)
    pixels = pixels + rng.normal(0, noise * 255 * 0.5, pixels.shape)  # noise over the shapes too
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


def write_shapes_coco(folder: Path, count: int, size: int, classes: list[str], objects: tuple[int, int],
                      scale: tuple[float, float], max_overlap: float, noise: float, clutter: int,
                      seed: int, ctx: Any = None) -> tuple[Path, Path]:
    """Draw `count` images into folder/images and write folder/annotations.json (COCO format)."""
    import numpy as np
    from PIL import Image

    image_dir = Path(folder) / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coco: dict[str, Any] = {
        "info": {"description": "Heiti procedural shapes", "seed": seed},
        "images": [], "annotations": [],
        "categories": [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(classes)],
    }
    for i in range(count):
        if ctx is not None and i % 50 == 0:
            ctx.check_cancelled()
            ctx.progress(0.5 * i / count, f"drawing image {i}/{count}")
        n = int(rng.integers(objects[0], objects[1] + 1))
        pixels, objs = draw_image(rng, size, classes, n, scale, max_overlap, noise, clutter)
        name = f"shape_{i:05d}.png"
        Image.fromarray(pixels).save(image_dir / name, compress_level=1)
        coco["images"].append({"id": i + 1, "file_name": name, "width": size, "height": size})
        for (x, y, w, h), label in objs:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": label + 1,
                "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                "area": round(w * h, 2), "iscrowd": 0,
            })
    json_path = Path(folder) / "annotations.json"
    json_path.write_text(json.dumps(coco), encoding="utf-8")
    return json_path, image_dir


class ShapesDataset(Node):
    """Procedurally drawn detection images of circles, squares and triangles (seeded, offline).

    Random colours, sizes, rotations and partial overlaps on noisy gradient backgrounds with
    line clutter. Written as PNG + COCO JSON in the node folder, then read like `dataset.coco`.
    """

    kind = "dataset.shapes"
    title = "Shapes (detection)"
    category = "Datasets"
    version = 1

    class Params(CocoParams):
        count: int = Field(1200, ge=3, le=100_000, description="number of images drawn")
        size: int = Field(64, ge=16, le=1024, description="side of the square images drawn, in pixels")
        classes: list[str] = Field(list(SHAPES), min_length=1, description="shapes drawn: circle, square, triangle")
        min_objects: int = Field(1, ge=0)
        max_objects: int = Field(4, ge=0, le=50)
        min_scale: float = Field(0.15, gt=0, le=1, description="smallest object side, as a fraction of size")
        max_scale: float = Field(0.45, gt=0, le=1, description="largest object side, as a fraction of size")
        max_overlap: float = Field(0.3, ge=0, le=1, description="largest fraction of a box another object's box may cover")
        noise: float = Field(0.06, ge=0, le=1, description="std of the pixel noise, as a fraction of 255")
        clutter: int = Field(2, ge=0, le=50, description="random lines drawn behind the shapes")
        seed: int = Field(0, description="seed of the drawing and of the train/val/test shuffle")

        @field_validator("classes")
        @classmethod
        def _known_shapes(cls, value: list[str]) -> list[str]:
            unknown = [c for c in value if c not in SHAPES]
            if unknown or len(set(value)) != len(value):
                raise ValueError(f"classes must be distinct names among {', '.join(SHAPES)}; got {value}")
            return value

    outputs = {"dataset": Out(DatasetHandle, format="detection")}

    def run(self, ctx, **inputs) -> dict[str, Any]:
        p = self.params
        if p.min_objects > p.max_objects or p.min_scale > p.max_scale:
            raise NodeError("min_objects/min_scale must not exceed max_objects/max_scale")
        json_path, image_dir = write_shapes_coco(
            ctx.workdir, p.count, p.size, list(p.classes), (p.min_objects, p.max_objects),
            (p.min_scale, p.max_scale), p.max_overlap, p.noise, p.clutter, p.seed, ctx)
        coco_params = CocoParams(**{k: getattr(p, k) for k in CocoParams.model_fields})
        handle = build_dataset(json_path, image_dir, coco_params, (p.size, p.size), ctx.workdir / "dataset.npz")
        handle.meta["name"] = "shapes"
        ctx.log(f"drew {p.count} images with {handle.meta['boxes']} shapes")
        ctx.progress(1.0, "done")
        return {"dataset": handle}
