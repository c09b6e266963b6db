"""A measurement says when other programs kept the machine busy while it was timed."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
from heiti.engine.measurements import TimeSeries
from heiti.nodes.reports.sections.environment import machine_load_table
from heiti.nodes.runtimes.contention import OTHER_CORES_LIMIT, load_warnings, machine_load
from heiti.nodes.runtimes.loop import measure_sampled


def series(name: str, values: list[float]) -> TimeSeries:
    return TimeSeries(name=name, t=[0.1 * i for i in range(len(values))], values=values)


def test_others_cores_are_all_cores_busy_time_less_this_process_and_the_steal():
    resources = [series("cpu_percent", [75.0, 75.0]), series("cpu_percent_core0", [100.0, 100.0]),
                 series("cpu_percent_core1", [50.0, 50.0]), series("process_cpu_percent", [100.0, 100.0]),
                 series("steal_percent", [10.0, 10.0])]
    load = machine_load(resources)
    assert load is not None and load["cores"] == 2 and load["samples"] == 2
    assert load["other_cores"] == round((75 - 10) / 100 * 2 - 1.0, 3)  # 0.3 of a core
    assert load["steal_percent"] == 10.0
    warnings = load_warnings(load)
    assert len(warnings) == 2 and "0.30 of 2 cores" in warnings[0] and "steal" in warnings[1]


def test_a_quiet_machine_and_a_device_measurement_carry_no_warning():
    quiet = [series("cpu_percent", [50.0]), series("cpu_percent_core0", [100.0]), series("cpu_percent_core1", [0.0]),
             series("process_cpu_percent", [100.0]), series("steal_percent", [0.0])]
    assert load_warnings(machine_load(quiet)) == []
    assert machine_load([]) is None and load_warnings(None) == []


def test_a_program_spinning_beside_the_timed_loop_is_seen_and_reported():
    a = np.random.default_rng(0).random((96, 96), dtype=np.float32)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # it is running before the first tick
        _, resources = measure_sampled(lambda x: x @ x, [a] * 200, metric=lambda *args: None, warmup=2,
                                       period_s=0.05, duration_s=1.0)
    finally:
        spinner.kill()
        spinner.wait()
    load = machine_load(resources)
    assert load is not None and load["samples"] >= 5
    # one spinning process takes a whole core on a machine of two or more, half of one on one core
    assert load["other_cores"] >= OTHER_CORES_LIMIT, load
    assert any("other programs kept" in w for w in load_warnings(load))
    report = SimpleNamespace(entries=[SimpleNamespace(name="ort", data=SimpleNamespace(machine_load=load))])
    (table,) = machine_load_table(report)
    assert table.rows[0][3].text == "busy: compare with care"
