"""The papers' protocols in the convex baselines: one-vs-all sigmoid MLPs and a cross-validated SVM C."""

from __future__ import annotations

import functools
import re

import pytest
import torch

import robench
from robench_plugins.convex.models import SVM, MLPSigmoid
from robench_plugins.datasets.digits import Digits


@functools.lru_cache(maxsize=None)
def digits():
    ds = Digits(Digits.Params())
    return ds.info(), *ds.load("train", None), *ds.load("test", None)


def fit(cls, ctx=None, **params):
    info, xtr, ytr, _, _ = digits()
    m = cls(cls.Params(**params), info)
    m.fit(xtr, ytr, ctx or robench.Context(seed=0))
    return m


OVA = dict(epochs=30, lr=0.1, multiclass="ova")


def test_one_vs_all_mlp_trains_a_binary_net_per_class_and_takes_the_largest_margin():
    _, _, _, xte, yte = digits()
    m = fit(MLPSigmoid, **OVA)
    assert len(m.nets) == 10 and all(net[-1].out_features == 2 for net in m.nets)
    with torch.no_grad():
        margins = torch.stack([net(xte)[:, 1] - net(xte)[:, 0] for net in m.nets], dim=1)  # (N, classes)
        assert torch.allclose(m.scores(xte), margins, atol=1e-6)
        # each net separates its class from the rest on its own
        for c in (0, 7):
            assert ((margins[:, c] > 0) == (yte == c)).float().mean() > 0.9
    assert (m.predict(xte) == yte).float().mean() > 0.85
    assert m.differentiable


def test_one_vs_all_ensemble_votes_and_keeps_its_surrogate():
    _, _, _, xte, yte = digits()
    ens = fit(MLPSigmoid, votes=2, **OVA)
    assert len(ens.nets) == 20 and not ens.differentiable
    s = ens.scores(xte)
    assert s.shape == (len(xte), 10) and set((s * 2).unique().tolist()) <= {0.0, 1.0, 2.0}
    assert torch.allclose(s.sum(1), torch.ones(len(xte)))
    assert (ens.predict(xte) == yte).float().mean() > 0.8
    x = xte[:8].clone().requires_grad_(True)
    ens.surrogate().scores(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_softmax_is_still_the_default_and_binary_ignores_ova():
    info, _, _, _, _ = digits()
    assert len(MLPSigmoid(MLPSigmoid.Params(), info).nets) == 1
    two = robench.DatasetInfo("digits", info.input_shape, ("3", "8"))
    assert len(MLPSigmoid(MLPSigmoid.Params(multiclass="ova", votes=3), two).nets) == 3


def test_svm_cross_validates_C_and_keeps_it_with_the_weights():
    logs: list[str] = []
    m = fit(SVM, robench.Context(seed=0, log=logs.append), c_grid=[1e-6, 0.1])
    assert m.chosen_C == 0.1  # C = 1e-6 barely fits the digits: cross-validation must reject it
    line = next(line for line in logs if "cross-validated C" in line)
    assert re.search(r"C = 0\.1 \(mean accuracy per C: 1e-06: 0\.\d+, 0\.1: 0\.9\d+\)", line), line
    info = digits()[0]
    loaded = SVM(SVM.Params(c_grid=[1e-6, 0.1]), info)
    loaded.load_state_dict(m.state_dict())
    assert loaded.chosen_C == 0.1
    _, _, _, xte, _ = digits()
    assert torch.equal(loaded.predict(xte), m.predict(xte))


def test_svm_c_grid_needs_two_positive_values():
    with pytest.raises(ValueError):
        SVM.Params(c_grid=[0.1])
    with pytest.raises(ValueError):
        SVM.Params(c_grid=[0.1, -1.0])
