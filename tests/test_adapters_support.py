"""Shared pieces of the library adapters (seeding, checks, query oracle, documented init), plus the
small models the adapter tests attack (importable helpers: tiny_mlp, sign_vote_model, ...)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import robench
from robench.api import Context, DatasetInfo, NoParams, Norm
from robench.testing import LinearModel
from robench.norms import lp_norm
from robench.verify import verify
from robench.adapters import (
    Oracle,
    QueryBudgetExhausted,
    keep_adversarial,
    merge_best,
    seeded,
    starting_points,
)


# -- helpers shared by the adapter tests --------------------------------------------------------


@functools.lru_cache(maxsize=None)
def digits():
    from robench_plugins.datasets import Digits

    ds = Digits(Digits.Params())
    return ds.info(), ds.load("train", None), ds.load("test", None)


class TinyMLP(robench.TorchModel):
    def build(self):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


@functools.lru_cache(maxsize=None)
def tiny_mlp() -> TinyMLP:
    """A 64-32-10 ReLU net on 8x8 digits: ~95% test accuracy after 150 full-batch Adam steps (~1 s)."""
    info, (x, y), _ = digits()
    torch.manual_seed(0)
    m = TinyMLP(NoParams(), info)
    opt = torch.optim.Adam(m.net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny net: extra threads only spin on a busy machine
    try:
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(m.net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return m.eval()


def correct_batch(n: int = 6):
    """The first n test digits the tiny MLP classifies correctly."""
    _, _, (xt, yt) = digits()
    m = tiny_mlp()
    ok = m.predict(xt) == yt
    return xt[ok][:n], yt[ok][:n]


class SignVotes(robench.Model):
    """A non-differentiable binary model like an 01-loss ensemble: s = mean of sign(w_v . x + b_v)
    over votes, scores [-s, s]. The scores are piecewise constant and carry no gradient."""

    differentiable = False
    trainable = False

    def __init__(self, w: torch.Tensor, b: torch.Tensor, shape):
        super().__init__(NoParams(), DatasetInfo("signvotes", tuple(shape), ("0", "1")))
        self.w, self.b = w, b

    def scores(self, x):
        with torch.no_grad():
            s = torch.sign(x.flatten(1) @ self.w.T + self.b).mean(1, keepdim=True)
        return torch.cat([-s, s], 1)


@functools.lru_cache(maxsize=None)
def sign_vote_model():
    """Digits 0 vs 1: 11 votes, each a ridge least-squares linear classifier of a bootstrap sample."""
    info, (x, y), (xt, yt) = digits()
    keep = y < 2
    xf, t = x[keep].flatten(1), y[keep].float() * 2 - 1
    g = torch.Generator().manual_seed(0)
    ws, bs = [], []
    for _ in range(11):
        idx = torch.randint(len(xf), (len(xf),), generator=g)
        a = torch.cat([xf[idx], torch.ones(len(idx), 1)], 1)
        sol = torch.linalg.solve(a.T @ a + 1e-2 * torch.eye(a.shape[1]), a.T @ t[idx])  # ridge least squares
        ws.append(sol[:-1])
        bs.append(sol[-1])
    model = SignVotes(torch.stack(ws), torch.stack(bs), info.input_shape)
    ok = (model.predict(xt) == yt) & (yt < 2)
    pick = torch.cat([(ok & (yt == c)).nonzero().flatten()[:3] for c in (0, 1)])  # 3 of each class
    return model, xt[pick], yt[pick]


def binary_linear(seed: int = 0, shape=(1, 4, 4)):
    """A 2-class linear model and inputs it classifies (labels = its predictions)."""
    g = torch.Generator().manual_seed(seed)
    d = int(np.prod(shape))
    model = LinearModel(torch.randn(2, d, generator=g), torch.randn(2, generator=g) * 0.1, shape)
    x = torch.rand(6, *shape, generator=g)
    return model, x, model.predict(x)


class CountingRows(robench.Model):
    """Counts every row the wrapped model evaluates (an independent check of query caps)."""

    def __init__(self, inner):
        super().__init__(inner.params, inner.info)
        self.inner, self.rows = inner, 0
        self.differentiable = inner.differentiable

    def scores(self, x):
        self.rows += len(x)
        return self.inner.scores(x)


def check_minimal_adapter(cls, params: dict, norm: str, min_success: int) -> None:
    """A minimal adapter with ``params`` on six correct digits: canonical output, verified successes."""
    model = tiny_mlp()
    x, y = correct_batch(6)
    attack = cls(cls.Params(**params))
    assert attack.norm == Norm(norm)
    adv = attack.run(model, x, y, eps=None, ctx=Context(seed=0))
    assert adv.shape == x.shape and adv.dtype == torch.float32
    check_result(model, x, y, adv, norm, min_success=min_success)


def check_result(model, x, y, adv, norm, eps=None, min_success=1):
    """The harness's own verification: nothing rejected, and at least ``min_success`` adversarials."""
    v = verify(model, x, y, adv, model.predict(x), Norm(norm), eps)
    assert not v.rejected.any(), v.reasons
    assert int(v.success.sum()) >= min_success, f"only {int(v.success.sum())} of {len(x)} broken"
    ok = ~torch.isnan(adv.flatten(1)).any(1)
    assert bool(((adv[ok] >= 0) & (adv[ok] <= 1)).all())
    return v


