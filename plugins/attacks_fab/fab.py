"""Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), untargeted, L1 / L2 / Linf.

Each iteration linearises the classifier at the current iterate x_i: for every class k != y the
boundary f_k - f_y = 0 becomes a hyperplane; the one closest in the attack's norm (distance
|f_k - f_y| / ||grad f_k - grad f_y||_dual) is chosen. Both x_i and the original x_0 are projected
onto that hyperplane *inside the [0, 1] box* (exact minimum-norm projections below), and the step
is the biased combination

    x_{i+1} = clip((1 - a) (x_i + eta d_i) + a (x_0 + eta d_0)),  a = min(|d_i| / (|d_i| + |d_0|), alpha_max)

with overshoot eta. When x_{i+1} is adversarial it is recorded if it is the smallest so far, and
the iterate is pulled back towards the input: x_{i+1} = x_0 + beta (x_{i+1} - x_0). The first run
starts at x_0; each further restart starts at a random point of norm min(best so far, eps) / 2
around x_0 (uniform direction in the Linf cube / Gaussian direction for L2 and L1). Parameters and
defaults follow the authors' reference code (n_iter 100, alpha_max 0.1, eta 1.05, beta 0.9).
"""

from __future__ import annotations

import math

import torch

from robench import Norm
from robench.norms import lp_norm, per_sample


