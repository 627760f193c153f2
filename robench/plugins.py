"""Plugin discovery: the ``robench`` entry-point group (built-ins included) and ``--plugin`` modules."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import warnings
from dataclasses import dataclass, field
from typing import Iterable

import pluggy

from . import context, hookspecs
from .api import AttackSpec, DatasetSpec, ModelSpec, PluginSpec
from .errors import PluginError

ENTRY_POINT_GROUP = "robench"
BUILTIN_DISTRIBUTION = "robench"

_KINDS = {
    "model": ("robench_models", ModelSpec),
    "attack": ("robench_attacks", AttackSpec),
    "dataset": ("robench_datasets", DatasetSpec),
}


@dataclass
class Registry:
    """Every plugin robench knows, by kind and name, plus the entry points that failed to load."""

    specs: dict[str, dict[str, PluginSpec]] = field(
        default_factory=lambda: {k: {} for k in _KINDS}
    )
    broken: list[tuple[str, str]] = field(default_factory=list)  # (origin, error)

    def get(self, kind: str, name: str) -> PluginSpec:
        try:
            return self.specs[kind][name]
        except KeyError:
            raise PluginError(self.unknown_message(kind, name)) from None

    def unknown_message(self, kind: str, name: str) -> str:
        available = ", ".join(sorted(self.specs[kind])) or "(none)"
        msg = f"unknown {kind} plugin {name!r}; available: {available}"
        if self.broken:
            msg += "\n  (plugins that failed to load: " + "; ".join(o for o, _ in self.broken) + ")"
        return msg

    def all(self) -> Iterable[PluginSpec]:
        for kind in _KINDS:
            yield from sorted(self.specs[kind].values(), key=lambda s: s.name)


def _origin_of(ep: md.EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return f"entry point {ep.value}"
    name = dist.metadata["Name"]
    if name == BUILTIN_DISTRIBUTION:
        return "built-in"
    return f"{name} {dist.version}"


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("robench")
    pm.add_hookspecs(hookspecs)
    return pm


def load_registry(extra_modules: Iterable[str] = (), *, strict: bool = False) -> Registry:
    """Collect every plugin: entry points of the ``robench`` group, then ``extra_modules``.

    An entry point that fails to import is reported (``Registry.broken``, plus a warning) instead of
    taking the whole tool down, unless ``strict``. A ``--plugin`` module that fails is always an
    error: the user asked for it by name. Two plugins of one kind with the same name are an error
    naming both origins.
    """
    registry = Registry()
    sources: list[tuple[str, object]] = []
    for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        origin = _origin_of(ep)
        try:
            sources.append((origin, ep.load()))
        except Exception as exc:  # a broken third-party plugin must not break robench
            if strict:
                raise PluginError(f"plugin entry point {ep.name} = {ep.value} ({origin}) failed to load: {exc!r}") from exc
            registry.broken.append((f"{ep.name} = {ep.value} ({origin})", repr(exc)))
            warnings.warn(f"robench: plugin {ep.name} = {ep.value} ({origin}) failed to load: {exc!r}", stacklevel=2)
    for module_name in extra_modules:
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise PluginError(f"--plugin {module_name}: cannot import it: {exc!r}") from exc
        sources.append((f"--plugin {module_name}", module))

    for origin, obj in sources:
        pm = _new_manager()  # one manager per source so each spec keeps its origin
        try:
            pm.register(obj, name=origin)
        except ValueError:
            continue  # same module reached twice (e.g. --plugin of an installed plugin)
        for kind, (hook_name, spec_type) in _KINDS.items():
            for result in getattr(pm.hook, hook_name)():
                for spec in result or []:
                    if not isinstance(spec, spec_type):
                        raise PluginError(
                            f"{origin}: {hook_name}() returned {spec!r}, expected {spec_type.__name__} objects"
                        )
                    _add(registry, kind, spec.with_origin(origin))
    return registry


def _add(registry: Registry, kind: str, spec: PluginSpec) -> None:
    existing = registry.specs[kind].get(spec.name)
    if existing is not None:
        if existing.factory is spec.factory:
            return
        raise PluginError(
            f"two {kind} plugins are named {spec.name!r}: one from {existing.origin}, "
            f"one from {spec.origin}; uninstall one of them or rename it"
        )
    registry.specs[kind][spec.name] = spec


_cache: dict[tuple[str, ...], Registry] = {}


def get_registry(extra_modules: Iterable[str] = ()) -> Registry:
    """The registry for this process (cached per set of ``--plugin`` modules)."""
    key = tuple(extra_modules)
    if key not in _cache:
        _cache[key] = load_registry(key)
    return _cache[key]


def _installed_registry() -> Registry:
    """What a Context made outside a run builds plugins from: the installed plugins."""
    return get_registry()


context.installed_registry = _installed_registry


def plugin_version(spec: PluginSpec) -> str:
    """Version string recorded in provenance and cell keys."""
    if spec.origin == "built-in":
        from . import __version__

        return f"robench {__version__}"
    return spec.origin
