"""Node discovery: built-ins, third-party entry points, and broken plug-ins that must not break the rest."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from heiti.engine.node import Node
from heiti.engine.registry import Registry

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = textwrap.dedent('''
    from heiti.engine import Node, Out
    from heiti.engine.payloads import Value

    class Hello(Node):
        """Says hello."""
        kind = "thirdparty.hello"
        category = "Plug-ins"
        outputs = {"out": Out(Value)}

        def run(self, ctx):
            return {"out": Value(value="hello")}
''')


def make_plugin(root: Path, broken: bool = False) -> Path:
    pkg = root / "myplug"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN if not broken else "raise RuntimeError('plug-in exploded')\n")
    dist = root / "myplug-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[heiti.nodes]\nhello = myplug\n")
    return root


def nodes_json(extra_path: Path) -> tuple[list[dict], str]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{extra_path}")
    result = subprocess.run([sys.executable, "-m", "heiti.engine.cli", "nodes", "--json"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_entry_point_plugin_is_listed(tmp_path):
    kinds, _ = nodes_json(make_plugin(tmp_path))
    hello = next(k for k in kinds if k["kind"] == "thirdparty.hello")
    assert hello["description"] == "Says hello." and hello["category"] == "Plug-ins"


def test_broken_plugin_is_reported_not_fatal(tmp_path):
    kinds, stderr = nodes_json(make_plugin(tmp_path, broken=True))
    assert "plug-in exploded" in stderr
    assert all(k["kind"] != "thirdparty.hello" for k in kinds)


def test_same_kind_twice_is_an_error():
    class A(Node):
        kind = "dup.kind"

    class B(Node):
        kind = "dup.kind"

    registry = Registry()
    registry.register(A)
    with pytest.raises(ValueError, match="defined twice"):
        registry.register(B)


def test_register_rejects_non_nodes():
    with pytest.raises(TypeError):
        Registry().register(int)


def test_egg_info_plugin_is_listed(tmp_path):
    root = make_plugin(tmp_path)
    (root / "myplug-0.1.dist-info").rename(root / "myplug.egg-info")  # an older packaging of the same plug-in
    kinds, _ = nodes_json(root)
    assert any(k["kind"] == "thirdparty.hello" for k in kinds)


def test_without_plugins_the_metadata_machinery_is_not_imported(tmp_path):
    """Looking for plug-ins costs a few file reads when none is installed, not importlib.metadata."""
    code = ("import sys; from heiti.engine.registry import Registry; r = Registry(); r.load_entry_points(); "
            "print('importlib.metadata' in sys.modules, r.kinds())")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    bare = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert bare.stdout.split()[0] == "False", bare.stderr
    env["PYTHONPATH"] += os.pathsep + str(make_plugin(tmp_path))
    plugged = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert plugged.stdout.startswith("True ['thirdparty.hello']"), plugged.stderr
