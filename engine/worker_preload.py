"""Imported by the worker fork server before it forks anyone: every registered node kind (built-in,
entry point, $HEITI_PLUGINS) is then in each worker from its first instant."""

from heiti.engine.registry import default_registry

default_registry()
