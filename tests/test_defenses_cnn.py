"""The cnn model plugin and adversarial training in the shared training loop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import robench
from robench_plugins.cnn import CNN
from robench.nets import ARCHS
from robench.training import AdversarialParams, TrainParams, adversarial_batch, train_classifier
from robench_plugins.datasets import Digits


@pytest.fixture(scope="module")
def digits():
    ds = Digits(Digits.Params())
    return ds.info(), ds.load("train", None), ds.load("test", None)


def _acc(model, x, y) -> float:
    return (model.predict(x) == y).float().mean().item()


def test_registered_through_the_entry_point():
    from robench.plugins import load_registry

    spec = load_registry().get("model", "cnn")
    assert spec.factory is CNN


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_every_arch_builds_for_every_dataset_shape(arch, shape):
    info = robench.DatasetInfo("x", shape, tuple("abcdefghij"))
    model = CNN(CNN.Params(arch=arch), info)
    out = model.scores(torch.rand(3, *shape))
    assert out.shape == (3, 10) and out.dtype == torch.float32


def test_lenet_on_mnist_has_the_classic_400_features():
    net = ARCHS["lenet"]((1, 28, 28), 10)
    assert net[2].in_features == 16 * 5 * 5


def test_arch_recipe_fills_only_unset_training_fields():
    p = CNN.Params(arch="vgg", epochs=3)
    assert (p.epochs, p.optimizer, p.schedule, p.augment) == (3, "sgd", "onecycle", "crop-flip")
    assert CNN.Params(arch="lenet").optimizer == "adam"
    with pytest.raises(ValueError):
        CNN.Params(arch="resnet")


def test_small_trains_on_digits_in_seconds(digits):
    info, (xtr, ytr), (xte, yte) = digits
    model = CNN(CNN.Params(arch="small", epochs=10), info)
    model.fit(xtr, ytr, robench.Context(seed=0))
    acc = _acc(model, xte, yte)
    assert acc >= 0.95, acc


def test_training_is_deterministic_and_state_round_trips(digits):
    info, (xtr, ytr), (xte, _) = digits
    a = CNN(CNN.Params(arch="conv4", epochs=1), info)
    b = CNN(CNN.Params(arch="conv4", epochs=1), info)
    a.fit(xtr[:300], ytr[:300], robench.Context(seed=5))
    b.fit(xtr[:300], ytr[:300], robench.Context(seed=5))
    assert torch.equal(a.scores(xte[:20]), b.scores(xte[:20]))
    c = CNN(CNN.Params(arch="conv4", epochs=1), info)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.scores(xte[:20]), a.scores(xte[:20]))  # eval mode: batch-norm running stats


@pytest.mark.parametrize("method,norm,eps", [("pgd", "Linf", 0.1), ("pgd", "L2", 0.5), ("fgsm-rs", "Linf", 0.1), ("fgsm-rs", "L2", 0.5)])
def test_adversarial_batch_stays_in_the_ball_and_the_box_and_raises_the_loss(digits, method, norm, eps):
    info, (xtr, ytr), _ = digits
    net = ARCHS["small"](info.input_shape, 10)
    train_classifier(net, xtr, ytr, TrainParams(epochs=3, lr=3e-3), robench.Context())
    x, y = xtr[:200], ytr[:200]
    a = AdversarialParams(method=method, norm=norm, eps=eps, steps=7)
    torch.manual_seed(0)
    xa = adversarial_batch(net, x, y, a)
    d = (xa - x).flatten(1)
    size = d.abs().max(1).values if norm == "Linf" else d.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)
    assert float(xa.min()) >= 0 and float(xa.max()) <= 1
    assert not xa.requires_grad and all(q.requires_grad for q in net.parameters())
    with torch.no_grad():
        assert F.cross_entropy(net(xa), y) > F.cross_entropy(net(x), y) + 0.1


def test_fgsm_step_default_is_wong_et_al():
    assert AdversarialParams(method="fgsm-rs", eps=0.1).alpha == pytest.approx(0.125)
    assert AdversarialParams(method="pgd", eps=0.3, steps=10).alpha == pytest.approx(0.075)


def _pgd(model, x, y, eps, steps=10):
    return adversarial_batch(model.net, x, y, AdversarialParams(method="pgd", eps=eps, steps=steps, random_start=False))


def test_pgd_adversarial_training_buys_robustness(digits):
    info, (xtr, ytr), (xte, yte) = digits
    plain = CNN(CNN.Params(arch="small", epochs=6), info)
    robust = CNN(CNN.Params(arch="small", epochs=6, adversarial={"method": "pgd", "eps": 0.1, "steps": 3}), info)
    for m in (plain, robust):
        m.fit(xtr, ytr, robench.Context(seed=0))
    x, y = xte[:200], yte[:200]
    assert _acc(robust, x, y) >= 0.85
    rob_plain = _acc(plain, _pgd(plain, x, y, 0.1), y)
    rob_at = _acc(robust, _pgd(robust, x, y, 0.1), y)
    assert rob_at > rob_plain + 0.1, (rob_plain, rob_at)
