"""What a runtime's raw outputs mean for its task, and keeping them for output agreement.

A model's task decides what quality can be computed from its outputs. `classification` needs one
score per class ([N, C], or [N, C, 1, 1]) or integer class indices ([N] / [N, 1]); anything else
(a 1x1xHxW probability map, a scalar, a 5-D tensor) is an error that says so and points at
`task: "none"` — it must never reach the confusion matrix, whose size is classes² (a 320x320 map
read as 102,400 classes asked for 78 GiB). `none` means: latency, resources and agreement only.

The raw outputs of the evaluated samples are saved beside measurements.json (outputs.npz), so the
report node, where every branch meets, can compare runtimes output by output.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.node import NodeError

if TYPE_CHECKING:  # numpy loads when outputs are handled, not when `heiti run` validates a model file
    import numpy as np

TASKS = ("classification", "detection", "none")
#: beyond this many classes the confusion matrix (classes² integers, written to JSON) is unreasonable
MAX_CLASSES = 4096
#: raw outputs kept per runtime for agreement; past this only the first samples are kept
MAX_OUTPUT_BYTES = 64 * 2**20
NONE_HINT = 'set task "none" on the model node (latency, resources and output agreement only)'


def model_task(meta: Any, dataset_task: str) -> str:
    """The task quality is computed for: the model's own `none` wins over the dataset's task, and
    an unlabelled dataset (task none) keeps the model's task (class outputs still get top-1 agreement)."""
    task = meta.get("task") if meta is not None else None
    if task == "none":
        return "none"
    if dataset_task == "none" and task in ("classification", "detection"):
        return str(task)
    return dataset_task


def class_count(shape: list[Any]) -> int | None:
    """C when `shape` (batch first) is a class vector [N, C] or [N, C, 1, ...]; None when it is not
    one or when a non-batch dimension is unknown."""
    dims = list(shape[1:])
    if not dims or any(d is None or (isinstance(d, int) and d < 0) for d in dims):
        return None
    big = [int(d) for d in dims if int(d) != 1]
    if len(big) == 1 and dims[0] == big[0]:
        return big[0]
    return None


def classification_output_problem(outputs: list[dict[str, Any]]) -> str | None:
    """Why these declared outputs cannot be scored as classification, or None (fine or unknown).

    Used before running (model.file, validation): only shapes that are fully known are judged.
    """
    if not outputs:
        return None
    first = outputs[0]
    shape = list(first.get("shape") or [])
    name = first.get("name", "output 0")
    if not shape:
        return f"output {name!r} is a scalar; classification needs one score per class, shape [N, C]"
    if any(d is None or (isinstance(d, int) and d < 0) for d in shape[1:]):
        return None  # unknown until run
    dtype = str(first.get("dtype", "float32"))
    if _is_int(dtype) and all(int(d) == 1 for d in shape[1:]):
        return None  # class indices
    count = class_count(shape)
    if count is None:
        return (f"output {name!r} has shape {shape}; classification needs one score per class, shape [N, C] "
                "(this looks like a map or a tensor of another task)")
    if count < 2:
        return f"output {name!r} has shape {shape}: one score per sample; classification needs [N, C] with C >= 2"
    if count > MAX_CLASSES:
        return f"output {name!r} has {count} classes; Heiti scores at most {MAX_CLASSES} (confusion matrix)"
    return None


def _is_int(dtype: Any) -> bool:
    import numpy as np

    try:
        return np.issubdtype(np.dtype(str(dtype)), np.integer)
    except TypeError:
        return str(dtype).startswith(("int", "uint"))


