import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
from heiti.engine.registry import Registry  # noqa: E402

from tests import testnodes  # noqa: E402


@pytest.fixture
def registry() -> Registry:
    """A registry holding only the test node kinds."""
    reg = Registry()
    for cls in testnodes.ALL:
        reg.register(cls)
    return reg
