"""File helpers shared by the engine, the nodes and the devices: one way to hash a file."""

from __future__ import annotations

import hashlib
from pathlib import Path

BLOCK = 1 << 20


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


# --- reading .npz files safely ------------------------------------------------------------------
#: largest total size of the arrays `read_npz` decompresses by default (also bounded by free memory)
DEFAULT_MAX_BYTES = 4 << 30


class NpzError(ValueError):
    """An .npz file that cannot or must not be read; the message names the file and why."""


def _max_bytes(max_bytes: int | None) -> int:
    """The cap: the caller's, else 4 GiB or the memory available now, whichever is smaller."""
    if max_bytes is not None:
        return int(max_bytes)
    try:
        import psutil

        return min(DEFAULT_MAX_BYTES, int(psutil.virtual_memory().available))
    except Exception:  # noqa: BLE001 - no psutil or no /proc: keep the fixed cap
        return DEFAULT_MAX_BYTES


def _read_header(handle: object, where: str) -> tuple[tuple[int, ...], bool, object]:
    import numpy as np

    fmt = np.lib.format
    try:
        version = fmt.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(handle)
        else:
            raise NpzError(f"{where}: unsupported .npy format version {version}")
    except NpzError:
        raise
    except Exception as err:  # noqa: BLE001 - any header damage
        raise NpzError(f"{where}: not a valid .npy array header ({err})") from None
    if dtype.hasobject:
        raise NpzError(f"{where}: holds Python objects (dtype {dtype}), which cannot be read without pickle; "
                       "only plain numeric or string arrays are read")
    return shape, fortran, dtype


def npz_headers(path: Path | str) -> dict[str, tuple[tuple[int, ...], object]]:
    """Name -> (shape, dtype) of every array in an .npz, read from the headers alone."""
    import zipfile

    path = Path(path)
    out: dict[str, tuple[tuple[int, ...], object]] = {}
    with _open_zip(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            name = info.filename[:-4]
            try:
                with archive.open(info) as member:
                    shape, _, dtype = _read_header(member, f"{path} (array {name!r})")
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise NpzError(f"{path}: array {name!r} is damaged ({err})") from None
            out[name] = (tuple(int(v) for v in shape), dtype)
    return out


def _open_zip(path: Path):  # noqa: ANN202 - a ZipFile
    import zipfile

    if not path.is_file():
        raise NpzError(f"{path}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise NpzError(f"{path} is not an .npz file (not a zip archive: {err})") from None


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def _read_into(member: object, buffer: memoryview, problem: str) -> None:
    """Fill `buffer` from a zip member; a member that ends early is an error."""
    done = 0
    while done < len(buffer):
        got = member.readinto(buffer[done:])  # type: ignore[attr-defined]
        if not got:
            raise NpzError(problem)
        done += got


def read_npz(path: Path | str, keys: list[str] | tuple[str, ...] | None = None,
             max_bytes: int | None = None) -> dict[str, object]:
    """The arrays of an .npz file (only `keys` when given), read without pickle.

    Every member's header is checked first: object arrays are refused, and so is a file whose
    arrays would take more than `max_bytes` once decompressed (default: 4 GiB or the memory
    available, whichever is smaller) — before anything is allocated. Errors are `NpzError`s that
    name the file.
    """
    import math
    import zipfile

    import numpy as np

    path = Path(path)
    cap = _max_bytes(max_bytes)
    headers = npz_headers(path)
    wanted = list(headers) if keys is None else list(keys)
    missing = [k for k in wanted if k not in headers]
    if missing:
        raise NpzError(f"{path}: no array {missing[0]!r} (arrays: {', '.join(headers) or 'none'})")
    total = sum(math.prod(headers[k][0]) * headers[k][1].itemsize for k in wanted)  # type: ignore[attr-defined]
    if total > cap:
        raise NpzError(f"{path}: its arrays would take {_size(total)} in memory, above the limit of {_size(cap)}")
    arrays: dict[str, object] = {}
    with _open_zip(path) as archive:
        for name in wanted:
            try:
                with archive.open(name + ".npy") as member:
                    shape, fortran, dtype = _read_header(member, f"{path} (array {name!r})")
                    count = math.prod(shape)
                    array = np.empty(count, dtype=dtype)
                    _read_into(member, memoryview(array).cast("B"), f"{path}: array {name!r} is truncated")
            except (zipfile.BadZipFile, OSError, EOFError) as err:
                raise NpzError(f"{path}: array {name!r} is damaged ({err})") from None
            arrays[name] = array.reshape(shape, order="F" if fortran else "C")
    return arrays
