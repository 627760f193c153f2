"""Model plugins ``scd01`` (linear 01-loss classifier) and ``mlp01`` (one hidden layer of sign units).

Both are vote ensembles trained by :mod:`.scd`. A binary task is one ensemble (positive = class
1); more classes train one ensemble per class (class c vs the rest, one-vs-all). Prediction is
the majority vote; ``scores`` returns the vote margin (binary: ``[-m, m]`` with ``m`` the mean of
the +-1 votes) or, for one-vs-all, each class's share of votes plus a tie-break below one vote's
worth (the mean output margin, squashed), so score-based attacks see the same quantity that decides.

The models are not differentiable (sign units). ``surrogate()`` returns a differentiable
stand-in in which every sign is replaced by ``tanh(sharpness * .)``; see docs/models-zero-one.md.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

import robench

from . import scd


class SCD01Params(robench.Params):
    votes: int = Field(32, ge=1, description="ensemble size (independent runs, majority vote)")
    iterations: int = Field(500, ge=1, description="coordinate-descent iterations per vote")
    coords: int = Field(128, ge=1, description="random coordinates tried per node and iteration")
    step: float = Field(0.17, gt=0, description="change of a tried coordinate (+-step; weights stay unit-norm)")
    batch_fraction: float = Field(0.75, gt=0, le=1, description="share of each class in an iteration's batch")
    balanced_fraction: float = Field(0.2, ge=0, le=1, description="share of the iterations (the first ones) that minimise the class-balanced 01 loss")
    noise_sigma: float = Field(0.0, ge=0, description="Gaussian-noise training: add noisy copies x + N(0, sigma) clipped to [0, 1] (0: off)")
    noise_copies: int = Field(1, ge=1, description="how many noisy copies of each training image (with noise_sigma > 0)")
    saturation: float | None = Field(
        None, gt=0, description="input saturation x^p = 1/2 + sign(2x-1)|2x-1|^(1/p)/2 applied before the model (inf binarises; null: off)"
    )
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples")
    memory_mb: int = Field(2048, ge=64, description="working-memory budget of the trainer: votes train together while they fit")
    kernel: Literal["auto", "torch", "numba"] = Field("auto", description="threshold-search kernel: numba on CPU and torch on CUDA by default")
    surrogate_sharpness: float = Field(10.0, gt=0, description="slope of the tanh that replaces each sign in surrogate()")


class MLP01Params(SCD01Params):
    hidden: int = Field(20, ge=1, description="hidden sign units")
    iterations: int = Field(1000, ge=1, description="coordinate-descent iterations per vote")


def saturate(x: torch.Tensor, p: float | None, sharpness: float | None = None) -> torch.Tensor:
    """The papers' input saturation; ``sharpness`` gives the smooth version used by surrogates."""
    if p is None:
        return x
    c = 2 * x - 1
    if math.isinf(p):
        if sharpness is not None:
            return 0.5 + 0.5 * torch.tanh(sharpness * c)
        return 0.5 + 0.5 * torch.sign(c)
    # |c|^(1/p) has an infinite slope at 0; the small floor keeps surrogate gradients finite
    mag = c.abs().clamp_min(1e-6) if sharpness is not None else c.abs()
    return 0.5 + 0.5 * torch.sign(c) * mag.pow(1.0 / p)