def project_hyperplane(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per row, the smallest-``norm`` d with ``w . (x + d) = b`` and ``x + d`` in [0, 1]^D.

    x, w: (N, D); b: (N,). Each coordinate moves only in its useful direction sign(w_i c), where
    c = b - w . x, by at most its room to the box; the problem is then a one-parameter family:
    L1 takes coordinates by decreasing |w_i| (fractional knapsack), L2 moves m_i = min(t |w_i|,
    room_i), Linf m_i = min(t, room_i), with t found exactly by sorting the breakpoints
    room_i / speed_i. Where the box cannot reach the hyperplane every useful coordinate goes to its
    bound (the closest the box gets). Computed in float64.
    """
    dtype = x.dtype
    x, w, b = x.double(), w.double(), b.double()
    c = b - (w * x).sum(1)
    direction = torch.sign(w) * torch.sign(c)[:, None]  # 0 where w_i = 0 or c = 0
    room = torch.where(direction > 0, 1 - x, x) * (direction != 0)
    a = w.abs() * (direction != 0)
    need = c.abs()
    gain = a * room  # the most each coordinate can contribute to w . d
    feasible = gain.sum(1) >= need

    if norm == Norm.L1:
        order = torch.argsort(a, dim=1, descending=True)
        g = gain.gather(1, order)
        before = torch.cumsum(g, 1) - g  # gain of all coordinates ahead in the order
        a_sorted = a.gather(1, order)
        part = ((need[:, None] - before) / a_sorted.clamp_min(1e-300)).clamp(min=0)
        m_sorted = torch.minimum(part, room.gather(1, order))
        m_sorted = torch.where(a_sorted > 0, m_sorted, torch.zeros_like(m_sorted))
        m = torch.zeros_like(m_sorted).scatter(1, order, m_sorted)
    else:
        speed = a if norm == Norm.L2 else (a > 0).to(a.dtype)
        t_break = torch.where(speed > 0, room / speed.clamp_min(1e-300), torch.full_like(room, math.inf))
        t_sorted, order = torch.sort(t_break, dim=1)
        gain_sorted = gain.gather(1, order)
        slope_sorted = (a * speed).gather(1, order)
        saturated = torch.cumsum(gain_sorted, 1)  # gain of coordinates saturated at or before each breakpoint
        slope_left = slope_sorted.sum(1, keepdim=True) - torch.cumsum(slope_sorted, 1)
        finite = torch.isfinite(t_sorted)
        g_at = torch.where(finite, saturated + torch.where(finite, t_sorted, 0) * slope_left, torch.full_like(t_sorted, math.inf))
        # first breakpoint where the reachable gain covers the need: t lies in the segment before it
        j = (g_at >= need[:, None]).to(torch.int8).argmax(1)
        zero = torch.zeros_like(need)[:, None]
        sat_before = torch.cat([zero, saturated], 1).gather(1, j[:, None]).squeeze(1)
        slope_before = torch.cat([slope_sorted.sum(1, keepdim=True), slope_left], 1).gather(1, j[:, None]).squeeze(1)
        t = (need - sat_before) / slope_before.clamp_min(1e-300)
        t = torch.where(feasible, t, torch.full_like(t, math.inf))
        m = torch.minimum(speed * t[:, None].clamp(max=1e300), room)
        m = torch.where(speed > 0, m, torch.zeros_like(m))
    m = torch.where(need[:, None] > 0, m, torch.zeros_like(m))
    return (direction * m).to(dtype)


def _logits_and_jacobian(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (N, K) and their Jacobian (N, K, *x.shape[1:]): one forward, K backward passes."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        z = model.scores(xg)
        if not z.requires_grad:
            raise RuntimeError(
                "fab needs gradients, but the model's scores carry none (a non-differentiable model): "
                "use it with a surrogate, or a decision-based attack such as fb-hsj"
            )
        k = z.shape[1]
        grads = [torch.autograd.grad(z[:, c].sum(), xg, retain_graph=c < k - 1)[0] for c in range(k)]
    return z.detach(), torch.stack(grads, 1)


def _random_start(x0: torch.Tensor, radius: torch.Tensor, norm: Norm, gen: torch.Generator) -> torch.Tensor:
    if norm == Norm.Linf:
        t = torch.rand(x0.shape, generator=gen).to(x0) * 2 - 1
    else:
        t = torch.randn(x0.shape, generator=gen).to(x0)
    t = t / per_sample(lp_norm(t, norm).clamp_min(1e-12), t)
    return (x0 + per_sample(radius / 2, t) * t).clamp(0, 1)


def fab(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: Norm,
    *,
    n_iter: int = 100,
    n_restarts: int = 1,
    eps: float = 0.3,
    alpha_max: float = 0.1,
    eta: float = 1.05,
    beta: float = 0.9,
    gen: torch.Generator | None = None,
    progress=None,
) -> torch.Tensor:
    """Smallest adversarial found per sample (NaN rows where none); samples must be correctly classified."""
    gen = gen or torch.Generator().manual_seed(0)
    n = len(x)
    rows = torch.arange(n, device=x.device)
    best = torch.full_like(x, math.nan)
    best_norm = torch.full((n,), math.inf, device=x.device, dtype=torch.float64)
    x0 = x.detach()
    flat0 = x0.flatten(1)
    total = n_restarts * n_iter
    for restart in range(n_restarts):
        if restart == 0:
            xi = x0.clone()
        else:
            radius = torch.minimum(best_norm, torch.full_like(best_norm, eps)).to(x.dtype)
            xi = _random_start(x0, radius, norm, gen)
        for it in range(n_iter):
            z, jac = _logits_and_jacobian(model, xi)
            df = z - z[rows, y][:, None]  # (N, K): f_k - f_y
            dg = (jac - jac[rows, y][:, None]).flatten(2)  # (N, K, D)
            dual = {Norm.Linf: lambda g: g.abs().sum(-1), Norm.L2: lambda g: g.norm(dim=-1), Norm.L1: lambda g: g.abs().amax(-1)}[norm]
            dist = df.abs() / (dual(dg) + 1e-12)
            dist[rows, y] = math.inf
            s = dist.argmin(1)
            w = dg[rows, s]
            b = -df[rows, s] + (w * xi.flatten(1)).sum(1)  # hyperplane w . z = b (linearised f_s = f_y)
            d = project_hyperplane(torch.cat([xi.flatten(1), flat0]), torch.cat([w, w]), torch.cat([b, b]), norm)
            d_i, d_0 = d[:n], d[n:]
            a_i = lp_norm(d_i, norm).clamp_min(1e-8)
            a_0 = lp_norm(d_0, norm).clamp_min(1e-8)
            alpha = (a_i / (a_i + a_0)).clamp(0, alpha_max)[:, None]
            step = ((xi.flatten(1) + eta * d_i) * (1 - alpha) + (flat0 + eta * d_0) * alpha).clamp(0, 1)
            xi = step.view_as(x0)
            with torch.no_grad():
                adv = model.scores(xi).argmax(1) != y
            if adv.any():
                size = lp_norm(xi - x0, norm).double()
                better = adv & (size < best_norm)
                best[better] = xi[better]
                best_norm = torch.where(better, size, best_norm)
                xi = torch.where(per_sample(adv, xi), x0 + beta * (xi - x0), xi)  # backward step
            if progress is not None:
                progress(restart * n_iter + it + 1, total)
    return best
