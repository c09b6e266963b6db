"""Installs the top-level folders engine/, nodes/ and app/ as one package, `heiti`.

pyproject.toml holds all the metadata; only this mapping needs code, so that new subpackages are
found without listing them: nothing is installed as a bare `engine`, `nodes` or `app`.
"""

from setuptools import find_packages, setup

LAYERS = ("engine", "nodes", "app")

setup(
    packages=[f"heiti.{name}" for name in find_packages(include=[f"{layer}*" for layer in LAYERS])],
    package_dir={f"heiti.{layer}": layer for layer in LAYERS},
)
