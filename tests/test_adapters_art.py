"""ART adapters: each runs, its results pass the harness's verification, its parameters validate;
JSMA keeps the smallest over all targets; DLR refuses binary models clearly; HopSkipJump works on a
non-differentiable model within its query cap; bounded attacks stay inside eps."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from robench.api import Context, Norm
from robench.errors import UserInputError
from robench.testing import LinearModel
from robench_plugins import attacks_art as artp
from robench.norms import lp_norm
from test_adapters_support import (
    CountingRows, binary_linear, check_minimal_adapter, check_result, correct_batch, sign_vote_model, tiny_mlp,
)

pytestmark = pytest.mark.filterwarnings("ignore")

MINIMAL = [
    (artp.ARTCWL2, dict(max_iter=10, binary_search_steps=3, initial_const=1.0), "L2", 5),
    (artp.ARTCWLinf, dict(max_iter=5, largest_const=2.0), "Linf", 3),
    (artp.ARTCWL0, dict(max_iter=5, binary_search_steps=2, initial_const=1.0), "L0", 3),
    (artp.ARTHSJ, dict(max_iter=3, init_eval=20, max_eval=100), "L2", 6),
    (artp.ARTHSJ, dict(norm="Linf", max_iter=3, init_eval=20, max_eval=100), "Linf", 6),
    (artp.ARTPixel, dict(max_iter=5), "L0", 1),
]


@pytest.mark.parametrize("cls,params,norm,min_success", MINIMAL, ids=lambda v: getattr(v, "__name__", None))
def test_minimal_adapter_runs_and_passes_verification(cls, params, norm, min_success):
    check_minimal_adapter(cls, params, norm, min_success)


BOUNDED = [
    (artp.ARTAPGD, dict(max_iter=10, nb_random_init=1), "Linf", 0.15),
    (artp.ARTAPGD, dict(norm="L2", loss="dlr", max_iter=10, nb_random_init=1), "L2", 1.5),
    (artp.ARTSquare, dict(max_iter=50), "Linf", 0.2),
    (artp.ARTPGD, dict(max_iter=20), "Linf", 0.15),
    (artp.ARTPGD, dict(norm="L2", max_iter=20), "L2", 1.5),
]


@pytest.mark.parametrize("cls,params,norm,eps", BOUNDED, ids=lambda v: getattr(v, "__name__", None))
def test_bounded_adapter_stays_within_eps(cls, params, norm, eps):
    model = tiny_mlp()
    x, y = correct_batch(6)
    adv = cls(cls.Params(**params)).run(model, x, y, eps=eps, ctx=Context(seed=0))
    v = check_result(model, x, y, adv, norm, eps=eps, min_success=2)
    assert (v.norms[Norm(norm)][v.success] <= eps * (1 + 1e-5) + 1e-6).all()


def test_jsma_keeps_the_smallest_over_all_targets_and_thetas():
    model = tiny_mlp()
    x, y = correct_batch(3)
    best = artp.ARTJSMA(artp.ARTJSMA.Params()).run(model, x, y, eps=None, ctx=Context())
    v = check_result(model, x, y, best, "L0", min_success=3)
    # no single (target, theta) run of ART's JSMA does better on any sample
    from art.attacks.evasion import SaliencyMapMethod

    clf = artp.adapters.art_classifier(artp.adapters.ScoresModule(model), x, 10, torch.device("cpu"))
    for target in range(10):
        for theta in (1.0, -1.0):
            t = torch.full_like(y, target)
            res = torch.from_numpy(SaliencyMapMethod(clf, theta=theta, gamma=1.0, verbose=False).generate(
                x.numpy(), artp.adapters.one_hot(t, 10)))
            hit = (model.predict(res) != y) & (t != y)
            single = lp_norm(res - x, Norm.L0)
            assert (v.norms[Norm.L0][hit] <= single[hit]).all()


def test_apgd_dlr_refuses_binary_models_clearly_and_ce_works():
    model, x, y = binary_linear(0)
    with pytest.raises(UserInputError, match="at least 3 classes"):
        artp.ARTAPGD(artp.ARTAPGD.Params(loss="dlr")).run(model, x, y, eps=0.5, ctx=Context())
    adv = artp.ARTAPGD(artp.ARTAPGD.Params(max_iter=10, nb_random_init=1)).run(model, x, y, eps=2.0, ctx=Context())
    check_result(model, x, y, adv, "Linf", eps=2.0, min_success=1)


def test_binary_two_score_models_work():
    model, x, y = binary_linear(3)
    for cls, params, norm in [
        (artp.ARTCWL2, dict(max_iter=20, binary_search_steps=5, initial_const=1.0), "L2"),
        (artp.ARTHSJ, dict(max_iter=3, init_eval=20, max_eval=100), "L2"),
    ]:
        adv = cls(cls.Params(**params)).run(model, x, y, eps=None, ctx=Context(pool=torch.rand(50, *x.shape[1:])))
        check_result(model, x, y, adv, norm, min_success=3)


def test_multichannel_inputs_keep_nchw_and_count_l0_in_pixels():
    g = torch.Generator().manual_seed(0)
    model = LinearModel(torch.randn(3, 48, generator=g), torch.zeros(3), (3, 4, 4))
    x = torch.rand(4, 3, 4, 4, generator=g)
    y = model.predict(x)
    adv = artp.ARTPixel(artp.ARTPixel.Params(pixels=2, max_iter=10)).run(model, x, y, eps=None, ctx=Context())
    ok = ~torch.isnan(adv.flatten(1)).any(1)
    assert ok.any()
    assert (lp_norm(adv[ok] - x[ok], Norm.L0) <= 2).all()  # at most 2 pixels, whatever the channels
    adv = artp.ARTCWL2(artp.ARTCWL2.Params(max_iter=10, binary_search_steps=3, initial_const=1.0)).run(
        model, x, y, eps=None, ctx=Context())
    check_result(model, x, y, adv, "L2", min_success=2)


def test_hsj_breaks_a_model_without_gradients_within_its_cap():
    model, x, y = sign_vote_model()
    counted = CountingRows(model)
    cap = 150
    attack = artp.ARTHSJ(artp.ARTHSJ.Params(max_queries=cap))
    ctx = Context(seed=0)
    adv = attack.run(counted, x, y, eps=None, ctx=ctx)
    assert counted.rows <= cap * len(x)
    assert int(attack.queries.max()) <= cap and ctx.records["queries_max"] <= cap
    check_result(model, x, y, adv, "L2", min_success=len(x))


def test_every_art_plugin_is_registered_with_valid_defaults_and_rejects_bad_params():
    specs = {s.name: s for s in artp.robench_attacks()}
    assert set(specs) == {"art-cw-l2", "art-cw-linf", "art-cw-l0", "art-hsj", "art-jsma", "art-pixel", "art-apgd", "art-square", "art-pgd"}
    for spec in specs.values():
        attack = spec.factory(spec.factory.Params())
        assert attack.norm in spec.norms
        for name, field in spec.factory.Params.model_fields.items():
            assert field.description, f"{spec.name}.{name} has no description"
    for cls, bad in [
        (artp.ARTCWL2, dict(max_iter=0)), (artp.ARTHSJ, dict(norm="L1")), (artp.ARTJSMA, dict(gamma=0)),
        (artp.ARTJSMA, dict(thetas=())), (artp.ARTPixel, dict(pixels=0)), (artp.ARTAPGD, dict(loss="mse")),
        (artp.ARTSquare, dict(p_init=0)), (artp.ARTPGD, dict(unknown=1)),
    ]:
        with pytest.raises(ValidationError):
            cls.Params(**bad)
