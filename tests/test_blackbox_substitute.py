"""The substitute (Papernot) attack: stronger than random noise, label-only access to the target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robench
from robench.errors import UserInputError
from robench.plugins import get_registry
from robench_plugins.blackbox.substitute import _TRAINED, Substitute, _balanced_indices
from robench_plugins.datasets.digits import Digits
from tiny_training import adam_fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


INFO = robench.DatasetInfo("digits", (1, 8, 8), tuple(str(i) for i in range(10)))


class SmallMlp(robench.TorchModel):
    def build(self):
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@pytest.fixture(scope="module")
def digits():
    ds = Digits(Digits.Params())
    return ds.load("train", None), ds.load("test", None)


@pytest.fixture(scope="module")
def target(digits):
    (x, y), _ = digits
    torch.manual_seed(0)
    model = SmallMlp(robench.NoParams(), INFO)
    adam_fit(model.net, x, y, epochs=25, batch=128)
    return model.eval()


def fast_params(**kw):
    base = dict(seed_size=100, rounds=4, epochs=10, lr=3e-3, activation="relu", max_samples=1600, record_rounds=False)
    base.update(kw)
    return Substitute.Params(**base)


def accuracy(model, x, y):
    return float((model.predict(x) == y).float().mean())


def test_registered_with_label_only_needs():
    spec = get_registry().get("attack", "substitute")
    assert spec.factory is Substitute
    assert spec.capabilities() == {"norms": ["Linf"], "kind": "bounded", "needs": ["decisions"]}


def test_beats_random_noise_of_the_same_eps(target, digits):
    _, (x, y) = digits
    eps = 0.15
    ctx = robench.Context(seed=0, pool=x)
    attack = Substitute(fast_params())
    x_adv = attack.run(target, x, y, eps=eps, ctx=ctx)
    assert x_adv.shape == x.shape
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    clean = accuracy(target, x, y)
    adv = accuracy(target, x_adv, y)
    # random-sign noise at the full eps: the strongest perturbation that ignores the model
    gen = torch.Generator().manual_seed(1)
    noise = eps * (torch.randint(0, 2, x.shape, generator=gen).float() * 2 - 1)
    noisy = accuracy(target, (x + noise).clamp(0, 1), y)
    assert clean > 0.9
    assert noisy > 0.8  # noise barely hurts ...
    assert adv < noisy - 0.3, (clean, noisy, adv)  # ... the substitute's adversarials do
    assert 0.6 < ctx.records["label_match_rate"] <= 1.0


class LabelOnlyTarget(robench.Model):
    """A target whose scores carry no autograd graph, and whose backward raises if anyone tries."""

    differentiable = False
    trainable = False

    def __init__(self, reference: robench.Model):
        super().__init__(robench.NoParams(), reference.info)
        self.reference = reference
        self.calls = 0

    def scores(self, x):
        self.calls += 1
        assert not torch.is_grad_enabled(), "the attack asked for target scores with autograd on"
        with torch.no_grad():
            s = self.reference.scores(x)
        return _RaiseOnBackward.apply(s.requires_grad_(True))


class _RaiseOnBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s):
        return s.clone()

    @staticmethod
    def backward(ctx, grad):
        raise AssertionError("the attack backpropagated through the target")


def test_label_match_rate_from_target_decisions_only(target, digits):
    _, (x, y) = digits
    label_only = LabelOnlyTarget(target)
    pool, batch = x[:400], x[400:500]
    ctx = robench.Context(seed=3, pool=pool)
    attack = Substitute(fast_params(rounds=3, record_rounds=True))
    attack.run(label_only, batch, y[400:500], eps=0.1, ctx=ctx)
    assert label_only.calls > 0
    # recompute the agreement on the pool independently
    with torch.no_grad():
        expected = (attack.net(pool).argmax(1) == target.predict(pool)).float().mean()
    assert ctx.records["label_match_rate"] == pytest.approx(float(expected))
    assert set(ctx.records) >= {"round_00_target_acc", "round_01_target_acc", "round_03_target_acc"}
    assert ctx.records["round_00_target_acc"] == pytest.approx(accuracy(target, batch, y[400:500]))


def test_substitute_trained_once_per_cell(target, digits):
    _, (x, y) = digits
    ctx = robench.Context(seed=0, pool=x)
    attack = Substitute(fast_params(rounds=2))
    attack.run(target, x[:50], y[:50], eps=0.1, ctx=ctx)
    net = attack.net
    first = {k: v.clone() for k, v in net.state_dict().items()}
    attack.run(target, x[50:100], y[50:100], eps=0.1, ctx=ctx)
    assert attack.net is net
    assert all(torch.equal(first[k], v) for k, v in net.state_dict().items())


def test_deterministic_for_a_seed(target, digits):
    _, (x, y) = digits
    outs = []
    for _ in range(2):
        _TRAINED.clear()  # train afresh each time (no shared substitute)
        ctx = robench.Context(seed=5, pool=x)
        outs.append(Substitute(fast_params(rounds=2)).run(target, x[:60], y[:60], eps=0.1, ctx=ctx))
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("craft", ["fgsm", "pgd"])
def test_cnn_substitute_and_pgd_respect_the_bound(target, digits, craft):
    _, (x, y) = digits
    ctx = robench.Context(seed=0, pool=x[:100])
    attack = Substitute(fast_params(substitute="cnn", seed_size=50, rounds=2, epochs=2, craft=craft, pgd_steps=3))
    x_adv = attack.run(target, x[:40], y[:40], eps=0.1, ctx=ctx)
    assert float((x_adv - x[:40]).abs().max()) <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    # rows that are changed fool the target (the attack keeps only those)
    changed = (x_adv != x[:40]).flatten(1).any(1)
    assert (target.predict(x_adv[changed]) != y[:40][changed]).all()


def test_training_set_capped_at_max_samples(target, digits):
    _, (x, y) = digits
    ctx = robench.Context(seed=0, pool=x)
    Substitute(fast_params(seed_size=50, rounds=5, epochs=1, max_samples=300)).run(target, x[:10], y[:10], eps=0.1, ctx=ctx)
    # 50 -> 100 -> 200 -> (400 > 300: replaced) 200 -> 200
    assert ctx.records["substitute_train_size"] == 200
    # pool (for seeds and match rate) + seed labels + the four augmentations' new points
    assert ctx.records["substitute_target_queries"] == len(x) + 50 + (50 + 100 + 200 + 200)


def test_balanced_seed_indices():
    labels = torch.tensor([0] * 90 + [1] * 10)
    idx = _balanced_indices(labels, 20, torch.Generator().manual_seed(0))
    assert len(idx) == len(set(idx.tolist())) == 20
    assert int((labels[idx] == 1).sum()) == 10
    labels = torch.tensor([0] * 95 + [1] * 5)  # too few of class 1: all 5 taken, the rest filled up
    idx = _balanced_indices(labels, 20, torch.Generator().manual_seed(0))
    assert len(set(idx.tolist())) == 20 and int((labels[idx] == 1).sum()) == 5


def test_eps_is_required(target, digits):
    _, (x, y) = digits
    with pytest.raises(UserInputError, match="eps"):
        Substitute(fast_params()).run(target, x[:5], y[:5], eps=None, ctx=robench.Context())


def test_cells_of_an_eps_sweep_share_the_substitute_each_would_train(target, digits):
    _, (x, y) = digits
    label_only = LabelOnlyTarget(target)
    params = fast_params(rounds=3)
    _TRAINED.clear()
    ctx1 = robench.Context(seed=2, pool=x[:300])
    Substitute(params).run(label_only, x[:80], y[:80], eps=0.1, ctx=ctx1)
    calls_training = label_only.calls
    ctx2 = robench.Context(seed=2, pool=x[:300])
    shared = Substitute(params).run(label_only, x[:80], y[:80], eps=0.2, ctx=ctx2)
    assert label_only.calls - calls_training == 1  # only the check of the crafted batch
    assert ctx2.records["substitute_reused"] == 1
    assert ctx2.records["label_match_rate"] == ctx1.records["label_match_rate"]
    _TRAINED.clear()
    fresh = Substitute(params).run(label_only, x[:80], y[:80], eps=0.2, ctx=robench.Context(seed=2, pool=x[:300]))
    assert torch.equal(shared, fresh)
    # another seed (or pool, or parameters) trains its own substitute
    ctx3 = robench.Context(seed=3, pool=x[:300])
    Substitute(params).run(label_only, x[:80], y[:80], eps=0.2, ctx=ctx3)
    assert "substitute_reused" not in ctx3.records
