"""Generate the reference pages of the docs from the code, so they cannot drift from it.

- ``docs/reference/suite.md``: the suite YAML schema (:class:`robench.suite.Suite`, pydantic).
- ``docs/reference/cli.md``: every ``robench`` command and option (typer).
- ``docs/reference/plugins.md``: every built-in plugin with its parameters (the plugin registry).
- ``docs/reference/hooks.md``: the plugin hooks (:mod:`robench.hookspecs`) and spec classes.
- ``docs/reference/api.md``: the public API (``robench.__all__`` and ``robench.PUBLIC_MODULES``;
  rendered by :mod:`robench.docgen_api`).

``python -m robench.docgen`` rewrites them; ``python -m robench.docgen --check`` exits 1 when one is
stale (the tests run the same check). An item without a description (a suite field, a CLI option,
a hook, a plugin parameter) raises :class:`Undocumented` instead of producing a blank cell.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from .docgen_api import api_reference, public_names  # noqa: F401  (robench.docgen.public_names, as before)
from .docgen_text import GENERATED, Undocumented, cell as _cell, rst_to_md as _rst_to_md  # noqa: F401  (robench.docgen.Undocumented)

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


# -- suite schema --------------------------------------------------------------------------------

# What each nested section of a suite is for (its fields are described one by one in its table).
SECTIONS = {
    "DatasetRef": "The dataset slice every model is evaluated on; models train on the plugin's `train` split.",
    "ModelEntry": "One model (defense) of the suite: a model plugin and its parameters. The harness trains it "
                  "(or loads its cached weights) before the attacks run.",
    "AttackEntry": "One attack of the suite: an attack plugin and its parameters. It runs against every model "
                   "(or those listed in `models`), once per eps of its norm if it is a bounded attack.",
    "NoiseSpec": "Accuracy under Gaussian noise x + N(0, σ²), clipped to [0, 1], as a sanity baseline.",
}


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    out = []
    for a in (annotation, *typing.get_args(annotation)):
        for b in (a, *typing.get_args(a)):
            if isinstance(b, type) and issubclass(b, BaseModel) and b not in out:
                out.append(b)
    return out


def _without_metadata(annotation: Any) -> Any:
    """``annotation`` with every ``Annotated[T, ...]`` inside it replaced by ``T``: validators are
    not part of the type a reader writes (and their reprs hold memory addresses)."""
    import types

    if typing.get_origin(annotation) is typing.Annotated:
        return _without_metadata(typing.get_args(annotation)[0])
    args = typing.get_args(annotation)
    if not args or typing.get_origin(annotation) is typing.Literal:
        return annotation
    new = tuple(_without_metadata(a) for a in args)
    if new == args:
        return annotation
    if isinstance(annotation, types.UnionType):
        out = new[0]
        for a in new[1:]:
            out = out | a
        return out
    if isinstance(annotation, types.GenericAlias):
        return types.GenericAlias(typing.get_origin(annotation), new)
    return annotation.copy_with(new)


def _type_name(annotation: Any) -> str:
    annotation = _without_metadata(annotation)
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    text = re.sub(r"\b(?:[a-z_][a-z0-9_]*\.)+(?=[A-Za-z_])", "", text)  # module paths: robench.suite.DatasetRef -> DatasetRef
    return text.replace("NoneType", "None")


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return ""
    else:
        value = field.default
    if hasattr(value, "value"):  # enums
        value = value.value
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def field_description(model: type[BaseModel], name: str) -> str:
    """The documentation of one field: its description, else the section text of its nested model."""
    field = model.model_fields[name]
    if field.description:
        return field.description
    for nested in _nested_models(field.annotation):
        if nested.__name__ in SECTIONS:
            return SECTIONS[nested.__name__] + f" See [{_anchor_title(nested)}](#{_anchor(nested)})."
    raise Undocumented(f"suite field {model.__name__}.{name} has no description (add Field(description=...) in robench/suite.py)")


def _anchor_title(model: type[BaseModel]) -> str:
    return model.__name__


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def suite_models() -> list[type[BaseModel]]:
    """Suite and every model nested in it, in order of first appearance."""
    from .suite import Suite

    order = [Suite]
    for m in order:
        for f in m.model_fields.values():
            for nested in _nested_models(f.annotation):
                if nested not in order:
                    order.append(nested)
    return order


def suite_reference() -> str:
    from .api import Norm

    lines = [GENERATED, "", "# Suite reference", "",
             "A suite is a YAML file validated against this schema (`robench.suite.Suite`). Unknown keys are errors; "
             "every error names its place (`attacks[1].params.steps`, line 12). Check a file without running it with "
             "`robench validate SUITE`. Norm keys (`epsilons`, `headline`) are " + ", ".join(f"`{n.value}`" for n in Norm) + ".", ""]
    for model in suite_models():
        title = "Suite (top level)" if model.__name__ == "Suite" else model.__name__
        lines += [f'## {title} {{#{_anchor(model)}}}', ""]
        intro = SECTIONS.get(model.__name__) or (model.__doc__ or "").strip()
        if intro:
            lines += [_rst_to_md(inspect.cleandoc(intro)), ""]
        lines += ["| Field | Type | Default | Description |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            lines.append(f"| `{name}` | `{_cell(_type_name(field.annotation))}` | {_default(field)} | {_cell(field_description(model, name))} |")
        lines.append("")
    return "\n".join(lines)


# -- CLI ---------------------------------------------------------------------------------------


def cli_commands() -> Iterator[tuple[str, Any]]:
    """(full name, click command) for every command and sub-command of `robench`."""
    import typer.main

    from .cli import app

    def walk(prefix: str, cmd) -> Iterator[tuple[str, Any]]:
        sub = getattr(cmd, "commands", None)
        if sub:
            for name in sorted(sub):
                yield from walk(f"{prefix} {name}", sub[name])
        else:
            yield prefix, cmd

    yield from walk("robench", typer.main.get_command(app))


def _param_row(p) -> str:
    is_option = bool(getattr(p, "opts", None)) and p.opts[0].startswith("-")
    if is_option:
        names = ", ".join(f"`{o}`" for o in list(p.opts) + list(getattr(p, "secondary_opts", []) or []))
    else:
        names = f"`{p.name.upper()}`"
    if not p.help:
        raise Undocumented(f"robench CLI: parameter {p.name!r} has no help text (robench/cli.py)")
    if p.required:
        default = "**required**"
    elif getattr(p, "is_flag", False) and not getattr(p, "secondary_opts", None):
        default = "off"
    elif p.default is None or p.default == []:
        default = ""
    else:
        default = f"`{p.default}`"
    return f"| {names} | {default} | {_cell(p.help)} |"


def cli_reference() -> str:
    lines = [GENERATED, "", "# Command-line reference", "",
             "Every command prints `--help`. Exit codes: 0 success, 1 a cell or model failed (or, for `diff --exit-code`, "
             "something changed), 2 invalid input, 130 interrupted.", ""]
    for name, cmd in cli_commands():
        help_text = inspect.cleandoc(cmd.help or "")
        if not help_text:
            raise Undocumented(f"robench CLI: command {name!r} has no docstring (robench/cli.py)")
        args = " ".join(p.name.upper() if p.required else f"[{p.name.upper()}]"
                        for p in cmd.params if not p.opts[0].startswith("-"))
        lines += [f"## `{name}`", "", help_text, "", "```", f"{name} [OPTIONS] {args}".rstrip(), "```", ""]
        params = [p for p in cmd.params if not getattr(p, "hidden", False)]
        if params:
            lines += ["| Argument / option | Default | Description |", "|---|---|---|"]
            lines += [_param_row(p) for p in params] + [""]
    return "\n".join(lines)


# -- plugins ------------------------------------------------------------------------------------


def plugin_reference() -> str:
    from .plugins import load_registry

    reg = load_registry(strict=True)  # a broken built-in must fail here, not vanish from the docs
    lines = [GENERATED, "", "# Built-in plugins", "",
             "Every plugin that ships with robench (`robench plugins -v` lists the installed ones, third-party "
             "included). Use the name as `plugin:` in a suite; parameters go under `params:`.", ""]
    titles = {"model": "Models (defenses)", "attack": "Attacks", "dataset": "Datasets"}
    for kind, title in titles.items():
        specs = sorted((s for s in reg.specs[kind].values() if s.origin == "built-in"), key=lambda s: s.name)
        lines += [f"## {title}", "", "| Plugin | Capabilities | Description |", "|---|---|---|"]
        for s in specs:
            try:
                capabilities = s.capabilities()
            except Exception as exc:  # the plugin's class attributes are broken: say which one
                raise RuntimeError(f"{kind} plugin {s.name} ({s.factory.__module__}): capabilities() failed: {exc!r}") from exc
            caps = ", ".join(f"{k}: {'/'.join(v) if isinstance(v, list) else v}" for k, v in capabilities.items())
            lines.append(f"| [`{s.name}`](#{kind}-{_slug(s.name)}) | {_cell(caps)} | {_cell(s.description)} |")
        lines.append("")
        for s in specs:
            lines += [f"### `{s.name}` {{#{kind}-{_slug(s.name)}}}", "", _cell(s.description), ""]
            fields = s.params.model_fields
            if not fields:
                lines += ["No parameters.", ""]
                continue
            lines += ["| Parameter | Type | Default | Description |", "|---|---|---|---|"]
            for name, f in fields.items():
                if not f.description:
                    raise Undocumented(f"{kind} plugin {s.name}: parameter {name!r} has no description (Field(description=...))")
                lines.append(f"| `{name}` | `{_cell(_type_name(f.annotation))}` | {_default(f)} | {_cell(f.description)} |")
            lines.append("")
    return "\n".join(lines)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# -- hooks --------------------------------------------------------------------------------------


def hook_specs() -> list[tuple[str, Any]]:
    from . import hookspecs

    return [(n, f) for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "robench_spec")]


def hooks_reference() -> str:
    from . import api

    intro = _rst_to_md(inspect.cleandoc(sys.modules["robench.hookspecs"].__doc__ or "")).replace("::\n", ":\n")
    lines = [GENERATED, "", "# Plugin hooks and base classes", "", intro, "", "## Hooks", ""]
    for name, fn in hook_specs():
        doc = inspect.getdoc(fn)
        if not doc:
            raise Undocumented(f"hook {name} has no docstring (robench/hookspecs.py)")
        lines += [f"### `{name}{inspect.signature(fn)}`", "", _rst_to_md(doc), ""]
    lines += ["## Spec classes", ""]
    for cls in (api.ModelSpec, api.AttackSpec, api.DatasetSpec):
        fields = [f for f in cls.__dataclass_fields__.values() if f.name != "origin"]
        sig = ", ".join(f.name for f in fields)
        lines += [f"### `robench.{cls.__name__}({sig})`", "", _rst_to_md(inspect.getdoc(cls) or ""), ""]
    lines += ["## Base classes", ""]
    for cls in (api.Params, api.Model, api.TorchModel, api.Attack, api.Dataset, api.Context):
        lines += [f"### `robench.{cls.__name__}`", "", _rst_to_md(inspect.getdoc(cls) or ""), ""]
        for mname, member in sorted(vars(cls).items()):
            if mname.startswith("_") or inspect.isclass(member) or not callable(member) or not getattr(member, "__doc__", None):
                continue
            lines += [f"- `{mname}{inspect.signature(member)}`: {_rst_to_md(inspect.getdoc(member)).splitlines()[0]}"]
        lines.append("")
    return "\n".join(lines)


# -- writing and checking -----------------------------------------------------------------------


PAGES = {
    "reference/suite.md": suite_reference,
    "reference/cli.md": cli_reference,
    "reference/plugins.md": plugin_reference,
    "reference/hooks.md": hooks_reference,
    "reference/api.md": api_reference,
}


def render() -> dict[str, str]:
    return {path: fn().rstrip() + "\n" for path, fn in PAGES.items()}


def write(docs: Path = DOCS) -> list[Path]:
    out = []
    for rel, text in render().items():
        p = docs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
        out.append(p)
    return out


def stale(docs: Path = DOCS) -> list[str]:
    """Generated pages whose committed text differs from what the code generates now."""
    return [rel for rel, text in render().items() if not (docs / rel).is_file() or (docs / rel).read_text() != text]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        bad = stale()
        for rel in bad:
            print(f"docs/{rel} is out of date: run `python -m robench.docgen`", file=sys.stderr)
        return 1 if bad else 0
    if argv:
        print("usage: python -m robench.docgen [--check]", file=sys.stderr)
        return 2
    for p in write():
        print(f"wrote {p.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
