"""The `heiti` command, run as a user runs it: in a fresh process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["tensorflow", "torch", "tvm", "onnxruntime", "openvino", "keras", "ai_edge_litert"]


def heiti(*args, env_extra=None, timeout=120, cwd=None):
    env = dict(os.environ, HEITI_PLUGINS="tests.testnodes", PYTHONPATH=str(ROOT), COLUMNS="160")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "heiti.engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd or ROOT)


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


GOOD = {
    "format": "heiti-graph", "version": 1, "name": "cli demo",
    "nodes": [{"id": "a", "kind": "test.source", "params": {"value": 4}},
              {"id": "b", "kind": "test.add", "params": {"offset": 1}}],
    "edges": [{"from": ["a", "out"], "to": ["b", "values"]}],
}


def test_run_ok_then_cached(tmp_path):
    graph = write(tmp_path / "g.json", GOOD)
    cache = tmp_path / "cache"
    first = heiti("run", str(graph), "--out", str(tmp_path / "r1"), "--cache", str(cache))
    assert first.returncode == 0, first.stderr
    assert "run summary" in first.stderr and "ok" in first.stderr
    second = heiti("run", str(graph), "--out", str(tmp_path / "r2"), "--cache", str(cache))
    assert second.returncode == 0
    events = [json.loads(x) for x in (tmp_path / "r2" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events].count("node_cached") == 2


def test_set_overrides_a_param(tmp_path):
    graph = write(tmp_path / "g.json", GOOD)
    out = tmp_path / "r"
    result = heiti("run", str(graph), "--out", str(out), "--no-cache", "--set", "a.value=10")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "graph.json").read_text())["nodes"][0]["params"]["value"] == 10
    assert json.loads((out / "nodes" / "a" / "value.json").read_text()) == 10
    assert heiti("run", str(graph), "--set", "nonode.value=1").returncode == 1


def test_failing_node_exits_2(tmp_path):
    data = json.loads(json.dumps(GOOD))
    data["nodes"].append({"id": "f", "kind": "test.fail"})
    result = heiti("run", str(write(tmp_path / "g.json", data)), "--out", str(tmp_path / "r"), "--no-cache")
    assert result.returncode == 2
    assert "this node always fails" in result.stderr


def test_invalid_graph_exits_1_with_problems(tmp_path):
    data = json.loads(json.dumps(GOOD))
    data["nodes"][1]["params"] = {"ofset": 1}
    graph = write(tmp_path / "g.json", data)
    result = heiti("validate", str(graph))
    assert result.returncode == 1
    assert "did you mean offset?" in result.stdout
    as_json = heiti("validate", str(graph), "--json")
    payload = json.loads(as_json.stdout)
    assert payload["ok"] is False and payload["problems"][0]["node"] == "b"
    assert heiti("run", str(graph)).returncode == 1


def test_validate_ok(tmp_path):
    result = heiti("validate", str(write(tmp_path / "g.json", GOOD)))
    assert result.returncode == 0 and "valid" in result.stdout


def test_nodes_lists_kinds_with_params():
    result = heiti("nodes", "--json")
    kinds = {k["kind"]: k for k in json.loads(result.stdout)}
    assert kinds["test.source"]["params"]["value"]["default"] == 1.0
    assert kinds["test.tvm"]["inputs"][0]["formats"] == ["onnx", "tflite"]
    markdown = heiti("nodes", "--markdown").stdout
    assert "`test.add`" in markdown


def test_schema_is_json_schema_with_kinds():
    schema = json.loads(heiti("schema").stdout)
    assert schema["title"] == "Heiti graph file"
    assert "test.source" in schema["$defs"]["NodeSpec"]["properties"]["kind"]["enum"]


@pytest.mark.parametrize("command", [["--help"], ["run", "--help"], ["validate", "--help"], ["nodes", "--help"],
                                     ["schema", "--help"], ["report", "--help"], ["serve", "--help"], ["edit", "--help"]])
def test_help_everywhere(command):
    result = heiti(*command)
    assert result.returncode == 0 and "usage: heiti" in result.stdout


def test_listing_and_validating_do_not_import_frameworks(tmp_path):
    graph = ROOT / "resources" / "graphs" / "digits_compare.json"
    target = graph if graph.exists() else write(tmp_path / "g.json", GOOD)
    code = (
        "import sys, json\n"
        "from heiti.engine.registry import default_registry\n"
        "from heiti.engine.catalog import catalog\n"
        "from heiti.engine.graph import load_graph\n"
        "from heiti.engine.validate import validate\n"
        "reg = default_registry(); catalog(reg)\n"
        f"validate(load_graph({str(target)!r}), reg)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
        "print(json.dumps(reg.load_errors))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    imported, errors = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    assert imported == []
    assert errors == []


def test_ctrl_c_leaves_a_consistent_run_folder(tmp_path):
    data = {"format": "heiti-graph", "version": 1, "name": "slow",
            "nodes": [{"id": "s", "kind": "test.slow", "params": {"steps": 100000, "step_s": 0.01}},
                      {"id": "t", "kind": "test.add"}],
            "edges": [{"from": ["s", "out"], "to": ["t", "values"]}]}
    graph = write(tmp_path / "g.json", data)
    out = tmp_path / "r"
    env = dict(os.environ, HEITI_PLUGINS="tests.testnodes", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "heiti.engine.cli", "run", str(graph), "--out", str(out), "--no-cache"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        events = out / "events.jsonl"
        if events.exists() and "node_started" in events.read_text():
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["type"] == "run_finished" and events[-1]["status"] == "cancelled"
    assert (out / "graph.json").exists()
