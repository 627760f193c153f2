"""The larq BNN plugin: training, checkpoints, and the TensorFlow -> torch gradient bridge."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import robench

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TF is first imported (larq needs Keras 2)
pytest.importorskip("tensorflow")
pytest.importorskip("larq")

from robench_plugins.bnn import BNN  # noqa: E402
from robench_plugins.datasets import Digits  # noqa: E402

pytestmark = pytest.mark.tf

BN_EPS = 1e-3  # tf.keras BatchNormalization default


@pytest.fixture(scope="module")
def digits():
    ds = Digits(Digits.Params())
    return ds.info(), ds.load("train", None), ds.load("test", None)


@pytest.fixture(scope="module")
def trained(digits):
    info, (xtr, ytr), _ = digits
    model = BNN(BNN.Params(hidden=(128,), epochs=8), info)
    model.fit(xtr, ytr, robench.Context(seed=0))
    return model


def _layers(model: BNN):
    """(binary kernel, bn gamma or 1, beta, mean, var) per layer, in float64, from the state dict."""
    sd = {k.split(".", 1)[1]: v.double().numpy() for k, v in model.state_dict().items()}
    out = []
    i = 0
    while f"dense_{i}.kernel" in sd:
        w = np.where(sd[f"dense_{i}.kernel"] >= 0, 1.0, -1.0)
        gamma = sd.get(f"bn_{i}.gamma", np.ones(w.shape[1]))
        out.append((w, gamma, sd[f"bn_{i}.beta"], sd[f"bn_{i}.moving_mean"], sd[f"bn_{i}.moving_variance"]))
        i += 1
    return out


def _numpy_forward(layers, x, act):
    """The BNN in numpy float64: dense with +-1 weights, inference batch norm, ``act`` in between.
    Returns logits and the pre-activations of every hidden layer."""
    h, pre = x, []
    for k, (w, g, b, m, v) in enumerate(layers):
        z = (h @ w - m) / np.sqrt(v + BN_EPS) * g + b
        if k < len(layers) - 1:
            pre.append(z)
            h = act(z)
        else:
            return z, pre


def _sign(z):
    return np.where(z >= 0, 1.0, -1.0)


def _approx_sign_smooth(z):
    """The function whose derivative is larq's ApproxSign gradient: 2z - z|z| on [-1, 1], +-1 outside."""
    c = np.clip(z, -1, 1)
    return 2 * c - c * np.abs(c)


def test_trains_on_digits_and_beats_stated_accuracy(trained, digits):
    _, _, (xte, yte) = digits
    acc = (trained.predict(xte) == yte).float().mean().item()
    assert acc >= 0.90, acc


def test_forward_is_the_binarized_network(trained, digits):
    _, _, (xte, _) = digits
    x = xte[:64]
    want, _ = _numpy_forward(_layers(trained), x.flatten(1).double().numpy(), _sign)
    got = trained.scores(x).detach().double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bridge_gradient_matches_finite_differences_of_the_approx_sign_surrogate(trained, digits):
    # one hidden layer: the straight-through gradient of the BNN equals the exact gradient of the
    # net with sign replaced by the smooth ApproxSign primitive, which finite differences can check
    _, _, (xte, yte) = digits
    layers = _layers(trained)
    x = xte[:6].flatten(1).double().numpy()
    w_out = torch.randn(6, 10, generator=torch.Generator().manual_seed(1)).double().numpy()

    def objective(xs):
        logits, _ = _numpy_forward(layers, xs, _approx_sign_smooth)
        return (logits * w_out).sum()

    xt = torch.tensor(x, dtype=torch.float32).view(6, 1, 8, 8).requires_grad_(True)
    (trained.scores(xt) * torch.tensor(w_out, dtype=torch.float32)).sum().backward()
    got = xt.grad.flatten(1).double().numpy()
    h = 1e-5
    fd = np.zeros_like(x)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            xp, xm = x.copy(), x.copy()
            xp[i, j] += h
            xm[i, j] -= h
            fd[i, j] = (objective(xp) - objective(xm)) / (2 * h)
    assert np.abs(fd).max() > 1e-3  # the check is not vacuous
    np.testing.assert_allclose(got, fd, rtol=1e-3, atol=1e-3 * np.abs(fd).max())


def test_bridge_gradient_of_a_deep_bnn_is_the_straight_through_chain(digits):
    # two hidden layers: compare with a hand-written backward pass (ApproxSign derivative at each
    # layer's actual pre-activation, binary weights, inference batch norm)
    info, (xtr, ytr), (xte, _) = digits
    model = BNN(BNN.Params(hidden=(64, 32), epochs=1, train_limit=400), info)
    model.fit(xtr, ytr, robench.Context(seed=3))
    layers = _layers(model)
    x = xte[:5].flatten(1).double().numpy()
    _, pre = _numpy_forward(layers, x, _sign)
    g = np.random.default_rng(0).standard_normal((5, 10))
    for k in range(len(layers) - 1, -1, -1):
        w, gamma, _, _, var = layers[k]
        g = g * gamma / np.sqrt(var + BN_EPS)  # through batch norm
        g = g @ w.T  # through the binary dense layer
        if k > 0:
            z = pre[k - 1]
            g = g * np.where(np.abs(z) <= 1, 2 - 2 * np.abs(z), 0.0)  # ApproxSign
    xt = torch.tensor(x, dtype=torch.float32).view(5, 1, 8, 8).requires_grad_(True)
    model.scores(xt).backward(torch.tensor(np.random.default_rng(0).standard_normal((5, 10)), dtype=torch.float32))
    assert np.abs(g).max() > 1e-3  # some pre-activations fall inside ApproxSign's window
    np.testing.assert_allclose(xt.grad.flatten(1).double().numpy(), g, rtol=1e-3, atol=1e-4 * np.abs(g).max())


def test_state_dict_round_trip(trained, digits):
    info, _, (xte, _) = digits
    state = trained.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    fresh = BNN(trained.params, info)
    assert not torch.equal(fresh.scores(xte[:32]), trained.scores(xte[:32]))
    fresh.load_state_dict(state)
    assert torch.equal(fresh.scores(xte[:32]), trained.scores(xte[:32]))
    with pytest.raises(ValueError, match="shape"):
        BNN(BNN.Params(hidden=(16,)), info).load_state_dict(state)


def _pgd_linf(model, x, y, eps, steps=20):
    delta = torch.zeros_like(x)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model.scores(x + delta), y)
        (g,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + eps / 4 * g.sign()).clamp(-eps, eps)
        delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def test_torch_pgd_attack_runs_on_the_bnn(trained, digits):
    _, _, (xte, yte) = digits
    x, y = xte[:100], yte[:100]
    clean = (trained.predict(x) == y).float().mean().item()
    x_adv = _pgd_linf(trained, x, y, eps=0.2)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    robust = (trained.predict(x_adv) == y).float().mean().item()
    # gradients through the bridge carry information: PGD breaks far more than random noise does
    noise = (x + 0.2 * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    noisy = (trained.predict(noise) == y).float().mean().item()
    assert robust < clean - 0.3, (clean, robust)
    assert robust < noisy - 0.2, (noisy, robust)
