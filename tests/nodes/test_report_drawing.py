"""The report's figures drawn at once in forked helpers: same pictures, every figure, failures
handled as before, no fork beside other threads."""

from __future__ import annotations

import os
import threading
import time

import pytest
from heiti.nodes.reports import drawing
from heiti.nodes.reports.render import render, report_from_runs

from tests.report_samples import CLASSIFICATION_SPECS, write_sample_run

CORES = len(os.sched_getaffinity(0))


def _busy(tag: int, seconds: float = 0.15):
    def call() -> bytes:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return f"{tag}:{os.getpid()};".encode() * 1000  # bigger than a pipe's buffer over a few calls

    return call


def _tag_pid(png: bytes) -> tuple[str, int]:
    tag, pid = png.split(b";")[0].decode().split(":")
    return tag, int(pid)


SHARED = r"""
import json, os, sys, threading, time
from heiti.nodes.reports import drawing

idle = threading.Event()
threading.Thread(target=idle.wait, daemon=True).start()  # an idle pool thread, as OpenVINO leaves one

def busy(tag):
    def call():
        end = time.perf_counter() + 0.15
        while time.perf_counter() < end:
            pass
        return f"{tag}:{os.getpid()};".encode() * 1000
    return call

pngs = drawing.draw_all([busy(i) for i in range(8)])
print(json.dumps({"me": os.getpid(), "processes": drawing.last_processes,
                  "got": [png.split(b";")[0].decode() for png in pngs]}))
"""


@pytest.mark.skipif(CORES < 2, reason="one core: nothing to share")
def test_calls_are_shared_with_a_helper_and_come_back_in_order():
    """In a fresh process, as a Heiti worker is (with an idle extra thread, as OpenVINO leaves one)."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", SHARED], capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(done.stdout)
    got = [item.split(":") for item in out["got"]]
    assert [tag for tag, _ in got] == [str(i) for i in range(8)]
    drawers = {int(pid) for _, pid in got}
    assert out["me"] in drawers and len(drawers) >= 2 and out["processes"] == min(CORES, 8)


def test_a_failing_call_is_none_and_a_call_that_fails_only_in_a_helper_is_drawn_again():
    parent = os.getpid()

    def fails() -> bytes:
        raise ValueError("bad data")

    def fails_in_helpers() -> bytes:
        if os.getpid() != parent:
            raise RuntimeError("helper only")
        return b"parent"

    calls = [_busy(0), fails, *[fails_in_helpers] * 3, _busy(5)]
    pngs = drawing.draw_all(calls)
    assert pngs[1] is None
    assert pngs[2:5] == [b"parent"] * 3
    assert [_tag_pid(pngs[0])[0], _tag_pid(pngs[5])[0]] == ["0", "5"]


def test_no_helper_is_forked_from_a_thread_other_than_the_main_one():
    got = {}
    other = threading.Thread(target=lambda: got.update(pngs=drawing.draw_all([_busy(i, 0.01) for i in range(4)])))
    other.start()
    other.join()
    assert {_tag_pid(png)[1] for png in got["pngs"]} == {os.getpid()}


def test_the_report_shows_every_figure_drawn_as_one_after_the_other(tmp_path, monkeypatch):
    write_sample_run(tmp_path / "run", CLASSIFICATION_SPECS, seed=2)
    report = report_from_runs([tmp_path / "run"])
    at_once = render(report, tmp_path / "a" / "report.html")
    monkeypatch.setattr(drawing, "_helpers_wanted", lambda count: 0)
    serial = render(report_from_runs([tmp_path / "run"]), tmp_path / "b" / "report.html")
    names = sorted(p.name for p in at_once.files.glob("*.png"))
    assert names == sorted(p.name for p in serial.files.glob("*.png"))
    assert len(names) >= 8  # comparison, confusions, latency, resources, drift, ...
    for name in names:
        assert (at_once.files / name).read_bytes() == (serial.files / name).read_bytes(), name
    html = at_once.html.read_text(encoding="utf-8")
    assert html.count('src="data:image/png;base64,') == len(names)
    assert "data:image/png;base64,\"" not in html  # no empty placeholder left


def test_a_figure_that_fails_costs_its_section_a_note_as_before(tmp_path):
    import json

    from tests.report_samples import classification_measurements

    run = tmp_path / "run"
    write_sample_run(run, CLASSIFICATION_SPECS[:2])
    broken = classification_measurements(CLASSIFICATION_SPECS[2]).model_dump(by_alias=True)
    broken.update(node="broken", classification={"accuracy": 0.9, "confusion_matrix": [[3, 1], [2]]})
    (run / "measurements" / "broken.json").write_text(json.dumps(broken))
    rendered = render(report_from_runs([run]), tmp_path / "out" / "report.html")
    html = rendered.html.read_text(encoding="utf-8")
    assert "this section could not be drawn" in html
    assert '<section id="latency">' in html and "latency_violins.png" in {p.name for p in rendered.files.glob("*.png")}


def test_collecting_plot_calls_is_per_thread():
    """A report collecting its plot calls on one thread (the editor's worker) leaves another
    thread's plots (the editor's own) drawn at once."""
    from heiti.nodes.reports import deferral, plots

    got = {}
    with deferral.deferred() as pending:
        mine = plots.grouped_bars(["a"], [{"label": "x", "values": [1.0], "color": "#123456"}], "y", "t")
        other = threading.Thread(target=lambda: got.update(png=plots.grouped_bars(
            ["a"], [{"label": "x", "values": [1.0], "color": "#123456"}], "y", "t")))
        other.start()
        other.join()
    assert isinstance(mine, deferral.Pending) and pending == [mine]
    assert not isinstance(got["png"], deferral.Pending) and got["png"].startswith(b"\x89PNG")


def test_the_report_warm_up_compiles_its_templates():
    from heiti.engine.jobs import warm_up
    from heiti.nodes.reports import render as render_module
    from heiti.nodes.reports.node import ReportNode

    render_module._environment.cache_clear()
    assert warm_up(list(ReportNode.warm_up_imports(None))) == ""
    assert render_module._environment.cache_info().currsize == 1
    cached = render_module._environment().cache
    assert cached is not None and len(cached) == 2  # both page templates compiled, before any report


@pytest.mark.skipif(CORES < 2, reason="one core: no helper")
def test_a_helper_that_hangs_is_killed_and_its_figures_drawn_here(monkeypatch):
    parent = os.getpid()
    monkeypatch.setattr(drawing, "HELPER_GRACE_S", 0.5)

    def hangs_in_helpers() -> bytes:
        if os.getpid() != parent:
            time.sleep(3600)
        return b"drawn here"

    started = time.perf_counter()
    pngs = drawing.draw_all([hangs_in_helpers, _busy(1, 0.3), hangs_in_helpers])
    assert time.perf_counter() - started < 5
    assert drawing.last_processes >= 2
    assert pngs[0] == pngs[2] == b"drawn here" and _tag_pid(pngs[1])[0] == "1"


@pytest.mark.skipif(CORES < 2, reason="one core: no helper")
def test_helpers_that_finish_are_reaped_at_once_without_polling(monkeypatch):
    """The parent waits on each helper's pipe, not in a loop of sleeps: no sleep at all, and
    every helper is gone (reaped, no zombie) when draw_all returns."""
    slept = []
    monkeypatch.setattr(drawing.time, "sleep", lambda seconds: slept.append(seconds))
    pngs = drawing.draw_all([_busy(i, 0.05) for i in range(6)])
    assert [_tag_pid(png)[0] for png in pngs] == [str(i) for i in range(6)]
    assert slept == []
    assert drawing.last_helpers and len({_tag_pid(png)[1] for png in pngs}) >= 2
    for pid in drawing.last_helpers:
        with pytest.raises(ChildProcessError):  # reaped already: no such child left
            os.waitpid(pid, os.WNOHANG)


@pytest.mark.skipif(CORES < 2, reason="one core: no helper")
def test_a_figure_a_helper_finishes_after_the_parent_is_kept_not_drawn_again():
    """The parent runs out of figures while a helper still draws: it waits for it, and takes the
    helper's figure (drawing it again would block here: the parent's path waits for a helper's start)."""
    import select

    parent = os.getpid()
    started_r, started_w = os.pipe()

    def call(tag: int):
        def draw() -> bytes:
            if os.getpid() == parent:  # returns once a helper has begun the other figure
                if not select.select([started_r], [], [], 10)[0]:
                    raise TimeoutError("no helper started a figure")
                os.read(started_r, 1)
                return f"parent:{tag}".encode()
            os.write(started_w, b"x")
            time.sleep(0.3)  # still drawing when the parent is done with its own
            return f"helper:{tag}".encode()

        return draw

    try:
        pngs = drawing.draw_all([call(0), call(1)])
    finally:
        os.close(started_r)
        os.close(started_w)
    assert None not in pngs
    assert sorted(png.split(b":")[1] for png in pngs) == [b"0", b"1"]
    assert any(png.startswith(b"helper:") for png in pngs)


