"""foolbox adapters: each runs, its results pass the harness's verification, its parameters
validate; the all-zero failure image of C&W / EAD never counts; decision-based attacks work on a
non-differentiable model and respect their query cap."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from robench.api import Context
from robench.testing import LinearModel, minimal_perturbation
from robench_plugins import attacks_foolbox as fbp
from test_adapters_support import (
    CountingRows,
    binary_linear,
    check_minimal_adapter,
    check_result,
    correct_batch,
    sign_vote_model,
    tiny_mlp,
)

pytestmark = pytest.mark.filterwarnings("ignore")

# (plugin class, small-budget params, norm, min successes of 6)
CASES = [
    (fbp.FoolboxCWL2, dict(steps=100, binary_search_steps=4, initial_const=1.0), "L2", 5),
    (fbp.FoolboxEAD, dict(steps=100, binary_search_steps=4, initial_const=1.0), "L1", 5),
    (fbp.FoolboxDDN, dict(steps=30), "L2", 6),
    (fbp.FoolboxDeepFool, dict(norm="L2"), "L2", 6),
    (fbp.FoolboxDeepFool, dict(norm="Linf"), "Linf", 6),
    (fbp.FoolboxFMN, dict(norm="L0", steps=30), "L0", 5),
    (fbp.FoolboxFMN, dict(norm="L1", steps=30), "L1", 3),
    (fbp.FoolboxFMN, dict(norm="L2", steps=30), "L2", 5),
    (fbp.FoolboxFMN, dict(norm="Linf", steps=30), "Linf", 5),
    pytest.param(fbp.FoolboxBB, dict(norm="L2", steps=10), "L2", 6, marks=pytest.mark.slow),  # numba compiles ~30 s
    (fbp.FoolboxHSJ, dict(norm="L2", steps=3, initial_gradient_eval_steps=20), "L2", 6),
    (fbp.FoolboxHSJ, dict(norm="Linf", steps=3, initial_gradient_eval_steps=20), "Linf", 6),
    (fbp.FoolboxBoundary, dict(steps=50), "L2", 6),
]


@pytest.mark.parametrize("cls,params,norm,min_success", CASES, ids=lambda v: getattr(v, "__name__", None))
def test_adapter_runs_and_passes_verification(cls, params, norm, min_success):
    check_minimal_adapter(cls, params, norm, min_success)


def test_every_foolbox_plugin_is_registered_with_valid_defaults():
    specs = {s.name: s for s in fbp.robench_attacks()}
    assert set(specs) == {"fb-cw-l2", "fb-ddn", "fb-deepfool", "fb-ead", "fb-bb", "fb-fmn", "fb-hsj", "fb-boundary"}
    for spec in specs.values():
        attack = spec.factory(spec.factory.Params())
        assert attack.norm in spec.norms
        for name, field in spec.factory.Params.model_fields.items():
            assert field.description, f"{spec.name}.{name} has no description"


@pytest.mark.parametrize(
    "cls,bad",
    [
        (fbp.FoolboxCWL2, dict(steps=0)),
        (fbp.FoolboxCWL2, dict(norm="L2")),  # C&W has a fixed norm: no such parameter
        (fbp.FoolboxEAD, dict(decision_rule="L2")),
        (fbp.FoolboxDeepFool, dict(norm="L1")),
        (fbp.FoolboxBB, dict(norm="L3")),
        (fbp.FoolboxFMN, dict(gamma=1.5)),
        (fbp.FoolboxHSJ, dict(max_queries=0)),
        (fbp.FoolboxBoundary, dict(step_adaptation=1.0)),
    ],
)
def test_bad_params_are_rejected(cls, bad):
    with pytest.raises(ValidationError):
        cls.Params(**bad)


# -- the all-zero failure image ------------------------------------------------------------------


def _zero_is_adversarial_model():
    """2-class linear model: inputs near 1 are class 0 with a huge margin, the black image is class 1."""
    d = 16
    w = torch.zeros(2, d)
    w[0] = 50.0
    b = torch.tensor([0.0, 400.0])  # class 1 wins only when sum(x) < 8
    model = LinearModel(w, b, (1, 4, 4))
    x = torch.full((3, 1, 4, 4), 0.95)
    y = torch.zeros(3, dtype=torch.long)
    assert (model.predict(x) == 0).all() and model.predict(torch.zeros(1, 1, 4, 4)).item() == 1
    return model, x, y


@pytest.mark.parametrize("cls,name", [(fbp.FoolboxCWL2, "L2CarliniWagnerAttack"), (fbp.FoolboxEAD, "EADAttack")])
def test_zero_image_failure_becomes_no_adversarial(cls, name):
    import foolbox as fb

    model, x, y = _zero_is_adversarial_model()
    params = dict(steps=2, binary_search_steps=1, initial_const=1e-6)
    # the quirk is real: foolbox returns the all-zero image, which this model misclassifies
    raw = getattr(fb.attacks, name)(**params).run(
        fb.PyTorchModel(_Module(model).eval(), bounds=(0, 1)), x, fb.criteria.Misclassification(y),
    )
    assert (raw == 0).all() and (model.predict(raw) != y).all()
    # the adapter reports "no adversarial" instead
    adv = cls(cls.Params(**params)).run(model, x, y, eps=None, ctx=Context())
    assert torch.isnan(adv).all()


class _Module(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.scores(x)


# -- decision-based attacks on a non-differentiable model ---------------------------------------


@pytest.mark.parametrize("cls,params", [
    (fbp.FoolboxHSJ, dict(steps=5, initial_gradient_eval_steps=20)),
    (fbp.FoolboxHSJ, dict(norm="Linf", steps=5, initial_gradient_eval_steps=20)),
    (fbp.FoolboxBoundary, dict(steps=200)),
])
def test_decision_attacks_break_a_model_without_gradients(cls, params):
    model, x, y = sign_vote_model()
    assert not model.scores(x.clone().requires_grad_(True)).requires_grad
    attack = cls(cls.Params(**params))
    ctx = Context(seed=0)
    adv = attack.run(model, x, y, eps=None, ctx=ctx)
    v = check_result(model, x, y, adv, attack.norm, min_success=len(x))
    # the attack improved on its starting point: smaller than the nearest other-class image
    assert ctx.records["queries_mean"] > 0
    assert float(v.norms[attack.norm].max()) < 4.0


@pytest.mark.parametrize("cls", [fbp.FoolboxHSJ, fbp.FoolboxBoundary])
@pytest.mark.parametrize("cap", [30, 200])
def test_query_cap_is_respected(cls, cap):
    model, x, y = sign_vote_model()
    counted = CountingRows(model)
    attack = cls(cls.Params(max_queries=cap))  # library defaults: would run far past the cap
    ctx = Context(seed=0)
    adv = attack.run(counted, x, y, eps=None, ctx=ctx)
    # every model evaluation, the adapter's own checks included, stays within the cap per sample
    assert counted.rows <= cap * len(x)
    assert int(attack.queries.max()) <= cap
    assert ctx.records["queries_max"] <= cap
    # what it returns under the cap is still verified adversarial (the best it saw)
    ok = ~torch.isnan(adv.flatten(1)).any(1)
    assert ok.any() and (model.predict(adv[ok]) != y[ok]).all()


def test_library_randomness_follows_ctx_seed():
    model, x, y = sign_vote_model()
    params = fbp.FoolboxHSJ.Params(steps=2, initial_gradient_eval_steps=10)
    runs = [fbp.FoolboxHSJ(params).run(model, x, y, eps=None, ctx=Context(seed=s)) for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_binary_two_score_models_work_with_gradient_attacks():
    model, x, y = binary_linear(3)
    reachable = int(torch.isfinite(minimal_perturbation(model, x, y, "L2")).sum())  # inside the box
    assert reachable >= 4
    for cls, params, norm in [
        (fbp.FoolboxCWL2, dict(steps=200, binary_search_steps=4, initial_const=10.0), "L2"),
        (fbp.FoolboxDeepFool, dict(), "L2"),
        (fbp.FoolboxFMN, dict(norm="Linf", steps=30), "Linf"),
        (fbp.FoolboxDDN, dict(steps=30), "L2"),
    ]:
        adv = cls(cls.Params(**params)).run(model, x, y, eps=None, ctx=Context())
        check_result(model, x, y, adv, norm, min_success=reachable)


def test_misclassified_inputs_are_returned_unchanged():
    model = tiny_mlp()
    x, y = correct_batch(3)
    wrong = (y + 1) % 10
    adv = fbp.FoolboxDeepFool(fbp.FoolboxDeepFool.Params()).run(model, x, wrong, eps=None, ctx=Context())
    assert torch.equal(adv, x)
    assert not math.isnan(float(adv.sum()))


@pytest.mark.parametrize("cls, params", [
    (fbp.FoolboxHSJ, dict(steps=2, initial_gradient_eval_steps=10)),
    (fbp.FoolboxBoundary, dict(steps=30)),
])
def test_restarts_keep_each_samples_smallest_adversarial(cls, params):
    """The network paper's protocol: 10 runs from different random starts, the minimum reported."""
    model, x, y = sign_vote_model()
    singles, queries = [], []
    for r in range(3):  # restart r is the single run with seed ctx.seed + 7727 r
        a = cls(cls.Params(**params))
        singles.append(a.run(model, x, y, eps=None, ctx=Context(seed=5 + 7727 * r)))
        queries.append(a.queries)
    attack = cls(cls.Params(restarts=3, **params))
    ctx = Context(seed=5)
    best = attack.run(model, x, y, eps=None, ctx=ctx)

    def l2(adv):
        n = (adv.nan_to_num(0.0) - x).flatten(1).double().norm(dim=1)
        return torch.where(torch.isnan(adv.flatten(1)).any(1), math.inf, n)

    norms = torch.stack([l2(s) for s in singles])
    assert torch.allclose(l2(best), norms.min(0).values)
    assert (norms.min(0).values < norms[0]).any()  # the restarts found smaller ones than the first run alone
    assert torch.equal(attack.queries, sum(queries))
    assert ctx.records["queries_max"] == float(sum(queries).max())
