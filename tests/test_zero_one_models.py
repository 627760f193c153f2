"""The scd01 / mlp01 model plugins, their attacks, and the convex baselines, on the embedded digits."""

from __future__ import annotations

import functools

import pytest
import torch
from safetensors.torch import load_file, save_file

import robench
from robench_plugins.convex.models import SVM, MLPSigmoid
from robench_plugins.datasets.digits import Digits
from robench_plugins.zero_one.attacks import LinearSign, MLP01Hidden
from robench_plugins.zero_one.models import MLP01, SCD01, saturate

SMALL = dict(votes=4, iterations=40, coords=32)


@functools.lru_cache(maxsize=None)
def digits():
    ds = Digits(Digits.Params())
    return ds.info(), *ds.load("train", None), *ds.load("test", None)


def binary(a=3, b=8):
    info, xtr, ytr, xte, yte = digits()
    keep_tr, keep_te = (ytr == a) | (ytr == b), (yte == a) | (yte == b)
    info2 = robench.DatasetInfo("digits", info.input_shape, (str(a), str(b)))
    return info2, xtr[keep_tr], (ytr[keep_tr] == b).long(), xte[keep_te], (yte[keep_te] == b).long()


@functools.lru_cache(maxsize=None)
def trained(cls, **kw):
    info, xtr, ytr, xte, yte = binary()
    m = cls(cls.Params(**kw), info)
    m.fit(xtr, ytr, robench.Context(seed=0))
    return m


def test_one_vs_all_on_digits_beats_85_percent():
    info, xtr, ytr, xte, yte = digits()
    m = SCD01(SCD01.Params(**SMALL), info)
    m.fit(xtr, ytr, robench.Context(seed=0))
    s = m.scores(xte)
    assert s.shape == (len(xte), 10)
    share = (m.votes(xte).mean(2).T + 1) / 2  # each class's share of votes
    assert ((s - share).abs() < 0.25 / m.params.votes + 1e-6).all()  # plus a tie-break below half a vote
    assert (s.argmax(1) == yte).float().mean() > 0.85


def test_one_vs_all_ties_go_to_the_larger_margin_and_votes_come_first():
    """With few votes most one-vs-all shares tie (often at zero); argmax alone would answer class 0."""
    info = robench.DatasetInfo("toy", (2,), ("a", "b", "c"))
    m = SCD01(SCD01.Params(votes=2), info)
    weight = torch.tensor([[1.0, 0.0]]).repeat(3, 2, 1)  # (problems, votes, d): every vote reads x[0]
    threshold = torch.tensor([[0.9, 0.9], [0.6, 0.6], [1.0, 0.5]])
    m.load_state_dict({"weight": weight, "threshold": threshold, "train_error": torch.zeros(3, 2)})
    x = torch.tensor([[0.2, 0.0], [0.55, 0.0]])
    # x0 = 0.2: no vote is positive; mean margins a -0.7, b -0.4, c -0.55: the tie goes to b
    # x0 = 0.55: c has one positive vote (mean margin -0.2), b none (mean margin -0.05): c wins
    assert m.votes(x)[:, 0].eq(-1).all()
    assert m.predict(x).tolist() == [1, 2]


@pytest.mark.parametrize("cls", [SCD01, MLP01])
def test_binary_model_scores_are_vote_margins_and_survive_a_safetensors_round_trip(cls, tmp_path):
    kw = dict(SMALL, hidden=6) if cls is MLP01 else SMALL
    m = trained(cls, **kw)
    info, xtr, ytr, xte, yte = binary()
    s = m.scores(xte)
    assert torch.equal(s[:, 0], -s[:, 1])
    assert set((s[:, 1] * m.params.votes).round().unique().tolist()) <= set(range(-4, 5))
    assert (m.predict(xte) == yte).float().mean() > 0.9
    state = m.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    save_file(state, tmp_path / "m.safetensors")
    m2 = cls(m.params, info)
    m2.load_state_dict(load_file(tmp_path / "m.safetensors"))
    assert torch.equal(m2.scores(xte), s)


@pytest.mark.parametrize("cls", [SCD01, MLP01])
def test_surrogate_is_differentiable_and_agrees_with_the_model(cls):
    kw = dict(SMALL, hidden=6) if cls is MLP01 else SMALL
    m = trained(cls, **kw)
    _, _, _, xte, _ = binary()
    assert not cls.differentiable
    sur = m.surrogate()
    x = xte[:50].clone().requires_grad_(True)
    sur.scores(x)[:, 1].sum().backward()
    assert x.grad.abs().sum() > 0
    assert (sur.predict(xte) == m.predict(xte)).float().mean() > 0.9


