"""The built wheel installs `heiti` and nothing else: from another folder, in a fresh venv that
sees none of this checkout, `import heiti.engine` works, `import engine` does not, the node kinds
load and the report templates are there.

The venv has no pip and no system site-packages; the wheel is unzipped into it (what pip does for a
pure wheel), and a .pth line lends it the dependencies of this project's venv — plain path lines
only, so the venv's editable finder for this checkout is not run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "pyproject.toml", "README.md", "engine", "nodes", "app")

CHECK = """
import importlib.util, json, sys
from pathlib import Path
import heiti.engine
from heiti.engine.registry import Registry
from heiti.nodes.reports.render import TEMPLATES
reg = Registry()
reg.load_builtins()
print(json.dumps({
    "file": heiti.engine.__file__,
    "bare": [n for n in ("engine", "nodes", "app") if importlib.util.find_spec(n) is not None],
    "kinds": len(reg.kinds()), "errors": reg.load_errors,
    "templates": sorted(p.name for p in Path(TEMPLATES).glob("*.j2")),
}))
"""


def test_wheel_installs_heiti_only(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("heiti-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        assert {n for n in tops if not n.endswith(".dist-info")} == {"heiti"}, tops

        env_dir = tmp_path / "venv"
        venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
        python = env_dir / "bin" / "python"
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        archive.extractall(site)
    (site / "_heiti_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([str(python), "-c", CHECK], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(site), found["file"]
    assert found["bare"] == []
    assert found["errors"] == [] and found["kinds"] > 20
    assert found["templates"] == ["report.html.j2", "report.md.j2"]
