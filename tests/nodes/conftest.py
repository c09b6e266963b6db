"""Fixtures shared by the device tests."""

from pathlib import Path

import pytest

from tests.nodes.device_helpers import ServerThread


@pytest.fixture
def server(tmp_path: Path):
    """A `heiti serve` on an ephemeral loopback port, stopped after the test."""
    running = ServerThread(tmp_path / "device")
    yield running
    running.stop()
