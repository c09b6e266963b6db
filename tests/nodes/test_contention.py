"""A measurement says when other programs kept the machine busy while it was timed."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
from heiti.nodes.reports.sections.environment import machine_load_table
from heiti.nodes.runtimes.contention import OTHER_CORES_LIMIT, CpuCounters, load_warnings, machine_load
from heiti.nodes.runtimes.loop import measure_sampled


def test_others_cores_are_all_cores_busy_time_less_this_process_and_the_steal():
    before = CpuCounters(wall_s=10.0, busy_s=100.0, steal_s=5.0, own_s=20.0, cores=2)
    after = CpuCounters(wall_s=12.0, busy_s=103.0, steal_s=5.4, own_s=22.0, cores=2)  # 2 s of wall time
    load = machine_load(before, after)
    assert load is not None and load["cores"] == 2 and load["seconds"] == 2.0
    assert load["other_cores"] == round((3.0 - 0.4 - 2.0) / 2.0, 3)  # 0.3 of a core
    assert load["steal_percent"] == round(100 * 0.4 / (2.0 * 2), 2)  # 10 % of both cores' time
    warnings = load_warnings(load)
    assert len(warnings) == 2 and "0.30 of 2 cores" in warnings[0] and "steal" in warnings[1]


def test_a_quiet_machine_a_short_loop_and_a_device_carry_no_warning():
    before = CpuCounters(wall_s=0.0, busy_s=0.0, steal_s=0.0, own_s=0.0, cores=2)
    quiet = machine_load(before, CpuCounters(wall_s=1.0, busy_s=1.0, steal_s=0.0, own_s=1.0, cores=2))
    assert quiet is not None and quiet["other_cores"] == 0.0 and load_warnings(quiet) == []
    # the counters tick in hundredths of a second: a 0.2 s loop's figure would be noise
    assert machine_load(before, CpuCounters(wall_s=0.2, busy_s=0.4, steal_s=0.0, own_s=0.2, cores=2)) is None
    assert load_warnings(None) == []


def test_a_program_spinning_beside_the_timed_loop_is_seen_and_reported():
    a = np.random.default_rng(0).random((96, 96), dtype=np.float32)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # it is running before the loop starts
        result, _ = measure_sampled(lambda x: x @ x, [a] * 200, metric=lambda *args: None, warmup=2,
                                    period_s=0.05, duration_s=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    load = result.machine_load
    assert load is not None and load["seconds"] >= 1.0
    # one spinning process takes a whole core on a machine of two or more, half of one on one core
    assert load["other_cores"] >= OTHER_CORES_LIMIT, load
    assert any("other programs kept" in w for w in load_warnings(load))
    report = SimpleNamespace(entries=[SimpleNamespace(name="ort", data=SimpleNamespace(machine_load=load))])
    (table,) = machine_load_table(report)
    assert table.rows[0][-1].text == "busy: compare with care"
