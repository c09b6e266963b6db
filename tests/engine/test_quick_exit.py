"""The `heiti` command leaves without the interpreter's teardown, but with its exit handlers run and
its output whole."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = """
import atexit, os

class Kept:
    def __del__(self):  # a teardown would call this; the quick exit does not get that far
        with open(os.environ["MARKS"] + "/teardown", "w") as f:
            f.write("ran")

KEPT = Kept()
atexit.register(lambda: open(os.environ["MARKS"] + "/atexit", "w").write("ran"))
"""


def _heiti(tmp_path, *args):
    (tmp_path / "marks").mkdir()
    (tmp_path / "exit_plugin.py").write_text(PLUGIN)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path}", HEITI_PLUGINS="exit_plugin",
               MARKS=str(tmp_path / "marks"))
    code = "import sys; from heiti.engine.cli import entry; sys.argv = ['heiti', *sys.argv[1:]]; sys.exit(entry())"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)


def test_a_command_exits_quickly_with_its_handlers_run_and_its_output_whole(tmp_path):
    done = _heiti(tmp_path, "nodes", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    kinds = json.loads(done.stdout)  # the whole listing arrived: stdout was flushed before leaving
    assert len(kinds) > 20
    assert (tmp_path / "marks" / "atexit").read_text() == "ran"
    assert not (tmp_path / "marks" / "teardown").exists()


def test_the_exit_code_is_the_commands(tmp_path):
    graph = tmp_path / "bad.json"
    graph.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "bad", "edges": [],
                                 "nodes": [{"id": "a", "kind": "no.such.kind", "params": {}}]}))
    done = _heiti(tmp_path, "validate", str(graph))
    assert done.returncode == 1
    assert (tmp_path / "marks" / "atexit").read_text() == "ran"
