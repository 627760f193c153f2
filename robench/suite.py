"""Declarative YAML suites: the pydantic schema, and validation whose every error names its place.

A suite is checked in three passes, each reporting all the problems it finds with their YAML
location (``attacks[1].params.steps``, plus the line number): YAML syntax, the suite's own
structure, then each plugin name and the plugin's parameters.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .api import Norm, Params
from .errors import SuiteError
from .plugins import Registry

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetRef(_Strict):
    name: str = Field(description="dataset plugin name, e.g. digits, mnist, cifar10")
    split: str = Field("test", description="split the attacks are evaluated on (models train on 'train')")
    limit: int | None = Field(None, ge=1, description="evaluate only this many samples (after offset)")
    offset: int = Field(0, ge=0, description="skip this many samples of the split first")
    classes: list[int] | None = Field(
        None, min_length=2, description="keep only these classes, relabelled 0..k-1 in this order"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset plugin's own parameters")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v):
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"classes must be distinct, got {v}")
        return v


class ModelEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="name of this model in tables (unique in the suite)")
    plugin: str = Field(description="model plugin name (see `robench plugins`)")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters")


class AttackEntry(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="name of this attack in tables (unique in the suite)")
    plugin: str = Field(description="attack plugin name (see `robench plugins`)")
    params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters")
    models: list[str] | None = Field(None, description="run only against these models (default: all)")
    source: str | None = Field(None, description="for transfer attacks: the model the adversarials are crafted on")
    batch_size: int | None = Field(None, ge=1, description="samples per attack call (default: the suite's batch_size)")


class NoiseSpec(_Strict):
    sigmas: list[float] = Field(min_length=1, description="standard deviations of the Gaussian noise")

    @field_validator("sigmas")
    @classmethod
    def _positive(cls, v):
        bad = [s for s in v if not s > 0]
        if bad:
            raise ValueError(f"noise sigmas must be > 0, got {bad}")
        return sorted(v)


class Suite(_Strict):
    """Every model of the suite against every attack, on one dataset slice."""

    name: str = Field(pattern=NAME_PATTERN, description="suite name; also the leaderboard file name")
    description: str = Field("", description="one paragraph shown above the leaderboard")
    dataset: DatasetRef
    seed: int = Field(0, ge=0, description="seeds training, attacks and sampling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    batch_size: int = Field(100, ge=1, description="samples per attack call; also the unit of resume")
    models: list[ModelEntry] = Field(min_length=1)
    attacks: list[AttackEntry] = Field(default_factory=list)
    epsilons: dict[Norm, list[float]] = Field(
        default_factory=dict, description="thresholds per norm at which robust accuracy is reported"
    )
    headline: dict[Norm, float] = Field(
        default_factory=dict, description="the eps per norm that ranks the leaderboard (default: the middle one)"
    )
    noise: NoiseSpec | None = Field(None, description="also measure accuracy under Gaussian noise")

    @field_validator("epsilons")
    @classmethod
    def _eps_valid(cls, v):
        for norm, values in v.items():
            if not values:
                raise ValueError(f"{norm}: give at least one eps")
            bad = [e for e in values if not e >= 0]
            if bad:
                raise ValueError(f"{norm}: eps must be >= 0, got {bad}")
            if norm == Norm.L0 and any(float(e) != int(e) for e in values):
                raise ValueError(f"L0: eps counts pixels and must be whole numbers, got {values}")
            v[norm] = sorted(float(e) for e in values)
        return v

    @model_validator(mode="after")
    def _cross_refs(self):
        for kind, entries in (("models", self.models), ("attacks", self.attacks)):
            seen = set()
            for e in entries:
                if e.name in seen:
                    raise ValueError(f"{kind}: the name {e.name!r} is used twice; names must be unique")
                seen.add(e.name)
        model_names = [m.name for m in self.models]
        for a in self.attacks:
            for ref in (a.models or []) + ([a.source] if a.source else []):
                if ref not in model_names:
                    raise ValueError(f"attack {a.name!r} refers to model {ref!r}; models are {model_names}")
        return self

    def eps_for(self, norm: Norm) -> list[float]:
        return list(self.epsilons.get(norm, []))

    def headline_eps(self, norm: Norm) -> float | None:
        if norm in self.headline:
            return self.headline[norm]
        eps = self.eps_for(norm)
        return eps[len(eps) // 2] if eps else None

    def content_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Resolved:
    """A suite whose plugin names and parameters all validated."""

    suite: Suite
    path: str
    dataset_params: Params
    model_params: dict[str, Params]
    attack_params: dict[str, Params]


# -- locating errors in the YAML text -----------------------------------------------------------


def format_loc(loc: tuple | list) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_index(text: str) -> dict[tuple, int]:
    """Map each YAML path (tuple of keys / indices) to its 1-based line number."""
    index: dict[tuple, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index

    def walk(node, path):
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value
                index[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    if root is not None:
        walk(root, ())
    return index


def _where(lines: dict[tuple, int], loc: tuple) -> str:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return f" (line {lines[loc]})" if loc in lines else ""


def _describe(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "extra_forbidden":
        return "unknown field (not allowed here)"
    value = err.get("input")
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{msg}; got {shown}"


def _pydantic_problems(exc: ValidationError, prefix: tuple, lines: dict[tuple, int]) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        # Unknown fields: tell what is allowed.
        out.append((format_loc(loc) + _where(lines, loc), _describe(err)))
    return out


def _allowed_fields(model: type[BaseModel]) -> str:
    return ", ".join(model.model_fields) or "(none)"


# -- the three passes ------------------------------------------------------------------------


def parse_yaml(text: str, path: str) -> tuple[dict, dict[tuple, int]]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(path, [(f"YAML syntax ({where})", str(problem))]) from None
    if not isinstance(data, dict):
        raise SuiteError(path, [("", f"a suite must be a YAML mapping (name:, dataset:, models:, ...), got {type(data).__name__}")])
    return data, _line_index(text)


def load_suite(path: str | Path, registry: Registry, *, text: str | None = None) -> Resolved:
    """Read, validate and resolve a suite file; raises SuiteError listing every problem found."""
    path = str(path)
    if text is None:
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            raise SuiteError(path, [("", "file not found")]) from None
        except OSError as exc:
            raise SuiteError(path, [("", f"cannot read: {exc}")]) from None
    data, lines = parse_yaml(text, path)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc, (), lines)
        for err in exc.errors():
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                problems.append(("", f"allowed top-level fields: {_allowed_fields(Suite)}"))
                break
        raise SuiteError(path, problems) from None
    return resolve(suite, registry, path, lines)


def resolve(suite: Suite, registry: Registry, path: str = "<suite>", lines: dict | None = None) -> Resolved:
    lines = lines or {}
    problems: list[tuple[str, str]] = []

    def params_for(kind: str, plugin: str, params: dict, loc: tuple):
        if plugin not in registry.specs[kind]:
            problems.append((format_loc(loc + ("plugin",)) + _where(lines, loc + ("plugin",)), registry.unknown_message(kind, plugin)))
            return None
        spec = registry.specs[kind][plugin]
        try:
            return spec.params.model_validate(params)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, loc + ("params",), lines))
            if any(e["type"] == "extra_forbidden" for e in exc.errors()):
                problems.append((format_loc(loc + ("params",)), f"{plugin} accepts: {_allowed_fields(spec.params)}"))
            return None
        except Exception as exc:  # a plugin's own validator that raised something else: still located
            problems.append((format_loc(loc + ("params",)) + _where(lines, loc + ("params",)),
                             f"{plugin} rejected these parameters: {type(exc).__name__}: {exc}"))
            return None

    dataset_params = params_for("dataset", suite.dataset.name, suite.dataset.params, ("dataset",))
    if dataset_params is None and suite.dataset.name not in registry.specs["dataset"]:
        # params_for reported it under dataset.plugin; the suite calls the field dataset.name.
        loc, msg = problems.pop()
        problems.append(("dataset.name" + _where(lines, ("dataset", "name")), msg))
    model_params = {}
    for i, m in enumerate(suite.models):
        p = params_for("model", m.plugin, m.params, ("models", i))
        if p is not None:
            model_params[m.name] = p
    attack_params = {}
    for i, a in enumerate(suite.attacks):
        p = params_for("attack", a.plugin, a.params, ("attacks", i))
        if p is None:
            continue
        attack_params[a.name] = p
        factory = registry.specs["attack"][a.plugin].factory
        try:
            attack = factory(p)
        except Exception as exc:  # a constructor that rejects a parameter combination
            problems.append((f"attacks[{i}].params" + _where(lines, ("attacks", i, "params")), f"{a.plugin} rejected these parameters: {exc}"))
            continue
        if attack.kind == "bounded" and not suite.eps_for(attack.norm):
            problems.append(
                (f"attacks[{i}]" + _where(lines, ("attacks", i)),
                 f"{a.name} is a bounded {attack.norm} attack, but epsilons has no {attack.norm} list; add e.g. epsilons: {{{attack.norm}: [...]}}")
            )
        if "transfer" in factory.needs and not a.source:
            problems.append((f"attacks[{i}].source" + _where(lines, ("attacks", i)), f"{a.plugin} is a transfer attack: name the source model with source: <model name>"))
    for norm, eps in suite.headline.items():
        if norm not in suite.epsilons:
            problems.append((f"headline.{norm}", f"no epsilons given for {norm}"))
    if problems:
        raise SuiteError(path, problems)
    return Resolved(suite, path, dataset_params, model_params, attack_params)