# -- tests of the support module ------------------------------------------------------------------


def test_l0_counts_pixels_not_channels():
    d = torch.zeros(1, 3, 2, 2)
    d[0, :, 0, 0] = 0.5  # one pixel, three channels
    d[0, 1, 1, 1] = -0.1  # a second pixel, one channel
    assert lp_norm(d, Norm.L0).item() == 2
    assert lp_norm(d, Norm.L1).item() == pytest.approx(1.6)
    assert lp_norm(d, Norm.Linf).item() == pytest.approx(0.5)


def test_seeded_is_reproducible_and_restores_global_state():
    torch.manual_seed(123)
    np.random.seed(123)
    expected_t, expected_n = torch.rand(3), np.random.rand(3)
    torch.manual_seed(123)
    np.random.seed(123)
    with seeded(7, torch.device("cpu")):
        a = (torch.rand(2), np.random.rand(2))
    with seeded(7, torch.device("cpu")):
        b = (torch.rand(2), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # the caller's generators continue as if nothing had happened
    assert torch.equal(torch.rand(3), expected_t) and np.array_equal(np.random.rand(3), expected_n)


def test_keep_adversarial_rejects_everything_that_is_not_a_real_adversarial():
    model, x, y = binary_linear()
    # row 0: NaN; row 1: outside the box; row 2: the input itself (not adversarial); row 3: a real one
    w = model.weight[1 - y[3]] - model.weight[y[3]]
    real = (x[3] + 5 * w.view_as(x[3])).clamp(0, 1)
    assert model.predict(real[None]).item() != y[3]
    cand = x.clone()
    cand[0] = math.nan
    cand[1] = x[1] + 2.0
    cand[3] = real
    out = keep_adversarial(model, x, y, cand, Norm.L2)
    bad = torch.isnan(out.flatten(1)).any(1)
    assert bad[:3].all() and not bad[3]
    assert torch.equal(out[3], real)


def test_keep_adversarial_resets_float_residue_for_l0():
    model, x, y = binary_linear(1)
    w = model.weight[1 - y[0]] - model.weight[y[0]]
    adv = (x[0] + 5 * w.view_as(x[0])).clamp(0, 1)
    # change only the coordinate with the largest useful room... then add 1e-8 noise everywhere
    residue = adv + 1e-8 * torch.sign(torch.randn_like(adv))
    out = keep_adversarial(model, x[:1], y[:1], residue[None].clamp(0, 1), Norm.L0)
    assert not torch.isnan(out).any()
    assert lp_norm(out - x[:1], Norm.L0).item() == lp_norm(adv[None] - x[:1], Norm.L0).item()


def test_merge_best_takes_smaller_norm_and_ignores_nan():
    x = torch.zeros(3, 1, 2, 2)
    a = torch.full_like(x, 0.5)
    b = torch.full_like(x, 0.2)
    a[1] = math.nan
    b[2] = math.nan
    out = merge_best(x, a, b, Norm.L2)
    assert torch.equal(out[0], b[0]) and torch.equal(out[1], b[1]) and torch.equal(out[2], a[2])


def test_oracle_caps_queries_before_evaluating_and_tracks_the_best():
    model, x, y = binary_linear()
    calls = CountingRows(model)
    oracle = Oracle(calls, x, y, Norm.L2, max_queries=3)
    far = 1 - x  # some of these are adversarial
    for _ in range(3):
        oracle.query(far, torch.arange(len(x)))
    with pytest.raises(QueryBudgetExhausted):
        oracle.query(x, torch.arange(len(x)))
    assert calls.rows == 3 * len(x)  # the refused query was never evaluated
    assert oracle.queries.tolist() == [3] * len(x)
    adv = model.predict(far) != y
    tracked = ~torch.isnan(oracle.best.flatten(1)).any(1)
    assert torch.equal(tracked, adv)


def test_starting_points_are_adversarial_and_close_to_the_boundary():
    model = tiny_mlp()
    x, y = correct_batch(6)
    oracle = Oracle(model, x, y, Norm.L2)
    starts, found = starting_points(oracle, torch.Generator().manual_seed(0), pool=None)
    assert found.all()
    assert (model.predict(starts) != y).all()
    # each start is no farther than the nearest image of another class (bisection only moves it closer)
    pred = model.predict(x)
    for i in range(len(x)):
        others = x[pred != y[i]]
        nearest = lp_norm(others - x[i : i + 1], Norm.L2).min()
        assert lp_norm(starts[i : i + 1] - x[i : i + 1], Norm.L2).item() <= nearest.item() + 1e-6


def test_starting_points_fall_back_to_noise_for_a_lone_sample():
    model = tiny_mlp()
    x, y = correct_batch(1)
    oracle = Oracle(model, x, y, Norm.L2)
    starts, found = starting_points(oracle, torch.Generator().manual_seed(0), pool=None, noise_tries=200)
    assert found.all() and (model.predict(starts) != y).all()
    assert oracle.queries.item() > 1  # noise had to be tried: the batch offered no other image
