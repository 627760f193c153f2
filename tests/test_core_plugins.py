"""Plugin discovery: built-ins via entry points, --plugin modules, name clashes, the CLI listing."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import types
from pathlib import Path

import pytest

import robench
from robench.errors import PluginError
from robench.plugins import load_registry

REPO = Path(__file__).resolve().parents[1]


def test_builtins_come_through_entry_points(registry):
    assert {"digits", "mnist", "fashion_mnist", "cifar10"} <= set(registry.specs["dataset"])
    assert {"fgsm", "pgd"} <= set(registry.specs["attack"])
    assert "mlp" in registry.specs["model"]
    assert registry.get("attack", "pgd").origin == "built-in"
    assert not registry.broken, registry.broken


def test_every_plugin_package_is_packaged_and_registered():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(cfg["tool"]["setuptools"]["packages"])
    entry_modules = set(cfg["project"]["entry-points"]["robench"].values())
    for d in sorted((REPO / "plugins").iterdir()):
        if (d / "__init__.py").exists():
            assert f"robench_plugins.{d.name}" in packages, f"{d} missing from [tool.setuptools] packages"
            if d.name != "common":
                assert f"robench_plugins.{d.name}" in entry_modules, f"{d} has no robench entry point"


def test_every_plugin_has_a_description_and_documented_params(registry):
    for spec in registry.all():
        assert spec.description, spec
        for name, field in spec.params.model_fields.items():
            assert field.description, f"{spec.kind} {spec.name}: parameter {name} has no description"


def test_plugin_module_from_the_command_line():
    reg = load_registry(["robench_test_plugins"])
    assert reg.get("attack", "test-crash").origin == "--plugin robench_test_plugins"


def test_unknown_name_lists_available(registry):
    with pytest.raises(PluginError, match="available: .*pgd"):
        registry.get("attack", "no-such-attack")


def test_name_clash_names_both_origins(monkeypatch):
    mod = types.ModuleType("clashing_plugin")

    @robench.hookimpl
    def robench_attacks():
        return [robench.AttackSpec("pgd", type("X", (robench.Attack,), {}), "impostor")]

    mod.robench_attacks = robench_attacks
    monkeypatch.setitem(sys.modules, "clashing_plugin", mod)
    with pytest.raises(PluginError, match=r"two attack plugins are named 'pgd': one from built-in, one from --plugin clashing_plugin"):
        load_registry(["clashing_plugin"])


def test_broken_plugin_module_is_a_clear_error():
    with pytest.raises(PluginError, match="--plugin no_such_module_xyz: cannot import"):
        load_registry(["no_such_module_xyz"])


def test_cli_lists_plugins_with_origin():
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "plugins"], capture_output=True, text=True,
                          env={**__import__("os").environ, "COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr
    assert "pgd" in proc.stdout and "built-in" in proc.stdout and "digits" in proc.stdout
