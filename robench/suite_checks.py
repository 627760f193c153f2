"""The checks of a suite beyond its schema: plugin parameters, cross-references between entries,
the dataset's facts, suite-relative files and parameters that cannot have an effect. Each appends
located ``(where, what)`` problems, so that one round of fixes suffices.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from .api import Context, Params, construct
from .errors import UserInputError
from .plugins import Registry
from .suite_text import allowed_fields, format_loc, pydantic_problems, line_note

if TYPE_CHECKING:
    from .suite import Suite


def params_for(registry: Registry, kind: str, plugin: str, params: dict, loc: tuple, lines: dict,
                problems: list[tuple[str, str]]) -> Params | None:
    """Validate one plugin's parameters; append located problems and return None when invalid."""
    if plugin not in registry.specs[kind]:
        field = ("name",) if kind == "dataset" else ("plugin",)  # the suite calls it dataset.name
        problems.append((format_loc(loc + field) + line_note(lines, loc + field), registry.unknown_message(kind, plugin)))
        return None
    spec = registry.specs[kind][plugin]
    try:
        return spec.params.model_validate(params)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, loc + ("params",), lines))
        if any(e["type"] == "extra_forbidden" for e in exc.errors()):
            problems.append((format_loc(loc + ("params",)), f"{plugin} accepts: {allowed_fields(spec.params)}"))
        return None
    except Exception as exc:  # a plugin's own validator that raised something else: still located
        problems.append((format_loc(loc + ("params",)) + line_note(lines, loc + ("params",)),
                         f"{plugin} rejected these parameters: {type(exc).__name__}: {exc}"))
        return None



def raw_plugin_problems(data: dict, registry: Registry, lines: dict, problems: list[tuple[str, str]]) -> None:
    """The parameter checks of every well-formed entry of a suite whose structure did not validate."""
    ds = data.get("dataset")
    if isinstance(ds, dict) and isinstance(ds.get("name"), str) and isinstance(ds.get("params", {}), dict):
        params_for(registry, "dataset", ds["name"], ds.get("params", {}), ("dataset",), lines, problems)
    for kind, key in (("model", "models"), ("attack", "attacks")):
        entries = data.get(key)
        for i, e in enumerate(entries if isinstance(entries, list) else []):
            if isinstance(e, dict) and isinstance(e.get("plugin"), str) and isinstance(e.get("params", {}), dict):
                params_for(registry, kind, e["plugin"], e.get("params", {}), (key, i), lines, problems)



def cross_ref_problems(doc: dict, lines: dict, problems: list[tuple[str, str]]) -> None:
    """Unique names, and attacks' models / source naming models of the suite (on raw or dumped data)."""
    def entries(key):
        v = doc.get(key)
        return [(i, e) for i, e in enumerate(v if isinstance(v, list) else []) if isinstance(e, dict)]

    for key in ("models", "attacks"):
        first: dict[str, int] = {}
        for i, e in entries(key):
            name = e.get("name")
            if not isinstance(name, str):
                continue
            if name in first:
                problems.append((f"{key}[{i}].name" + line_note(lines, (key, i, "name")),
                                 f"the name {name!r} is used twice (also by {key}[{first[name]}]); names must be unique"))
            else:
                first[name] = i
    model_names = [e["name"] for _, e in entries("models") if isinstance(e.get("name"), str)]
    for i, a in entries("attacks"):
        refs = a.get("models")
        for j, ref in enumerate(refs if isinstance(refs, list) else []):
            if isinstance(ref, str) and ref not in model_names:
                problems.append((f"attacks[{i}].models[{j}]" + line_note(lines, ("attacks", i, "models", j)),
                                 f"refers to model {ref!r}, which is not in this suite; models are {model_names}"))
        src = a.get("source")
        if isinstance(src, str) and src not in model_names:
            problems.append((f"attacks[{i}].source" + line_note(lines, ("attacks", i, "source")),
                             f"refers to model {src!r}, which is not in this suite; models are {model_names}"))



def dataset_problems(suite: Suite, registry: Registry, dataset_params: Params, lines: dict,
                      problems: list[tuple[str, str]], data_dir: Path | None) -> tuple[int, ...] | None:
    """Split, classes, offset (when the data files are present) from the dataset plugin; returns the
    input shape when the plugin can tell it without its files, else None."""
    ref = suite.dataset
    try:
        dataset = construct(registry.specs["dataset"][ref.name].factory, dataset_params, Context(registry=registry))
    except Exception as exc:
        problems.append(("dataset.params" + line_note(lines, ("dataset", "params")), f"{ref.name} rejected these parameters: {exc}"))
        return None
    try:
        splits = list(dataset.splits)
    except Exception:  # splits derived from files or another plugin that cannot answer now
        splits = None
    if splits is not None and ref.split not in splits:
        problems.append(("dataset.split" + line_note(lines, ("dataset", "split")),
                         f"{ref.name} has splits {splits}, not {ref.split!r}"))
    try:
        info = dataset.info()
    except Exception:  # e.g. an image folder whose classes come from its files: checked at run time
        return None
    if ref.classes:
        for j, c in enumerate(ref.classes):
            if c >= info.num_classes:
                problems.append((f"dataset.classes[{j}]" + line_note(lines, ("dataset", "classes", j)),
                                 f"class {c} is not in 0..{info.num_classes - 1} ({ref.name} has {info.num_classes} classes)"))
    if data_dir is not None and (splits is None or ref.split in splits):
        try:
            n = dataset.size(ref.split, Path(data_dir))
        except UserInputError as exc:  # a data file that is damaged: name it now, not at run time
            problems.append(("dataset.name" + line_note(lines, ("dataset", "name")), str(exc)))
            n = None
        except Exception:  # a plugin's size() that cannot answer: the run checks again
            n = None
        if n is not None and ref.offset >= n:
            problems.append(("dataset.offset" + line_note(lines, ("dataset", "offset")),
                             f"offset {ref.offset} is past the end of {ref.name}'s {ref.split} split ({n} samples)"))
    return tuple(info.input_shape)



def suite_files(params: Params, path: str, loc: tuple, lines: dict, problems: list) -> Params:
    """Suite-relative path parameters made absolute (against the suite file's folder); a file
    that does not exist is a problem at its YAML location."""
    from .content import anchor, missing

    base = Path(path).resolve().parent if path and not path.startswith("<") else Path.cwd()
    params = anchor(params, base)
    for name, file in missing(params):
        problems.append((format_loc(loc + (name,)) + line_note(lines, loc + (name,)), f"file not found: {file}"))
    return params



def inert_warnings(params: Params, loc: tuple, lines: dict, out: list[tuple[str, str]]) -> None:
    """A warning for each parameter set explicitly that cannot affect the run (nested parameter models too)."""
    try:
        inert = params.inert()
    except Exception:  # a plugin's inert() that fails must not make a valid suite invalid
        inert = {}
    for name in params.model_fields_set:
        if name in inert:
            out.append((format_loc(loc + (name,)) + line_note(lines, loc + (name,)), f"has no effect: {inert[name]}"))
        value = getattr(params, name, None)
        if isinstance(value, Params):
            inert_warnings(value, loc + (name,), lines, out)
