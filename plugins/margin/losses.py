"""Deep margin maximization (Matyasko, thesis chapter 3): loss, regulariser and the rho_adv metric.

Objective (eq. 3.18, with the sign convention of the robust form 3.19)::

    mean_i  max_{j != y_i} (1 + f_j(x_i) - f_{y_i}(x_i))_+  +  C * eps(x_i, y_i)
    eps(x, y) = max_{j != y} || grad_x f_y(x) - grad_x f_j(x) ||_q

q = 2 for the L2 variant (C = 0.1 in the thesis), q = 1 for the L1 variant (C = 0.01; small
L1 sensitivity means a large Linf distance to the boundary).
"""

from __future__ import annotations

import torch


def multiclass_hinge(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample max_{j != y} (1 + f_j - f_y)_+ (Crammer-Singer hinge)."""
    true = logits.gather(1, y[:, None])
    others = logits.scatter(1, y[:, None], float("-inf"))
    return (1 + others.max(dim=1).values - true.squeeze(1)).clamp_min(0)


def logits_and_sensitivity(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, q: float, num_classes: int, create_graph: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, K) and margin sensitivity eps(x, y) (N,) in one double-backprop pass.

    Every input is repeated K times and row (n, j) gets the gradient of f_y(x_n) - f_j(x_n): one
    forward and one backward over N*K rows instead of K backward passes. Rows with j = y have a
    zero gradient and are left out of the max (the norm is not differentiable at 0).
    Requires a net whose samples do not interact (no batch norm in train mode).
    """
    n, k = x.shape[0], num_classes
    xr = x.detach().repeat_interleave(k, dim=0).requires_grad_(True)
    out = net(xr)  # (N*K, K)
    yr = y.repeat_interleave(k)
    jr = torch.arange(k, device=x.device).repeat(n)
    diff = out.gather(1, yr[:, None]) - out.gather(1, jr[:, None])
    (g,) = torch.autograd.grad(diff.sum(), xr, create_graph=create_graph)
    g = g.flatten(1)
    off = jr != yr
    norms = torch.zeros(n * k, device=x.device, dtype=g.dtype)
    norms[off] = g[off].norm(p=q, dim=1)
    sens = norms.view(n, k).max(dim=1).values
    logits = out.view(n, k, k)[:, 0, :]  # every copy of a sample has the same logits
    return logits, sens


def margin_loss(
    net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, C: float, q: float, num_classes: int
) -> torch.Tensor:
    """Batch mean of hinge + C * margin sensitivity (C = 0: plain multiclass hinge loss)."""
    if C == 0:
        return multiclass_hinge(net(x), y).mean()
    logits, sens = logits_and_sensitivity(net, x, y, q, num_classes)
    return (multiclass_hinge(logits, y) + C * sens).mean()


# -- the chapter's robustness metric -------------------------------------------------------------


def rho_adv(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    correct: torch.Tensor | None = None,
) -> tuple[float, int]:
    """rho_adv = mean over samples of ||x_adv - x||_2 / ||x||_2 (thesis eq. 3.20 / 4.9).

    Averaged over the samples that are ``correct`` (clean prediction right; eq. 3.20's D) and for
    which an adversarial exists (rows of ``x_adv`` that are NaN or equal to ``x`` mean "none").
    Returns (rho, number of samples it averages); rho is NaN when there are none.
    """
    x = x.flatten(1).double()
    xa = x_adv.flatten(1).double()
    found = ~torch.isnan(xa).any(dim=1) & (xa != x).any(dim=1)
    keep = found if correct is None else found & correct.bool().to(found.device)
    return rho_adv_from_norms(torch.nan_to_num(xa - x).norm(dim=1), x.norm(dim=1), keep)


def rho_adv_from_norms(l2: torch.Tensor, input_l2: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[float, int]:
    """rho_adv from stored per-sample L2 perturbation norms and L2 norms of the inputs.

    ``keep`` selects the samples to average (correctly classified, attack succeeded); NaN norms
    (no adversarial) are left out too. Returns (rho, count).
    """
    l2, input_l2 = torch.as_tensor(l2).double(), torch.as_tensor(input_l2).double()
    mask = ~torch.isnan(l2) & (input_l2 > 0)
    if keep is not None:
        mask &= torch.as_tensor(keep).bool()
    count = int(mask.sum())
    if count == 0:
        return float("nan"), 0
    return float((l2[mask] / input_l2[mask]).mean()), count
