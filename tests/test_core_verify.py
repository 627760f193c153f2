"""The verifier's rules on hand-made cases with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from robench import Norm
from robench.metrics import wilson
from robench.testing import LinearModel, minimal_perturbation
from robench.norms import changed_pixels, lp_norm, perturbation_norms
from robench.verify import verify


def two_class_model():
    # class 1 iff mean pixel > 0.5
    w = torch.stack([-torch.ones(12) / 12, torch.ones(12) / 12])
    return LinearModel(w, torch.tensor([0.5, -0.5]), (3, 2, 2))


def test_l0_counts_pixels_not_channels():
    d = torch.zeros(1, 3, 2, 2)
    d[0, :, 0, 0] = 0.1  # one pixel, three channels
    d[0, 1, 1, 1] = -0.2  # another pixel, one channel
    n = perturbation_norms(d)
    assert n[Norm.L0].item() == 2
    assert n[Norm.L1].item() == pytest.approx(0.5)
    assert n[Norm.Linf].item() == pytest.approx(0.2)
    assert n[Norm.L2].item() == pytest.approx(math.sqrt(3 * 0.01 + 0.04))


@pytest.mark.parametrize("channels", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l0_and_abs_norms_match_their_definitions_also_in_place(channels, dtype):
    """The channel-sum L0 (and the in-place variants the tracker uses) say what the definitions say:
    a pixel is changed iff some channel is non-zero, NaN counting as changed, -0.0 and 0 not."""
    g = torch.Generator().manual_seed(channels)
    delta = torch.rand(6, channels, 5, 5, generator=g, dtype=dtype)
    delta[torch.rand(delta.shape, generator=g) < 0.8] = 0.0
    if channels:
        delta[0, 0, 0, 0], delta[1, -1, 2, 2], delta[2, 0, 1, 1] = float("nan"), -0.0, 1e-40
        delta[3, 0, 3, 3] = -float("inf")
    flat = delta.flatten(2)
    reference_l0 = (flat != 0).any(1).sum(1).to(dtype) if channels else torch.zeros(6, dtype=dtype)
    assert torch.equal(changed_pixels(delta), (delta != 0).any(1).flatten(1) if channels else torch.zeros(6, 25, dtype=torch.bool))
    for overwrite in (False, True):
        for norm, reference in ((Norm.L0, reference_l0),
                                (Norm.L1, delta.flatten(1).abs().sum(1)),
                                (Norm.Linf, delta.flatten(1).abs().amax(1) if channels else torch.zeros(6, dtype=dtype)),
                                (Norm.L2, delta.flatten(1).norm(dim=1))):
            before = delta.clone()
            got = lp_norm(delta.clone() if overwrite else delta, norm, overwrite=overwrite)
            assert torch.equal(got, reference) or torch.allclose(got, reference, equal_nan=True), (norm, overwrite)
            assert got.dtype == dtype
            assert torch.equal(delta.nan_to_num(), before.nan_to_num()), "the input changed without overwrite"


def test_residue_below_1e6_is_cleaned_before_counting():
    model = two_class_model()
    x = torch.full((1, 3, 2, 2), 0.45)
    y = torch.tensor([0])
    adv = x.clone()
    adv[0, :, 0, 0] = 1.0  # the real change: one pixel -> mean becomes > 0.5
    adv[0, 0, 1, 1] += 5e-7  # float residue on another pixel
    v = verify(model, x, y, adv, clean_pred=model.predict(x), norm=Norm.L0)
    assert v.success.item() and v.norms[Norm.L0].item() == 1
    assert v.adversarial[0, 0, 1, 1].item() == x[0, 0, 1, 1].item()


def test_box_unchanged_nan_and_bounds():
    model = two_class_model()
    x = torch.full((4, 3, 2, 2), 0.45)
    y = torch.zeros(4, dtype=torch.long)
    adv = x.clone()
    adv[0] = 1.2  # outside the box
    adv[1] = x[1]  # unchanged: no adversarial, not a rejection
    adv[2] = float("nan")  # attack says: not found
    adv[3] = 0.9  # adversarial, Linf 0.45
    v = verify(model, x, y, adv, model.predict(x), Norm.Linf, eps=0.5)
    assert v.success.tolist() == [False, False, False, True]
    assert v.rejected.tolist() == [True, False, False, False]
    assert "outside [0, 1]" in v.reasons[0]
    v = verify(model, x, y, adv, model.predict(x), Norm.Linf, eps=0.4)
    assert v.success.tolist() == [False] * 4 and v.rejected[3]
    assert "exceeds eps" in v.reasons[3]


def test_clean_errors_are_broken_at_norm_zero():
    model = two_class_model()
    x = torch.full((1, 3, 2, 2), 0.7)  # predicted 1
    y = torch.tensor([0])
    v = verify(model, x, y, torch.full_like(x, float("nan")), model.predict(x), Norm.L2)
    assert v.success.item() and v.norms[Norm.L2].item() == 0


def test_minimal_perturbation_closed_forms_on_a_simple_case():
    # one class-1 direction, all pixels 0.45, threshold mean > 0.5: needs +0.05 average
    model = two_class_model()
    x = torch.full((1, 3, 2, 2), 0.45)
    y = torch.tensor([0])
    assert minimal_perturbation(model, x, y, "Linf").item() == pytest.approx(0.05, rel=1e-6)
    assert minimal_perturbation(model, x, y, "L2").item() == pytest.approx(0.05 * math.sqrt(12), rel=1e-6)
    assert minimal_perturbation(model, x, y, "L1").item() == pytest.approx(0.6, rel=1e-6)
    assert minimal_perturbation(model, x, y, "L0").item() == 2  # each coordinate can add at most 0.55/12


def test_wilson_interval():
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
