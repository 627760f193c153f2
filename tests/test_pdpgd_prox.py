"""The proximal operators of PDPGD against their closed forms and against brute-force minimisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from robench_plugins.attacks_native.prox import (
    project_l1_ball,
    prox,
    prox_l0,
    prox_l1,
    prox_l2,
    prox_linf,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def objective(norm: str, u: torch.Tensor, z: torch.Tensor, tau: float, w: torch.Tensor, grouped=False) -> float:
    """tau * ||u|| + 1/2 sum w (u - z)^2 for one sample (float64)."""
    u, z, w = u.double(), z.double(), w.double()
    if norm == "L0":
        pen = float((u != 0).any(0).sum()) if grouped else float((u != 0).sum())
    elif norm == "L1":
        pen = float(u.abs().sum())
    elif norm == "L2":
        pen = float(u.norm())
    else:
        pen = float(u.abs().max())
    return tau * pen + 0.5 * float((w * (u - z) ** 2).sum())


# -- identity metric: the textbook closed forms of the thesis (eqs. 5.11 - 5.14) -----------------


def test_l1_is_soft_threshold():
    z = torch.tensor([[-2.0, -0.5, 0.0, 0.3, 1.5]])
    out = prox_l1(z, torch.tensor([0.5]))
    assert torch.allclose(out, torch.tensor([[-1.5, 0.0, 0.0, 0.0, 1.0]]))


def test_l0_is_hard_threshold_at_sqrt_2tau():
    z = torch.tensor([[-2.0, -0.9, 0.0, 1.1, 0.5]])
    out = prox_l0(z, torch.tensor([0.5]))  # threshold sqrt(1) = 1
    assert torch.equal(out, torch.tensor([[-2.0, 0.0, 0.0, 1.1, 0.0]]))


def test_l2_is_block_soft_threshold():
    z = torch.randn(4, 3, 5, 5, generator=_gen())
    tau = torch.tensor([0.1, 1.0, 100.0, 3.0])
    out = prox_l2(z, tau)
    norms = z.flatten(1).norm(dim=1)
    expected = z * (1 - tau / norms).clamp_min(0).view(-1, 1, 1, 1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.equal(out[2], torch.zeros_like(out[2]))  # tau > ||z||: everything goes


def test_linf_moreau_decomposition_matches_clipping():
    # prox of tau ||.||_inf = z - tau * P_{B1}(z / tau) = clip(z, -s, s) with sum (|z| - s)_+ = tau
    z = torch.tensor([[3.0, -2.0, 1.0, 0.5]])
    out = prox_linf(z, torch.tensor([1.5]))  # (3 - s) + (2 - s) = 1.5 -> s = 1.75
    assert torch.allclose(out, torch.tensor([[1.75, -1.75, 1.0, 0.5]]))
    assert torch.equal(prox_linf(z, torch.tensor([100.0])), torch.zeros_like(z))  # tau >= ||z||_1


def test_l1_ball_projection_against_bisection():
    v = torch.randn(6, 50, generator=_gen(1))
    radius = torch.tensor([0.5, 1.0, 5.0, 20.0, 100.0, 0.01])
    p = project_l1_ball(v, radius)
    for i in range(len(v)):
        a = v[i].double().abs()
        if a.sum() <= radius[i]:
            assert torch.allclose(p[i], v[i])
            continue
        lo, hi = 0.0, float(a.max())
        for _ in range(100):  # sum (|v| - theta)_+ = radius
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if float((a - mid).clamp_min(0).sum()) > radius[i] else (lo, mid)
        expected = v[i].double().sign() * (a - hi).clamp_min(0)
        assert torch.allclose(p[i].double(), expected, atol=1e-5)
        assert abs(float(p[i].abs().sum()) - float(radius[i])) < 1e-4


# -- grouped L0 (per pixel): the argmin over all keep/zero patterns, by enumeration --------------


@pytest.mark.parametrize("use_box", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_grouped_l0_is_the_exact_argmin(use_box, weighted):
    g = _gen(2)
    n, c, h, wd = 3, 3, 2, 2  # 4 pixels of 3 channels: 16 keep/zero patterns per sample
    z = torch.randn(n, c, h, wd, generator=g) * 0.6
    w = torch.rand(n, c, h, wd, generator=g) + 0.2 if weighted else torch.ones(n, c, h, wd)
    x = torch.rand(n, c, h, wd, generator=g)
    lo, hi = (-x, 1 - x) if use_box else (None, None)
    tau = torch.tensor([0.02, 0.1, 0.3])
    out = prox_l0(z, tau, w if weighted else None, grouped=True, lo=lo, hi=hi)
    # with a box the best nonzero value of a kept pixel is z clipped to the box
    kept_value = torch.max(torch.min(z, hi), lo) if use_box else z
    for i in range(n):
        best = None
        for pattern in itertools.product([0, 1], repeat=h * wd):
            mask = torch.tensor(pattern, dtype=torch.bool).view(1, h, wd)
            u = torch.where(mask, kept_value[i], torch.zeros_like(z[i]))
            val = objective("L0", u, z[i], float(tau[i]), w[i], grouped=True)
            if best is None or val < best[0] - 1e-12:
                best = (val, u)
        assert torch.allclose(out[i], best[1]), f"sample {i}: prox != enumerated argmin"


def test_grouped_l0_counts_pixels_not_channels():
    # one pixel with three moderate channels vs one pixel with a single larger channel: elementwise
    # hard thresholding drops the first (each channel is small); grouped keeps it (its pixel norm is large)
    z = torch.zeros(1, 3, 1, 2)
    z[0, :, 0, 0] = 0.6
    z[0, 0, 0, 1] = 0.9
    tau = torch.tensor([0.25])  # sqrt(2 tau) = 0.707
    grouped = prox_l0(z, tau, grouped=True)
    elementwise = prox_l0(z, tau, grouped=False)
    assert torch.equal(grouped, z)  # ||(0.6, 0.6, 0.6)|| = 1.04 > 0.707 and 0.9 > 0.707
    assert torch.equal(elementwise[0, :, 0, 0], torch.zeros(3))
    assert elementwise[0, 0, 0, 1] == 0.9


def test_l0_elementwise_with_box_is_the_exact_argmin():
    g = _gen(3)
    z = torch.randn(2, 8, generator=g)
    x = torch.rand(2, 8, generator=g)
    w = torch.rand(2, 8, generator=g) + 0.1
    tau = torch.tensor([0.05, 0.2])
    out = prox_l0(z, tau, w, lo=-x, hi=1 - x)
    clipped = torch.max(torch.min(z, 1 - x), -x)
    for i in range(2):
        for j in range(8):  # separable: each coordinate is either 0 or its clipped value
            keep = tau[i] + 0.5 * w[i, j] * (z[i, j] - clipped[i, j]) ** 2
            drop = 0.5 * w[i, j] * z[i, j] ** 2
            expected = clipped[i, j] if keep < drop else 0.0
            assert float(out[i, j]) == pytest.approx(float(expected))


# -- diagonal (Adam) metric: convex operators against numerical minimisation ---------------------


@pytest.mark.parametrize("norm", ["L1", "L2", "Linf"])
def test_weighted_convex_prox_minimises_the_objective(norm):
    g = _gen(4)
    n, d = 4, 12
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.rand(n, d, generator=g, dtype=torch.float64) * 3 + 0.1
    tau = torch.tensor([0.05, 0.5, 2.0, 50.0], dtype=torch.float64)
    out = prox(norm, z, tau, w)
    for i in range(n):
        f = lambda u, i=i: objective(norm, torch.from_numpy(u), z[i], float(tau[i]), w[i])
        mine = f(out[i].numpy())
        # derivative-free search from several starts (the objective is convex but not smooth)
        best = min(
            minimize(f, x0, method="Powell", options={"xtol": 1e-9, "ftol": 1e-12, "maxfev": 40000}).fun
            for x0 in (np.zeros(d), z[i].numpy(), out[i].numpy())
        )
        assert mine <= best + 1e-6, f"{norm} sample {i}: prox objective {mine} > numerical minimum {best}"
        # and it is a local minimum: no random nudge improves it
        for _ in range(50):
            nudged = out[i] + 1e-3 * torch.randn(d, generator=g, dtype=torch.float64)
            assert mine <= f(nudged.numpy()) + 1e-12


@pytest.mark.parametrize("norm", ["L0", "L1", "L2", "Linf"])
def test_unit_weights_equal_the_unweighted_operator(norm):
    z = torch.randn(3, 2, 4, 4, generator=_gen(5))
    tau = torch.tensor([0.01, 0.3, 1.0])
    assert torch.allclose(prox(norm, z, tau, torch.ones_like(z)), prox(norm, z, tau), atol=1e-5)


def test_unknown_norm_is_an_error():
    with pytest.raises(ValueError, match="L3"):
        prox("L3", torch.zeros(1, 2), torch.ones(1))
