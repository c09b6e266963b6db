"""Where `heiti serve` keeps uploaded models: one folder per SHA-256, filled chunk by chunk.

An upload is appended to `partial/<sha>.part`, so a link that drops mid-way resumes from the last
byte received; a `.part` left alone for `partial_ttl` seconds expires. Its name and packing are
checked before any byte is stored, and every size against what was actually written. When
complete, its SHA-256 is checked and it becomes `models/<sha>/<name>` (one file), or a folder
unpacked from a tar archive. Unpacking refuses anything but plain files and folders under the
target (no absolute paths, no `..`, no links, devices or sparse members), and the members may not
add up to more than the archive itself holds: an uncompressed tar cannot unpack to more bytes than
it has, so a small archive never fills the disk.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath

from heiti.engine.files import file_sha256

_SHA = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+\-]{0,127}$")
DEFAULT_MAX_MODEL_BYTES = 8 * 1024**3
DEFAULT_PARTIAL_TTL = 600.0
MAX_ARCHIVE_MEMBERS = 10_000
PACKINGS = ("file", "tar")


class StoreError(Exception):
    """A refused upload; `kind` is one of bad_request, mismatch, unsafe, too_large."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ModelStore:
    def __init__(self, root: Path, max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
                 partial_ttl: float = DEFAULT_PARTIAL_TTL) -> None:
        self.root = Path(root)
        self.models = self.root / "models"
        self.partial = self.root / "partial"
        self.models.mkdir(parents=True, exist_ok=True)
        self.partial.mkdir(parents=True, exist_ok=True)
        self.max_model_bytes = max_model_bytes
        #: seconds after its last chunk that an unfinished upload's bytes are removed
        self.partial_ttl = partial_ttl
        self._lock = threading.Lock()

    # --- checks ---------------------------------------------------------------------------------
    @staticmethod
    def check_sha(sha: object) -> str:
        if not isinstance(sha, str) or not _SHA.match(sha):
            raise StoreError("bad_request", f"sha256 must be 64 lowercase hex digits, got {sha!r}")
        return sha

    @staticmethod
    def check_name(name: object) -> str:
        if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
            raise StoreError("bad_request", f"model name {name!r} is not a plain file name")
        return name

    @staticmethod
    def check_packing(packing: object) -> str:
        if packing not in PACKINGS:
            raise StoreError("bad_request", f"unknown packing {packing!r} (file or tar)")
        return str(packing)

    def expire_partials(self, now: float | None = None) -> list[str]:
        """Remove unfinished uploads untouched for `partial_ttl` s; returns their SHA-256s."""
        cutoff = (time.time() if now is None else now) - self.partial_ttl
        gone = []
        with self._lock:
            for part in self.partial.glob("*.part"):
                try:
                    if part.stat().st_mtime < cutoff:
                        part.unlink()
                        gone.append(part.stem)
                except FileNotFoundError:
                    continue
        return gone

    def is_complete(self, sha: str) -> bool:
        return (self.models / self.check_sha(sha) / ".complete").exists()

    def offset(self, sha: str) -> int:
        part = self.partial / f"{self.check_sha(sha)}.part"
        return part.stat().st_size if part.exists() else 0

    # --- upload ---------------------------------------------------------------------------------
    def begin(self, sha: str, size: int, name: object = None, packing: object = "file") -> tuple[bool, int]:
        """(already complete?, bytes already received) for an upload of `size` bytes. The name and
        packing are checked here, before any byte is stored (`name` None: a query of the offset)."""
        self.check_sha(sha)
        if name is not None:
            self.check_name(name)
        self.check_packing(packing)
        self.expire_partials()
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise StoreError("bad_request", f"bad size {size!r}")
        if size > self.max_model_bytes:
            raise StoreError("too_large", f"model of {size} bytes is over this device's limit of {self.max_model_bytes}")
        if self.is_complete(sha):
            return True, size
        free = shutil.disk_usage(self.root).free
        if free < 2 * size:
            raise StoreError("too_large", f"not enough disk space: {size} bytes to store, {free} free")
        offset = self.offset(sha)
        if offset > size:
            (self.partial / f"{sha}.part").unlink()
            offset = 0
        return False, offset

    def append(self, sha: str, size: int, offset: int, data: memoryview | bytes) -> int:
        """Append a chunk at `offset` (must be where the partial file ends); returns the new end."""
        self.check_sha(sha)
        n = data.nbytes if isinstance(data, memoryview) else len(data)
        with self._lock:
            current = self.offset(sha)
            if offset != current:
                raise StoreError("bad_request", f"chunk at offset {offset}, but {current} bytes are stored; resend from {current}")
            if current + n > size or size > self.max_model_bytes:
                raise StoreError("bad_request", f"chunk runs past the declared size {size}")
            part = self.partial / f"{sha}.part"
            with open(part, "ab") as f:
                written = f.write(data)
                f.flush()
                end = os.fstat(f.fileno()).st_size
            if written != n or end != current + n:
                part.unlink(missing_ok=True)  # whatever happened (disk full, a second writer), start over
                raise StoreError("bad_request", f"stored {end - current} of a {n}-byte chunk; resend from 0",)
            return end

    def finish(self, sha: str, name: str, packing: str, size: int | None = None) -> Path:
        """Verify the hash of a fully received upload and install it; returns its folder."""
        self.check_sha(sha)
        self.check_name(name)
        self.check_packing(packing)
        part = self.partial / f"{sha}.part"
        with self._lock:
            if self.is_complete(sha):
                part.unlink(missing_ok=True)
                return self.models / sha
            if size is not None and self.offset(sha) != size:
                have = self.offset(sha)
                part.unlink(missing_ok=True)
                raise StoreError("mismatch", f"{have} bytes stored, {size} announced; upload again")
            actual = file_sha256(part)
            if actual != sha:
                part.unlink()
                raise StoreError("mismatch", f"received bytes hash to {actual[:12]}…, expected {sha[:12]}…; upload again")
            staging = self.models / f".{sha}.staging"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            try:
                if packing == "file":
                    os.replace(part, staging / name)
                elif packing == "tar":
                    _safe_unpack(part, staging, self.max_model_bytes)
                    part.unlink()
                else:
                    raise StoreError("bad_request", f"unknown packing {packing!r} (file or tar)")
                (staging / ".complete").write_text(name)
                final = self.models / sha
                shutil.rmtree(final, ignore_errors=True)
                os.replace(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                part.unlink(missing_ok=True)
                raise
            return final

    def entry_path(self, sha: str, entry: object) -> Path:
        """The model file or folder named `entry` inside a complete upload, checked to stay inside."""
        if not self.is_complete(sha):
            raise StoreError("no_model", f"no model {sha[:12]}… on this device; upload it first")
        if not isinstance(entry, str) or not entry:
            raise StoreError("bad_request", f"bad entry {entry!r}")
        rel = _safe_relative(entry)
        path = self.models / sha / rel
        if not path.exists():
            raise StoreError("no_model", f"{entry!r} is not in model {sha[:12]}…")
        return path


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("..", "") for p in path.parts) or "\\" in name:
        raise StoreError("unsafe", f"unsafe path {name!r} in the model archive")
    return path


