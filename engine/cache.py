"""Content-addressed artifact cache, keyed by a node's input signature.

Key = hash(kind, kind version, params, upstream keys per input port, contents of files named by
path params). A hit restores the node's files into the run folder and its outputs with paths
rewritten, so that every run folder stands on its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from heiti.engine.copying import copy_tree, tick_past
from heiti.engine.digests import DigestMemo, identity
from heiti.engine.files import file_sha256
from heiti.engine.paths import default_cache_dir  # noqa: F401 - where the cache lives, said here too
from heiti.engine.payloads import Payload
from pydantic import BaseModel

NODE_TOKEN = "${{node:{key}}}"  # stands for the folder of the node with that cache key
CACHE_FORMAT = 3  # 3: copies, read-only files and a manifest


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


#: a folder param may hold at most this many entries (files and sub-folders), so that `/` fails
#: in seconds; raise it with HEITI_MAX_FOLDER_ENTRIES for a larger dataset
MAX_FOLDER_ENTRIES = int(os.environ.get("HEITI_MAX_FOLDER_ENTRIES", "200000"))
#: up to this many bytes (one file, or a folder's files together) the contents are hashed;
#: above, names, sizes and modification times are (what make and rsync trust)
CONTENT_HASH_LIMIT = 1 << 30


def _stat_signature(info: os.stat_result) -> str:
    return f"{info.st_size}:{info.st_mtime_ns}"


def _file_digest(path: Path, info: os.stat_result, memo: DigestMemo | None = None) -> str:
    from heiti.engine.paths import PathProblem

    if info.st_size > CONTENT_HASH_LIMIT:
        return "stat:" + _stat_signature(info)
    try:
        return memo.sha256(path, info) if memo is not None else file_sha256(path)
    except OSError as err:
        raise PathProblem(f"{path}: cannot read ({err.strerror or err})") from None


def _walk_folder(root: Path) -> list[tuple[str, Path, os.stat_result | None]]:
    """(relative name, path, stat of a regular file or None) for everything under `root`, sorted.

    Names are listed first and counted (cheap: no stat), then stat'ed, so that a path such as
    `/` or a symlink loop ends after MAX_FOLDER_ENTRIES names with a clear message. Symlinks are
    followed (datasets are often linked together). Special files inside (FIFOs, devices) enter
    by name only and are never opened.
    """
    from heiti.engine.paths import PathProblem

    names: list[str] = []  # plain strings: pathlib costs ~10x more per name on a deep walk
    count = 0
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        count += len(dirs) + len(files)
        if count > MAX_FOLDER_ENTRIES:
            raise PathProblem(f"folder {root} holds more than {MAX_FOLDER_ENTRIES} files and folders; a path "
                              "param names one dataset or model folder (HEITI_MAX_FOLDER_ENTRIES raises the limit)")
        names.extend(os.path.join(folder, name) for name in sorted(files))
    found: list[tuple[str, Path, os.stat_result | None]] = []
    for name in names:
        try:
            info: os.stat_result | None = os.stat(name)
        except OSError:
            info = None  # a dangling link: its name still counts
        regular = info is not None and stat.S_ISREG(info.st_mode)
        found.append((os.path.relpath(name, root), Path(name), info if regular else None))
    return found


def hash_path(path: Path, memo: DigestMemo | None = None) -> str:
    """sha256 identifying a file or folder named by a path param; PathProblem when unusable.

    A file's bytes; a folder's names and file contents, or names, sizes and mtimes when its
    files add up to more than CONTENT_HASH_LIMIT (hashing gigabytes of images on every run would
    cost more than the nodes it saves). Missing paths and special files (FIFOs, devices, /proc)
    raise with a message naming the path. `memo` remembers the digests of unchanged files.
    """
    from heiti.engine.paths import check_path

    path = Path(path)
    info = check_path(path)
    if stat.S_ISREG(info.st_mode):
        return _file_digest(path, info, memo)
    entries = _walk_folder(path)
    by_content = sum(i.st_size for _, _, i in entries if i is not None) <= CONTENT_HASH_LIMIT
    h = hashlib.sha256(b"content" if by_content else b"stat")
    for name, sub, sub_info in entries:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        if sub_info is None:
            h.update(b"special or dangling\0")
        elif by_content:
            h.update(_file_digest(sub, sub_info, memo).encode())
        else:
            h.update(_stat_signature(sub_info).encode())
    return h.hexdigest()


def node_key(kind: str, version: int, params: BaseModel, input_keys: dict[str, list[str]],
             path_params: tuple[str, ...] = (), base_dir: Path | None = None,
             memo: DigestMemo | None = None) -> str:
    """The cache key; raises PathProblem when a path param names nothing usable (that node's failure)."""
    from heiti.engine.paths import resolve

    files = {}
    for name in path_params:
        value = getattr(params, name, None)
        if value:
            files[name] = hash_path(resolve(str(value), base_dir), memo)
    blob = _canonical({
        "cache_format": CACHE_FORMAT, "kind": kind, "version": version,
        "params": params.model_dump(mode="json"), "inputs": input_keys, "files": files,
    })
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# --- payload (de)serialisation with relocatable paths -----------------------------------------
def _map_strings(value: Any, fn: Any) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


def dump_outputs(outputs: dict[str, Any], nodes_root: Path, folder_keys: dict[str, str]) -> dict[str, Any]:
    """Outputs as JSON, with paths inside the run's node folders written as `${node:<key>}/...`.

    A path may point into an upstream node's folder (a pass-through model). Folders are named by
    their node's cache key, not its id: another graph may hold the same node under another id,
    and a key is what both runs share. Ancestors are restored or run before their descendants,
    so each key maps to a folder of the new run again.
    """
    root = str(Path(nodes_root).resolve()) + os.sep

    def encode(text: str) -> str:
        if not text.startswith(root):
            return text
        node_id, _, rest = text[len(root):].partition(os.sep)
        key = folder_keys.get(node_id)
        if key is None:
            return text
        return NODE_TOKEN.format(key=key) + (os.sep + rest if rest else "")

    data = {}
    for port, value in outputs.items():
        if isinstance(value, Payload):
            data[port] = {"type": type(value).__name__, "data": value.model_dump(mode="json")}
        else:
            data[port] = {"type": None, "data": value}
    return _map_strings(data, encode)


class StaleEntry(Exception):
    """A cached output names a folder that this run does not have."""


def load_outputs(data: dict[str, Any], nodes_root: Path, key_folders: dict[str, str]) -> dict[str, Any]:
    root = str(Path(nodes_root).resolve())

    def decode(text: str) -> str:
        if not text.startswith("${node:"):
            return text
        key, _, rest = text[len("${node:"):].partition("}")
        if key not in key_folders:
            raise StaleEntry(key)
        return os.path.join(root, key_folders[key]) + rest

    data = _map_strings(data, decode)
    outputs = {}
    for port, item in data.items():
        cls = Payload.registry.get(item["type"]) if item["type"] else None
        outputs[port] = cls.model_validate(item["data"]) if cls else item["data"]
    return outputs


class CorruptEntry(Exception):
    """A cache entry's files no longer match the manifest written when it was stored."""


def _file_names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.is_symlink()}