@pytest.mark.skipif(CORES < 2, reason="one core: no helper")
def test_the_cpu_of_the_parent_and_its_helpers_is_told():
    def cpu_bound(tag: int):
        def call() -> bytes:
            end = time.process_time() + 0.05  # CPU, not wall: a busy machine cannot shorten it
            while time.process_time() < end:
                pass
            return f"{tag}:{os.getpid()};".encode()

        return call

    pngs = drawing.draw_all([cpu_bound(i) for i in range(6)])
    drawers = {_tag_pid(png)[1] for png in pngs}
    here, helpers = drawing.last_cpu
    tick = 1 / os.sysconf("SC_CLK_TCK")  # children's times come in clock ticks, one cut per helper
    assert here + helpers >= 6 * 0.05 - tick * len(drawing.last_helpers)
    if len(drawers) > 1:  # a helper drew some: its CPU is counted as the helpers'
        assert helpers >= 0.05 - tick


@pytest.mark.skipif(CORES < 2, reason="one core: no helper")
def test_when_no_helper_can_be_forked_this_process_draws_every_figure(monkeypatch):
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # what fork says at the process limit

    monkeypatch.setattr(drawing.os, "fork", no_fork)
    open_fds = len(os.listdir("/proc/self/fd"))
    pngs = drawing.draw_all([_busy(i, 0.01) for i in range(4)])
    assert [_tag_pid(png) for png in pngs] == [(str(i), os.getpid()) for i in range(4)]
    assert drawing.last_processes == 1 and drawing.last_helpers == []
    assert len(os.listdir("/proc/self/fd")) == open_fds  # no pipe or file left open
