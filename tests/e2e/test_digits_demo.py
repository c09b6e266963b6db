"""The bundled demo graph, end to end on the real frameworks, then re-run from the cache."""

import json
from pathlib import Path

import pytest
from heiti.engine.executor import Executor
from heiti.engine.graph import load_graph
from heiti.engine.measurements import read_measurements

GRAPH = Path(__file__).resolve().parents[2] / "resources" / "graphs" / "digits_compare.json"
RUNTIMES = ["run_torch", "run_ort", "run_ort_int8", "run_tvm", "run_openvino", "run_keras", "run_litert",
            "run_litert_int8"]


@pytest.mark.heavy
def test_digits_compare_runs_measures_reports_and_caches(tmp_path):
    graph = load_graph(GRAPH)
    cache = tmp_path / "cache"
    events = []
    executor = Executor(cache_dir=cache)
    executor.subscribe(events.append)
    result = executor.run(graph, tmp_path / "run1")
    assert result.status == "ok", result.errors

    out = tmp_path / "run1"
    for node in RUNTIMES:
        data = read_measurements(out / "measurements" / f"{node}.json").data
        assert data.classification is not None and data.classification.accuracy >= 0.93, node
        assert data.latency_ms is not None and data.latency_ms.count == len(data.latencies_ms) > 100
        assert sum(map(sum, data.classification.confusion_matrix)) == data.dataset.get("samples", data.latency_ms.count)
        assert data.model_size_bytes and data.model_size_bytes > 0
    # quantised models are really smaller than their float twins
    size = {n: read_measurements(out / "measurements" / f"{n}.json").data.model_size_bytes for n in RUNTIMES}
    assert size["run_litert_int8"] < size["run_litert"] and size["run_ort_int8"] < size["run_ort"]
    html = (out / "report.html").read_text()
    assert "run_tvm" in html and "<img" in html
    # live metrics were streamed while running
    assert {e.name for e in events if e.type == "node_metric"} >= {"latency_ms", "cpu_percent", "rss_mb", "val_acc"}

    # a second run executes nothing
    again = Executor(cache_dir=cache).run(graph, tmp_path / "run2")
    assert set(again.states.values()) == {"cached"}
    assert (tmp_path / "run2" / "report.html").exists()
    assert json.loads((tmp_path / "run2" / "measurements" / "run_tvm.json").read_text())["runtime"] == "tvm"

    # one param changed: only that node and what depends on it run again
    graph.set_param("tvm_compile", "opt_level", 2)
    third = Executor(cache_dir=cache).run(graph, tmp_path / "run3")
    ran = {n for n, s in third.states.items() if s == "done"}
    assert ran == {"tvm_compile", "run_tvm", "report"}
