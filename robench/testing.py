"""Known-answer helpers for testing attacks: linear models and their exact minimal perturbations.

For logits ``W x + b`` and a sample of class y, moving to class j needs ``a . delta >= m`` with
``a = w_j - w_y`` and ``m = (w_y - w_j) . x + b_y - b_j``; inside the [0, 1] box each coordinate
can move at most ``room_i`` (``1 - x_i`` if ``a_i > 0`` else ``x_i``). The minimal perturbation is
the minimum over j of a per-norm closed form (greedy / knapsack / water-filling).
"""

from __future__ import annotations

import math

import torch

from .api import DatasetInfo, Model, NoParams, Norm


class LinearModel(Model):
    """Logits ``W x + b`` with fixed weights (not trained): the sharpest test of a minimal attack."""

    trainable = False

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, input_shape: tuple[int, ...]):
        classes = tuple(str(i) for i in range(weight.shape[0]))
        super().__init__(NoParams(), DatasetInfo("linear", tuple(input_shape), classes))
        self.weight = weight.float()
        self.bias = bias.float()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).to(self.weight) @ self.weight.T + self.bias

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, "bias": self.bias}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weight, self.bias = state["weight"], state["bias"]


def _box_room(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0, 1 - x, x)


def _bisect(gain, target: float, hi: float) -> float:
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if gain(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def _min_to_target(a: torch.Tensor, x: torch.Tensor, m: float, norm: Norm) -> float:
    """Smallest ``norm`` of delta with ``a . delta >= m`` and ``x + delta`` in [0, 1] (inf if none)."""
    a, x = a.double(), x.double()
    room = _box_room(a, x)
    gains = a.abs() * room  # the most each coordinate can contribute
    if m <= 0:
        return 0.0
    if gains.sum() < m:
        return math.inf
    if norm == Norm.L0:
        g = torch.sort(gains, descending=True).values
        return float(int(torch.searchsorted(torch.cumsum(g, 0), torch.tensor(m, dtype=g.dtype)).item()) + 1)
    if norm == Norm.L1:
        order = torch.argsort(a.abs(), descending=True)
        total, cost = 0.0, 0.0
        for i in order.tolist():
            if total + gains[i] >= m:
                return cost + (m - total) / float(a[i].abs())
            total += float(gains[i])
            cost += float(room[i])
        return math.inf
    if norm == Norm.Linf:
        t = _bisect(lambda t: float((a.abs() * torch.minimum(room, torch.full_like(room, t))).sum()), m, float(room.max()))
        return t
    if norm == Norm.L2:
        absa = a.abs()
        hi = float((room / absa.clamp_min(1e-30)).max())
        t = _bisect(lambda t: float((absa * torch.minimum(t * absa, room)).sum()), m, hi)
        return float(torch.minimum(t * absa, room).norm())
    raise ValueError(norm)


def minimal_perturbation(model: LinearModel, x: torch.Tensor, y: torch.Tensor, norm: Norm | str) -> torch.Tensor:
    """Exact minimal ``norm`` (L0 counted per coordinate) to misclassify each sample, inside [0, 1].

    Returns a float64 tensor (N,); ``inf`` where no point of the box is misclassified, 0 where the
    sample is already misclassified. Ties count as misclassified (margin >= m rather than > m).
    """
    norm = Norm(norm)
    flat = x.flatten(1).double()
    w, b = model.weight.double(), model.bias.double()
    out = torch.empty(len(x), dtype=torch.float64)
    for n in range(len(x)):
        yn = int(y[n])
        best = math.inf
        for j in range(w.shape[0]):
            if j == yn:
                continue
            a = w[j] - w[yn]
            m = float((w[yn] - w[j]) @ flat[n] + b[yn] - b[j])
            best = min(best, _min_to_target(a, flat[n], m, norm))
        out[n] = best
    return out
