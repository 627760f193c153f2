"""The transfer attack: white-box adversarials of a source model, evaluated on a target."""

from __future__ import annotations

import pytest
import torch

import robench
from robench.errors import PluginError, UserInputError
from robench.plugins import get_registry
from robench.testing import LinearModel
from robench_plugins.blackbox.transfer import Transfer


class ExactLinfFgsm(robench.Attack):
    """FGSM on the margin of the true class (exact for a linear model): a known white-box attack."""

    class Params(robench.Params):
        norm: str = "Linf"
        scale: float = 1.0

    kind = "bounded"
    needs = frozenset({"gradients"})

    def run(self, model, x, y, *, eps, ctx, source=None):
        xg = x.clone().requires_grad_(True)
        s = model.scores(xg)
        true = s.gather(1, y[:, None]).sum()
        (g,) = torch.autograd.grad(true, xg)
        return (x - self.params.scale * eps * g.sign()).clamp(0, 1)


class MinimalDummy(robench.Attack):
    kind = "minimal"
    needs = frozenset({"gradients"})

    def __init__(self, params):
        super().__init__(params)
        self.norm = robench.Norm.L2

    def run(self, model, x, y, *, eps, ctx, source=None):
        return x


@pytest.fixture
def registry(monkeypatch):
    specs = get_registry().specs["attack"]
    monkeypatch.setitem(specs, "test-fgsm", robench.AttackSpec("test-fgsm", ExactLinfFgsm, "test", norms=(robench.Norm.Linf,)))
    monkeypatch.setitem(specs, "test-minimal", robench.AttackSpec("test-minimal", MinimalDummy, "test"))
    return specs


def linear(seed: int, classes: int = 3) -> LinearModel:
    g = torch.Generator().manual_seed(seed)
    return LinearModel(torch.randn(classes, 16, generator=g), torch.randn(classes, generator=g), (1, 4, 4))


def batch(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=g)
    return x, linear(0).predict(x)


def test_diagonal_equals_the_direct_white_box_attack(registry):
    model = linear(0)
    x, y = batch()
    ctx = robench.Context(seed=0)
    direct = ExactLinfFgsm(ExactLinfFgsm.Params()).run(model, x, y, eps=0.1, ctx=ctx)
    via = Transfer(Transfer.Params(attack="test-fgsm")).run(model, x, y, eps=0.1, ctx=ctx, source=model)
    assert torch.equal(direct, via)
    assert not torch.equal(via, x)  # the attack did something


def test_crafts_on_the_source_never_the_target(registry):
    source, target = linear(0), linear(1)
    x, y = batch()

    class Untouchable(LinearModel):
        def scores(self, x):
            raise AssertionError("transfer queried the target")

    t = Untouchable(target.weight, target.bias, (1, 4, 4))
    out = Transfer(Transfer.Params(attack="test-fgsm", params={"scale": 0.5})).run(
        t, x, y, eps=0.2, ctx=robench.Context(), source=source
    )
    assert torch.equal(out, ExactLinfFgsm(ExactLinfFgsm.Params(scale=0.5)).run(source, x, y, eps=0.2, ctx=robench.Context()))
    # the source's adversarials differ from the target's own white-box ones
    assert not torch.equal(out, ExactLinfFgsm(ExactLinfFgsm.Params(scale=0.5)).run(target, x, y, eps=0.2, ctx=robench.Context()))


def test_kind_and_norm_follow_the_inner_attack(registry):
    a = Transfer(Transfer.Params(attack="test-fgsm"))
    assert (a.kind, a.norm) == ("bounded", robench.Norm.Linf)
    b = Transfer(Transfer.Params(attack="test-minimal"))
    assert (b.kind, b.norm) == ("minimal", robench.Norm.L2)


def test_clear_errors(registry):
    with pytest.raises(PluginError, match="unknown attack plugin 'nope'.*available:.*test-fgsm"):
        Transfer(Transfer.Params(attack="nope"))
    with pytest.raises(UserInputError, match=r"inner attack 'test-fgsm': params.scale: Input should be a valid number"):
        Transfer(Transfer.Params(attack="test-fgsm", params={"scale": "big"}))
    with pytest.raises(PluginError, match="transfer"):
        Transfer(Transfer.Params(attack="transfer"))
    x, y = batch(4)
    with pytest.raises(UserInputError, match="source: <model name>"):
        Transfer(Transfer.Params(attack="test-fgsm")).run(linear(0), x, y, eps=0.1, ctx=robench.Context())


def test_non_differentiable_source_uses_its_surrogate(registry):
    class Opaque(LinearModel):
        differentiable = False

        def scores(self, x):
            return super().scores(x).detach()

        def surrogate(self):
            return LinearModel(self.weight, self.bias, (1, 4, 4))

    src = linear(0)
    opaque = Opaque(src.weight, src.bias, (1, 4, 4))
    x, y = batch()
    out = Transfer(Transfer.Params(attack="test-fgsm")).run(src, x, y, eps=0.1, ctx=robench.Context(), source=opaque)
    assert torch.equal(out, ExactLinfFgsm(ExactLinfFgsm.Params()).run(src, x, y, eps=0.1, ctx=robench.Context()))

    class NoSurrogate(Opaque):
        def surrogate(self):
            return None

    with pytest.raises(UserInputError, match="no surrogate"):
        Transfer(Transfer.Params(attack="test-fgsm")).run(
            src, x, y, eps=0.1, ctx=robench.Context(), source=NoSurrogate(src.weight, src.bias, (1, 4, 4))
        )


@pytest.mark.parametrize("inner,params", [("fgsm", {}), ("pgd", {"norm": "Linf"})])
def test_diagonal_with_registered_white_box_attacks(inner, params):
    """The same check against the built-in white-box plugins (skipped until they are registered)."""
    spec = get_registry().specs["attack"].get(inner)
    if spec is None:
        pytest.skip(f"attack plugin {inner!r} is not registered yet")
    model = linear(0)
    x, y = batch()
    direct_attack = spec.factory(spec.factory.Params(**params))
    torch.manual_seed(0)
    direct = direct_attack.run(model, x, y, eps=0.1, ctx=robench.Context(seed=0))
    torch.manual_seed(0)
    via = Transfer(Transfer.Params(attack=inner, params=params)).run(model, x, y, eps=0.1, ctx=robench.Context(seed=0), source=model)
    torch.testing.assert_close(via, direct, rtol=0, atol=0, equal_nan=True)  # NaN rows: "no adversarial"
    assert not torch.equal(torch.nan_to_num(via, nan=-1.0), x)
