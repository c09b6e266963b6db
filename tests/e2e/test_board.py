"""The emulated aarch64 board: host checks, and (heavy) the example graph measured on a real board.

The heavy test builds the board once and caches it under ~/.cache/heiti/boards/aarch64 (or
$HEITI_BOARDS): 3.5 minutes the first time on a busy 2-core machine with mmdebstrap (debootstrap
instead: 11-30 minutes), nothing after. Then `up` takes ~35 s and the example ~4.5 minutes
(training and converting here, ~2 minutes of it on the board, where everything is emulated).
"""

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from heiti.nodes.devices import board as boards
from heiti.nodes.devices import board_host as host  # where check_host looks things up

GRAPH = Path(__file__).resolve().parents[2] / "resources" / "graphs" / "digits_board.json"
ON_BOARD = ["ort_board", "tvm_board", "litert_board"]


# --- host checks (fast) ------------------------------------------------------------------------------------
def test_missing_qemu_names_the_packages_to_install(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host.sys, "platform", "linux")
    monkeypatch.setattr(host.shutil, "which", lambda name: None)
    monkeypatch.setattr(host.Path, "exists", lambda self: False)
    with pytest.raises(boards.BoardError) as err:
        boards.check_host(boards.ARCHES["aarch64"])
    assert "qemu-user-static is not installed" in str(err.value)
    assert "apt-get install qemu-user-static" in err.value.hint


def test_missing_bootstrapper_names_the_packages_to_install(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host.sys, "platform", "linux")
    monkeypatch.setattr(host.shutil, "which", lambda name: "/usr/bin/x" if name.startswith("qemu") else None)
    with pytest.raises(boards.BoardError) as err:
        boards.check_host(boards.ARCHES["aarch64"])
    assert "debootstrap" in str(err.value) and "mmdebstrap" in err.value.hint


def test_not_root_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(host.sys, "platform", "linux")
    with pytest.raises(boards.BoardError, match="needs root"):
        boards.check_host(boards.ARCHES["aarch64"])


def test_status_of_a_board_never_built(tmp_path, capsys):
    from heiti.engine.cli import main

    assert main(["board", "status", "--dir", str(tmp_path / "b"), "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    assert status["arch"] == "aarch64" and status["built"] is False and status["running"] is False
    assert main(["board", "down", "--dir", str(tmp_path / "b")]) == 0


def test_unknown_arch_is_refused():
    with pytest.raises(boards.BoardError, match="unknown board architecture"):
        boards.Board("sparc")


# --- a real board (heavy) ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _board_or_skip() -> boards.Board:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("an emulated board needs root (chroot, mounts); CI runs as root")
    board = boards.Board("aarch64")
    try:
        boards.ensure_binfmt(board.arch)
    except boards.BoardError as err:
        if not (shutil.which(board.arch.qemu)):
            raise  # the packages are missing: an install step is missing, not a reason to skip
        pytest.skip(f"this machine cannot run aarch64 programs through binfmt_misc: {err}")
    return board


@pytest.mark.heavy
@pytest.mark.timeout(2400)
def test_example_graph_runs_on_an_emulated_aarch64_board(tmp_path):
    from heiti.engine.executor import Executor
    from heiti.engine.graph import load_graph
    from heiti.engine.measurements import read_measurements

    board = _board_or_skip()
    running = board.running()
    port = int(running["port"]) if running else _free_port()
    status = board.up(port=port)
    try:
        device = status["device"]
        assert device["machine"] == "aarch64" and device["emulated"] is True
        assert {"onnxruntime", "tvm", "litert"} <= set(device["runtimes"])

        graph = load_graph(GRAPH)
        graph.set_param("board", "address", f"127.0.0.1:{port}")
        for node in ON_BOARD:  # emulated inference is slow: a part of the test split keeps CI short
            graph.set_param(node, "max_samples", 200)
        result = Executor(cache_dir=tmp_path / "cache").run(graph, tmp_path / "run")
        assert result.status == "ok", result.errors

        out = tmp_path / "run"
        here = read_measurements(out / "measurements" / "ort_here.json").data
        assert here.target.device.get("emulated") is None
        for node in ON_BOARD:
            data = read_measurements(out / "measurements" / f"{node}.json").data
            assert data.target.kind == "tcp" and data.target.device["machine"] == "aarch64", node
            assert data.target.device["emulated"] is True, node
            assert data.device_latency_ms is not None and data.device_latency_ms.count == 200, node
            assert data.classification is not None and data.classification.accuracy >= 0.9, node
            # the board's outputs agree with this computer's (same model, another ISA)
            assert data.agreement is not None and data.agreement.within, (node, data.agreement)
            assert data.agreement.top1 is not None and data.agreement.top1 >= 0.99, node
        assert read_measurements(out / "measurements" / "tvm_board.json").data.model_format == "tvm"
        html = (out / "report.html").read_text()
        assert "emulated" in html and "aarch64" in html
    finally:
        if not running:
            board.down(quiet=True)
    assert running or board.running() is None