def class_scores(outputs: list[list[np.ndarray]], n_labels: int) -> np.ndarray:
    """(N, C) scores from per-sample outputs (each a list of arrays with a batch axis of 1).

    Integer outputs of one value per sample are class indices (turned into one-hot scores);
    float outputs must be class vectors. Several outputs: the first one is scored. Raises a
    NodeError naming the shape otherwise — before anything of size classes² is allocated.
    """
    import numpy as np

    if not outputs or not outputs[0]:
        raise NodeError("the model returned no outputs to score")
    first = [np.asarray(sample[0]) for sample in outputs]
    shape = [None if first[0].ndim == 0 else len(outputs), *first[0].shape[1:]]
    if first[0].ndim == 0:
        raise NodeError("the model's first output is a scalar; classification needs one score per class, "
                        "shape [N, C]", NONE_HINT)
    if any(a.shape != first[0].shape for a in first):
        raise NodeError(f"the model's first output changes shape between samples ({first[0].shape} then "
                        f"{next(a.shape for a in first if a.shape != first[0].shape)}); classification needs [N, C]",
                        NONE_HINT)
    if _is_int(first[0].dtype) and first[0].size == 1:
        labels = np.asarray([int(a.reshape(-1)[0]) for a in first], dtype=np.int64)
        n_classes = max(n_labels, int(labels.max(initial=0)) + 1)
        if labels.min(initial=0) < 0 or n_classes > MAX_CLASSES:
            raise NodeError(f"the model's integer output holds {labels.min()}..{labels.max()}: not class indices "
                            f"of at most {MAX_CLASSES} classes", NONE_HINT)
        scores = np.zeros((len(labels), n_classes), dtype=np.float32)
        scores[np.arange(len(labels)), labels] = 1.0
        return scores
    count = class_count(shape)
    if count is None or count < 2:
        raise NodeError(f"the model's first output has shape {[1, *first[0].shape[1:]]} per sample; classification "
                        "needs one score per class, shape [N, C]", NONE_HINT)
    if count > MAX_CLASSES:
        raise NodeError(f"the model's first output has {count} classes; Heiti scores at most {MAX_CLASSES}", NONE_HINT)
    return np.stack([a.reshape(-1) for a in first]).astype(np.float64)


# --- raw outputs beside the measurements -------------------------------------------------------------
def save_outputs(path: Path, outputs: list[list[np.ndarray]], max_bytes: int = MAX_OUTPUT_BYTES) -> int:
    """Write per-sample outputs to an .npz: `o<k>` stacks output k over samples (a new axis 0)
    when its shape is the same for every sample, else `o<k>_<i>` per sample. Keeps the first
    samples that fit in `max_bytes`; returns how many samples were written."""
    import numpy as np

    per_sample = [sum(np.asarray(a).nbytes for a in sample) for sample in outputs]
    kept = 0
    total = 0
    for size in per_sample:
        if kept and total + size > max_bytes:
            break
        total += size
        kept += 1
    arrays: dict[str, np.ndarray] = {}
    n_outputs = len(outputs[0]) if outputs else 0
    for k in range(n_outputs):
        items = [np.asarray(sample[k]) for sample in outputs[:kept]]
        if all(a.shape == items[0].shape for a in items):
            arrays[f"o{k}"] = np.stack(items)
        else:
            arrays.update({f"o{k}_{i}": a for i, a in enumerate(items)})
    np.savez(path, n=np.asarray(kept), **arrays)
    return kept


def load_outputs(path: Path) -> list[list[np.ndarray]]:
    """Per-sample outputs as written by `save_outputs` (no pickle)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        n = int(data["n"])
        keys = set(data.files) - {"n"}
        count = len({k.split("_")[0] for k in keys})
        samples: list[list[np.ndarray]] = [[] for _ in range(n)]
        for k in range(count):
            if f"o{k}" in keys:
                stacked = data[f"o{k}"]
                for i in range(n):
                    samples[i].append(stacked[i])
            else:
                for i in range(n):
                    samples[i].append(data[f"o{k}_{i}"])
    return samples


OUTPUTS_FILE = "outputs.npz"


def keep_outputs(ctx: Any, outputs: list[list[np.ndarray]]) -> str | None:
    """Save the outputs into the node's work folder for agreement; the file name, or None (with a
    warning) when they cannot be saved — the measurement itself stands either way."""
    try:
        kept = save_outputs(Path(ctx.workdir) / OUTPUTS_FILE, outputs)
    except Exception as err:  # noqa: BLE001 - odd output types: no agreement, but keep the figures
        ctx.warn(f"raw outputs not kept for agreement: {type(err).__name__}: {err}")
        return None
    if kept < len(outputs):
        ctx.warn(f"raw outputs of the first {kept} of {len(outputs)} samples kept for agreement "
                 f"({MAX_OUTPUT_BYTES // 2**20} MB cap)")
    return OUTPUTS_FILE
