"""PDPGD's ``refine: true`` runs the shared boundary-refinement stage (robench_plugins.exact.refine,
the one the ``refine`` wrapper plugin runs): on a linear model it reaches the closed-form
box-constrained minimum (L1 / L2 / Linf), every refined row is verified and never larger than
without refine, ``refine: false`` is unchanged, and the cost is recorded as the wrapper records it."""

from __future__ import annotations

import pytest
import torch

from robench.api import Context, Norm
from robench.testing import LinearModel, minimal_perturbation
from robench.verify import verify


def _linear():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 12, generator=g)
    b = -0.5 * w.sum(1) + torch.randn(4, generator=g) * 0.3  # centred on the box: every class occurs
    lin = LinearModel(w, b, (1, 3, 4))
    x = torch.rand(10, 1, 3, 4, generator=g)
    return lin, x, lin.predict(x)


@pytest.mark.parametrize("norm", ["L1", "L2", "Linf", "L0"])
def test_pdpgd_refine_reaches_the_linear_minimum_and_never_grows(norm):
    lin, x, y = _linear()
    want = minimal_perturbation(lin, x, y, norm)
    params = {"norm": norm, "steps": 40}
    plain_ctx, refined_ctx = Context(seed=0), Context(seed=0)
    plain = plain_ctx.attack("pdpgd", params).run(lin, x, y, eps=None, ctx=plain_ctx)
    refined = refined_ctx.attack("pdpgd", params | {"refine": True}).run(lin, x, y, eps=None, ctx=refined_ctx)
    v0, v1 = verify(lin, x, y, plain, y, Norm(norm)), verify(lin, x, y, refined, y, Norm(norm))
    assert int(v0.success.sum()) >= 5 and bool((v1.success >= v0.success).all()) and not bool(v1.rejected.any())
    for i in torch.nonzero(v0.success).flatten().tolist():
        after, before = float(v1.norms[Norm(norm)][i]), float(v0.norms[Norm(norm)][i])
        assert after <= before + 1e-9
        assert after >= float(want[i]) * (1 - 1e-4) - 1e-6  # nothing beats the exact minimum
        if norm != "L0":
            assert after == pytest.approx(float(want[i]), rel=1e-3), i
    rec = refined_ctx.records
    assert rec["refine_forward"] > 0 and (rec["refine_backward"] > 0) == (norm != "L0")
    assert "refine_improved" in rec and "refine_mean_ratio" in rec
    assert not any(k.startswith("refine_") for k in plain_ctx.records)  # refine false: no stage, no records


def test_refine_false_never_reaches_the_stage():
    """With refine false a cost accumulator stays empty and the output is the one without it."""
    from robench_plugins.attacks_native.pdpgd import PDConfig, pd_attack
    from robench_plugins.exact.refine import RefineCost

    lin, x, y = _linear()
    cfg = PDConfig(norm="L1", smooth=False, steps=30)
    a, n = pd_attack(lin.scores, x, y, cfg, torch.Generator().manual_seed(0))
    cost = RefineCost()
    b, m = pd_attack(lin.scores, x, y, cfg, torch.Generator().manual_seed(0), refine_cost=cost)
    assert torch.equal(a, b) and torch.equal(n, m)
    assert cost.seen == cost.forward == cost.backward == 0
