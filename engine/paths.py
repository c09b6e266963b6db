"""Files that graphs and params name: resolved against the graph's folder, checked before use.

A relative path in a graph means "next to the graph file", so a graph runs the same from any
working directory. Special files are refused by what they are, before anything reads them: a
FIFO blocks its reader, /dev/zero never ends, and /proc or /sys files lie about their size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

KERNEL_ROOTS = ("/proc", "/sys", "/dev")
KERNEL_ALLOWED = ("/dev/shm",)  # a RAM disk holding ordinary files


def default_cache_dir() -> Path:
    """Where runs keep their cache unless told: $HEITI_CACHE, else .heiti/cache in the working folder."""
    return Path(os.environ.get("HEITI_CACHE", ".heiti/cache"))


def run_folder(graph_name: str, base: Path = Path("runs"), unnamed: str = "run") -> Path:
    """A new folder for a run (or a sweep) when none is given: <base>/<graph name>-<time>,
    numbered if taken."""
    import datetime
    import re

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", graph_name).strip("-")[:60] or unnamed
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = base / f"{name}-{stamp}"
    i = 2
    while out.exists():
        out = base / f"{name}-{stamp}-{i}"
        i += 1
    return out


class PathProblem(ValueError):
    """A path param that names nothing usable; the message names the path and what is wrong."""


class FileRefused(OSError):
    """A file that is not read at all: special, too big, or unreadable. The message says why."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "file refused"


def resolve(value: str | Path, base: Path | None) -> Path:
    """`value` as an absolute path: `~` expanded, relative ones taken from `base` (else the cwd);
    `package:<module>/<path>` names a file an installed package ships (engine.package_files)."""
    from heiti.engine.package_files import is_package_path, package_file

    if is_package_path(value):
        try:
            return package_file(value)
        except ValueError as err:
            raise PathProblem(str(err)) from None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path(base or Path.cwd()) / path
    return Path(os.path.normpath(path))


def relative_if_under(path: str | Path, base: Path | None) -> str:
    """How the editor writes a chosen path: relative when it lies under the graph's folder."""
    text = str(path)
    if not base or not text:
        return text
    absolute = resolve(text, base)
    try:
        return absolute.relative_to(Path(os.path.normpath(base))).as_posix() or "."
    except ValueError:
        return str(absolute)


def describe_mode(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "folder"), (stat.S_ISREG, "file"), (stat.S_ISFIFO, "named pipe (FIFO)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def is_kernel_file(path: Path) -> bool:
    """True for files of /proc, /sys and /dev (symlinks followed): their sizes and reads are not a file's."""
    real = os.path.realpath(path)
    if any(real == root or real.startswith(root + "/") for root in KERNEL_ALLOWED):
        return False
    return any(real == root or real.startswith(root + "/") for root in KERNEL_ROOTS)


def check_path(path: Path, expect: str | None = None) -> os.stat_result:
    """Stat `path` (never open it) and raise PathProblem unless it is a real file or folder.

    `expect` is "file", "folder" or None (either).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise PathProblem(f"{path} does not exist") from None
    except NotADirectoryError:
        raise PathProblem(f"{path} does not exist (a part of it is a file)") from None
    except OSError as err:
        raise PathProblem(f"{path}: {err.strerror or err}") from None
    what = describe_mode(info.st_mode)
    if is_kernel_file(path):
        raise PathProblem(f"{path} is a kernel {what} (under /proc, /sys or /dev), not a data file")
    if what not in ("file", "folder"):
        raise PathProblem(f"{path} is a {what}, not a file or folder")
    if expect and what != expect:
        raise PathProblem(f"{path} is a {what}, not a {expect}")
    return info


def read_capped(path: str | Path, max_bytes: int) -> bytes:
    """A regular file's bytes, at most `max_bytes`; FileRefused for anything else.

    The file is checked with stat before it is opened, opened without blocking (a FIFO swapped
    in meanwhile cannot hang us), checked again, and read to at most max_bytes + 1 bytes, so a
    file whose size lies (/proc) cannot run the memory up either.
    """
    path = Path(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path} is a {describe_mode(info.st_mode)}, not a regular file")
        if info.st_size > max_bytes:
            raise FileRefused(f"{path} is {info.st_size} bytes; the limit is {max_bytes}")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileRefused:
        raise
    except FileNotFoundError:
        raise FileRefused(f"{path}: no such file") from None
    except OSError as err:
        raise FileRefused(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path} is a {describe_mode(info.st_mode)}, not a regular file")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            block = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
        if total > max_bytes:
            raise FileRefused(f"{path} is larger than the limit of {max_bytes} bytes")
        return b"".join(chunks)
    except FileRefused:
        raise
    except OSError as err:
        raise FileRefused(f"{path}: cannot read ({err.strerror or err})") from None
    finally:
        os.close(fd)


# --- path params ----------------------------------------------------------------------------------
def expected_kind(cls: Any, name: str) -> str | None:
    """"file" or "folder" for a path param: from json_schema_extra {"path": ...}, else its description."""
    field = getattr(cls.Params, "model_fields", {}).get(name)
    if field is None:
        return None
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if extra.get("path") in ("file", "folder"):
        return str(extra["path"])
    words = (field.description or "").lower()
    found = [(words.find(w), w) for w in ("folder", "file") if w in words]
    return min(found)[1] if found else None


def path_noun(cls: Any, name: str) -> str:
    """How a message names the path: "dataset folder", "model file", "file or folder"."""
    prefix = {"Datasets": "dataset ", "Models": "model "}.get(getattr(cls, "category", ""), "")
    return prefix + (expected_kind(cls, name) or "file or folder")


def path_param_problems(cls: Any, params: Any, base: Path | None) -> list[tuple[str, str]]:
    """(param, message) for each path param naming nothing usable; empty values are left to the node."""
    problems = []
    for name in getattr(cls, "path_params", ()):
        value = getattr(params, name, None)
        if not value or not isinstance(value, str | Path):
            continue
        expect = expected_kind(cls, name)
        path = Path(str(value))
        try:
            path = resolve(value, base)
            check_path(path, expect)
        except PathProblem as err:
            text = str(err)
            if text.startswith(str(path)):
                text = f"{path_noun(cls, name)} {text}"
            problems.append((name, text))
    return problems


def resolve_graph_paths(graph: Any, registry: Any) -> Any:
    """A copy of `graph` whose path params are absolute, resolved against the graph's folder."""
    resolved = graph.copy_deep()
    base = graph.base_dir
    for spec in resolved.nodes:
        if spec.kind not in registry:
            continue
        for name in getattr(registry.get(spec.kind), "path_params", ()):
            value = spec.params.get(name)
            if isinstance(value, str) and value:
                try:
                    spec.params[name] = str(resolve(value, base))
                except PathProblem:
                    continue  # a missing package: the node says so when it runs
    return resolved


def rebase_graph_paths(graph: Any, registry: Any, new_base: Path) -> bool:
    """Before saving `graph` in `new_base`: each path param keeps naming the same file, written
    relative when it lies under new_base, absolute otherwise. True when a value changed."""
    changed = False
    old_base = graph.base_dir
    for spec in graph.nodes:
        if spec.kind not in registry:
            continue
        for name in getattr(registry.get(spec.kind), "path_params", ()):
            value = spec.params.get(name)
            if isinstance(value, str) and value:
                written = relative_if_under(resolve(value, old_base), Path(new_base).resolve())
                if written != value:
                    spec.params[name] = written
                    changed = True
    graph.base_dir = new_base
    return changed
