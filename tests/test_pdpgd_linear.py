"""PDGD / PDPGD on linear models, where the minimal perturbation (box included) is known exactly."""

from __future__ import annotations

import pytest
import torch

import robench
from robench import Norm
from robench.testing import LinearModel, minimal_perturbation
from robench.norms import perturbation_norms
from robench.verify import verify
from robench_plugins.attacks_native import PDGD, PDPGD

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def _binary_model(d=64, seed=0, channels=1):
    g = torch.Generator().manual_seed(seed)
    side = int((d // channels) ** 0.5)
    w = torch.randn(1, d, generator=g)
    # a binary single-score model exposed as the two scores [-s, s]
    model = LinearModel(torch.cat([-w, w]), torch.zeros(2), (channels, side, side))
    return model


def _interior_points(model, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(n, *model.info.input_shape, generator=g)
    y = model.predict(x)
    return x, y


def _attack(cls, ctx=None, **params):
    atk = cls(cls.Params(**params))
    ctx = ctx or robench.Context(seed=0)
    return atk, ctx


def _run(model, x, y, cls, **params):
    atk, ctx = _attack(cls, **params)
    adv = atk.run(model, x, y, eps=None, ctx=ctx)
    verdict = verify(model, x, y, adv, model.predict(x), atk.norm)
    assert not verdict.rejected.any(), [r for r in verdict.reasons if r]
    return verdict


@pytest.mark.parametrize(
    "cls,norm",
    [(PDGD, "L2"), (PDPGD, "L2"), (PDPGD, "Linf"), (PDPGD, "L1"), (PDPGD, "L0")],
)
def test_finds_the_known_minimal_perturbation(cls, norm):
    model = _binary_model()
    x, y = _interior_points(model, 24)
    exact = minimal_perturbation(model, x, y, norm)
    assert torch.isfinite(exact).all() and (exact > 0).all()
    params = {} if cls is PDGD else {"norm": norm}
    verdict = _run(model, x, y, cls, steps=300, **params)
    assert verdict.success.all()
    found = verdict.norms[Norm(norm)]
    ratio = found / exact
    # nobody beats the exact minimum (it would mean a bug in the attack's or the verifier's norm)
    assert (ratio >= 1 - 1e-4).all(), ratio.min()
    # within a few percent on average; L0 is an integer (two or three pixels here): one extra at worst
    assert float(ratio.mean()) <= (1.05 if norm == "L0" else 1.03), f"{cls.__name__} {norm}: mean ratio {float(ratio.mean()):.4f}"
    if norm == "L0":
        assert (found - exact <= 1).all(), (found, exact)
    else:
        assert float(ratio.max()) <= 1.25, f"{cls.__name__} {norm}: worst ratio {float(ratio.max()):.4f}"


@pytest.mark.parametrize("norm", ["Linf", "L1"])
@pytest.mark.parametrize(
    "param,default,other",
    [("dual_lr_final", 1.0, 0.1), ("metric_floor", 0.0, 0.2)],  # adv-lib's dual schedule; a floored prox metric
)
def test_schedule_options_change_the_run_and_keep_the_minimum(norm, param, default, other):
    """Each option reaches the algorithm (a different run) and still finds the closed-form minimum."""
    model = _binary_model()
    x, y = _interior_points(model, 24)
    exact = minimal_perturbation(model, x, y, norm)
    runs = {}
    for value in (default, other):
        atk, ctx = _attack(PDPGD, norm=norm, steps=300, **{param: value})
        runs[value] = atk.run(model, x, y, eps=None, ctx=ctx)
        verdict = verify(model, x, y, runs[value], model.predict(x), atk.norm)
        assert verdict.success.all() and not verdict.rejected.any()
        ratio = verdict.norms[Norm(norm)] / exact
        assert (ratio >= 1 - 1e-4).all() and float(ratio.mean()) <= 1.03, (param, value, float(ratio.mean()))
    assert not torch.equal(runs[default], runs[other]), f"{param} did not reach the algorithm"


def test_multiclass_linear_model():
    g = torch.Generator().manual_seed(3)
    model = LinearModel(torch.randn(5, 64, generator=g), torch.zeros(5), (1, 8, 8))
    x, y = _interior_points(model, 16, seed=4)
    for norm in ("L2", "L0"):
        exact = minimal_perturbation(model, x, y, norm)
        verdict = _run(model, x, y, PDPGD, norm=norm, steps=300)
        ratio = verdict.norms[Norm(norm)] / exact
        assert verdict.success.all() and (ratio >= 1 - 1e-4).all()
        assert float(ratio.mean()) <= 1.05, f"{norm}: mean ratio {float(ratio.mean()):.4f}"


def _exact_pixel_l0(model: LinearModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fewest *pixels* (all channels of a pixel may move) to flip a binary linear model, in the box."""
    out = []
    for xi, yi in zip(x, y):
        a = (model.weight[1 - yi] - model.weight[yi]).view_as(xi)
        m = float(((model.weight[yi] - model.weight[1 - yi]) @ xi.flatten()) + model.bias[yi] - model.bias[1 - yi])
        room = torch.where(a > 0, 1 - xi, xi)
        gain = (a.abs() * room).sum(0).flatten().sort(descending=True).values  # per pixel
        out.append(int(torch.searchsorted(gain.cumsum(0), torch.tensor(m))) + 1)
    return torch.tensor(out, dtype=torch.float64)


def test_grouped_l0_counts_pixels_on_colour_images():
    model = _binary_model(d=3 * 36, seed=5, channels=3)
    x, y = _interior_points(model, 16, seed=6)
    exact = _exact_pixel_l0(model, x, y)
    grouped = _run(model, x, y, PDPGD, norm="L0", steps=300).norms[Norm.L0]
    assert (grouped >= exact).all()
    assert float((grouped / exact).mean()) <= 1.05, (grouped, exact)


def test_already_misclassified_samples_are_returned_unchanged():
    model = _binary_model()
    x, y = _interior_points(model, 8)
    y_wrong = y.clone()
    y_wrong[:3] = 1 - y_wrong[:3]  # the model gets these three wrong from the start
    atk, ctx = _attack(PDPGD, norm="L2", steps=50)
    adv = atk.run(model, x, y_wrong, eps=None, ctx=ctx)
    assert torch.equal(adv[:3], x[:3])
    assert (perturbation_norms(adv[3:] - x[3:])[Norm.L2] > 0).all()


def test_sample_outside_reach_gives_no_adversarial():
    # the box makes class 1 unreachable from x: the attack must return the input, not a fake
    w = torch.zeros(2, 4)
    w[1, 0] = 1.0
    model = LinearModel(w, torch.tensor([0.0, -5.0]), (1, 2, 2))
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.zeros(2, dtype=torch.long)
    for norm in ("L0", "L2"):
        atk, ctx = _attack(PDPGD, norm=norm, steps=40)
        adv = atk.run(model, x, y, eps=None, ctx=ctx)
        assert torch.equal(adv, x)
