"""Per-sample certificates (Context.certify, table certificates) and what the leaderboard makes of
them: the verifier (plugin ``verify``) against closed-form linear answers, verified never above
attacked robust accuracy, optimality ratios for a third-party network the test defines, the
harness's check of a certificate against its verdict, and old stores without the table."""

from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("highspy")

from robench.api import Norm  # noqa: E402
from robench.cell import checked_certificate  # noqa: E402
from robench.store import SampleRow, Store  # noqa: E402
from robench.testing import LinearModel, minimal_perturbation  # noqa: E402
from robench_plugins.exact import lower  # noqa: E402
from robench_plugins.exact.verifier import verify_sample  # noqa: E402

from linear_nets import linear_pair  # noqa: E402


@pytest.mark.parametrize("norm", ["L0", "L1", "L2", "Linf"])
def test_verifier_on_a_linear_model_agrees_with_the_closed_form_minimum(norm):
    """Sound for every norm (verified => exact minimum > eps); for L1 and Linf the final LP is exact,
    so also complete away from the boundary (minimum clearly above eps => verified)."""
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(4, 6, generator=g), torch.randn(4, generator=g) * 0.3
    lin, net = linear_pair(w, b)
    ops = lower(net, (1, 2, 3))
    x = torch.rand(12, 1, 2, 3, generator=g)
    y = lin.predict(x)
    exact = minimal_perturbation(lin, x, y, norm)
    seen = {True: 0, False: 0}
    for i in range(len(x)):
        m = float(exact[i])
        for eps in ([1.0, 2.0, 3.0] if norm == "L0" else [0.5 * m, 0.9 * m, 1.1 * m, 2 * m] if math.isfinite(m) else [0.1, 1.0]):
            v = verify_sample(ops, x[i].double().flatten().numpy(), int(y[i]), norm, eps, margin=1e-6)
            seen[v.verified] += 1
            if v.verified:
                assert m > eps * (1 - 1e-6), (i, eps, m)
            elif norm in ("L1", "Linf") and m > 1.01 * eps:
                pytest.fail(f"sample {i}: minimum {m} > eps {eps} but not verified (LP is exact on a linear model)")
    assert seen[True] and seen[False]


def test_certificate_is_checked_against_the_verdict():
    row = SampleRow(0, "s", 1, 1, True, False, None, 1.0, 1.0, 1.0, 1.0, 0, 0, 0)
    assert checked_certificate(("optimal", 0.5, 0.4), row, 0.5) == ("optimal", 0.5, 0.5)  # upper: the verified norm
    assert checked_certificate(("optimal", 0.7, 0.5), row, 0.5)[0] == "contradicted"  # lower above its own point
    assert checked_certificate(("verified", 0.1, None), row, 0.5)[0] == "contradicted"  # robust, yet broken
    failed = SampleRow(0, "s", 1, 1, False, True, "not adversarial", None, None, None, None, 0, 0, 0)
    assert checked_certificate(("bracket", 0.2, 0.3), failed, math.nan) == ("unverified", 0.2, None)
    assert checked_certificate(("unknown", -0.1, None), failed, math.nan) == ("unknown", -0.1, None)


def test_an_old_store_without_the_table_keeps_its_rows_and_gains_certificates(tmp_path):
    path = tmp_path / "old.sqlite"
    with Store(path) as s:
        run = s.start_run("x", "h", {})
        s.ensure_cell("c1", run, suite="x", model="m", model_plugin="mlp", attack="a", attack_plugin="pgd", norm="L2", kind="minimal",
                      eps=None, source=None, needs=[], via_surrogate=0, n_total=2, config={})
        s.write_samples("c1", [SampleRow(0, "s0", 1, 1, True, False, None, 3, 1.0, 0.5, 0.2, 1, 1, 0.1)])
    db = sqlite3.connect(path)  # as a store written before certificates existed
    db.execute("DROP TABLE IF EXISTS certificates")
    db.commit()
    db.close()
    with Store(path, create=False) as s:
        assert s.certificates("c1") == {}
        assert [r["idx"] for r in s.samples("c1")] == [0]
        s.write_samples("c1", [SampleRow(1, "s1", 2, 2, True, False, None, 2, 1.0, 0.4, 0.2, 1, 1, 0.1,
                                         certificate=("optimal", 0.4, 0.4))])
        assert [r["idx"] for r in s.samples("c1")] == [0, 1]
        assert s.certificates("c1") == {1: {"status": "optimal", "lower": 0.4, "upper": 0.4}}


