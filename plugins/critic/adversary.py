"""The high-confidence attack of thesis chapter 4 (Algorithm 1), differentiable for training.

Each step moves the input along grad log p_t by the first-order distance to the level set
log p_t = log C (eq. 4.8): r = (log C - log p_t) / ||g||^2 * g. A sample stops moving once the
target t reaches confidence C; during training that stopping indicator is a straight-through
estimator (forward: the hard 0/1 indicator; backward: the gradient of sigmoid(C - p_t)), and with
``create_graph`` the steps stay differentiable in the network weights (second-order terms), so the
classifier can anticipate its adversary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robench.norms import per_sample


def closest_boundary_target(net: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """DeepFool's choice: argmin_{j != label} |f_j - f_l| / ||grad f_j - grad f_l||_2 (no graph kept)."""
    n, k = x.shape[0], num_classes
    xr = x.detach().repeat_interleave(k, 0).requires_grad_(True)
    with torch.enable_grad():
        out = net(xr)
        lr_ = labels.repeat_interleave(k)
        jr = torch.arange(k, device=x.device).repeat(n)
        diff = out.gather(1, jr[:, None]) - out.gather(1, lr_[:, None])
        (g,) = torch.autograd.grad(diff.sum(), xr)
    dist = diff.detach().abs().squeeze(1) / g.flatten(1).norm(dim=1).clamp_min(1e-12)
    dist = dist.view(n, k).scatter(1, labels[:, None], float("inf"))
    return dist.argmin(dim=1)


def high_confidence_attack(
    net: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    confidence: torch.Tensor,
    *,
    steps: int,
    overshoot: float = 0.0,
    create_graph: bool = False,
    step_clip: float | None = None,
    box: bool = True,
    straight_through: bool = True,
) -> torch.Tensor:
    """Move ``x`` towards class ``target`` until p_target >= ``confidence`` (per sample) or ``steps``.

    ``create_graph=True``: the result is differentiable in the net's parameters (training).
    ``step_clip``: cap on the L2 norm of each step (the thesis uses 0.1 at test time).
    ``box``: clip to [0, 1] after each step (the thesis projects at test time; we also do it in
    training so the critic cannot tell adversarials by out-of-range pixels).
    ``straight_through=False`` detaches the stopping indicator (its true derivative is zero).

    With ``create_graph`` the whole unrolled path is differentiated, including how each step's
    starting point depends on the weights (the thesis' "fully differentiable" attack; the
    author's TF code stops the gradient at each step's starting point).
    """
    eps = 1e-8
    log_c = confidence.clamp(1e-6, 1 - 1e-6).log()
    r = torch.zeros_like(x)
    active = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    for _ in range(steps):
        xa = x + (1 + overshoot) * r
        if box:
            xa = xa.clamp(0, 1)
        if not (create_graph and xa.requires_grad):
            xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            logp_t = F.log_softmax(net(xa), dim=1).gather(1, target[:, None]).squeeze(1)
            (g,) = torch.autograd.grad(logp_t.sum(), xa, create_graph=create_graph)
        if not create_graph:
            logp_t, g = logp_t.detach(), g.detach()
        # stopping indicator with a sigmoid-adjusted straight-through gradient
        soft = torch.sigmoid(confidence - logp_t.exp())
        hard = (logp_t < log_c).to(x.dtype)
        active = active * (hard + soft - soft.detach() if straight_through else hard)
        g_norm = per_sample(g.flatten(1).norm(dim=1), g) + eps
        step = per_sample((log_c - logp_t).clamp_min(0), g) / g_norm * (g / g_norm)
        if step_clip is not None:
            s_norm = per_sample(step.flatten(1).norm(dim=1), step)
            step = step * (step_clip / s_norm.clamp_min(1e-12)).clamp(max=1.0)
        r = r + per_sample(active, x) * step
        if box:
            r = ((x + (1 + overshoot) * r).clamp(0, 1) - x) / (1 + overshoot)
        if not create_graph and not bool(active.any()):
            break
    out = x + (1 + overshoot) * r
    return out.clamp(0, 1) if box else out