class _ZeroOne(robench.Model):
    """Shared machinery: data preparation, one-vs-all, vote counting, checkpoints."""

    differentiable = False
    framework = "torch"

    def __init__(self, params: SCD01Params, info: robench.DatasetInfo):
        super().__init__(params, info)
        if info.num_classes < 2:
            raise ValueError(f"{type(self).__name__}: needs at least 2 classes, dataset {info.name!r} has {info.num_classes}")
        self.problems = 1 if info.num_classes == 2 else info.num_classes
        self.state: dict[str, torch.Tensor] = {}

    hidden = 0

    def config(self) -> scd.SCDConfig:
        p = self.params
        return scd.SCDConfig(
            iterations=p.iterations, votes=p.votes, hidden=self.hidden, coords=p.coords, step=p.step,
            batch_fraction=p.batch_fraction, balanced_fraction=p.balanced_fraction, memory_mb=p.memory_mb, kernel=p.kernel,
        )

    def features(self, x: torch.Tensor, sharpness: float | None = None) -> torch.Tensor:
        return saturate(x.flatten(1).float(), self.params.saturation, sharpness)

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        p = self.params
        if p.train_limit is not None:
            x, y = x[: p.train_limit], y[: p.train_limit]
        x = x.flatten(1).float()
        if p.noise_sigma > 0:
            gen = ctx.generator(offset=7)
            noisy = [(x + p.noise_sigma * torch.randn(x.shape, generator=gen)).clamp_(0, 1) for _ in range(p.noise_copies)]
            x = torch.cat([x, *noisy])
            y = y.repeat(p.noise_copies + 1)
        xt = self.features(x).T.contiguous().to(ctx.device)
        y = y.to(ctx.device)
        cfg = self.config()
        parts = []
        for c in range(self.problems):
            ypos = y == (1 if self.problems == 1 else c)
            def progress(done, total, c=c):
                ctx.report(c * total + done, self.problems * total)
            parts.append(scd.train(xt, ypos, cfg, seed=ctx.seed, stream=c, progress=progress))
        del xt
        self.state = {k: torch.stack([part[k] for part in parts]) for k in parts[0]}
        self.to(ctx.device)

    # -- inference -------------------------------------------------------------------------
    def margins(self, x: torch.Tensor) -> torch.Tensor:
        """(problems, N, votes): each vote's output-node input minus its threshold (vote = its sign)."""
        raise NotImplementedError

    @staticmethod
    def _signs(margin: torch.Tensor) -> torch.Tensor:
        return torch.where(margin > 0, 1.0, -1.0)

    def votes(self, x: torch.Tensor) -> torch.Tensor:
        """(problems, N, votes) of +-1."""
        return self._signs(self.margins(x))

    def _combine(self, v: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
        m = v.mean(dim=2)  # (problems, N), in [-1, 1]
        if self.problems == 1:
            return torch.stack([-m[0], m[0]], dim=1)
        # One-vs-all: each class's share of votes. On a 1:9 sub-problem most votes say "not c",
        # so shares often tie (all zero for most CIFAR-10 images with few votes, and argmax
        # would then always pick class 0); the mean output margin breaks ties. It is scaled below
        # half a vote, so it never overrules a difference in votes.
        tie = torch.tanh(margin.mean(dim=2)) * (0.25 / v.shape[2])
        return ((m + 1) / 2 + tie).T

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if not self.state:
            raise RuntimeError(f"{type(self).__name__}: fit() or load_state_dict() first")
        out = []
        with torch.no_grad():  # in chunks: MLP01 one-vs-all holds (classes, N, votes, hidden) signs
            for xc in x.split(1024):
                margin = self.margins(xc.to(self.device))
                out.append(self._combine(self._signs(margin), margin))
        return torch.cat(out)

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in self.state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self._keys) - set(state)
        if missing:
            raise KeyError(f"{type(self).__name__}: checkpoint lacks {sorted(missing)}")
        self.state = {k: state[k].to(self.device) for k in self._keys}

    def to(self, device: torch.device) -> robench.Model:
        super().to(device)
        self.state = {k: v.to(self.device) for k, v in self.state.items()}
        return self


class SCD01(_ZeroOne):
    """Linear 01-loss classifier sign(w.x - t), a vote ensemble trained by stochastic coordinate descent."""

    Params = SCD01Params
    _keys = ("weight", "threshold", "train_error")
    exposes = {"linear_weights": "weights"}

    def margins(self, x: torch.Tensor) -> torch.Tensor:
        proj = torch.einsum("nd,pvd->pnv", self.features(x), self.state["weight"])
        return proj - self.state["threshold"][:, None, :]

    def linear_weights(self) -> torch.Tensor:
        """(problems, d): the sum of the votes' unit-norm weights (the direction the sign attack uses)."""
        return self.state["weight"].sum(dim=1)

    def surrogate(self) -> robench.Model:
        return Surrogate(self)


class MLP01(_ZeroOne):
    """One hidden layer of sign units and a 01-loss output node; a vote ensemble trained by SCD."""

    Params = MLP01Params
    _keys = ("hidden_weight", "hidden_threshold", "out_weight", "out_threshold", "train_error")
    exposes = {"hidden_weights": "weights", "hidden_signs": "forward"}

    @property
    def hidden(self) -> int:  # type: ignore[override]
        return self.params.hidden

    def hidden_weights(self) -> torch.Tensor:
        """(problems, votes, hidden, d): the hidden units' weights."""
        return self.state["hidden_weight"]

    def hidden_signs(self, x: torch.Tensor) -> torch.Tensor:
        """(problems, N, votes, hidden) of +-1."""
        f = self.features(x)
        proj = torch.einsum("nd,pvhd->pnvh", f, self.state["hidden_weight"])
        return torch.where(proj > self.state["hidden_threshold"][:, None], 1.0, -1.0)

    def margins(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.einsum("pnvh,pvh->pnv", self.hidden_signs(x), self.state["out_weight"])
        return z - self.state["out_threshold"][:, None, :]

    def surrogate(self) -> robench.Model:
        return Surrogate(self)


class Surrogate(robench.Model):
    """Differentiable stand-in of an SCD01/MLP01 ensemble: each sign(u) becomes tanh(k u).

    The vote margin is then the mean of smooth votes; with k -> inf it is the model itself. It
    shares the model's weights (no training) and returns scores shaped like the model's.
    """

    differentiable = True
    trainable = False

    def __init__(self, model: _ZeroOne):
        super().__init__(model.params, model.info)
        self.model = model
        self.k = model.params.surrogate_sharpness
        self.device = model.device

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        m, st, k = self.model, self.model.state, self.k
        f = m.features(x.to(m.device), sharpness=k)
        if isinstance(m, MLP01):
            hid = torch.tanh(k * (torch.einsum("nd,pvhd->pnvh", f, st["hidden_weight"]) - st["hidden_threshold"][:, None]))
            margin = torch.einsum("pnvh,pvh->pnv", hid, st["out_weight"]) - st["out_threshold"][:, None, :]
        else:
            margin = torch.einsum("nd,pvd->pnv", f, st["weight"]) - st["threshold"][:, None, :]
        return m._combine(torch.tanh(k * margin), margin)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def to(self, device: torch.device) -> robench.Model:
        super().to(device)
        self.model.to(device)
        return self