THIRD_PARTY = '''
import torch
from torch import nn
import robench


class Foreign(robench.Model):
    """Not a TorchModel: a ReLU net it builds and trains itself, exposed to white-box attacks as layers()."""
    exposes = {"layers": "weights"}

    def __init__(self, params, info):
        super().__init__(params, info)
        torch.manual_seed(3)
        d = 1
        for s in info.input_shape:
            d *= s
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(d, 12), nn.ReLU(), nn.Linear(12, info.num_classes)).eval()

    def fit(self, x, y, ctx):
        opt = torch.optim.Adam(self.net.parameters(), lr=0.03)
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(self.net(x), y).backward()
            opt.step()
        self.net.eval()

    def state_dict(self):
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state):
        self.net.load_state_dict(state)
        self.net.eval()

    def scores(self, x):
        return self.net(x.to(self.device))

    def layers(self):
        return self.net

    def to(self, device):
        self.net.to(device)
        self.device = device
        return self


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("foreign-relu", Foreign, "a third-party ReLU network (test)")]
'''


@pytest.mark.parametrize("isolate", ["none", "process"])  # process: certificates cross the child's pipe
def test_a_third_party_network_gets_ratios_and_a_verified_bracket(tmp_path, isolate):
    (tmp_path / "foreign_plugin.py").write_text(THIRD_PARTY)
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""\
        name: certified-e2e
        dataset: {name: digits, split: test, limit: 6}
        seed: 0
        device: cpu
        epsilons: {Linf: [0.01, 0.05, 0.2]}
        models:
          - {name: foreign, plugin: foreign-relu}
        attacks:
          - {name: exact-linf, plugin: exact, params: {norm: Linf, time_limit: 20, init_iter: 20}}
          - {name: fab, plugin: fab, params: {norm: Linf}}
          - {name: pgd, plugin: pgd, params: {norm: Linf, steps: 20}}
          - {name: verify-linf, plugin: verify, params: {norm: Linf, bound_time: 5}}
        """))
    env = dict(os.environ, ROBENCH_CACHE=str(tmp_path / "cache"), PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "run", str(suite), "--out", str(tmp_path / "run"), "--quiet",
                           "--plugin", "foreign_plugin", "--isolate", isolate], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from robench.metrics import compute
    from robench.report.markdown import to_markdown

    with Store(tmp_path / "run" / "results.sqlite", create=False) as store:
        res = compute(store, "certified-e2e")
    assert not [r for r in res.rows if r.attack == "verify-linf"]  # a verifier is not an attack row
    (solver,) = res.certified["solver"]
    assert solver["model"] == "foreign" and solver["optimal"] > 0
    fab = solver["attacks"]["fab"]
    assert fab["n"] + fab["missed"] == solver["optimal"] and fab["n"] > 0
    assert fab["mean"] >= 1 - 1e-6 and fab["worst"] >= fab["median"] >= 1 - 1e-6  # no attack beats the exact minimum
    assert "pgd" not in solver["attacks"]  # bounded: no norm to compare
    (ver,) = res.certified["verified"]
    best = next(r for r in res.rows if r.attack == "best" and r.norm == "Linf")
    for eps, b in ver["eps"].items():
        assert b["attacked"] == best.robust_accuracy[eps]
        assert b["verified"] <= b["attacked"] + 1e-12
    assert any(b["verified"] > 0 for b in ver["eps"].values())
    assert not [w for w in res.warnings if "one of them is wrong" in w]
    from robench.report.html import suite_page

    for page in (to_markdown(res), suite_page(res, {})):
        assert "robust accuracy at eps 0.05: between" in page and "attacks against the exact minimum" in page
    # robench merge carries the certificates with their rows: the merged store gives the same sections
    from robench.merge import merge_stores

    merge_stores([tmp_path / "run" / "results.sqlite"], tmp_path / "merged.sqlite")
    with Store(tmp_path / "merged.sqlite", create=False) as store:
        merged = compute(store, "certified-e2e")
    assert merged.certified == res.certified


def test_verified_bound_never_above_attacked_on_a_trained_mlp():
    """On a small trained MLP: at every eps the verified robust samples are a subset of those no attack broke."""
    from test_adapters_support import correct_batch, tiny_mlp

    from robench.verify import verify
    from robench_plugins.attacks_fab import FAB

    model = tiny_mlp().eval()
    x, y = correct_batch(6)
    ops = lower(model.layers(), tuple(model.info.input_shape))
    adv = FAB(FAB.Params(norm="Linf", n_restarts=1)).run(model, x, y, eps=None, ctx=__import__("robench").Context())
    v = verify(model, x, y, adv, model.predict(x), Norm.Linf)
    found = np.where(v.success.numpy(), v.norms[Norm.Linf].numpy(), np.inf)
    for eps in (0.01, 0.05, 0.1, 0.3):
        ver = [verify_sample(ops, x[i].double().flatten().numpy(), int(y[i]), "Linf", eps).verified for i in range(len(x))]
        assert not any(ok and found[i] <= eps for i, ok in enumerate(ver)), eps
        assert sum(ver) <= sum(found > eps)


@pytest.mark.parametrize("norm", ["L1", "L2", "Linf", "L0"])
def test_refinement_keeps_adversarials_never_grows_them_and_reaches_the_linear_minimum(norm):
    """On a linear model one projection is the exact box-constrained minimum (L1/L2/Linf); L0's greedy
    reverts only shrink. Every refined row stays adversarial and is never larger than the attack's."""
    from robench.verify import verify
    from robench_plugins.exact.refine import refine

    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 12, generator=g)
    b = -0.5 * w.sum(1) + torch.randn(4, generator=g) * 0.3  # centred on the box: every class occurs
    lin = LinearModel(w, b, (1, 3, 4))
    x = torch.rand(16, 1, 3, 4, generator=g)
    y = lin.predict(x)
    want = minimal_perturbation(lin, x, y, norm)
    start = torch.rand(16, 1, 3, 4, generator=g)  # far-off points; keep those that are adversarial
    start = torch.where((lin.predict(start) != y)[:, None, None, None], start, torch.full_like(start, math.nan))
    start[0] = math.nan  # none found: stays none
    out, count = refine(lin, x, y, start, Norm(norm), steps=10)
    v0 = verify(lin, x, y, start, y, Norm(norm))
    v1 = verify(lin, x, y, out, y, Norm(norm))
    assert count.forward > 0 and (count.backward > 0) == (norm != "L0")
    assert torch.isnan(out[0]).all()
    assert bool((v1.success == v0.success).all()) and int(v0.success.sum()) >= 4
    for i in torch.nonzero(v0.success).flatten().tolist():
        after, before = float(v1.norms[Norm(norm)][i]), float(v0.norms[Norm(norm)][i])
        assert after <= before + 1e-9
        assert after >= float(want[i]) * (1 - 1e-4) - 1e-6  # nothing beats the exact minimum (float32 points)
        if norm != "L0":
            assert after == pytest.approx(float(want[i]), rel=1e-3), i


def test_refine_plugin_wraps_a_minimal_attack_and_records_its_cost():
    from test_adapters_support import correct_batch, tiny_mlp

    from robench.api import Context
    from robench.verify import verify
    from robench_plugins.exact import Refine

    model = tiny_mlp().eval()
    x, y = correct_batch(4)
    ctx = Context()
    plain = ctx.attack("pdpgd", {"norm": "L2", "steps": 50}).run(model, x, y, eps=None, ctx=Context())
    r = Refine(Refine.Params(attack="pdpgd", attack_params={"steps": 50}, norm="L2"), ctx=ctx)
    adv = r.run(model, x, y, eps=None, ctx=ctx)
    v0, v1 = verify(model, x, y, plain, y, Norm.L2), verify(model, x, y, adv, y, Norm.L2)
    assert bool(v1.success.all()) and bool(v0.success.all())
    assert bool((v1.norms[Norm.L2] <= v0.norms[Norm.L2] + 1e-9).all())  # same seedless run: refined is never larger
    assert ctx.records["refine_backward"] > 0 and "refine_improved" in ctx.records
