"""Proximal operators of the Lp (quasi-)norms used by PDPGD (thesis, section 5.3), in a diagonal metric.

Every operator solves, per sample (first dimension is the batch),

    prox(z) = argmin_u  tau * ||u|| + 1/2 * sum_i w_i (u_i - z_i)^2

with ``tau`` of shape (N,) and weights ``w`` shaped like ``z`` (or None for w = 1, the textbook
operator). PDPGD takes an Adam step and then applies the prox in Adam's own metric: the step
``z = r - t m / d`` (``d = sqrt(v) + eps``) is the minimiser of a quadratic model with curvature
``d / t``, so adding ``lambda * ||u||`` gives this problem with ``tau = t * lambda`` and ``w = d``
("preconditioned by Adam's second moment"). With ``w = 1`` the operators reduce to the closed forms of
the thesis: hard threshold at sqrt(2 tau) (L0), soft threshold (L1), block soft threshold (L2), and
``z - tau * proj_{||.||_1 <= 1}(z / tau)`` (Linf, Moreau decomposition).
"""

from __future__ import annotations

import torch

from robench.norms import per_sample


def _ones_if_none(w: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(z) if w is None else w


def prox_l1(z: torch.Tensor, tau: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Soft threshold: ``sign(z) * (|z| - tau / w)_+`` (separable, so exact in any diagonal metric)."""
    thr = per_sample(tau, z) / _ones_if_none(w, z)
    return z.sign() * (z.abs() - thr).clamp_min(0)


def prox_l0(
    z: torch.Tensor,
    tau: torch.Tensor,
    w: torch.Tensor | None = None,
    *,
    grouped: bool = False,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hard threshold, optionally per group (pixel) and optionally jointly with the box lo <= u <= hi.

    Elementwise: a coordinate survives iff ``w z^2 / 2 > tau`` (``|z| > sqrt(2 tau)`` for w = 1).
    Grouped (``z`` is N x C x H x W, a group is the C channels of one pixel, so the penalty counts
    changed *pixels*): a pixel survives iff ``sum_c w_c z_c^2 / 2 > tau``, i.e. its per-pixel L2 norm
    exceeds sqrt(2 tau) for w = 1. The thesis writes eq. (5.16) with the group's largest element;
    the argmin of its definition (5.4) for a penalty that counts a group once is this L2 test (for
    one channel both agree), and that is what we implement.

    With a box (``lo <= 0 <= hi`` elementwise, e.g. ``-x`` and ``1 - x``) the kept value is ``z``
    clipped to the box, and the keep test compares the saved distance with the clipped value:
    ``sum w (z^2 - (z - clip(z))^2) / 2 > tau``. This is the exact prox of L0 + box indicator,
    whereas thresholding first and clipping afterwards would count movement the box throws away.
    """
    w = _ones_if_none(w, z)
    kept = z if lo is None else torch.maximum(torch.minimum(z, hi), lo)
    gain = 0.5 * w * (z.square() - (z - kept).square())  # distance saved by keeping vs. zeroing
    if grouped:
        if z.dim() < 3:
            raise ValueError(f"grouped L0 prox needs N x C x ... inputs, got shape {tuple(z.shape)}")
        gain = gain.sum(dim=1, keepdim=True)
    keep = gain > per_sample(tau, gain)
    return torch.where(keep, kept, torch.zeros_like(kept))


def prox_l2(z: torch.Tensor, tau: torch.Tensor, w: torch.Tensor | None = None, iters: int = 8) -> torch.Tensor:
    """Block soft threshold ``(1 - tau / ||z||)_+ z`` for w = 1.

    In a diagonal metric the minimiser is ``u_i = w_i z_i rho / (w_i rho + tau)`` with ``rho = ||u||``
    the root of ``g(rho) = 1`` for ``g = (sum_i (w_i z_i / (w_i rho + tau))^2)^(-1/2)``; u = 0 iff
    ``||w z|| <= tau``. g is a power mean of order -2 of functions linear in rho, hence increasing
    and concave (linear for w = 1), so Newton's method from rho = 0 climbs monotonically to the
    root without overshooting and is exact after one step in the unweighted case.
    """
    flat = z.flatten(1)
    if w is None:
        norm = flat.norm(dim=1)
        scale = (1 - tau / norm.clamp_min(1e-30)).clamp_min(0)
        return z * per_sample(scale, z)
    wf = w.flatten(1)
    wz2 = (wf * flat).square()
    tau_c = tau[:, None].clamp_min(1e-30)
    zero = wz2.sum(1).sqrt() <= tau
    rho = torch.zeros_like(tau)
    for _ in range(iters):
        den = wf * rho[:, None] + tau_c
        phi = (wz2 / den.square()).sum(1)
        dphi = (-2 * wz2 * wf / den.pow(3)).sum(1)
        g = phi.clamp_min(1e-30).rsqrt()
        dg = -0.5 * g.pow(3) * dphi
        rho = torch.where(zero, rho, (rho + (1 - g) / dg.clamp_min(1e-30)).clamp_min(0))
    rho_c = rho[:, None]
    u = wf * flat * rho_c / (wf * rho_c + tau_c)
    return torch.where(zero[:, None], torch.zeros_like(u), u).view_as(z)


def project_l1_ball(v: torch.Tensor, radius: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Projection of each row of ``v`` onto ``{p : sum_i w_i |p_i| <= radius}`` in the w-weighted
    Euclidean metric: ``p = sign(v) (|v| - theta)_+`` with theta >= 0 the root of
    ``sum_i w_i (|v_i| - theta)_+ = radius``, found exactly by sorting (O(n log n)).
    """
    flat = v.flatten(1)
    wf = torch.ones_like(flat) if w is None else w.flatten(1)
    a, order = flat.abs().sort(dim=1, descending=True)
    ws = wf.gather(1, order)
    s = (ws * a).cumsum(1)
    d = ws.cumsum(1)
    theta_k = (s - radius[:, None]) / d.clamp_min(1e-30)
    # the active set is the largest k whose k-th largest |v| still exceeds its theta_k
    k = (a > theta_k).sum(1).clamp_min(1) - 1
    theta = theta_k.gather(1, k[:, None]).clamp_min(0)
    inside = (wf * flat.abs()).sum(1) <= radius
    theta = torch.where(inside[:, None], torch.zeros_like(theta), theta)
    return (flat.sign() * (flat.abs() - theta).clamp_min(0)).view_as(v)


def prox_linf(z: torch.Tensor, tau: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    """Moreau decomposition: ``prox = z - P(z)`` with P the projection onto the (weighted) L1 ball of
    radius tau, i.e. ``z - tau * proj_{||.||_1 <= 1}(z / tau)`` for w = 1 (eq. 5.11). The result is
    z clipped to [-theta, theta] for the theta of the projection.
    """
    return z - project_l1_ball(z, tau, None if w is None else w)


def prox(norm: str, z: torch.Tensor, tau: torch.Tensor, w: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """Dispatch by norm name ("L0", "L1", "L2", "Linf"); ``kw`` goes to :func:`prox_l0` only."""
    if norm == "L0":
        return prox_l0(z, tau, w, **kw)
    if norm == "L1":
        return prox_l1(z, tau, w)
    if norm == "L2":
        return prox_l2(z, tau, w)
    if norm == "Linf":
        return prox_linf(z, tau, w)
    raise ValueError(f"no proximal operator for norm {norm!r}; expected L0, L1, L2 or Linf")
