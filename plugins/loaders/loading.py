"""Reading pretrained networks from files: state dicts (safetensors or torch), TorchScript, ONNX.

Nothing here trains or pickles: ``.pt``/``.pth`` state dicts are read with
``torch.load(weights_only=True)`` (tensors and plain containers only), safetensors files hold
tensors only, TorchScript archives run TorchScript (not Python), and ONNX graphs are converted to
torch modules by onnx2torch so that gradients flow through them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Callable

import torch

from robench.errors import RobenchError

#: Wrapper keys of checkpoint files that hold the state dict one level down.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
#: Prefixes that training wrappers add to every key: DataParallel, torch.compile.
PREFIXES = ("module.", "_orig_mod.")


class Normalized(torch.nn.Module):
    """``net((x - mean) / std)``: inputs stay in [0, 1] for the harness and its attacks."""

    def __init__(self, net: torch.nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


# -- architectures ---------------------------------------------------------------------------


def _module_from_file(path: Path) -> types.ModuleType:
    """Import a .py file as a module of its own (named after its path, so two suites' ``nets.py``
    never share a cached module)."""
    path = Path(path).resolve()
    name = f"robench_arch_{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:10]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RobenchError(f"cannot import {path} as Python code")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def split_architecture(text: str) -> tuple[str, str]:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"architecture must look like 'package.module:factory' or 'file.py:factory', got {text!r}")
    return module, attr


def architecture_factory(architecture: str, code: Path | None) -> Callable[..., torch.nn.Module]:
    module_name, attr = split_architecture(architecture)
    try:
        module = _module_from_file(code) if code is not None else importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise RobenchError(f"architecture {architecture!r}: cannot import {module_name!r} ({exc}); install the package, "
                           "or write architecture: path/to/file.py:factory (relative to the suite's folder)") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            where = code if code is not None else module_name
            raise RobenchError(f"architecture {architecture!r}: {where} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise RobenchError(f"architecture {architecture!r}: {attr} is not callable")
    return obj


def architecture_source(architecture: str, code: Path | None) -> Path | None:
    """The source file of an importable architecture module (hashed into the model key)."""
    if code is not None:
        return None  # a file given as code is hashed as a path parameter
    module_name, _ = split_architecture(architecture)
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return Path(origin) if origin and Path(origin).is_file() else None


# -- state dicts -----------------------------------------------------------------------------


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or of a torch state-dict file, unwrapped and unprefixed."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise RobenchError(f"{path}: not a readable safetensors file ({exc})") from None
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = ""
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                hint = (" It holds pickled Python objects (e.g. a whole nn.Module saved with torch.save(net)); robench "
                        "reads tensors only: save net.state_dict() instead, or export with torch.jit.save / torch.onnx.export "
                        "and use the torchscript / onnx loader.")
            raise RobenchError(f"{path}: cannot read it as a torch state dict with weights_only=True ({text}).{hint}") from None
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in WRAPPER_KEYS if isinstance(state.get(k), dict)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, dict) or not state:
        raise RobenchError(f"{path}: expected a state dict (names -> tensors), found {type(state).__name__}"
                           + (f" with keys {sorted(map(str, state))[:8]}" if isinstance(state, dict) else ""))
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    others = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not tensors:
        raise RobenchError(f"{path}: no tensors found (keys: {others[:8]}); wrapper keys tried: {', '.join(WRAPPER_KEYS)}")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def _listed(keys: list[str], limit: int = 12) -> str:
    return ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_weights(net: torch.nn.Module, path: Path) -> None:
    """Load a state dict file into ``net``; a mismatch names every missing and unexpected key."""
    state = read_state_dict(path)
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys (in the architecture, not in the file): {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected keys (in the file, not in the architecture): {_listed(unexpected)}")
        if shapes:
            parts.append("shape mismatches: " + _listed([f"{k} file {tuple(state[k].shape)} vs net {tuple(own[k].shape)}" for k in shapes]))
        raise RobenchError(f"{path} does not fit the architecture: " + "; ".join(parts))
    net.load_state_dict(state, strict=True)


# -- TorchScript and ONNX --------------------------------------------------------------------


def load_torchscript(path: Path) -> torch.nn.Module:
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RobenchError(f"{path}: not a TorchScript file ({text}); write one with torch.jit.save(torch.jit.script(net) "
                           "or torch.jit.trace(net, example), path)") from None


def _import_onnx2torch():
    """onnx2torch imports torchvision at import time, only for its NonMaxSuppression and RoiAlign
    converters (never used by a classifier). On a CPU-only torch, the PyPI torchvision wheel (a
    CUDA build) cannot load, so when torchvision is absent a placeholder module is put in place for
    the import and removed right after; those two node types then raise a clear error."""
    try:
        import onnx2torch  # noqa: F401

        return onnx2torch
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise
    def unavailable(*args, **kwargs):
        raise RobenchError("this ONNX graph uses NonMaxSuppression or RoiAlign, which need torchvision (not installed)")

    stub = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.batched_nms = ops.roi_align = unavailable  # type: ignore[attr-defined]
    stub.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
    try:
        for name in [m for m in sys.modules if m == "onnx2torch" or m.startswith("onnx2torch.")]:
            del sys.modules[name]
        import onnx2torch

        return onnx2torch
    finally:
        for name in ("torchvision", "torchvision.ops"):
            if sys.modules.get(name) in (stub, ops):
                del sys.modules[name]


def load_onnx(path: Path) -> torch.nn.Module:
    try:
        import onnx
    except ImportError:
        raise RobenchError("the onnx loader needs the onnx extra: pip install 'robench[onnx]'") from None
    try:
        onnx2torch = _import_onnx2torch()
    except ImportError:
        raise RobenchError("the onnx loader needs onnx2torch: pip install 'robench[onnx]' (then pip install --no-deps onnx2torch "
                           "on a CPU-only torch)") from None
    try:
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
    except Exception as exc:
        raise RobenchError(f"{path}: not a valid ONNX model ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__})") from None
    try:
        return onnx2torch.convert(graph)
    except Exception as exc:
        raise RobenchError(f"{path}: onnx2torch cannot convert this graph ({type(exc).__name__}: {exc})") from None


# -- the checks every loaded network passes ----------------------------------------------------


def freeze(net: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no parameter gradients (gradients with respect to inputs still flow)."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def check_outputs(net: torch.nn.Module, input_shape: tuple[int, ...], num_classes: int, what: str) -> None:
    """Two inputs of the dataset's shape must give (2, num_classes) scores."""
    x = torch.rand(2, *input_shape)
    try:
        with torch.no_grad():
            out = net(x)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (an ONNX file exported for batch size 1? export with dynamic_axes={'input': {0: 'batch'}})" if "onnx" in what.lower() else ""
        raise RobenchError(f"{what}: fails on a batch of 2 inputs of shape {tuple(input_shape)} ({type(exc).__name__}: {text}){hint}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobenchError(f"{what}: returns {shape} for 2 inputs of shape {tuple(input_shape)}; the dataset has "
                           f"{num_classes} classes, so (2, {num_classes}) was expected")
