"""The plug-in registries: built-ins, entry points of an installed outside package, registration, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import tomllib

from slimnas.errors import InputError
from slimnas.registry import BACKENDS, METHODS, SPACES, Registry

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("registry", [SPACES, BACKENDS, METHODS], ids=lambda r: r.group)
def test_pyproject_declares_exactly_the_builtins(registry):
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][registry.group]
    assert declared == registry.builtins


def test_builtin_names():
    assert "efficientformer" in SPACES.names()
    assert {"torch-cpu", "torch-cuda", "onnxruntime", "coreml"} <= set(BACKENDS.names())
    assert {"slimming", "random", "exhaustive", "tpe", "nsga2"} <= set(METHODS.names())
    assert SPACES.get("efficientformer").name == "efficientformer"


def test_an_installed_plugin_is_found_through_its_entry_points(toy_plugin):
    assert "toynet" in SPACES.names()
    assert SPACES.get("toynet").name == "toynet"
    assert sys.modules["slimnas_toyplugin.space"].FAMILY is SPACES.get("toynet")


def test_names_import_nothing(toy_plugin):
    sys.modules.pop("slimnas_toyplugin.space", None)
    assert "toynet" in SPACES.names()
    assert "slimnas_toyplugin.space" not in sys.modules


def test_unknown_name_says_which_are_known():
    with pytest.raises(InputError, match=r"space family: unknown name 'nope' \(known: efficientformer"):
        SPACES.get("nope")


def test_register_and_unregister():
    reg: Registry[object] = Registry("widget", "slimnas.test-widgets", {"a": "math:pi"})
    assert reg.get("a") == pytest.approx(3.14159, abs=1e-5)
    marker = object()
    reg.register("b", marker)
    assert reg.get("b") is marker and reg.names() == ("a", "b")
    with pytest.raises(ValueError, match="registered already"):
        reg.register("a", marker)
    reg.register("a", marker, replace=True)
    assert reg.get("a") is marker
    reg.unregister("a")
    assert reg.get("a") != marker


def test_a_plugin_that_fails_to_import_is_named():
    reg: Registry[object] = Registry("widget", "slimnas.test-widgets", {"broken": "no_such_module_xyz:thing"})
    with pytest.raises(InputError, match=r"widget 'broken': cannot load 'no_such_module_xyz:thing' "
                                         r"\(ModuleNotFoundError"):
        reg.get("broken")