def _read_seals(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _seal(files: Path, seals: Path) -> None:
    """Record each stored file's identity, then hold the entry back until the clock has ticked.

    The kernel stamps ctime from a coarse clock: a write in the same tick as the seal would keep
    the sealed ctime. The entry only becomes visible (renamed into place) once a fresh ctime,
    probed on the seals file itself, is later than every sealed one, so any write after that
    moves a file's ctime off its seal. If the clock does not move in TICK_WAIT_S, no seals are
    kept and every restore hashes the files.
    """
    sealed = {str(p.relative_to(files)): p.stat() for p in sorted(files.rglob("*"))
              if p.is_file() and not p.is_symlink()}
    seals.write_text(json.dumps({name: identity(info) for name, info in sealed.items()}), encoding="utf-8")
    os.chmod(seals, 0o444)
    if not tick_past(seals, max((info.st_ctime_ns for info in sealed.values()), default=0)):
        seals.unlink()


def _holds_copies(workdir: Path, copies: dict[str, str], expected: dict[str, list[Any]]) -> bool:
    """`workdir` holds exactly the manifest's files, each still with the identity its copy had."""
    try:
        if set(copies) != set(expected) or _file_names(workdir) != set(expected):
            return False
        if any(p.is_symlink() for p in workdir.rglob("*")):
            return False
        for name, (size, _digest) in expected.items():
            info = (workdir / name).stat()
            if identity(info) != copies[name] or info.st_size != size:
                return False
    except OSError:
        return False
    return True


def _manifest(folder: Path) -> dict[str, list[Any]]:
    """{relative path: [size, sha256]} of every file under `folder`."""
    return {str(p.relative_to(folder)): [p.stat().st_size, file_sha256(p)]
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


class ArtifactCache:
    """Entries are immutable: files are stored read-only with a manifest of sizes and hashes,
    checked on every restore; run folders always get their own copies."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> Path | None:
        entry = self.entry(key)
        return entry if (entry / "outputs.json").is_file() else None

    def verify(self, key: str) -> dict[str, list[Any]]:
        """Raise CorruptEntry unless the entry's files match its manifest exactly; the manifest.

        A file still carrying the identity sealed when it was stored (`seals.json`: inode, size,
        mtime, ctime) has not been written since (see `_seal`) and is not read again; any other
        file (an entry copied from elsewhere, a file touched since) is hashed.
        """
        entry = self.entry(key)
        try:
            expected = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CorruptEntry(f"manifest unreadable: {err}") from err
        seals = _read_seals(entry / "seals.json")
        files = entry / "files"
        present = _file_names(files) if files.is_dir() else set()
        if present != set(expected):
            extra, gone = sorted(present - set(expected)), sorted(set(expected) - present)
            raise CorruptEntry(f"files differ from the manifest (added {extra[:3]}, missing {gone[:3]})")
        for name, (size, digest) in expected.items():
            path = files / name
            info = path.stat()
            if seals.get(name) == identity(info) and info.st_size == size:
                continue
            if [info.st_size, file_sha256(path)] != [size, digest]:
                raise CorruptEntry(f"{name} changed since it was stored")
        return expected

    def drop(self, key: str) -> None:
        """Remove an entry (renamed away first, so a concurrent reader never sees half of it)."""
        entry = self.entry(key)
        if not entry.exists():
            return
        trash = entry.with_name(f".drop-{entry.name}-{os.getpid()}")
        try:
            os.replace(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def restore(self, key: str, workdir: Path, key_folders: dict[str, str],
                copies: dict[str, str] | None = None) -> dict[str, Any]:
        """Bring a cached node back into `workdir`; `key_folders` maps keys to this run's node ids.

        `copies` ({name: identity}) describes copies of this entry's files made in `workdir`
        already (engine.prefetch): they are kept when they are exactly the entry's files and none
        was written since; otherwise the folder is cleared and copied again.
        Raises CorruptEntry when the entry fails its manifest check; the caller drops it and
        runs the node again.
        """
        entry = self.entry(key)
        expected = self.verify(key)
        data = json.loads((entry / "outputs.json").read_text(encoding="utf-8"))
        outputs = load_outputs(data["outputs"], workdir.parent, key_folders)
        if not (copies and _holds_copies(workdir, copies, expected)):
            clear_folder(workdir)
            if (entry / "files").is_dir():
                copy_tree(entry / "files", workdir, 0o644)
        return outputs

    def store(self, key: str, kind: str, workdir: Path, outputs: dict[str, Any],
              folder_keys: dict[str, str]) -> None:
        """Put a finished node's files and outputs in the cache; atomic by rename."""
        entry = self.entry(key)
        if entry.exists():
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=entry.parent))
        try:
            files = tmp / "files"
            files.mkdir()
            if workdir.exists():
                copy_tree(workdir, files, 0o444)
            (tmp / "manifest.json").write_text(json.dumps(_manifest(files), indent=1), encoding="utf-8")
            record = {"kind": kind, "key": key, "outputs": dump_outputs(outputs, workdir.parent, folder_keys)}
            (tmp / "outputs.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
            for name in ("manifest.json", "outputs.json"):
                os.chmod(tmp / name, 0o444)
            _seal(files, tmp / "seals.json")
            os.replace(tmp, entry)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not entry.exists():
                raise


def clear_folder(folder: Path) -> None:
    """An empty `folder`, whatever was there before (files from an earlier run included)."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
