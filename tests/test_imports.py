"""No import cycles among heiti's modules, and app/ leaves graph algorithms to the engine.

Module-level imports count, including those under `if TYPE_CHECKING:` (a cycle there is still two
modules that each need the other); imports inside functions are deliberate deferrals and do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "nodes", "app")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(["heiti", *parts])] = path
    return found


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported (or type-checked): not those inside functions."""
    out: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.ClassDef):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []) or [])
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return out


def import_graph() -> nx.DiGraph:
    modules = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(modules)
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from the package this module is in
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    g.add_edge(name, target)
    return g


def test_the_import_graph_is_read_correctly():
    g = import_graph()
    assert len(g) > 60
    assert g.has_edge("heiti.app.document", "heiti.app.commands")  # `from heiti.app import commands`
    assert g.has_edge("heiti.engine.validate", "heiti.engine.wiring")
    assert g.has_edge("heiti.engine.wiring", "heiti.engine.graph")  # under TYPE_CHECKING


def test_no_module_imports_itself_back():
    g = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_editor_does_not_import_networkx():
    users = []
    for path in (ROOT / "app").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "networkx" or n.startswith("networkx.") for n in names):
                users.append(str(path.relative_to(ROOT)))
    assert users == []


# --- listing stays lean -----------------------------------------------------------------------------
#: what `heiti nodes` must not import: numerics, system sampling, the measuring, device and TVM
#: machinery, model readers and every framework — they load when a node runs
NOT_FOR_LISTING = ("numpy", "psutil", "scipy", "sklearn", "onnx", "tflite", "torch", "tensorflow", "keras", "tvm",
                   "onnxruntime", "openvino", "ai_edge_litert", "matplotlib", "heiti.engine.measurements",
                   "heiti.nodes.devices.client", "heiti.nodes.runtimes.loop", "heiti.nodes.runtimes.sampler",
                   "heiti.nodes.runtimes.measure", "heiti.nodes.tvm_int8", "heiti.nodes.tvm_schedule",
                   "heiti.nodes.output_probe", "heiti.nodes.reports.render")


def test_listing_the_kinds_imports_no_numerics_nor_machinery():
    """`heiti nodes --json` as a user runs it; what it imported is read at exit."""
    import json
    import subprocess
    import sys

    code = ("import atexit, json, runpy, sys\n"
            f"atexit.register(lambda: print('MODULES=' + json.dumps(sorted(m for m in {NOT_FOR_LISTING!r} "
            "if m in sys.modules)), file=sys.stderr))\n"
            "sys.argv = ['heiti', 'nodes', '--json']\n"
            "runpy.run_module('heiti.engine.cli', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)) > 20  # the kinds were listed
    line = next(line for line in result.stderr.splitlines() if line.startswith("MODULES="))
    assert json.loads(line.removeprefix("MODULES=")) == []


def _declared(package: Path) -> tuple[str, ...] | None:
    for node in ast.parse((package / "__init__.py").read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "NODE_MODULES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return None


def test_every_module_that_defines_a_kind_is_listed():
    """Packages that name their kind modules (NODE_MODULES) must name every one, or its kinds vanish."""
    unlisted = []
    for path in (ROOT / "nodes").rglob("*.py"):
        if path.name == "__init__.py" or "__pycache__" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defines_kind = any(isinstance(item, ast.Assign) and any(getattr(t, "id", "") == "kind" for t in item.targets)
                           for cls in tree.body if isinstance(cls, ast.ClassDef) for item in cls.body)
        if not defines_kind:
            continue
        child, package = path.stem, path.parent
        while package != ROOT:  # every step up to heiti.nodes must be declared where a list exists
            declared = _declared(package)
            if declared is not None and child not in declared:
                unlisted.append(str(path.relative_to(ROOT)))
                break
            child, package = package.name, package.parent
    assert unlisted == []
