"""Lowering a torch ReLU network to the three operations the exact solver encodes.

A network is read as a sequence (``nn.Sequential``, nested freely) of modules from this list:

* ``Linear``, ``Conv2d`` (any stride, padding, dilation, groups), ``AvgPool2d``,
  ``AdaptiveAvgPool2d``, ``BatchNorm1d/2d`` (in eval mode: its running statistics), ``Flatten``,
  ``Identity``, ``Dropout`` (a no-op at inference): all affine, merged into one :class:`Affine`
  per run of consecutive affine modules (so batch norm is folded into the layer before it);
* ``ReLU``: :class:`ReLU`;
* ``MaxPool2d`` (kernel, stride, padding, dilation, ceil_mode): :class:`MaxPool`, each output the
  maximum of a window of input indices.

Values are float64 vectors in torch's flattening order (C, H, W). Any other module, or a network
that is not a sequence of modules, is an :class:`UnsupportedNetwork` error naming the module.
:func:`lower` checks the lowered network against the torch module on random inputs before it is
used, so a module whose ``forward`` differs from its class's is caught, not silently mis-encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from robench.errors import RobenchError


class UnsupportedNetwork(RobenchError):
    """The network contains a module the exact solver cannot encode."""


@dataclass
class Affine:
    A: sp.csr_matrix  # (out, in)
    b: np.ndarray  # (out,)


@dataclass
class ReLU:
    pass


@dataclass
class MaxPool:
    windows: np.ndarray  # (out, k) input indices, -1 where the window covers padding


Op = Affine | ReLU | MaxPool

_LINEAR_MODULES = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d)
_NOOP_MODULES = (nn.Identity, nn.Dropout)


def _leaves(module: nn.Module, path: str = "net") -> list[tuple[str, nn.Module]]:
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += _leaves(child, f"{path}.{name}")
        return out
    return [(path, module)]


def _affine_of(module: nn.Module, in_shape: tuple[int, ...], chunk: int = 512) -> tuple[sp.csr_matrix, np.ndarray, tuple[int, ...]]:
    """The exact matrix and offset of an affine module, by applying it (float64) to basis vectors."""
    m = _double_copy(module)
    d = math.prod(in_shape)
    with torch.no_grad():
        b = m(torch.zeros(1, *in_shape, dtype=torch.float64))
        out_shape = tuple(b.shape[1:])
        b = b.flatten(1)[0]
        cols = []
        for s in range(0, d, chunk):
            e = min(d, s + chunk)
            basis = torch.zeros(e - s, d, dtype=torch.float64)
            basis[torch.arange(e - s), torch.arange(s, e)] = 1.0
            y = m(basis.view(e - s, *in_shape)).flatten(1) - b  # (chunk, out)
            y[y.abs() < 1e-300] = 0.0
            cols.append(sp.csr_matrix(y.numpy()))
    A = sp.vstack(cols).T.tocsr()
    A.eliminate_zeros()
    return A, b.numpy().copy(), out_shape


def _double_copy(module: nn.Module) -> nn.Module:
    import copy

    m = copy.deepcopy(module).cpu().double()
    m.eval()
    return m


def _maxpool_windows(module: nn.MaxPool2d, in_shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    if len(in_shape) != 3:
        raise UnsupportedNetwork(f"MaxPool2d needs a (C, H, W) input, got shape {in_shape}")
    c, h, w = in_shape
    with torch.no_grad():
        out_shape = tuple(module(torch.zeros(1, *in_shape)).shape[1:])
    oc, oh, ow = out_shape

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    k, s, p, dl = pair(module.kernel_size), pair(module.stride or module.kernel_size), pair(module.padding), pair(module.dilation)
    idx = torch.arange(c * h * w, dtype=torch.float64).view(1, c, h, w) + 1  # 0 marks padding
    # ceil_mode windows may run past the right/bottom edge: pad there as far as the last window needs.
    extra = [max(0, (o - 1) * s[i] + dl[i] * (k[i] - 1) + 1 - (n + 2 * p[i])) for i, (o, n) in enumerate(((oh, h), (ow, w)))]
    padded = torch.nn.functional.pad(idx, (p[1], p[1] + extra[1], p[0], p[0] + extra[0]))
    cols = torch.nn.functional.unfold(padded.view(c, 1, *padded.shape[2:]), kernel_size=k, dilation=dl, stride=s)  # (c, k*k, L)
    cols = cols[:, :, : oh * ow] if cols.shape[2] >= oh * ow else None
    if cols is None:
        raise UnsupportedNetwork(f"MaxPool2d {module}: could not reproduce its output size {out_shape}")
    windows = cols.permute(0, 2, 1).reshape(c * oh * ow, -1).long().numpy() - 1
    return windows, out_shape


def lower(net: nn.Module, input_shape: tuple[int, ...], *, check: bool = True) -> list[Op]:
    """The network as a list of Affine / ReLU / MaxPool operations on flat float64 vectors."""
    ops: list[Op] = []
    shape = tuple(input_shape)
    pending: tuple[sp.csr_matrix, np.ndarray] | None = None

    def flush():
        nonlocal pending
        if pending is not None:
            ops.append(Affine(pending[0].tocsr(), pending[1]))
            pending = None

    for path, module in _leaves(net):
        if isinstance(module, _NOOP_MODULES):
            continue
        if isinstance(module, _LINEAR_MODULES):
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.running_mean is None:
                raise UnsupportedNetwork(f"{path} ({module}): batch norm without running statistics cannot be folded")
            if isinstance(module, nn.Flatten):
                shape = (math.prod(shape),)
                continue
            A, b, shape = _affine_of(module, shape)
            pending = (A, b) if pending is None else (A @ pending[0], A @ pending[1] + b)
        elif isinstance(module, nn.ReLU):
            flush()
            ops.append(ReLU())
        elif isinstance(module, nn.MaxPool2d):
            flush()
            windows, shape = _maxpool_windows(module, shape)
            ops.append(MaxPool(windows))
        else:
            raise UnsupportedNetwork(
                f"{path} ({type(module).__name__}) is not supported by the exact solver: networks must be sequences of "
                "Linear, Conv2d, BatchNorm, AvgPool2d, Flatten, ReLU, MaxPool2d, Identity and Dropout modules"
            )
    flush()
    if not ops or not isinstance(ops[-1], Affine):
        n = _out_dim(ops, math.prod(input_shape))
        ops.append(Affine(sp.identity(n, format="csr"), np.zeros(n)))
    if check:
        _check_lowering(net, ops, input_shape)
    return ops


def _out_dim(ops: list[Op], d: int) -> int:
    for op in ops:
        if isinstance(op, Affine):
            d = op.A.shape[0]
        elif isinstance(op, MaxPool):
            d = len(op.windows)
    return d


def forward(ops: list[Op], x: np.ndarray) -> np.ndarray:
    """Evaluate the lowered network on flat inputs (N, D) in float64 (returns (N, classes))."""
    h = np.atleast_2d(np.asarray(x, dtype=np.float64))
    for op in ops:
        if isinstance(op, Affine):
            h = np.asarray(op.A @ h.T).T + op.b
        elif isinstance(op, ReLU):
            h = np.maximum(h, 0.0)
        else:
            vals = np.where(op.windows[None] >= 0, h[:, np.maximum(op.windows, 0)], -np.inf)
            h = vals.max(axis=2)
    return h


def _check_lowering(net: nn.Module, ops: list[Op], input_shape: tuple[int, ...]) -> None:
    m = _double_copy(net)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, *input_shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = m(x).flatten(1).numpy()
    got = forward(ops, x.flatten(1).numpy())
    if ref.shape != got.shape or not np.allclose(ref, got, rtol=1e-7, atol=1e-7 * (1 + np.abs(ref).max())):
        raise UnsupportedNetwork(
            f"the lowered network disagrees with the torch module (max difference "
            f"{np.abs(ref - got).max() if ref.shape == got.shape else 'shape ' + str(got.shape)}); "
            "a module in it probably has a custom forward"
        )
