"""Where the numbers were taken: CPU model and feature flags, cores, memory, OS, Python and the
framework versions, read from /proc and package metadata (no framework is imported)."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil

#: /proc/cpuinfo flags of integer dot-product instructions that int8 kernels rely on (x86 VNNI and
#: AMX, Arm dot-product and i8mm); without them int8 maths goes through 16-bit multiply-adds
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8", "asimddp", "i8mm")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, None where unreadable (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment_info(runtime: str = "", dists: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Where the numbers were taken: CPU, cores, OS, Python and framework versions (no imports).

    `dists` are the distributions whose versions describe the runtime; by default those its
    runtime class declares.
    """
    if dists is None:
        from heiti.nodes.runtimes import runtime_classes

        cls = runtime_classes().get(runtime)
        dists = cls.dists if cls is not None else ()
    versions: dict[str, str] = {"numpy": np.__version__}
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    mem = psutil.virtual_memory()
    return {
        "cpu": cpu_model(), "machine": platform.machine(),
        "cores_logical": psutil.cpu_count(logical=True), "cores_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(mem.total / 2**30, 2), "os": platform.platform(),
        "python": sys.version.split()[0], "frameworks": versions,
        **({"int8_dot_product": sorted(flags & set(INT8_DOT_FLAGS))} if (flags := cpu_flags()) is not None else {}),
    }
