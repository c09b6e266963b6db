"""What a worker takes over from the command that started it: its environment, folder and path.

Workers come from a fork server that may have started before this run (or for another one in the
same process), so each message that starts work carries the parent's present state.
"""

from __future__ import annotations

import os
import sys
from typing import Any

_ENV_SKIP = ("PWD", "OLDPWD", "SHLVL", "_")


def parent_environment() -> dict[str, Any]:
    """The parent's present environment, folder and import path, for a worker to adopt."""
    return {"env": {k: v for k, v in os.environ.items() if k not in _ENV_SKIP},
            "cwd": os.getcwd(), "sys_path": list(sys.path)}


def adopt_environment(message: dict[str, Any]) -> None:
    """In the worker: take the parent's env, cwd and path as `parent_environment` gave them."""
    os.environ.update(message.get("env", {}))
    if os.path.isdir(message.get("cwd", "")):
        os.chdir(message["cwd"])
    for entry in message.get("sys_path", []):
        if entry not in sys.path:
            sys.path.append(entry)