def test_saturation_binarises_at_infinity_and_is_identity_at_one():
    x = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0])
    assert torch.equal(saturate(x, float("inf")), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert torch.allclose(saturate(x, 1.0), x)


def test_linear_sign_attack_moves_against_the_weights_within_eps():
    m = trained(SCD01, **SMALL)
    _, _, _, xte, yte = binary()
    eps = 0.15
    adv = LinearSign(LinearSign.Params()).run(m, xte, yte, eps=eps, ctx=robench.Context())
    changed = (adv != xte).flatten(1).any(1)
    assert changed.any()
    assert ((adv - xte).abs().max() <= eps + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    assert (m.predict(adv[changed]) != yte[changed]).all()  # returned rows are adversarial
    # the step of a class-1 sample is -eps * sign(w) wherever the box allows it
    w = m.linear_weights()[0]
    i = int(torch.nonzero(changed & (yte == 1))[0])
    expected = (xte[i].flatten() - eps * torch.sign(w)).clamp(0, 1)
    assert torch.allclose(adv[i].flatten(), expected)
    assert (m.predict(adv) == yte).float().mean() < (m.predict(xte) == yte).float().mean()


def test_mlp01_hidden_attack_returns_adversarials_or_the_input():
    m = trained(MLP01, **dict(SMALL, hidden=6))
    _, _, _, xte, yte = binary()
    eps = 0.2
    adv = MLP01Hidden(MLP01Hidden.Params()).run(m, xte, yte, eps=eps, ctx=robench.Context())
    changed = (adv != xte).flatten(1).any(1)
    assert changed.any()
    assert (adv - xte).abs().max() <= eps + 1e-6
    assert (m.predict(adv[changed]) != yte[changed]).all()


def test_keep_failed_returns_every_distortion():
    """The papers' transfer protocol: the distortion also where it does not fool the model (for mlp01_hidden,
    a random unit's where none does); where it fools, the same image as without keep_failed."""
    _, _, _, xte, yte = binary()
    for attack, model, eps in [(LinearSign, trained(SCD01, **SMALL), 0.05), (MLP01Hidden, trained(MLP01, **dict(SMALL, hidden=6)), 0.05)]:
        ctx = robench.Context(seed=0)
        only = attack(attack.Params()).run(model, xte, yte, eps=eps, ctx=ctx)
        every = attack(attack.Params(keep_failed=True)).run(model, xte, yte, eps=eps, ctx=ctx)
        fooled = model.predict(every) != yte
        failed = ~(only != xte).flatten(1).any(1)
        assert failed.any() and fooled.any(), attack  # the protocols differ on this slice
        assert (every != xte).flatten(1).any(1).all()  # every sample gets its distortion
        assert torch.equal(every[~failed], only[~failed])
        assert (every - xte).abs().max() <= eps + 1e-6
        if attack is LinearSign:  # the one step x - eps * (2y - 1) sign(w), fooled or not
            w = torch.sign(model.linear_weights()[0])
            expected = (xte.flatten(1) - eps * (2 * yte.float() - 1)[:, None] * w).clamp(0, 1)
            assert torch.allclose(every.flatten(1), expected)


@pytest.mark.parametrize("cls", [SVM, MLPSigmoid])
def test_convex_baselines_single_and_bootstrapped(cls):
    info, xtr, ytr, xte, yte = binary()
    extra = {"epochs": 40, "lr": 0.1} if cls is MLPSigmoid else {}
    single = cls(cls.Params(**extra), info)
    single.fit(xtr, ytr, robench.Context(seed=0))
    assert single.differentiable
    assert (single.predict(xte) == yte).float().mean() > 0.9
    ens = cls(cls.Params(votes=3, **extra), info)
    ens.fit(xtr, ytr, robench.Context(seed=0))
    assert not ens.differentiable
    s = ens.scores(xte)
    assert set((s[:, 1] * 3).round().unique().tolist()) <= {-3.0, -1.0, 1.0, 3.0}
    sur = ens.surrogate()
    x = xte[:20].clone().requires_grad_(True)
    sur.scores(x)[:, 1].sum().backward()
    assert x.grad.abs().sum() > 0
    ens2 = cls(ens.params, info)
    ens2.load_state_dict(ens.state_dict())
    assert torch.equal(ens2.scores(xte), s)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_trainer_is_deterministic_and_matches_cpu():
    info, xtr, ytr, xte, yte = binary()
    dev = torch.device("cuda")
    runs = []
    for _ in range(2):
        m = MLP01(MLP01.Params(**dict(SMALL, hidden=6)), info)
        m.fit(xtr, ytr, robench.Context(device=dev, seed=0))
        runs.append(m)
    assert all(v.is_cuda for v in runs[0].state.values())
    for k in runs[0].state:
        assert torch.equal(runs[0].state[k], runs[1].state[k])
    cpu = MLP01(MLP01.Params(**dict(SMALL, hidden=6, kernel="torch")), info)
    cpu.fit(xtr, ytr, robench.Context(seed=0))
    agree = (runs[0].predict(xte.to(dev)).cpu() == cpu.predict(xte)).float().mean()
    assert agree > 0.95
    assert (runs[0].predict(xte.to(dev)).cpu() == yte).float().mean() > 0.9


def test_mlp01_with_500_hidden_units_trains_and_predicts():
    info, xtr, ytr, xte, yte = binary()
    m = MLP01(MLP01.Params(votes=2, iterations=30, hidden=500, coords=32, memory_mb=64), info)
    m.fit(xtr, ytr, robench.Context(seed=0))
    assert m.state["hidden_weight"].shape == (1, 2, 500, 64)
    assert (m.state["train_error"] < len(xtr) / 2).all()
    assert (m.predict(xte) == yte).float().mean() > 0.7
