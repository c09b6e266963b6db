"""Output agreement: every runtime's raw outputs against a reference runtime's, on the same inputs.

Conversion and compilation change results without anyone noticing when a model has no labels to
score; comparing outputs shows the loss directly. Figures per runtime (engine.measurements.
Agreement): max |out - ref|; that divided by max |ref| of the output (relative to the output's
magnitude, so elements near zero do not blow it up); the worst per-sample cosine similarity; the
share of samples whose arg-max class agrees (class outputs); the mAP@0.5 difference (detection).

Default tolerance (report param `agreement_tolerance`, 0.01 on max_rel, plus cosine >= 0.999; or
max_abs <= ATOL):
fp32 stacks differ by rounding only — about float32 eps (1.2e-7) times the depth of the longest
accumulation, i.e. 1e-6..1e-4 of the output range on real CNNs — so 1 % is two orders above fp32
noise, admits fp16 (eps 9.8e-4) and bf16 (eps 3.9e-3) inference, and rejects int8 pipelines whose
error passes ~2.5 quantisation steps of an 8-bit range (1/255 = 0.39 % per step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heiti.engine.measurements import Agreement

if TYPE_CHECKING:  # numpy loads when outputs are compared, not when a cached report is published
    import numpy as np

#: runtimes that run the model in the framework it was written in (the preferred reference)
NATIVE = ("torch", "keras")
DEFAULT_TOLERANCE = 0.01
MIN_COSINE = 0.999
#: absolute differences at or below this always agree: float32 holds ~7 significant digits, so at
#: unit-scale outputs (probabilities, normalised maps) 1e-6 is rounding; it also judges outputs
#: whose reference is all zeros, where relative figures do not exist (a sigmoid map of no text)
ATOL = 1e-6


def choose_reference(entries: list[Any], spec: str = "") -> Any | None:
    """The reference entry: by name/node id when `spec` is given, else the native framework's
    branch, else the first ONNX Runtime branch, else the first entry with outputs."""
    with_outputs = [e for e in entries if outputs_path(e) is not None]
    if spec:
        for e in entries:
            if spec in (e.name, e.node):
                return e
        names = ", ".join(e.name for e in entries)
        raise ValueError(f"reference {spec!r} matches no runtime; choose one of: {names}")
    for pick in (lambda e: e.data.runtime in NATIVE, lambda e: e.data.runtime == "onnxruntime", lambda e: True):
        found = next((e for e in with_outputs if pick(e)), None)
        if found is not None:
            return found
    return None


def outputs_path(entry: Any) -> Path | None:
    """The raw-outputs file of an entry (named by the measurements file, beside it)."""
    name = entry.data.outputs_file
    if not name or entry.source is None:
        return None
    path = Path(entry.source).parent / name
    return path if path.is_file() else None


def compare_outputs(out: list[list[np.ndarray]], ref: list[list[np.ndarray]], *, classes: bool,
                    tolerance: float = DEFAULT_TOLERANCE, reference: str = "") -> Agreement:
    """Agreement of per-sample outputs `out` with `ref` (the first min(len) samples of each)."""
    import numpy as np

    n = min(len(out), len(ref))
    agreement = Agreement(reference=reference, samples=n)
    if n == 0:
        agreement.note = "no outputs to compare"
        return agreement
    if len(out) != len(ref):
        agreement.note = f"compared the first {n} samples ({len(out)} here, {len(ref)} in the reference)"
    if len(out[0]) != len(ref[0]):
        agreement.note = f"{len(out[0])} outputs here, {len(ref[0])} in the reference: compared the common ones"
    per_output = []
    cosines = []
    for k in range(min(len(out[0]), len(ref[0]))):
        a = [np.asarray(s[k], dtype=np.float64).reshape(-1) for s in out[:n]]
        b = [np.asarray(s[k], dtype=np.float64).reshape(-1) for s in ref[:n]]
        if any(x.size != y.size for x, y in zip(a, b, strict=True)):
            per_output.append({"output": k, "note": f"sizes differ ({a[0].size} vs {b[0].size})"})
            continue
        flat_a, flat_b = np.concatenate(a), np.concatenate(b)
        if not (np.isfinite(flat_a).all() and np.isfinite(flat_b).all()):
            per_output.append({"output": k, "note": "non-finite values (NaN or inf)"})
            continue
        max_abs = float(np.max(np.abs(flat_a - flat_b))) if flat_a.size else 0.0
        scale = float(np.max(np.abs(flat_b))) if flat_b.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else None)
        sample_cos = [c for c in (_cosine(x, y) for x, y in zip(a, b, strict=True)) if c is not None]
        cos = min(sample_cos) if sample_cos else None
        if cos is not None:
            cosines.append(cos)
        per_output.append({"output": k, "max_abs": max_abs, "max_rel": max_rel, "cosine": cos,
                           "within": bool(max_abs <= ATOL or (cos is not None and cos >= MIN_COSINE
                                                              and max_rel is not None and max_rel <= tolerance))})
    scored = [p for p in per_output if "max_abs" in p]
    if scored:
        agreement.max_abs = max(p["max_abs"] for p in scored)
        rels = [p["max_rel"] for p in scored if p["max_rel"] is not None]
        agreement.max_rel = max(rels) if rels else None
        agreement.cosine = min(cosines) if cosines else None
        agreement.within = all(p["within"] for p in scored)
        if any(p["max_rel"] is None or p["cosine"] is None for p in scored):
            agreement.note = (agreement.note + "; " if agreement.note else "") + (
                "an output of the reference is all zeros: judged by the absolute difference")
    else:
        agreement.within = False
        agreement.note = agreement.note or "; ".join(p.get("note", "") for p in per_output)
    if classes and scored and per_output[0].get("max_abs") is not None:
        top_a = [int(np.argmax(s[0])) for s in out[:n]]
        top_b = [int(np.argmax(s[0])) for s in ref[:n]]
        agreement.top1 = float(np.mean(np.asarray(top_a) == np.asarray(top_b)))
    agreement.outputs = per_output
    return agreement


def _cosine(x: np.ndarray, y: np.ndarray) -> float | None:
    """Cosine similarity; None when exactly one side is all zeros (no direction to compare)."""
    import numpy as np

    nx, ny = float(np.linalg.norm(x)), float(np.linalg.norm(y))
    if nx == 0 or ny == 0:
        return 1.0 if nx == ny else None
    return float(np.clip(np.dot(x, y) / (nx * ny), -1.0, 1.0))


def _is_class_output(entry: Any, sample: list[np.ndarray]) -> bool:
    import numpy as np
    from heiti.nodes.runtimes.outputs import class_count

    if entry.data.task != "classification" or not sample:
        return False
    first = np.asarray(sample[0])
    count = class_count([1, *first.shape[1:]]) if first.ndim else None
    return count is not None and count >= 2


def attach_agreement(entries: list[Any], reference: str = "", tolerance: float = DEFAULT_TOLERANCE
                     ) -> dict[str, dict[str, Any]]:
    """Compute every entry's agreement with the reference and set `entry.data.agreement`.

    Returns {node id: agreement as JSON} for the entries that got one. Entries without raw
    outputs (older files, other runs) are left as they are.
    """
    from heiti.nodes.runtimes.outputs import load_outputs

    ref = choose_reference(entries, reference)
    if ref is None or outputs_path(ref) is None:
        return {}
    ref_outputs = load_outputs(outputs_path(ref))  # type: ignore[arg-type]
    ref_map = ref.data.detection.map50 if ref.data.detection is not None else None
    result: dict[str, dict[str, Any]] = {}
    for entry in entries:
        path = outputs_path(entry)
        if path is None:
            continue
        outputs = ref_outputs if entry is ref else load_outputs(path)
        agreement = compare_outputs(outputs, ref_outputs, classes=_is_class_output(entry, outputs[0] if outputs else []),
                                    tolerance=tolerance, reference=ref.name)
        if ref_map is not None and entry.data.detection is not None:
            agreement.map50_delta = entry.data.detection.map50 - ref_map
        entry.data.agreement = agreement
        result[entry.node] = agreement.model_dump(mode="json")
    return result


def write_agreement(path: Path, agreements: dict[str, dict[str, Any]]) -> None:
    Path(path).write_text(json.dumps(agreements, indent=1), encoding="utf-8")


def merge_into_measurements(run_dir: Path, agreements: dict[str, dict[str, Any]]) -> None:
    """Store each agreement in the run folder's copy of that runtime's measurements file."""
    from heiti.engine.graph import atomic_write_text

    for node, agreement in agreements.items():
        target = Path(run_dir) / "measurements" / f"{node}.json"
        if not target.is_file():
            continue
        try:
            raw = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        raw["agreement"] = agreement
        atomic_write_text(target, json.dumps(raw, indent=1), durable=False)  # a run folder's file
