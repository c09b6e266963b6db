"""`package:<module>/<path>` names a file that an installed Python package ships.

Site-packages folders differ per machine and per virtual environment, so a graph that uses a model
a wheel ships (rapidocr_onnxruntime's OCR models, say) names it by package instead of by absolute
path. The package is located with importlib's finder — its code is never imported or run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

PREFIX = "package:"


def is_package_path(value: str | Path) -> bool:
    return str(value).startswith(PREFIX)


def package_file(value: str | Path) -> Path:
    """The installed file `package:<module>/<path inside it>` names; ValueError when it cannot be."""
    text = str(value)[len(PREFIX):].strip().lstrip("/")
    module, _, inner = text.partition("/")
    if not module or not inner:
        raise ValueError(f"{value!r}: write package:<module>/<path inside the package>, "
                         "e.g. package:rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ValueError(f"{value!r}: no installed Python package {module!r} (pip install it)")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    if not roots:
        raise ValueError(f"{value!r}: {module!r} is not a package with files")
    root = Path(roots[0]).resolve()
    path = (root / inner).resolve()
    if root not in path.parents:
        raise ValueError(f"{value!r}: the path leaves the package folder")
    return path