def _checked_members(tar: tarfile.TarFile, archive_size: int, max_bytes: int) -> list[tarfile.TarInfo]:
    """Every member, checked before anything is written: plain files and folders only, no sparse
    members, and sizes that add up to no more than the archive holds and the limit allows."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for m in tar:
        members.append(m)
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise StoreError("too_large", f"model archive has more than {MAX_ARCHIVE_MEMBERS} entries")
        _safe_relative(m.name)
        if not (m.isfile() or m.isdir()):
            raise StoreError("unsafe", f"{m.name!r} in the model archive is a link or device")
        if m.issparse() or m.type == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse") for k in m.pax_headers):
            raise StoreError("unsafe", f"{m.name!r} in the model archive is a sparse file")
        total += m.size
        if total > max_bytes:
            raise StoreError("too_large", "model archive unpacks to more than the size limit")
        if total > archive_size:
            raise StoreError("unsafe", f"model archive of {archive_size} bytes claims {total} bytes of files")
    return members


def _copy_exact(source: object, target: Path, size: int) -> None:
    """Write exactly `size` bytes of `source` to a new file, or refuse the archive."""
    written = 0
    with open(target, "xb") as out:
        while written <= size:
            chunk = source.read(min(1 << 20, size - written + 1))  # type: ignore[attr-defined]
            if not chunk:
                break
            written += len(chunk)
            if written > size:
                break
            out.write(chunk)
    if written != size:
        raise StoreError("unsafe", f"{target.name!r} in the model archive holds {written} bytes, not {size}")


def _safe_unpack(archive: Path, dest: Path, max_bytes: int) -> None:
    """Extract plain files and folders only; every check happens before anything is written."""
    try:
        with tarfile.open(archive, "r:") as tar:
            members = _checked_members(tar, archive.stat().st_size, max_bytes)
            for m in members:
                target = dest / _safe_relative(m.name)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(m)
                assert source is not None
                with source:
                    _copy_exact(source, target, m.size)
    except tarfile.TarError as err:
        raise StoreError("unsafe", f"model archive is not a readable tar: {err}") from err
    except FileExistsError as err:
        raise StoreError("unsafe", f"model archive holds {Path(err.filename).name!r} twice") from err


#: a gzip-compressed archive may unpack to at most this many times its size (object files: 3-5x)
MAX_GZIP_RATIO = 64


def extract_flat(archive: Path, dest: Path, max_bytes: int = DEFAULT_MAX_MODEL_BYTES) -> list[Path]:
    """Unpack an archive of plain files with no folders (a TVM module's object files) into the new
    folder `dest`, under the same checks; `dest` is removed again when anything fails. TVM's
    `export_library` writes such a .tar gzip-compressed: it is decompressed first (to at most
    MAX_GZIP_RATIO times its size), and the checks then hold against the plain tar's real size."""
    with open(archive, "rb") as head:
        compressed = head.read(2) == b"\x1f\x8b"
    if not compressed:
        return _extract_flat(archive, dest, max_bytes)
    plain = dest.with_name(dest.name + ".plain.tar")
    try:
        _gunzip(archive, plain, min(DEFAULT_MAX_MODEL_BYTES, max_bytes * MAX_GZIP_RATIO))
        return _extract_flat(plain, dest, plain.stat().st_size)
    finally:
        plain.unlink(missing_ok=True)


def _gunzip(source: Path, target: Path, limit: int) -> None:
    import gzip
    import zlib

    written = 0
    try:
        with gzip.open(source, "rb") as src, open(target, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise StoreError("too_large", f"model archive decompresses to more than {limit} bytes")
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise StoreError("unsafe", f"not a readable gzip archive: {err}") from err


def _extract_flat(archive: Path, dest: Path, max_bytes: int) -> list[Path]:
    dest.mkdir()
    try:
        with tarfile.open(archive, "r:") as tar:
            members = _checked_members(tar, archive.stat().st_size, max_bytes)
            files = []
            for m in members:
                name = Path(m.name).name
                if not m.isfile() or name != m.name or name.startswith("."):
                    raise StoreError("unsafe", f"unexpected entry {m.name!r} in the archive")
                source = tar.extractfile(m)
                assert source is not None
                with source:
                    _copy_exact(source, dest / name, m.size)
                files.append(dest / name)
        return files
    except BaseException as err:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(err, tarfile.TarError):
            raise StoreError("unsafe", f"not a readable tar: {err}") from err
        if isinstance(err, FileExistsError):
            raise StoreError("unsafe", f"the archive holds {Path(err.filename).name!r} twice") from err
        raise
