"""The public-API reference page (``docs/reference/api.md``): ``robench.__all__`` and the public names
of each module in ``robench.PUBLIC_MODULES``, one row each with its kind and the first paragraph of its
docstring. :func:`public_names` is also the rule tests/test_plugin_surface.py holds plugins to."""

from __future__ import annotations

import inspect
import re
from typing import Any

from .docgen_text import GENERATED, Undocumented, cell as _cell, rst_to_md as _rst_to_md


def public_names(module) -> list[str]:
    """A public module's names: its ``__all__``; else the classes and functions it defines itself
    and its UPPER_CASE constants (imported helpers such as ``torch`` are not its API)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    own = []
    for n, v in vars(module).items():
        if n.startswith("_") or inspect.ismodule(v):
            continue
        if inspect.isclass(v) or inspect.isfunction(v):
            if v.__module__ == module.__name__:
                own.append(n)
        elif n.isupper():
            own.append(n)
    return own


def _api_entry(module_name: str, name: str, value: Any) -> str:
    if inspect.ismodule(value):
        return f"| `{name}` | module | {_cell(_rst_to_md((inspect.getdoc(value) or '').split(chr(10) + chr(10))[0]))} |"
    if inspect.isclass(value) or inspect.isfunction(value):
        doc = inspect.getdoc(value)
        if not doc:
            raise Undocumented(f"{module_name}.{name} is public but has no docstring")
        kind = "class" if inspect.isclass(value) else "function"
        sig = ""
        if kind == "function":
            try:
                sig = str(inspect.signature(value))
            except (TypeError, ValueError):
                sig = "(...)"
            sig = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", sig)
        return f"| `{name}{_cell(sig)}` | {kind} | {_cell(_rst_to_md(doc.split(chr(10) + chr(10))[0]))} |"
    return f"| `{name}` | {type(value).__name__} | {_cell(repr(value)) if len(repr(value)) < 60 else ''} |"


def api_reference() -> str:
    """``robench.__all__`` and the public names of each module in ``robench.PUBLIC_MODULES``."""
    import importlib

    import robench

    lines = [GENERATED, "", "# Public API", "",
             "What a plugin (or a script) may use: the names of the `robench` package below, and the public modules "
             "listed after them. Every other module of robench is internal and may change without notice; the test "
             "`tests/test_plugin_surface.py` holds the built-in plugins and the example package to this list.", "",
             "## `robench`", "", "| Name | Kind | Description |", "|---|---|---|"]
    lines += [_api_entry("robench", n, getattr(robench, n)) for n in sorted(robench.__all__, key=str.lower)]
    for module_name in robench.PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        doc = _rst_to_md(inspect.getdoc(module) or "")
        if not doc:
            raise Undocumented(f"public module {module_name} has no docstring")
        lines += ["", f"## `{module_name}`", "", doc, "", "| Name | Kind | Description |", "|---|---|---|"]
        lines += [_api_entry(module_name, n, getattr(module, n)) for n in sorted(public_names(module), key=str.lower)]
    return "\n".join(lines)
