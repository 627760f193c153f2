"""What a cell's attack may not change: the models it is handed.

A model is *frozen* once it is ready (``requires_grad`` off on every parameter of every torch
module it holds; attacks still get gradients with respect to their inputs). Its *fingerprint*
covers what decides its predictions: every tensor it holds (module state dicts, tensors in its
attributes, the ``state_dict()`` of a model whose weights live outside torch), its attributes
(values, or the identity of callables and other objects), the attributes of each of its torch
modules (hooks, ``training``, an instance-level ``forward``), and the methods of every class
involved. A cell compares the fingerprint after each batch of its
attack with the one taken before; a difference fails the cell with the components that changed,
and the run restores the model (rebuilt from its weights, class attributes put back) before the
next cell.

Not covered in-process: changes to code outside the model's own classes (e.g. a patched
``torch.nn.functional``); ``--isolate process`` runs each cell in a fresh child process for that.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterator

import numpy as np
import torch

from .api import Model
from .errors import RobenchError

_PRIMITIVE = (int, float, str, bool, bytes, type(None))
_MODULE_INTERNALS = ("_parameters", "_buffers", "_modules")


class ModelChanged(RobenchError):
    """An attack changed the state or the code of a model it was handed."""


_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def device_digest(t: torch.Tensor) -> str:
    """A checksum computed where the tensor lives (no copy of the weights to the host): the sum of
    its raw bits and their sum weighted by distinct odd position factors, in wrapping int64. Any
    single changed element changes the second sum; used for tensors on an accelerator, where
    copying every weight to the host after every batch would cost more than the batch."""
    flat = t.detach().reshape(-1)
    head = f"{t.dtype}{tuple(t.shape)}"
    if flat.numel() == 0:
        return head
    if flat.dtype.is_complex or flat.element_size() not in _BITS:
        return _tensor_digest(t.cpu())
    bits = flat.contiguous().view(_BITS[flat.element_size()]).to(torch.int64)
    weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.int64) * 2 + 1
    sums = torch.stack([bits.sum(), (bits * weights).sum()]).tolist()
    return f"{head}:{sums[0]}:{sums[1]}"


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach()
    if t.device.type != "cpu":
        return device_digest(t)
    flat = t.reshape(-1).contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy() if flat.dtype != torch.bool else flat.numpy())
    return h.hexdigest()[:16]


def _objects(root: Any) -> Iterator[tuple[str, Any]]:
    """(path, object) for the model, the Model objects and torch modules it holds (e.g. a
    surrogate, an ensemble's members), and the containers between them, each once."""
    seen: set[int] = set()
    stack: list[tuple[str, Any, int]] = [("model", root, 0)]
    while stack:
        path, obj, depth = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield path, obj
        if isinstance(obj, torch.nn.Module) or depth >= 4:
            continue  # a module's submodules are covered by its own entry
        if isinstance(obj, dict):
            items = [(str(k), v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(obj)]
        elif isinstance(obj, Model):
            items = list(vars(obj).items())
        else:
            continue
        for name, value in items:
            if isinstance(value, (Model, torch.nn.Module, dict, list, tuple)):
                stack.append((f"{path}.{name}", value, depth + 1))


def _value(v: Any) -> str:
    if isinstance(v, torch.Tensor):
        return "tensor " + _tensor_digest(v)
    if isinstance(v, np.ndarray):
        return "array " + hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16] + str(v.dtype) + str(v.shape)
    if isinstance(v, _PRIMITIVE):
        return repr(v)
    if isinstance(v, (torch.device, torch.dtype)):
        return str(v)
    if isinstance(v, (Model, torch.nn.Module, dict, list, tuple)):
        return f"{type(v).__qualname__} #{id(v)}"  # contents: their own entries
    return f"{type(v).__module__}.{type(v).__qualname__} #{id(v)}"  # callables and other objects: identity


def _classes(objs: list[Any]) -> list[type]:
    out: dict[int, type] = {}
    for obj in objs:
        if isinstance(obj, torch.nn.Module):
            mods = list(obj.modules())
        else:
            mods = [obj]
        for m in mods:
            for cls in type(m).__mro__:
                if cls is not object and cls.__module__ != "builtins":
                    out.setdefault(id(cls), cls)
    return list(out.values())


def fingerprint(model: Any) -> dict[str, str]:
    """Component -> digest; two fingerprints differ exactly where the model was changed."""
    fp: dict[str, str] = {}
    objs = []
    for path, obj in _objects(model):
        objs.append(obj)
        if isinstance(obj, torch.nn.Module):
            for name, t in obj.state_dict(keep_vars=True).items():
                fp[f"weights {path}.{name}"] = _tensor_digest(t)
            for mname, m in obj.named_modules():
                where = f"{path}.{mname}" if mname else path
                for k, v in vars(m).items():
                    if k in _MODULE_INTERNALS:
                        continue
                    if isinstance(v, dict) and k.endswith("hooks"):
                        fp[f"attribute {where}.{k}"] = repr(sorted(id(h) for h in v.values()))
                    else:
                        fp[f"attribute {where}.{k}"] = _value(v)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                fp[f"attribute {path}[{k!r}]"] = _value(v)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                fp[f"attribute {path}[{i}]"] = _value(v)
        else:
            for k, v in vars(obj).items():
                fp[f"attribute {path}.{k}"] = _value(v)
            if isinstance(obj, Model) and obj.framework != "torch" and obj.trainable:
                # weights held outside torch (e.g. a Keras model): through the model's own state_dict()
                try:
                    state = obj.state_dict()
                except Exception:
                    state = {}
                for name, t in state.items():
                    if isinstance(t, torch.Tensor):
                        fp[f"weights {path}.{name}"] = _tensor_digest(t)
    for cls in _classes(objs):
        for k, v in vars(cls).items():
            fp[f"class {cls.__module__}.{cls.__qualname__}.{k}"] = f"#{id(v)}"
    return fp


def changes(before: dict[str, str], after: dict[str, str], limit: int = 5) -> list[str]:
    """The components that differ (added, removed or changed), at most ``limit`` of them."""
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    shown = keys[:limit] + ([f"and {len(keys) - limit} more"] if len(keys) > limit else [])
    return shown


def check_unchanged(before: dict[str, str], model: Any, who: str) -> None:
    diff = changes(before, fingerprint(model))
    if diff:
        raise ModelChanged(f"{who} changed the model it was given ({'; '.join(diff)}); the cell's results from this batch "
                           "on are discarded and the model is restored before the next cell")


def freeze(model: Any) -> Any:
    """``requires_grad`` off on the parameters of every torch module the model holds."""
    for _, obj in _objects(model):
        if isinstance(obj, torch.nn.Module):
            for p in obj.parameters():
                p.requires_grad_(False)
    return model


class ClassSnapshot:
    """The attributes of the classes a model is made of, to put back what an attack patched."""

    def __init__(self, model: Any):
        self.saved = {cls: dict(vars(cls)) for cls in _classes([o for _, o in _objects(model)])}

    def restore(self) -> list[str]:
        fixed = []
        for cls, saved in self.saved.items():
            now = dict(vars(cls))
            for k in now.keys() - saved.keys():
                try:
                    delattr(cls, k)
                    fixed.append(f"{cls.__qualname__}.{k}")
                except (AttributeError, TypeError):
                    pass
            for k, v in saved.items():
                if now.get(k) is not v:
                    try:
                        setattr(cls, k, v)
                        fixed.append(f"{cls.__qualname__}.{k}")
                    except (AttributeError, TypeError):
                        pass
        return fixed
