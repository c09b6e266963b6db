"""Imported by the worker fork server before it forks anyone: every registered node kind (built-in,
entry point, $HEITI_PLUGINS) is then in each worker from its first instant, and each worker
starts with the workers' collector policy (engine.collector)."""

from heiti.engine import collector

collector.begin()

import heiti.engine.jobs  # noqa: E402,F401 - what each worker runs
from heiti.engine.registry import default_registry  # noqa: E402

default_registry().classes()  # every node module imported, including those the kind index knows
collector.worker_defaults()
