"""What a measurements file says about the model itself: its files, bytes on disk and gzip'ed, and
how it was made (tuning, quantisation, ...), read from files and the model meta, never by loading it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def model_files(path: Path | str) -> list[Path]:
    """The files that make up a model: a file plus its weight side-files (.bin, .onnx.data), or a folder's files."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    if not path.is_file():
        return []
    siblings = [path.with_suffix(".bin")] if path.suffix == ".xml" else []
    siblings.append(path.with_name(path.name + ".data"))
    if path.suffix == ".onnx":
        siblings.append(path.with_suffix(".data"))
    return [path, *(extra for extra in dict.fromkeys(siblings) if extra.is_file() and extra != path)]


def model_size_bytes(path: Path | str) -> int | None:
    """Bytes on disk of a model: a file plus its weight side-files (.bin, .onnx.data), or a folder."""
    path = Path(path)
    files = model_files(path)
    return sum(p.stat().st_size for p in files) if files or path.is_dir() else None


#: models above this many bytes are not gzip'ed (seconds per 100 MB at level 6; not worth a minute)
GZIP_MAX_BYTES = 1 << 30


def model_gzip_bytes(path: Path | str, level: int = 6, keep: Any = None) -> int | None:
    """Bytes of the model gzip'ed (level 6, on all cores, streamed, nothing kept): what weight
    sharing and pruning save.

    A single file is gzip'ed as it is; a model of several files (side-files, a folder) as a tar of
    them, with fixed names and times so equal models give equal figures. None when the model is
    missing or larger than GZIP_MAX_BYTES. `keep`, a list, receives the gzip stream (to check it).
    """
    import tarfile

    from heiti.nodes.runtimes.gzipsize import ParallelGzipSize

    path = Path(path)
    files = model_files(path)
    if not files or sum(f.stat().st_size for f in files) > GZIP_MAX_BYTES:
        return None
    with ParallelGzipSize(level, keep=keep is not None) as gz:
        if len(files) == 1 and not path.is_dir():
            with files[0].open("rb") as src:
                while chunk := src.read(1 << 20):
                    gz.write(chunk)
        else:
            root = path if path.is_dir() else path.parent
            with tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
                for file in files:
                    info = tar.gettarinfo(str(file), arcname=file.relative_to(root).as_posix())
                    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 0, 0, 0, "", "", 0o644
                    with file.open("rb") as src:
                        tar.addfile(info, src)
    if keep is not None:
        keep.append(gz.stream)
    return gz.count


def model_gzip_bytes_soon(path: Path | str) -> Callable[[], int | None]:
    """`model_gzip_bytes` started in a thread (zlib lets go of the GIL, ~0.3 s for MobileNetV2 on 2 cores), so
    a runtime overlaps it with opening its session; calling the result waits for the figure (or
    raises what it raised). A runtime waits for it before it times anything."""
    import threading

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = model_gzip_bytes(path)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            box["error"] = err

    thread = threading.Thread(target=work, name="heiti-gzip-size", daemon=True)
    thread.start()

    def result() -> int | None:
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    return result


#: meta keys kept out of the measurements file: bulky, or recorded there already
_META_LEFT_OUT = frozenset({"history", "class_names", "postprocess", "pipeline", "arch_config", "input_shape",
                            "input_name", "target"})


def model_facts(meta: dict[str, Any]) -> dict[str, Any]:
    """How the model was made (tuning, quantisation, sparsity, clusters, ...) for the measurements file:
    the model meta without bulky keys, so a report can tell tuned from untuned and int8 from fp32."""
    import json

    facts = {}
    for key, value in meta.items():
        if key in _META_LEFT_OUT:
            continue
        text = json.dumps(value, default=str)
        if len(text) <= 1000:  # a plug-in's big extras stay in the model's own meta
            facts[key] = json.loads(text)
    return facts
