"""Our FAB: exact box-constrained projections, closed-form optima on linear models, verified results."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from robench.api import Context, Norm
from robench.testing import LinearModel, _min_to_target, minimal_perturbation
from robench_plugins.attacks_fab import FAB, robench_attacks
from robench.norms import lp_norm
from robench_plugins.attacks_fab.fab import project_hyperplane
from test_adapters_support import SignVotes, check_result, correct_batch, sign_vote_model, tiny_mlp


@pytest.mark.parametrize("norm", ["L1", "L2", "Linf"])
def test_projection_is_the_exact_box_constrained_minimum(norm):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 12, generator=g, dtype=torch.float64)
    w = torch.randn(200, 12, generator=g, dtype=torch.float64)
    w[:, 0] = 0  # a coordinate the hyperplane ignores must not move
    b = (w * x).sum(1) + torch.randn(200, generator=g, dtype=torch.float64) * 2
    d = project_hyperplane(x, w, b, Norm(norm))
    z = x + d
    assert ((z >= -1e-12) & (z <= 1 + 1e-12)).all()
    assert (d[:, 0] == 0).all()
    got = lp_norm(d, Norm(norm))
    for i in range(len(x)):
        c = float(b[i] - w[i] @ x[i])
        a = w[i] * (1 if c > 0 else -1)  # a . d >= |c|, the testing module's form
        best = _min_to_target(a, x[i], abs(c), Norm(norm))
        if best == float("inf"):  # unreachable: every useful coordinate at its bound
            assert float((w[i] * d[i]).sum()) * (1 if c > 0 else -1) == pytest.approx(
                float((a.abs() * torch.where(a > 0, 1 - x[i], x[i])).sum()), rel=1e-9)
        else:
            assert float(w[i] @ z[i]) == pytest.approx(float(b[i]), abs=1e-9)
            assert float(got[i]) == pytest.approx(best, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("norm", ["L1", "L2", "Linf"])
def test_fab_reaches_the_closed_form_optimum_on_a_binary_linear_model(norm):
    g = torch.Generator().manual_seed(0)
    model = LinearModel(torch.randn(2, 20, generator=g), torch.zeros(2), (1, 4, 5))
    x = torch.rand(10, 1, 4, 5, generator=g)
    y = model.predict(x)
    opt = minimal_perturbation(model, x, y, norm)
    adv = FAB(FAB.Params(norm=norm, n_iter=60)).run(model, x, y, eps=None, ctx=Context())
    v = check_result(model, x, y, adv, norm, min_success=int(torch.isfinite(opt).sum()))
    ratio = v.norms[Norm(norm)][torch.isfinite(opt)] / opt[torch.isfinite(opt)]
    assert (ratio >= 1 - 1e-6).all()  # nothing beats the optimum: the known answer is right
    assert (ratio <= 1.02).all(), ratio  # FAB's overshoot eta = 1.05 and backward step leave < 2%


def test_fab_is_near_optimal_on_a_multiclass_linear_model():
    g = torch.Generator().manual_seed(2)
    model = LinearModel(torch.randn(4, 20, generator=g), torch.zeros(4), (1, 4, 5))
    x = torch.rand(10, 1, 4, 5, generator=g)
    y = model.predict(x)
    opt = minimal_perturbation(model, x, y, "L2")
    adv = FAB(FAB.Params(norm="L2", n_iter=60, n_restarts=2)).run(model, x, y, eps=None, ctx=Context())
    v = check_result(model, x, y, adv, "L2", min_success=10)
    assert float((v.norms[Norm.L2] / opt).mean()) <= 1.05


def test_fab_results_on_a_small_net_pass_verification_and_params_validate():
    model = tiny_mlp()
    x, y = correct_batch(6)
    for norm in ("L1", "L2", "Linf"):
        adv = FAB(FAB.Params(norm=norm, n_iter=20)).run(model, x, y, eps=None, ctx=Context())
        check_result(model, x, y, adv, norm, min_success=6)
    (spec,) = robench_attacks()
    assert spec.name == "fab" and set(spec.norms) == {Norm.L1, Norm.L2, Norm.Linf}
    for bad in (dict(norm="L0"), dict(n_iter=0), dict(eta=0.5), dict(alpha_max=2), dict(beta=0)):
        with pytest.raises(ValidationError):
            FAB.Params(**bad)


def test_fab_refuses_a_model_without_gradients_clearly():
    model, x, y = sign_vote_model()
    with pytest.raises(RuntimeError, match="needs gradients"):
        FAB(FAB.Params(n_iter=2)).run(model, x, y, eps=None, ctx=Context())
