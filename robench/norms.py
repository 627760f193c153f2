"""The perturbation norms, defined once: the verifier, the metrics and every attack use these.

* L0 counts **pixels**: a pixel of an (N, C, H, W) batch is changed if any of its channels is; for
  any other shape (e.g. flat (N, D) inputs) every value is its own pixel.
* L1, L2 and Linf are taken per sample over all values.

:func:`lp_norm` computes one norm in the dtype of its input (call ``.double()`` first for float64,
as the verifier does); :func:`perturbation_norms` computes all four in float64. :func:`per_sample`
reshapes a per-sample vector (N,) so that it broadcasts against a batch (N, ...).
"""

from __future__ import annotations

import torch

from .api import Norm

#: The four norms, in the order the tables show them.
NORMS = (Norm.L0, Norm.L1, Norm.L2, Norm.Linf)


def per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` of shape (N,) reshaped to (N, 1, ..., 1) to broadcast against ``like`` (N, ...)."""
    return values.reshape(-1, *[1] * (like.dim() - 1))


def _pixel_change(delta: torch.Tensor, *, overwrite: bool = False) -> torch.Tensor:
    """(N, ...) per pixel: non-zero exactly where ``delta`` changes the pixel (NaN where it is NaN).

    For an (N, C, H, W) batch, the sum of |delta| over the channels: a sum of non-negative terms is
    zero only when every term is, so it is non-zero exactly where some channel changed. This is what
    ``(delta != 0).any(1)`` says, in about half its time (a boolean reduction over a strided dim is
    the slowest op here; the channel slices are added as contiguous planes). ``overwrite``: ``delta``
    is a temporary the caller no longer needs, so |delta| is taken in place."""
    if delta.dim() != 4:
        return delta
    mag = delta.abs_() if overwrite else delta.abs()
    channels = mag.shape[1]
    if channels <= 1:
        return mag.sum(1)  # one plane (or none: all zeros)
    total = mag[:, 0] + mag[:, 1]
    for c in range(2, channels):
        total += mag[:, c]
    return total


def changed_pixels(delta: torch.Tensor) -> torch.Tensor:
    """(N, P) bool: which pixels of each sample ``delta`` changes (L0's unit; see the module doc)."""
    return _pixel_change(delta).flatten(1).bool()  # bool(): non-zero, NaN included


def lp_norm(delta: torch.Tensor, norm: Norm | str, *, overwrite: bool = False) -> torch.Tensor:
    """Per-sample ``norm`` of a perturbation batch, in ``delta``'s dtype (L0: changed pixels).

    ``overwrite=True`` lets it reuse ``delta``'s memory (a temporary the caller is done with: the
    best-so-far tracker's subtraction), which saves an allocation and a pass per call."""
    norm = Norm(norm)
    if norm == Norm.L0:
        return _pixel_change(delta, overwrite=overwrite).flatten(1).bool().sum(1).to(delta.dtype)
    flat = delta.flatten(1)
    if norm == Norm.L2:
        return flat.norm(dim=1)
    if not flat.shape[1]:  # no values: nothing changed
        return torch.zeros(len(flat), dtype=flat.dtype, device=flat.device)
    mag = flat.abs_() if overwrite else flat.abs()
    return mag.sum(1) if norm == Norm.L1 else mag.amax(1)


def perturbation_norms(delta: torch.Tensor) -> dict[Norm, torch.Tensor]:
    """All four per-sample norms of a perturbation batch, in float64 (what the verifier stores)."""
    d = delta.detach().double()
    return {norm: lp_norm(d, norm) for norm in NORMS}


__all__ = ["NORMS", "changed_pixels", "lp_norm", "per_sample", "perturbation_norms"]
