"""The terminal comparison table after a run: fastest first, every runtime, nothing truncated."""

import io

from heiti.engine.console import measurements_table
from heiti.engine.measurements import read_measurements
from rich.console import Console

from tests.report_samples import write_sample_run


def test_comparison_table_lists_runtimes_fastest_first(tmp_path):
    write_sample_run(tmp_path)
    files = sorted((tmp_path / "measurements").glob("*.json"))
    data = [read_measurements(f).data for f in files]
    table = measurements_table(tmp_path)
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(table)
    text = buffer.getvalue()
    names = [d.label or d.node for d in sorted(data, key=lambda d: d.latency_ms.mean)]
    positions = [text.index(name) for name in names]
    assert positions == sorted(positions)
    for d in data:
        assert f"{d.latency_ms.mean:.3f}" in text


def test_no_table_without_measurements(tmp_path):
    assert measurements_table(tmp_path) is None


def test_the_runs_warnings_stand_under_the_table(tmp_path):
    """Headless users see what the report flags: a busy machine, drift, an untuned model."""
    import json

    write_sample_run(tmp_path)
    path = sorted((tmp_path / "measurements").glob("*.json"))[0]
    data = json.loads(path.read_text())
    data["warnings"] = ["other programs kept 1.00 of 2 cores busy on average while this runtime was timed"]
    path.write_text(json.dumps(data))
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(measurements_table(tmp_path))
    assert "1.00 of 2 cores busy" in buffer.getvalue()
