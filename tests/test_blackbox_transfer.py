"""The transfer attack: white-box adversarials of a source model, evaluated on a target."""

from __future__ import annotations

import pytest
import torch

import robench
from robench.errors import PluginError, UserInputError
from robench.plugins import get_registry, load_registry
from robench.testing import LinearModel
from robench_plugins.blackbox.transfer import Transfer
from wrapped_plugins import ExactLinfFgsm


@pytest.fixture
def registry():
    """The test attacks come from a --plugin module, exactly as a user's would: no global state is patched."""
    return load_registry(["wrapped_plugins"])


def transfer(registry, **params) -> Transfer:
    return Transfer(Transfer.Params(**params), robench.Context(registry=registry))


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
    via = transfer(registry, attack="test-fgsm").run(model, x, y, eps=0.1, ctx=ctx, source=model)
    assert torch.equal(direct, via)
    assert not torch.equal(via, x)  # the attack did something


def test_crafts_on_the_source_never_the_target(registry):
    source, target = linear(0), linear(1)
    x, y = batch()

    class Untouchable(LinearModel):
        def scores(self, x):
            raise AssertionError("transfer queried the target")

    t = Untouchable(target.weight, target.bias, (1, 4, 4))
    out = transfer(registry, attack="test-fgsm", params={"scale": 0.5}).run(
        t, x, y, eps=0.2, ctx=robench.Context(), source=source
    )
    assert torch.equal(out, ExactLinfFgsm(ExactLinfFgsm.Params(scale=0.5)).run(source, x, y, eps=0.2, ctx=robench.Context()))
    # the source's adversarials differ from the target's own white-box ones
    assert not torch.equal(out, ExactLinfFgsm(ExactLinfFgsm.Params(scale=0.5)).run(target, x, y, eps=0.2, ctx=robench.Context()))


def test_kind_and_norm_follow_the_inner_attack(registry):
    a = transfer(registry, attack="test-fgsm")
    assert (a.kind, a.norm) == ("bounded", robench.Norm.Linf)
    b = transfer(registry, attack="test-minimal")
    assert (b.kind, b.norm) == ("minimal", robench.Norm.L2)


def test_clear_errors(registry):
    with pytest.raises(PluginError, match="unknown attack plugin 'nope'.*available:.*test-fgsm"):
        transfer(registry, attack="nope")
    with pytest.raises(UserInputError, match=r"inner attack 'test-fgsm': params.scale: Input should be a valid number"):
        transfer(registry, attack="test-fgsm", params={"scale": "big"})
    with pytest.raises(PluginError, match="transfer"):
        transfer(registry, attack="transfer")
    x, y = batch(4)
    with pytest.raises(UserInputError, match="source: <model name>"):
        transfer(registry, attack="test-fgsm").run(linear(0), x, y, eps=0.1, ctx=robench.Context())


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
    out = transfer(registry, attack="test-fgsm").run(src, x, y, eps=0.1, ctx=robench.Context(), source=opaque)
    assert torch.equal(out, ExactLinfFgsm(ExactLinfFgsm.Params()).run(src, x, y, eps=0.1, ctx=robench.Context()))

    class NoSurrogate(Opaque):
        def surrogate(self):
            return None

    with pytest.raises(UserInputError, match="no surrogate"):
        transfer(registry, attack="test-fgsm").run(
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


def test_inner_attack_from_a_plugin_module_in_a_run(isolated_env):
    """`robench run -p MODULE` with a transfer attack whose inner attack MODULE provides: the run's
    Context carries the run's registry to the wrapper (a global registry would not know it)."""
    import sqlite3
    import subprocess
    import sys

    suite = isolated_env / "suite.yaml"
    suite.write_text(
        "name: transfer-plugin\n"
        "dataset: {name: digits, limit: 20}\n"
        "models:\n"
        "  - {name: src, plugin: mlp, params: {hidden: 8, epochs: 1}}\n"
        "  - {name: dst, plugin: mlp, params: {hidden: 12, epochs: 1}}\n"
        "attacks:\n"
        "  - {name: tr, plugin: transfer, params: {attack: test-fgsm, params: {scale: 1.0}}, source: src, models: [dst]}\n"
        "epsilons: {Linf: [0.2]}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "run", str(suite), "--out", str(isolated_env / "out"), "-q",
                           "--no-leaderboard", "-p", "wrapped_plugins"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    db = sqlite3.connect(isolated_env / "out" / "results.sqlite")
    assert db.execute("SELECT model, attack, status, norm FROM cells").fetchall() == [("dst", "tr", "done", "Linf")]
    assert db.execute("SELECT COUNT(*), SUM(success) > 0 FROM samples").fetchone() == (20, 1)



def _fooled_on(model, x, y, adv) -> torch.Tensor:
    """Rows of adv that are real adversarials on model (NaN or the input: none), as the harness counts them."""
    real = ~torch.isnan(adv).flatten(1).any(1) & ~(adv == x).flatten(1).all(1)
    return real & (model.predict(torch.nan_to_num(adv)) != y)


def test_evaluate_all_shows_the_target_every_perturbed_image():
    """The papers' protocol: an FGSM step that does not fool the source may still fool the target,
    so the target's accuracy is lower under evaluate: all than under the default (fooled only)."""
    source, target = linear(0), linear(1)
    x, y = batch(256)
    ctx = robench.Context(seed=0)
    only = transfer(None, attack="fgsm").run(target, x, y, eps=0.15, ctx=ctx, source=source)
    every = transfer(None, attack="fgsm", evaluate="all").run(target, x, y, eps=0.15, ctx=ctx, source=source)
    assert not torch.isnan(every).any()
    src_fooled = _fooled_on(source, x, y, every)
    assert 0 < int(src_fooled.sum()) < len(x)  # the step fails on some samples: the protocols differ there
    assert torch.equal(every[src_fooled], only[src_fooled])  # where it fooled the source both send the same image
    assert torch.isnan(only[~src_fooled]).all()
    gained = _fooled_on(target, x, y, every) & ~_fooled_on(target, x, y, only)
    assert int(gained.sum()) > 0 and not gained[src_fooled].any()


def test_evaluate_all_needs_an_inner_attack_with_keep_failed(registry):
    with pytest.raises(UserInputError, match="evaluate: all needs an inner attack .* 'test-fgsm' has none"):
        transfer(registry, attack="test-fgsm", evaluate="all")
