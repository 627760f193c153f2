"""Deep margin maximization (thesis ch. 3): the hinge, the margin-sensitivity regulariser, rho_adv."""

from __future__ import annotations

import math

import pytest
import torch

import robench
from robench_plugins.datasets import Digits
from robench_plugins.margin import Margin, rho_adv, rho_adv_from_norms
from robench_plugins.margin.losses import logits_and_sensitivity, margin_loss, multiclass_hinge


def test_hinge_is_crammer_singer():
    logits = torch.tensor([[2.0, 0.5, 1.5], [0.0, 3.0, -1.0]])
    y = torch.tensor([0, 2])
    # sample 0: max_{j!=0} (1 + f_j - f_0) = 1 + 1.5 - 2 = 0.5; sample 1: 1 + 3 - (-1) = 5
    assert multiclass_hinge(logits, y).tolist() == pytest.approx([0.5, 5.0])


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_sensitivity_of_a_linear_model_is_the_max_weight_difference_norm(q):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4)).double()
    x = torch.rand(5, 1, 2, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    _, sens = logits_and_sensitivity(net, x, y, q, 4)
    w = net[1].weight
    want = torch.stack([max((w[yi] - w[j]).norm(p=q) for j in range(4) if j != yi) for yi in y.tolist()])
    torch.testing.assert_close(sens, want)
    # and its gradient w.r.t. the weights is the gradient of that closed form
    (g_ours,) = torch.autograd.grad(sens.sum(), w)
    (g_want,) = torch.autograd.grad(want.sum(), w)
    torch.testing.assert_close(g_ours, g_want)


def test_sensitivity_of_a_relu_net_matches_its_jacobian_and_passes_gradcheck():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).double()
    x = torch.rand(4, 1, 1, 5, dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 0])
    _, sens = logits_and_sensitivity(net, x, y, 2.0, 3)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: net(v.view(1, 1, 1, 5))[0], x[i].flatten())  # (3, 5)
        want = max((jac[y[i]] - jac[j]).norm() for j in range(3) if j != y[i])
        assert float(sens[i]) == pytest.approx(float(want), rel=1e-9)
    # second-order path: the regulariser's parameter gradients are right (finite differences)
    w0 = net[1].weight.detach().clone()
    (g,) = torch.autograd.grad(logits_and_sensitivity(net, x, y, 2.0, 3)[1].sum(), net[1].weight)
    h = 1e-6
    for idx in [(0, 0), (3, 2), (6, 4)]:
        wp, wm = w0.clone(), w0.clone()
        wp[idx] += h
        wm[idx] -= h
        net[1].weight.data.copy_(wp)
        fp = logits_and_sensitivity(net, x, y, 2.0, 3, create_graph=False)[1].sum()
        net[1].weight.data.copy_(wm)
        fm = logits_and_sensitivity(net, x, y, 2.0, 3, create_graph=False)[1].sum()
        net[1].weight.data.copy_(w0)
        assert float(g[idx]) == pytest.approx(float((fp - fm) / (2 * h)), rel=1e-5, abs=1e-8)


@pytest.fixture(scope="module")
def digits():
    ds = Digits(Digits.Params())
    return ds.info(), ds.load("train", None), ds.load("test", None)


@pytest.mark.parametrize("reg", ["l2", "l1"])
def test_margin_training_lowers_the_loss_and_beats_stated_accuracy(digits, reg):
    info, (xtr, ytr), (xte, yte) = digits
    model = Margin(Margin.Params(arch="mlp", hidden=(64,), reg=reg, epochs=8, lr=3e-3), info)
    assert model.params.weight == {"l2": 0.1, "l1": 0.01}[reg]
    k = info.num_classes
    q = 1.0 if reg == "l1" else 2.0
    before = float(margin_loss(model.net, xtr[:300], ytr[:300], C=model.params.weight, q=q, num_classes=k))
    model.fit(xtr, ytr, robench.Context(seed=0))
    after = float(margin_loss(model.net, xtr[:300], ytr[:300], C=model.params.weight, q=q, num_classes=k))
    assert after < 0.5 * before
    assert (model.predict(xte) == yte).float().mean() >= 0.90


def test_regulariser_shrinks_margin_sensitivity(digits):
    info, (xtr, ytr), (xte, yte) = digits
    sens = {}
    for reg, C in (("none", 0.0), ("l2", 1.0)):
        m = Margin(Margin.Params(arch="mlp", hidden=(64,), reg=reg, C=C, epochs=8, lr=3e-3), info)
        m.fit(xtr, ytr, robench.Context(seed=0))
        sens[reg] = float(logits_and_sensitivity(m.net, xte[:200], yte[:200], 2.0, 10, create_graph=False)[1].mean())
    assert sens["l2"] < 0.7 * sens["none"], sens


def test_lenet_variant_builds_for_mnist():
    info = robench.DatasetInfo("mnist", (1, 28, 28), tuple(str(i) for i in range(10)))
    m = Margin(Margin.Params(arch="lenet"), info)
    assert m.scores(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert (m.params.epochs, m.params.batch_size, m.params.schedule) == (100, 100, "exp")


def test_rho_adv():
    x = torch.zeros(4, 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor([1.0, 2.0, 1.0, 1.0])
    x_adv = x.clone()
    x_adv[0, 0, 1, 1] = 0.5  # ||r|| / ||x|| = 0.5
    x_adv[1, 0, 1, 1] = 0.5  # 0.25
    x_adv[2] = float("nan")  # no adversarial
    # sample 3 unchanged: no adversarial
    rho, n = rho_adv(x, x_adv)
    assert (rho, n) == (pytest.approx(0.375), 2)
    rho, n = rho_adv(x, x_adv, correct=torch.tensor([True, False, True, True]))
    assert (rho, n) == (pytest.approx(0.5), 1)
    rho, n = rho_adv_from_norms(torch.tensor([0.5, 0.5, float("nan")]), torch.tensor([1.0, 2.0, 1.0]))
    assert (rho, n) == (pytest.approx(0.375), 2)
    assert math.isnan(rho_adv_from_norms(torch.tensor([float("nan")]), torch.tensor([1.0]))[0])


def test_rho_over_correct_or_over_the_test_set():
    """Thesis chapter 3 averages rho over correctly classified samples, chapter 4 over the test set
    (a clean error has r = 0); a failed attack has no r(x) and is left out of both."""
    from robench_plugins.margin.report import rho_of_samples

    samples = [
        {"idx": 0, "label": 1, "clean_pred": 1, "success": True, "rejected": False, "l2": 1.0},
        {"idx": 1, "label": 2, "clean_pred": 2, "success": True, "rejected": False, "l2": 3.0},
        {"idx": 2, "label": 0, "clean_pred": 5, "success": True, "rejected": False, "l2": 0.0},  # clean error
        {"idx": 3, "label": 4, "clean_pred": 4, "success": False, "rejected": False, "l2": None},  # attack failed
    ]
    input_l2 = torch.tensor([2.0, 6.0, 4.0, 1.0])
    correct = rho_of_samples(samples, input_l2, "correct")
    assert correct == {"rho": 0.5, "n": 2, "clean_error": 0.25, "failed": 1}
    test = rho_of_samples(samples, input_l2, "test")
    assert test["rho"] == pytest.approx(1.0 / 3) and test["n"] == 3 and test["failed"] == 1
    with pytest.raises(ValueError, match="over must be"):
        rho_of_samples(samples, input_l2, "all")
