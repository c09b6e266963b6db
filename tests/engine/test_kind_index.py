"""Kinds known from the kind index: listed without importing their modules, imported when asked for,
and never trusted for a module file that changed."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

MODULE = textwrap.dedent('''
    from heiti.engine import Node

    class {cls}(Node):
        """{doc}"""
        kind = "{kind}"
        version = {version}
''')

PROBE = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    from heiti.engine.kind_index import KindIndex
    from heiti.engine.registry import Registry, UnknownKind
    from heiti.engine.verdicts import code_identity

    index = KindIndex(Path(sys.argv[1]))
    registry = Registry()
    registry.load_builtins("kindpkg", index=index)
    index.save()
    before = sorted(m for m in ("kindpkg.alpha", "kindpkg.beta") if m in sys.modules)
    kinds = registry.kinds()
    identity = code_identity(registry)
    try:
        asked = registry.get(sys.argv[2]).__doc__
    except UnknownKind:
        asked = None
    after = sorted(m for m in ("kindpkg.alpha", "kindpkg.beta") if m in sys.modules)
    registry.classes()
    print(json.dumps({"imported_before": before, "kinds": kinds, "asked": asked, "imported_after": after,
                      "identity": identity, "identity_all_loaded": code_identity(registry)}))
''')


def make_package(root: Path) -> Path:
    pkg = root / "kindpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('NODE_MODULES = ["alpha", "beta"]\n')
    (pkg / "alpha.py").write_text(MODULE.format(cls="Alpha", doc="first alpha", kind="k.alpha", version=1))
    (pkg / "beta.py").write_text(MODULE.format(cls="Beta", doc="the beta", kind="k.beta", version=1))
    return pkg


def probe(root: Path, ask: str) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{root}")
    done = subprocess.run([sys.executable, "-c", PROBE, str(root / "kinds.json"), ask], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_known_kinds_are_listed_unimported_and_imported_when_asked_for(tmp_path):
    make_package(tmp_path)
    first = probe(tmp_path, "k.beta")  # no index yet: every module imported, and noted
    assert first["imported_before"] == ["kindpkg.alpha", "kindpkg.beta"]
    second = probe(tmp_path, "k.beta")
    assert second["imported_before"] == [] and second["kinds"] == ["k.alpha", "k.beta"]
    assert second["asked"] == "the beta" and second["imported_after"] == ["kindpkg.beta"]
    assert second["identity"] == second["identity_all_loaded"] == first["identity"]


def test_a_changed_module_is_imported_again(tmp_path):
    pkg = make_package(tmp_path)
    probe(tmp_path, "k.alpha")
    (pkg / "alpha.py").write_text(MODULE.format(cls="Alpha", doc="second alpha", kind="k.alpha2", version=2))
    changed = probe(tmp_path, "k.alpha2")
    assert changed["imported_before"] == ["kindpkg.alpha"]  # not trusted: imported while loading
    assert changed["kinds"] == ["k.alpha2", "k.beta"] and changed["asked"] == "second alpha"
    again = probe(tmp_path, "k.alpha2")
    assert again["imported_before"] == [] and again["asked"] == "second alpha"


def test_an_index_that_is_wrong_about_a_module_costs_only_the_import(tmp_path):
    make_package(tmp_path)
    probe(tmp_path, "k.alpha")
    index = json.loads((tmp_path / "kinds.json").read_text())
    index["modules"]["kindpkg.alpha"]["kinds"].append(["k.ghost", "Ghost", 1])  # same file, a false claim
    (tmp_path / "kinds.json").write_text(json.dumps(index))
    wrong = probe(tmp_path, "k.ghost")
    assert "k.ghost" in wrong["kinds"] and wrong["asked"] is None  # imported, and found not there
    assert wrong["imported_after"] == ["kindpkg.alpha"]


@pytest.mark.parametrize("content", ["not json", '{"format": 1, "python": "another", "modules": {}}', "[]"])
def test_an_unreadable_or_foreign_index_is_no_index(tmp_path, content):
    make_package(tmp_path)
    (tmp_path / "kinds.json").write_text(content)
    result = probe(tmp_path, "k.alpha")
    assert result["imported_before"] == ["kindpkg.alpha", "kindpkg.beta"] and result["asked"] == "first alpha"
