"""`heiti run` forks its first worker while it starts, and that worker imports for the first node."""

import json
import subprocess
import sys
import time
from multiprocessing import forkserver

import psutil
from heiti.engine import head_start
from heiti.engine.cli import main
from onnx import TensorProto, helper, save_model


def _onnx_model(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _graph(tmp_path, model="model.onnx"):
    _onnx_model(tmp_path / "model.onnx")
    path = tmp_path / "g.json"
    path.write_text(json.dumps({"format": "heiti-graph", "version": 1, "name": "head start", "nodes": [
        {"id": "m", "kind": "model.file", "params": {"path": model, "task": "none"}}], "edges": []}))
    return path


def _events(run):
    return [json.loads(line) for line in (run / "events.jsonl").open()]


def _ahead(run, node):
    return [e["message"] for e in _events(run)
            if e["type"] == "node_log" and e.get("node") == node and "ahead in worker" in e["message"]]


def test_the_first_node_imports_in_a_worker_forked_while_the_command_starts(tmp_path):
    graph = _graph(tmp_path)
    assert main(["run", str(graph), "--jobs", "2", "--no-cache", "--out", str(tmp_path / "r")]) == 0
    # an input-free node is never warmed by the scheduler (it runs at once): only the head start does it
    assert _ahead(tmp_path / "r", "m") and "imports made ahead" in _ahead(tmp_path / "r", "m")[0]


def test_no_head_start_for_a_node_the_cache_holds(tmp_path):
    graph = _graph(tmp_path)
    cache = ["--cache", str(tmp_path / "cache"), "--jobs", "2"]
    assert main(["run", str(graph), *cache, "--out", str(tmp_path / "r1")]) == 0
    assert _ahead(tmp_path / "r1", "m")
    assert main(["run", str(graph), *cache, "--out", str(tmp_path / "r2")]) == 0
    assert [e["type"] for e in _events(tmp_path / "r2") if e.get("node") == "m"] == ["node_cached"]
    assert not _ahead(tmp_path / "r2", "m")


def test_an_early_worker_no_run_takes_is_ended(tmp_path):
    graph = _graph(tmp_path, model="missing.onnx")  # invalid: the run never starts a launcher
    assert main(["run", str(graph), "--jobs", "2", "--out", str(tmp_path / "r")]) != 0
    assert head_start.take() is None
    server = forkserver._forkserver._forkserver_pid
    assert server is not None
    deadline = time.monotonic() + 10  # ended now, or by the head start's thread once it has forked it
    while True:
        alive = [p for p in psutil.Process(server).children() if p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert alive == []


def test_the_choice_is_made_without_validation_imports(tmp_path):
    """The early worker picks its node before networkx (validation's) is imported: those 0.15 s
    would come before the framework's import on the run's critical path."""
    graph = _graph(tmp_path)
    code = ("import json, sys\nimport heiti.engine.worker_preload\nfrom heiti.engine.head_start import choose\n"
            f"print(json.dumps([choose({{'graph': {str(graph)!r}, 'use_cache': False, 'cache': None}}), "
            "'networkx' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [["m", ["onnx"]], False]
