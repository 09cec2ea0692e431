"""Shared test helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


#: A folder laid out like site-packages with one outside plug-in installed (``slimnas_toyplugin``: a space family, a
#: latency backend and a search method, declared in its ``.dist-info/entry_points.txt``).
PLUGIN_SITE = Path(__file__).resolve().parent / "plugins" / "site"


@pytest.fixture
def toy_plugin(monkeypatch):
    """The toy plug-in installed for this test: its folder on ``sys.path`` (``importlib.metadata`` finds its entry
    points there) and on ``PYTHONPATH`` (for subprocesses and Ray workers)."""
    from slimnas.search_spaces import forget_family

    monkeypatch.syspath_prepend(str(PLUGIN_SITE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN_SITE), os.environ.get("PYTHONPATH")])))
    from slimnas.registry import BACKENDS, METHODS, SPACES

    yield PLUGIN_SITE
    forget_family("toynet")
    for registry in (SPACES, BACKENDS, METHODS):
        for name in [n for n in registry._loaded if n not in registry.builtins]:
            registry.unregister(name)
