"""PDGD / PDPGD on small CNNs: every adversarial survives the harness' verification, restarts and
the learning-rate grid only ever improve the result, the refine variant is never worse, and the
plugins are registered with their parameters."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import robench
from robench import Norm
from robench.plugins import load_registry
from robench.verify import verify
from robench_plugins.attacks_native import PDGD, PDPGD
from robench_plugins.attacks_native.pdpgd import PDConfig, pd_attack
from tiny_training import adam_fit

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


class _Net(robench.TorchModel):
    """A fixed small conv net (the tests need a nonlinear model, not a good one)."""

    trainable = False

    def build(self) -> nn.Module:
        c = self.info.input_shape[0]
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, 10),
        ).eval()


@pytest.fixture(scope="module")
def digits_cnn():
    """A small CNN trained for a few seconds on the embedded 8x8 digits, and 24 test digits."""
    reg = load_registry()
    ds = reg.get("dataset", "digits").factory
    d = ds(ds.Params())
    xtr, ytr = d.load("train", Path("."))
    xte, yte = d.load("test", Path("."))
    model = _Net(robench.NoParams(), d.info())
    torch.manual_seed(0)
    model.net.train()
    adam_fit(model.net, xtr, ytr, epochs=5, batch=64)
    model.net.eval()
    assert (model.predict(xte) == yte).float().mean() > 0.85
    return model, xte[:24], yte[:24]


@pytest.fixture(scope="module")
def colour_cnn():
    """An untrained conv net on random 3-channel 8x8 images (labels = its own predictions)."""
    info = robench.DatasetInfo("rgb8", (3, 8, 8), tuple(str(i) for i in range(10)))
    model = _Net(robench.NoParams(), info)
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, model.predict(x)


def _attack(model, x, y, cls=PDPGD, seed=0, **params):
    atk = cls(cls.Params(**params))
    adv = atk.run(model, x, y, eps=None, ctx=robench.Context(seed=seed))
    verdict = verify(model, x, y, adv, model.predict(x), atk.norm)
    return adv, verdict


@pytest.mark.parametrize(
    "cls,norm,refine",
    [(PDPGD, "L0", False), (PDPGD, "L0", True), (PDPGD, "L1", False), (PDPGD, "L2", False),
     (PDPGD, "Linf", False), (PDPGD, "Linf", True), (PDGD, "L2", False)],
)
def test_every_adversarial_passes_verification(digits_cnn, cls, norm, refine):
    model, x, y = digits_cnn
    params = {"steps": 60, "refine": refine}
    if cls is PDPGD:
        params["norm"] = norm
    adv, verdict = _attack(model, x, y, cls, **params)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert not verdict.rejected.any(), [r for r in verdict.reasons if r]
    assert verdict.success.float().mean() >= 0.9
    # what the attack returns is exactly what the harness measures (no residue to clean)
    assert torch.equal(verdict.adversarial[verdict.success], adv[verdict.success])


def test_grouped_l0_on_colour_images_is_verified_and_counts_pixels(colour_cnn):
    model, x, y = colour_cnn
    atk = PDPGD(PDPGD.Params(norm="L0", steps=80))
    ctx = robench.Context(seed=0)
    adv = atk.run(model, x, y, eps=None, ctx=ctx)
    verdict = verify(model, x, y, adv, model.predict(x), Norm.L0)
    assert not verdict.rejected.any()
    assert verdict.success.float().mean() >= 0.9
    # the same run again, now reading the attack's own per-sample count (pixels)
    again, values = pd_attack(model.scores, x, y, atk.config(), ctx.generator(offset=7))
    assert torch.equal(again, adv)
    ok = torch.isfinite(values)
    assert torch.equal(values[ok].double(), verdict.norms[Norm.L0][ok])
    # and a pixel counts once: on these colour images some changed pixels change several channels
    changed_values = (adv - x != 0).sum(dim=(1, 2, 3))
    assert (changed_values[ok] > values[ok]).any()


def test_restarts_and_the_lr_grid_keep_the_best(colour_cnn):
    model, x, y = colour_cnn
    base = dict(norm="L2", smooth=False, steps=40)
    _, one = pd_attack(model.scores, x, y, PDConfig(lrs=(0.1,), restarts=1, **base), torch.Generator().manual_seed(0))
    _, three = pd_attack(model.scores, x, y, PDConfig(lrs=(0.1,), restarts=3, **base), torch.Generator().manual_seed(0))
    _, other = pd_attack(model.scores, x, y, PDConfig(lrs=(0.02,), restarts=1, **base), torch.Generator().manual_seed(0))
    _, grid = pd_attack(model.scores, x, y, PDConfig(lrs=(0.1, 0.02), restarts=1, **base), torch.Generator().manual_seed(0))
    assert torch.isfinite(one).all()
    assert (three <= one).all()  # the first run is the same; the restarts can only improve on it
    assert (three < one).any()  # and here they do, at least once
    assert torch.equal(grid, torch.minimum(one, other))


def test_finetuning_and_refinement_never_hurt(digits_cnn):
    model, x, y = digits_cnn
    base = dict(norm="L0", smooth=False, steps=60, lrs=(0.5,))
    _, plain = pd_attack(model.scores, x, y, PDConfig(**base), torch.Generator())
    _, tuned = pd_attack(model.scores, x, y, PDConfig(finetune_steps=30, **base), torch.Generator())
    _, refined = pd_attack(model.scores, x, y, PDConfig(refine=True, **base), torch.Generator())
    found = torch.isfinite(plain)
    assert (tuned[found] <= plain[found]).all() and (refined[found] <= plain[found]).all()
    assert refined[found].sum() < plain[found].sum()


def test_same_seed_same_result(colour_cnn):
    model, x, y = colour_cnn
    a, _ = _attack(model, x, y, norm="L1", steps=20, restarts=2, seed=3)
    b, _ = _attack(model, x, y, norm="L1", steps=20, restarts=2, seed=3)
    assert torch.equal(a, b)


def test_plugins_are_registered_with_their_norms():
    attacks = load_registry().specs["attack"]
    assert set(attacks["pdpgd"].norms) == {Norm.L0, Norm.L1, Norm.L2, Norm.Linf}
    assert tuple(attacks["pdgd"].norms) == (Norm.L2,)
    for name in ("pdpgd", "pdgd"):
        caps = attacks[name].capabilities()
        assert caps["kind"] == "minimal" and caps["needs"] == ["gradients"]
        for field in attacks[name].params.model_fields.values():
            assert field.description, f"{name}: undocumented parameter"


def test_parameters_are_validated():
    with pytest.raises(ValueError):
        PDPGD.Params(norm="L3")
    with pytest.raises(ValueError):
        PDPGD.Params(lr=[0.1, -1.0])
    with pytest.raises(ValueError):
        PDGD.Params(norm="L2")  # PDGD is L2 only and has no norm parameter
    assert PDPGD(PDPGD.Params(norm="Linf")).norm == Norm.Linf
    assert PDGD(PDGD.Params()).norm == Norm.L2
    assert math.isclose(PDPGD.Params().dual_lr, 0.1) and PDPGD.Params().steps == 500
