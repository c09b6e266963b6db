"""`heiti validate` (which `heiti run` does first, before any node starts) on a model-file flow
imports no numerics: every module it would import delays the first node by as much."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "onnx", "tensorflow", "keras", "torch", "onnxruntime", "matplotlib")


def test_validating_a_model_file_flow_imports_no_numerics(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: validation never opens it
    nodes = [{"id": f"model_{task}", "kind": "model.file", "params": {"path": str(tmp_path / "m.keras"), "task": task}}
             for task in ("none", "classification")]
    graph = tmp_path / "flow.json"
    graph.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "lean", "nodes": nodes, "edges": []}))
    code = ("import atexit, json, runpy, sys\n"
            f"atexit.register(lambda: print('MODULES=' + json.dumps(sorted(m for m in {HEAVY!r} "
            "if m in sys.modules)), file=sys.stderr))\n"
            f"sys.argv = ['heiti', 'validate', {str(graph)!r}]\n"
            "runpy.run_module('heiti.engine.cli', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    line = next((line for line in result.stderr.splitlines() if line.startswith("MODULES=")), None)
    assert line is not None, result.stderr[-2000:]
    assert "valid" in result.stdout and result.returncode == 0, result.stdout
    assert json.loads(line.removeprefix("MODULES=")) == []


def test_publishing_a_cached_report_imports_no_numerics(tmp_path):
    """A cached re-run publishes the report in the `heiti` process: the agreement it merges into
    the measurements files must not pull numpy in (~0.3 s of a re-run that takes ~1 s)."""
    (tmp_path / "measurements").mkdir()
    (tmp_path / "measurements" / "ort.json").write_text(json.dumps({"node": "ort"}))
    code = ("import json, sys\n"
            "from pathlib import Path\n"
            "from heiti.nodes.runtimes.agreement import merge_into_measurements\n"
            f"merge_into_measurements(Path({str(tmp_path)!r}), {{'ort': {{'max_rel': 0.001}}}})\n"
            f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == []
    assert json.loads((tmp_path / "measurements" / "ort.json").read_text())["agreement"] == {"max_rel": 0.001}


def test_the_command_starts_before_pydantic_and_the_graph_model_are_imported():
    """`heiti run` starts its fork server first: importing the command must not load the engine's models."""
    code = "import sys, json, heiti.engine.cli\nprint(json.dumps(sorted(m for m in ('pydantic', 'networkx', 'heiti.engine.graph') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
