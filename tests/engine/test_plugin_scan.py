"""Plug-in lookups that cost nothing when nothing is installed, and still find what is."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import sys
    import heiti.engine
    from pydantic import BaseModel

    class M(BaseModel):
        x: int

    print(M.model_validate({"x": "3"}).x, "importlib.metadata" in sys.modules, sorted(getattr(sys, "seen", [])))
""")

PLUGIN = textwrap.dedent("""
    import sys

    class Seen:
        def new_schema_validator(self, schema, schema_type, schema_type_path, schema_kind, config, plugin_settings):
            sys.seen = getattr(sys, "seen", []) + [schema_type.__name__]
            return None, None, None

    plugin = Seen()
""")


def probe(extra: Path | None = None) -> list[str]:
    paths = [str(ROOT)] + ([str(extra)] if extra else [])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    env.pop("PYDANTIC_DISABLE_PLUGINS", None)
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(maxsplit=2)


def test_no_pydantic_plugin_means_no_metadata_scan():
    value, scanned, seen = probe()
    assert (value, scanned, seen) == ("3", "False", "[]")


def test_an_installed_pydantic_plugin_is_still_used(tmp_path):
    (tmp_path / "seenplug.py").write_text(PLUGIN)
    dist = tmp_path / "seenplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: seenplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[pydantic]\nseen = seenplug:plugin\n")
    value, scanned, seen = probe(tmp_path)
    assert value == "3" and scanned == "True" and "'M'" in seen


def test_declared_groups_reads_section_headers(tmp_path, monkeypatch):
    from heiti.engine import plugin_scan

    dist = tmp_path / "x-1.dist-info"
    dist.mkdir()
    (dist / "entry_points.txt").write_text("[console_scripts]\nx = x:main\n\n [heiti.nodes] \nk = x.nodes\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), str(tmp_path / "missing")])
    plugin_scan.declared_groups.cache_clear()
    try:
        assert plugin_scan.declared_groups() == {"console_scripts", "heiti.nodes"}
        assert plugin_scan.may_declare("heiti.nodes") and not plugin_scan.may_declare("pydantic")
        (tmp_path / "lib.zip").write_bytes(b"PK")  # a zip on sys.path: this scan cannot see inside
        monkeypatch.setattr(sys, "path", [str(tmp_path), str(tmp_path / "lib.zip")])
        plugin_scan.declared_groups.cache_clear()
        assert plugin_scan.may_declare("pydantic")
    finally:
        plugin_scan.declared_groups.cache_clear()
