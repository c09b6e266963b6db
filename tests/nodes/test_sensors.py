"""CPU temperature and frequency: read where the OS exposes them, explicitly absent elsewhere."""

import time

from heiti.nodes.devices.stats import StatsSampler, read_sensors
from heiti.nodes.runtimes.sampler import SENSOR_PERIOD_S, ResourceSampler


def test_sensors_are_plausible_numbers_or_none():
    sensors = read_sensors()
    assert set(sensors) == {"temp_c", "freq_mhz"}
    if sensors["temp_c"] is not None:
        assert -40 < sensors["temp_c"] < 150
    if sensors["freq_mhz"] is not None:
        assert 10 < sensors["freq_mhz"] < 10_000


def test_device_samples_carry_both_keys():
    sampler = StatsSampler(0.05)
    try:
        assert sampler.ready.wait(5)
        sample = dict(sampler.latest)
    finally:
        sampler.stop()
    assert "temp_c" in sample and "freq_mhz" in sample
    assert sample["freq_mhz"] == read_sensors()["freq_mhz"] or isinstance(sample["freq_mhz"], float)


def test_host_sampler_records_the_sensors_this_machine_has():
    streamed = []
    with ResourceSampler(period_s=0.05, sink=lambda name, value, t: streamed.append(name)) as sampler:
        time.sleep(SENSOR_PERIOD_S * 2.5)
    series = sampler.series
    for name, value in read_sensors().items():
        if value is None:
            assert name not in series  # absent, not a line of zeros
        else:
            assert len(series[name].values) >= 2 and name in streamed
            assert series[name].unit in ("°C", "MHz")


def test_the_report_draws_a_sensor_only_when_it_moved():
    """A VM reports its nominal frequency the whole run: a flat line says nothing a table does not."""
    from types import SimpleNamespace

    from heiti.engine.measurements import TimeSeries
    from heiti.nodes.reports.blocks import Figure
    from heiti.nodes.reports.sections import sensors

    def report(values):
        series = TimeSeries(name="freq_mhz", unit="MHz", t=[0.0, 0.5, 1.0], values=values)
        entry = SimpleNamespace(name="ort", color="#1f77b4", data=SimpleNamespace(resources=[series]))
        return SimpleNamespace(entries=[entry])

    flat = sensors.build(report([2445.0, 2445.0, 2445.0]))
    assert not any(isinstance(b, Figure) for b in flat.blocks) and "2445" in str(flat.blocks[-1].rows)
    moving = sensors.build(report([3500.0, 3100.0, 2800.0]))
    assert any(isinstance(b, Figure) for b in moving.blocks)
