"""The report fits a 1280 px wide window: no table scrolls sideways, even with every optional column.

The real check renders the page in headless Chromium at 1280 px and compares each table's
scrollWidth with the width it is given; a deliberately wide table added to the same page proves the
probe sees an overflow when there is one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from heiti.engine.measurements import Agreement, TargetInfo, read_measurements
from heiti.nodes.reports.blocks import Table
from heiti.nodes.reports.render import render, report_from_runs
from heiti.nodes.reports.sections import comparison

from tests.report_samples import CLASSIFICATION_SPECS, Spec, write_sample_run

WINDOW_PX = 1280
#: every optional comparison column at once: two models, two targets, tuning, gzip, agreement, long names
SPECS = [*CLASSIFICATION_SPECS,
         Spec("openvino_latency_hint", "openvino", "OpenVINO (CPU, f32, latency hint)", "openvino", 0.35, 0.975,
              400_000, 5.0),
         Spec("tvm_tuned_on_the_board", "tvm", "TVM tuned, on the aarch64 board", "tvm", 0.55, 0.9722, 600_000, 120.0)]


def _widest_report(tmp_path):
    for i, path in enumerate(write_sample_run(tmp_path / "run", SPECS)):
        data = read_measurements(path).data
        data.model_gzip_bytes = int(data.model_size_bytes * 0.6)
        if data.runtime == "tvm":
            data.model_meta = {"tuned_trials": 200 if "tuned" in data.node else 0, "tune_time_s": 366.0}
        if "board" in data.node:
            data.target = TargetInfo(kind="serial", address="/dev/ttyUSB0@921600", device={"machine": "aarch64"})
        if i % 2:
            data.pipeline = [{"kind": "model.keras_cnn", "node": "keras_cnn_with_a_long_name", "seconds": 0.1},
                             *data.pipeline[1:]]
        data.save(path)
    report = report_from_runs([tmp_path / "run"])
    for entry in report.entries:  # the widest agreement cell: detection's ΔmAP as well
        entry.data.agreement = Agreement(reference="ort", samples=360, max_abs=1.2e-5, max_rel=3.4e-6,
                                         cosine=0.99999994, top1=0.9972, map50_delta=-0.0123, within=False)
    return report


def test_comparison_tables_stay_narrow_and_let_long_text_wrap(tmp_path):
    tables = [b for b in comparison.build(_widest_report(tmp_path)).walk() if isinstance(b, Table)]
    assert len(tables) == 2
    assert all(len(t.columns) <= comparison.MAX_COLUMNS for t in tables), [t.columns for t in tables]
    assert {"target", "model", "tuning", "gzip size", "agreement"} <= {c for t in tables for c in t.columns}
    assert tables[1].wrap == ["tuning", "agreement"]


PROBE = """<div class="table-wrap" id="control"><table><tr><td style="min-width:CONTROL_PXpx">wide</td></tr></table></div>
<script>
window.addEventListener('load', () => {
  const tables = [...document.querySelectorAll('.table-wrap')].map(w => ({
    id: w.id, section: (w.closest('section') || {}).id || '', first: (w.querySelector('th, td') || {}).textContent,
    scroll: w.scrollWidth, client: w.clientWidth}));
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = JSON.stringify({page: document.documentElement.scrollWidth, inner: window.innerWidth, tables});
  document.body.appendChild(out);
});
</script>
""".replace("CONTROL_PX", str(2 * WINDOW_PX))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs chromium (apt-get install chromium)")
def test_no_table_scrolls_sideways_in_a_1280_px_window(tmp_path):
    page = render(_widest_report(tmp_path), tmp_path / "report.html").html
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={WINDOW_PX},900", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stderr[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert measured["inner"] == WINDOW_PX
    control = [t for t in measured["tables"] if t["id"] == "control"]
    assert control and control[0]["scroll"] > control[0]["client"]  # the probe does see an overflow
    tables = [t for t in measured["tables"] if t["id"] != "control"]
    assert sum(t["section"] == "comparison" for t in tables) == 2
    overflowing = [t for t in tables if t["scroll"] > t["client"]]
    assert overflowing == [], f"tables wider than a {WINDOW_PX} px window: {overflowing}"
    assert measured["page"] <= measured["inner"]
