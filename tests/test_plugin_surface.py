"""The declared plugin surface: a built-in plugin does only what a third-party one can.

Every module of every built-in plugin package (``plugins/`` = ``robench_plugins``) and of the example
package in ``docs/examples`` is parsed (not imported) and each import and each ``robench.<name>``
attribute is checked: robench names must be public (in ``robench.__all__``, or a public name of a
module in ``robench.PUBLIC_MODULES``), and a plugin package may take from another plugin package
only the public names its ``__init__`` exports (an attack class, a default), never a submodule.
Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import robench
from robench.docgen import public_names

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"
EXAMPLES = REPO / "docs" / "examples"


def _public_names(module: str) -> set[str]:
    """The names docs/reference/api.md lists for ``module`` (its ``__all__``, else what it defines)."""
    return set(robench.__all__ if module == "robench" else public_names(importlib.import_module(module)))


def _is_public_module(name: str) -> bool:
    """robench itself, a listed module, or a module inside a listed package (robench.report.tables)."""
    return name == "robench" or any(name == m or name.startswith(m + ".") for m in robench.PUBLIC_MODULES)


def _module_is_package(name: str) -> bool:
    return hasattr(importlib.import_module(name), "__path__")


def violations(path: Path, own_package: str | None) -> list[str]:
    """What ``path`` imports that it must not; ``own_package`` is its robench_plugins package (or None)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []

    def bad(node, what):
        out.append(f"{path.relative_to(REPO)}:{node.lineno}: {what}")

    def check_robench_module(node, module: str):
        if not _is_public_module(module):
            bad(node, f"imports the internal module {module} (public: robench, {', '.join(robench.PUBLIC_MODULES)})")
            return False
        return True

    def check_plugin_module(node, module: str, names: list[str] | None = None):
        """Another plugin package: only the public names of its package module (what its
        ``__init__`` exports, e.g. an attack class or a default), never its submodules."""
        parts = module.split(".")
        if len(parts) == 1:
            bad(node, "imports robench_plugins itself")
        elif parts[1] == own_package:
            return
        elif len(parts) > 2 or names is None:
            bad(node, f"imports another plugin package's internals ({module}); shared code belongs in a public robench module")
        else:
            pkg = importlib.import_module(module)
            for name in names:
                if name.startswith("_") or inspect.ismodule(getattr(pkg, name, None)):
                    bad(node, f"imports {name!r} from {module}: not a public name of that plugin package")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "robench":
                    check_robench_module(node, alias.name)
                elif alias.name.split(".")[0] == "robench_plugins":
                    check_plugin_module(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # relative: fine inside a plugin package (plugins/<pkg>/a/b.py may go up 2 levels), never above it
                if own_package and node.level > len(path.relative_to(PLUGINS).parts) - 1:
                    bad(node, "relative import out of its own plugin package")
                continue
            module = node.module or ""
            root = module.split(".")[0]
            if root == "robench":
                if not check_robench_module(node, module):
                    continue
                if _module_is_package(module):
                    public = _public_names(module)
                    for alias in node.names:
                        sub = f"{module}.{alias.name}"
                        if alias.name not in public and not _is_public_module(sub):
                            bad(node, f"imports {alias.name!r} from {module}, which is not public there")
                else:
                    public = _public_names(module)
                    for alias in node.names:
                        if alias.name not in public:
                            bad(node, f"imports the private name {alias.name!r} from {module}")
            elif root == "robench_plugins":
                check_plugin_module(node, module, [a.name for a in node.names])
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "robench":
            if node.attr not in robench.__all__ and not _is_public_module(f"robench.{node.attr}"):
                bad(node, f"uses robench.{node.attr}, which is not in robench.__all__")
    return out


def _plugin_files() -> list[tuple[Path, str | None]]:
    files = [(p, p.relative_to(PLUGINS).parts[0]) for p in sorted(PLUGINS.glob("*/**/*.py"))]
    files += [(p, None) for p in sorted(PLUGINS.glob("*.py"))]
    files += [(p, None) for p in sorted(EXAMPLES.rglob("*.py"))]
    return [(p, pkg) for p, pkg in files if "__pycache__" not in p.parts]


def test_there_is_something_to_check():
    files = _plugin_files()
    packages = {pkg for _, pkg in files if pkg}
    assert {"basic", "cnn", "attacks_foolbox", "attacks_art", "datasets", "margin", "critic"} <= packages
    assert any(EXAMPLES in p.parents for p, _ in files)


def test_built_in_plugins_and_the_example_import_only_public_robench_names():
    found = [v for path, pkg in _plugin_files() for v in violations(path, pkg)]
    assert not found, "non-public imports:\n" + "\n".join(found)


@pytest.mark.parametrize("source, expected", [
    ("from robench.api import ScoresModule\n", "internal module robench.api"),
    ("import robench\nnet = robench.api.ScoresModule(m)\n", "robench.api, which is not in robench.__all__"),
    ("from robench.norms import _private\n", "private name '_private'"),
    ("from robench import suite\n", "'suite' from robench"),
    ("from robench_plugins.attacks_fab.fab import fab\n", "another plugin package's internals"),
    ("from robench_plugins.attacks_fab import _private\n", "not a public name of that plugin package"),
    ("def f():\n    from robench.runner import load_eval_data\n", "internal module robench.runner"),
    ("from ..cnn import nets\n", "out of its own plugin package"),
])
def test_the_rule_catches_each_kind_of_private_use(tmp_path, monkeypatch, source, expected):
    pkg = tmp_path / "plugins" / "mine"
    pkg.mkdir(parents=True)
    (pkg / "mod.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    monkeypatch.setattr(__import__(__name__), "PLUGINS", tmp_path / "plugins")
    found = violations(pkg / "mod.py", "mine")
    assert len(found) == 1 and expected in found[0], found


def test_the_public_names_are_all_importable():
    for name in robench.__all__:
        assert hasattr(robench, name), name
    for module in robench.PUBLIC_MODULES:
        for name in _public_names(module):
            assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
