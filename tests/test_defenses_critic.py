"""Adversary critic (thesis ch. 4): the differentiable high-confidence attack, the critic's
gradient penalty, the closest-boundary target, training, and the evaluation attack."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import robench
from robench_plugins.critic import Critic, HighConfidenceAttack
from robench_plugins.critic.adversary import closest_boundary_target, high_confidence_attack
from robench_plugins.critic.model import critic_loss
from robench_plugins.datasets import Digits


def _linear(d=6, k=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, k)).double()


def test_closest_boundary_target_on_a_linear_model():
    net = _linear()
    x = torch.rand(8, 1, 1, 6, dtype=torch.float64)
    labels = net(x).argmax(1)
    w, b = net[1].weight, net[1].bias
    want = []
    for i in range(8):
        f = net(x[i : i + 1])[0]
        l = labels[i]
        d = [abs(f[j] - f[l]) / (w[j] - w[l]).norm() if j != l else float("inf") for j in range(4)]
        want.append(int(torch.tensor(d).argmin()))
    assert closest_boundary_target(net, x, labels, 4).tolist() == want


def test_attack_reaches_the_target_confidence():
    net = _linear(d=20, k=5)
    x = torch.rand(16, 1, 1, 20, dtype=torch.float64) * 0.2 + 0.4  # room inside the box
    pred = net(x).argmax(1)
    target = (pred + 1) % 5
    conf = torch.full((16,), 0.6, dtype=torch.float64)
    xa = high_confidence_attack(net, x, target, conf, steps=50, box=False)
    p_t = F.softmax(net(xa), 1).gather(1, target[:, None]).squeeze(1)
    assert bool((p_t >= 0.6 - 1e-6).all()), p_t
    # it stops once there: a few more steps change nothing
    xb = high_confidence_attack(net, x, target, conf, steps=80, box=False)
    torch.testing.assert_close(xa, xb)


def test_training_attack_is_differentiable_in_the_weights():
    # finite differences of the attack's output w.r.t. one weight match autograd through the
    # unrolled steps (second-order terms); the indicator is 1 here and its straight-through
    # surrogate gradient is switched off (finite differences see a constant indicator)
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    x = torch.rand(4, 1, 1, 5, dtype=torch.float64)
    pred = net(x).argmax(1)
    target = (pred + 1) % 3
    conf = torch.full((4,), 0.999, dtype=torch.float64)  # never reached in 3 steps: indicator stays 1
    probe = torch.randn(4, 1, 1, 5, dtype=torch.float64)

    def objective():
        xa = high_confidence_attack(net, x, target, conf, steps=3, create_graph=True, box=False, straight_through=False)
        return (xa * probe).sum()

    w = net[1].weight
    (g,) = torch.autograd.grad(objective(), w)
    assert g.abs().max() > 1e-4
    w0 = w.detach().clone()
    h = 1e-6
    for idx in [(0, 0), (2, 3), (5, 4)]:
        wp, wm = w0.clone(), w0.clone()
        wp[idx] += h
        wm[idx] -= h
        w.data.copy_(wp)
        fp = objective().detach()
        w.data.copy_(wm)
        fm = objective().detach()
        w.data.copy_(w0)
        assert float(g[idx]) == pytest.approx(float((fp - fm) / (2 * h)), rel=1e-4, abs=1e-7)


def test_stopping_indicator_has_a_straight_through_sigmoid_gradient():
    # one step: x_adv = x + I * r with I = 1 in the forward pass; with the straight-through
    # estimator the weights also get r * d sigmoid(C - p_t), the part the plain chain rule lacks
    torch.manual_seed(4)
    net = _linear(d=3, k=2, seed=1)
    x = torch.rand(1, 1, 1, 3, dtype=torch.float64)
    t = 1 - net(x).argmax(1)
    conf = torch.tensor([0.9], dtype=torch.float64)
    probe = torch.randn(1, 1, 1, 3, dtype=torch.float64)
    w = net[1].weight

    def grad(st):
        xa = high_confidence_attack(net, x, t, conf, steps=1, create_graph=True, box=False, straight_through=st)
        return torch.autograd.grad((xa * probe).sum(), w)[0], xa

    g_st, xa = grad(True)
    g_plain, _ = grad(False)
    p_t = F.softmax(net(x), 1)[0, t]
    (dp,) = torch.autograd.grad(p_t.sum(), w)
    s = torch.sigmoid(conf - p_t.detach())
    extra = float(((xa - x) * probe).sum()) * (s * (1 - s)) * (-dp)
    torch.testing.assert_close(g_st - g_plain, extra)
    assert extra.abs().max() > 1e-6


def test_critic_gradient_penalty_on_a_linear_critic():
    # for a linear critic the input gradient of logit k is row k of W: penalty = ||w_y||^2 + ||w_t||^2
    critic = _linear(d=6, k=3, seed=2)
    x = torch.rand(2, 1, 1, 6, dtype=torch.float64)
    xa = torch.rand(2, 1, 1, 6, dtype=torch.float64)
    y, t = torch.tensor([0, 1]), torch.tensor([2, 2])
    base = critic_loss(critic, x, y, xa, t, lmbd_grad=0.0)
    full = critic_loss(critic, x, y, xa, t, lmbd_grad=10.0)
    w = critic[1].weight
    want = (w[y].pow(2).sum(1).mean() + w[t].pow(2).sum(1).mean()) * 10
    torch.testing.assert_close(full - base, want)
    # and the penalty's gradient w.r.t. the critic weights is 2 * lmbd * w / n on the used rows
    (g_full,) = torch.autograd.grad(full, w)
    (g_base,) = torch.autograd.grad(critic_loss(critic, x, y, xa, t, lmbd_grad=0.0), w)
    expected = torch.zeros_like(w)
    for rows in (y, t):
        for r in rows.tolist():
            expected[r] += 2 * 10 * w[r].detach() / 2
    torch.testing.assert_close(g_full - g_base, expected)


@pytest.fixture(scope="module")
def trained():
    ds = Digits(Digits.Params())
    info, (xtr, ytr), (xte, yte) = ds.info(), ds.load("train", None), ds.load("test", None)
    model = Critic(
        Critic.Params(arch="mlp", hidden=(64,), critic_hidden=(64,), epochs=5, lr=2e-3, critic_lr=2e-3, batch_size=64),
        info,
    )
    model.fit(xtr, ytr, robench.Context(seed=0))
    return model, (xte, yte)


def test_critic_training_lowers_the_loss_and_beats_stated_accuracy(trained):
    model, (xte, yte) = trained
    h = model.history
    assert model.params.weight == 0.5 and len(h) == 6  # 1 pretraining epoch + 5
    assert h[-1]["nll"] < 0.5 * h[1]["nll"]
    assert {"gan", "rec", "critic"} <= set(h[-1])
    assert (model.predict(xte) == yte).float().mean() >= 0.85


def test_high_confidence_attack_plugin_finds_adversarials(trained):
    model, (xte, yte) = trained
    x, y = xte[:40], yte[:40]
    attack = HighConfidenceAttack(HighConfidenceAttack.Params(steps=200))
    xa = attack.run(model, x, y, eps=None, ctx=robench.Context())
    found = ~torch.isnan(xa).flatten(1).any(1)
    correct = model.predict(x) == y
    assert found[correct].float().mean() >= 0.9
    assert float(xa[found].min()) >= 0 and float(xa[found].max()) <= 1
    assert bool((model.predict(xa[found]) != y[found]).all())
