"""How each model was made, in the report: gzip'ed size, compile and tuning time, int8 slower than fp32."""

from __future__ import annotations

import io

import pytest
from heiti.engine.console import measurements_table
from heiti.engine.measurements import read_measurements
from heiti.nodes.reports import fmt
from heiti.nodes.reports.blocks import Note, Table
from heiti.nodes.reports.render import report_from_runs
from heiti.nodes.reports.sections import comparison, runtimes
from rich.console import Console

from tests.report_samples import Spec, write_sample_run

SPECS = [
    Spec("ort", "onnxruntime", "ONNX Runtime fp32", "onnx", 0.42, 0.975, 405_000, 3.1),
    Spec("ort_int8", "onnxruntime", "ONNX Runtime int8", "onnx", 0.61, 0.970, 118_000, 4.0),
    Spec("tvm", "tvm", "TVM untuned", "tvm", 0.90, 0.975, 610_000, 14.2),
    Spec("tvm_tuned", "tvm", "TVM tuned", "tvm", 0.30, 0.975, 610_000, 380.0),
]
META = {"ort": {}, "ort_int8": {"quantization": "qdq-int8"}, "tvm": {"tuned_trials": 0, "tuned": False},
        "tvm_tuned": {"tuned_trials": 200, "tune_time_s": 366.0, "tuned": True}}
GZIP = {"ort": 370_000, "ort_int8": 90_000, "tvm": 560_000, "tvm_tuned": 560_000}


def _run(tmp_path, int8_flags=(), gzip=True, meta=META):
    for path in write_sample_run(tmp_path / "run", SPECS):
        data = read_measurements(path).data
        data.model_meta = dict(meta[data.node])
        data.model_gzip_bytes = GZIP[data.node] if gzip else None
        data.environment = {**data.environment, "int8_dot_product": list(int8_flags)}
        data.save(path)
    return report_from_runs([tmp_path / "run"])


def _table(section) -> Table:
    """The comparison's second table: how each model was made (the first ranks speed, size and quality)."""
    tables = [b for b in section.walk() if isinstance(b, Table) and b.columns[0] == "runtime"]
    assert len(tables) == 2 and "speed-up" in tables[0].columns and "compile time" in tables[1].columns
    return tables[1]


def _column(table: Table, name: str) -> dict[str, str]:
    return dict(zip((n.replace(" (baseline)", "") for n in table.column("runtime")), table.column(name), strict=True))


def test_gzip_size_sits_beside_the_size_with_its_share(tmp_path):
    report = _run(tmp_path)
    table = _table(comparison.build(report))
    assert "gzip size" in table.columns  # its share of the model size says what the first table's size hides
    shown = _column(table, "gzip size")
    for spec in SPECS:
        share = GZIP[spec.node] / spec.size_bytes * 100
        assert shown[spec.node] == f"{fmt.size(GZIP[spec.node])} ({share:.0f} %)"
    entry = next(e for e in report.entries if e.node == "ort_int8")
    assert ("gzip'ed (level 6)", fmt.size(GZIP["ort_int8"])) in runtimes.summary_items(entry)
    assert ("model", "quantization qdq-int8") in runtimes.summary_items(entry)


def test_no_gzip_column_for_files_without_the_figure(tmp_path):
    table = _table(comparison.build(_run(tmp_path, gzip=False)))
    assert "gzip size" not in table.columns and "compile time" in table.columns


def test_compile_time_and_tuning_side_by_side(tmp_path):
    report = _run(tmp_path)
    table = _table(comparison.build(report))
    compile_at = table.columns.index("compile time")
    assert table.columns[compile_at: compile_at + 2] == ["compile time", "tuning"]
    compile_time = _column(table, "compile time")
    assert compile_time == {s.node: fmt.seconds(s.compile_time_s) for s in SPECS}
    tuning = _column(table, "tuning")
    assert tuning == {"ort": "—", "ort_int8": "—", "tvm": "untuned",
                      "tvm_tuned": "tuned: 200 trials, 6.1 min"}
    card = dict(runtimes.summary_items(next(e for e in report.entries if e.node == "tvm_tuned")))
    assert card["tuning"] == "tuned: 200 trials, 6.1 min"


def test_tuning_from_reused_records_says_so(tmp_path):
    meta = {**META, "tvm_tuned": {"tuned_trials": 0, "tune_time_s": 4.2, "tuned": True}}
    tuning = _column(_table(comparison.build(_run(tmp_path, meta=meta))), "tuning")
    assert tuning["tvm_tuned"] == "tuned (records reused), 4.2 s" and tuning["tvm"] == "untuned"


def test_no_tuning_column_without_a_tunable_runtime(tmp_path):
    report = _run(tmp_path)
    report.entries = [e for e in report.entries if e.data.runtime != "tvm"]
    assert "tuning" not in _table(comparison.build(report)).columns


def _int8_note(report) -> Note | None:
    return next((b for b in comparison.build(report).walk() if isinstance(b, Note) and "int8" in b.text), None)


def test_int8_slower_than_fp32_says_the_cpu_lacks_vnni(tmp_path):
    note = _int8_note(_run(tmp_path, int8_flags=()))
    assert note is not None and "no int8 dot-product instructions (VNNI" in note.text
    assert len(note.items) == 1 and note.items[0].startswith("ort_int8:") and "slower" in note.items[0]


def test_int8_slower_on_a_vnni_cpu_blames_the_model_not_the_cpu(tmp_path):
    note = _int8_note(_run(tmp_path, int8_flags=("avx512_vnni",)))
    assert note is not None and "has int8 dot-product instructions (avx512_vnni)" in note.text


@pytest.mark.parametrize("case", ["int8 faster", "no fp32 of the same runtime"])
def test_no_int8_note_when_int8_is_faster_or_has_no_fp32_peer(tmp_path, case):
    report = _run(tmp_path)
    if case == "int8 faster":
        int8 = next(e for e in report.entries if e.node == "ort_int8")
        int8.data.latency_ms = int8.data.latency_ms.model_copy(update={"mean": 0.2})
    else:
        report.entries = [e for e in report.entries if e.node != "ort"]
    assert _int8_note(report) is None


def test_console_table_shows_size_and_gzip(tmp_path):
    _run(tmp_path)
    buffer = io.StringIO()
    Console(file=buffer, width=120).print(measurements_table(tmp_path / "run"))
    text = buffer.getvalue()
    assert "size / gzip" in text
    for spec in SPECS:
        assert f"{spec.size_bytes / 1024:.1f} / {GZIP[spec.node] / 1024:.1f} KiB" in text
