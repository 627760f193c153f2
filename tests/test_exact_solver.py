"""The exact solver (plugin ``exact``) against known answers: closed-form linear minima, brute force
over activation patterns (and pixel subsets for L0) on tiny ReLU nets, random search on a tiny CNN,
the harness's verification, and the attacks it must never be beaten by."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("highspy")
pytest.importorskip("pyscipopt")

import robench  # noqa: E402
from robench.api import Context, DatasetInfo, NoParams, Norm  # noqa: E402
from robench.testing import LinearModel, minimal_perturbation  # noqa: E402
from robench_plugins.exact import Exact, UnsupportedNetwork, lower, robench_attacks, solve_sample  # noqa: E402
from robench_plugins.exact.network import Affine, ReLU, forward  # noqa: E402
from robench_plugins.exact.solver import norm_of  # noqa: E402

from linear_nets import linear_pair  # noqa: E402

NORMS = ["L0", "L1", "L2", "Linf"]


class NetModel(robench.TorchModel):
    """A TorchModel around a given module (the solver reads ``net``)."""

    trainable = False

    def __init__(self, net: nn.Module, shape, classes: int):
        self._given = net
        super().__init__(NoParams(), DatasetInfo("t", tuple(shape), tuple(str(i) for i in range(classes))))

    def build(self):
        return self._given.eval()


def _linear(d=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c, d, generator=g)
    b = torch.randn(c, generator=g) * 0.3
    return w, b


@pytest.mark.parametrize("norm,solver", [(n, "auto") for n in NORMS] + [("L2", "qp-bb")])
def test_linear_model_matches_the_closed_form_box_constrained_minimum(norm, solver):
    w, b = _linear()
    lin, net = linear_pair(w, b)
    ops = lower(net, (1, 2, 3))
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 1, 2, 3, generator=g)
    y = lin.predict(x)
    want = minimal_perturbation(lin, x, y, norm)  # margin 0, box included
    for i in range(len(x)):
        res = solve_sample(ops, x[i].double().flatten().numpy(), int(y[i]), norm, start=None, channels=1, margin=0.0,
                           time_limit=20, solver=solver)
        if math.isinf(float(want[i])):
            assert res.status == "robust"
            continue
        assert res.status == "optimal", res
        assert res.lower <= float(want[i]) * (1 + 1e-6) + 1e-9
        assert res.upper == pytest.approx(float(want[i]), rel=1e-5, abs=1e-6 if norm != "L0" else 0)
        assert forward(ops, res.x[None])[0].argmax() != int(y[i])


@pytest.mark.parametrize("solver", ["auto", "qp-bb"])
def test_l2_on_a_linear_model_with_and_without_the_box_active(solver):
    """L2 through SCIP (auto) and qp-bb on 120 inputs (more than the 100 up to which auto used SCIP
    before): the closed-form minimum where the unconstrained projection onto the nearest class's
    hyperplane stays inside [0, 1] (box inactive) and where it leaves it (box active)."""
    d = 120
    g = torch.Generator().manual_seed(5)
    w = torch.randn(3, d, generator=g) / math.sqrt(d)
    b = torch.tensor([0.4, 0.0, -0.1])
    lin, net = linear_pair(w, b, (1, d))
    ops = lower(net, (1, d))
    centre = 0.5 + 0.05 * (torch.rand(3, d, generator=g) - 0.5)  # far from the box faces
    edge = torch.where(torch.rand(3, d, generator=g) < 0.5, 0.01, 0.99)  # on them
    x = torch.cat([centre, edge]).view(-1, 1, d)
    y = lin.predict(x)
    want = minimal_perturbation(lin, x, y, "L2")
    kinds = set()
    for i in range(len(x)):
        x0 = x[i].double().flatten()
        wd, bd = w.double(), b.double()
        yi = int(y[i])
        # unconstrained minimum: the nearest wrong class's hyperplane, (margin / ||a||) along a
        gaps = [(float((wd[yi] - wd[k]) @ x0 + bd[yi] - bd[k]) / float((wd[k] - wd[yi]).norm()), k) for k in range(3) if k != yi]
        dist, k = min(gaps)
        free = x0 + dist * (wd[k] - wd[yi]) / (wd[k] - wd[yi]).norm()
        box_active = bool(((free < 0) | (free > 1)).any())
        kinds.add(box_active)
        if not box_active:
            assert float(want[i]) == pytest.approx(dist, rel=1e-9)
        else:
            assert float(want[i]) > dist * (1 + 1e-6)
        res = solve_sample(ops, x0.numpy(), yi, "L2", start=None, channels=1, margin=0.0, time_limit=30, solver=solver)
        assert res.status == "optimal", res
        assert res.lower <= float(want[i]) * (1 + 1e-6) + 1e-9, (res, float(want[i]))
        assert res.upper == pytest.approx(float(want[i]), rel=1e-5)
        assert ((res.x >= 0) & (res.x <= 1)).all()
    assert kinds == {True, False}  # both cases were exercised


def _tiny_relu(seed=0, d=4, hidden=5, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, classes)).eval()


def _region_minimum(A1, b1, A2, b2, x0, label, norm, free=None):
    """Brute force: minimum over activation patterns and wrong classes of the convex problem in
    that linear region (LP for L1/Linf, QP for L2, feasibility with ``free`` coordinates for L0)."""
    import highspy

    d, hdim = len(x0), A1.shape[0]
    best = math.inf
    for pattern in itertools.product([0, 1], repeat=hdim):
        s = np.array(pattern, dtype=float)
        for k in range(A2.shape[0]):
            if k == label:
                continue
            # rows: region (s_j = 1: z_j >= 0, else z_j <= 0) and class margin (f_k - f_y >= 0)
            G = np.vstack([(2 * s - 1)[:, None] * A1, ((A2[k] - A2[label]) * s) @ A1])
            h = np.concatenate([-(2 * s - 1) * b1, [-(((A2[k] - A2[label]) * s) @ b1 + b2[k] - b2[label])]])
            val = _convex_min(G, h, x0, norm, free)
            best = min(best, val)
    return best


def _convex_min(G, h, x0, norm, free):
    """min ||x - x0|| s.t. G x >= h, 0 <= x <= 1 (L0: feasibility with only ``free`` coordinates moving)."""
    import highspy

    d = len(x0)
    hs = highspy.Highs()
    hs.setOptionValue("output_flag", False)
    inf = highspy.kHighsInf
    if norm == "L0":
        lo = np.where(free, 0.0, x0)
        hi = np.where(free, 1.0, x0)
        cols, cost, rows = d, np.zeros(d), [np.hstack([G])]
    elif norm == "Linf":  # x, t
        lo, hi = np.r_[np.zeros(d), 0.0], np.r_[np.ones(d), inf]
        cols, cost = d + 1, np.r_[np.zeros(d), 1.0]
        rows = [np.hstack([G, np.zeros((len(G), 1))]), np.hstack([np.eye(d), np.ones((d, 1))]), np.hstack([-np.eye(d), np.ones((d, 1))])]
        h = np.concatenate([h, x0, -x0])
    elif norm == "L1":  # x, p, n with x - p + n = x0 written as two inequalities
        lo, hi = np.r_[np.zeros(d), np.zeros(2 * d)], np.r_[np.ones(d), np.full(2 * d, inf)]
        cols, cost = 3 * d, np.r_[np.zeros(d), np.ones(2 * d)]
        E = np.hstack([np.eye(d), -np.eye(d), np.eye(d)])
        rows = [np.hstack([G, np.zeros((len(G), 2 * d))]), E, -E]
        h = np.concatenate([h, x0, -x0])
    else:
        lo, hi, cols, cost, rows = np.zeros(d), np.ones(d), d, -2 * x0, [G]
    M = np.vstack(rows)
    hs.addVars(cols, lo, hi)
    hs.changeColsCost(cols, np.arange(cols), cost)
    for r, v in zip(M, h):
        nz = np.nonzero(r)[0]
        hs.addRow(v, inf, len(nz), nz, r[nz])
    if norm == "L2":
        hs.passHessian(d, d, highspy.HessianFormat.kTriangular, np.arange(d + 1), np.arange(d), np.full(d, 2.0))
    hs.run()
    if hs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return math.inf
    if norm == "L0":
        return 0.0
    val = hs.getInfo().objective_function_value
    return math.sqrt(max(val + float(x0 @ x0), 0.0)) if norm == "L2" else val


@pytest.mark.parametrize("norm,solver", [(n, "auto") for n in NORMS] + [("L2", "qp-bb")])
def test_tiny_relu_net_matches_brute_force_over_activation_patterns(norm, solver):
    net = _tiny_relu()
    ops = lower(net, (1, 2, 2))
    A1, b1 = net[1].weight.detach().double().numpy(), net[1].bias.detach().double().numpy()
    A2, b2 = net[3].weight.detach().double().numpy(), net[3].bias.detach().double().numpy()
    rng = np.random.default_rng(1)
    for _ in range(3):
        x0 = rng.uniform(0.05, 0.95, 4)
        label = int(forward(ops, x0[None])[0].argmax())
        if norm == "L0":
            want = math.inf
            for k in range(1, 5):
                for subset in itertools.combinations(range(4), k):
                    free = np.isin(np.arange(4), subset)
                    if _region_minimum(A1, b1, A2, b2, x0, label, "L0", free) == 0.0:
                        want = k
                        break
                if want < math.inf:
                    break
        else:
            want = _region_minimum(A1, b1, A2, b2, x0, label, norm)
        res = solve_sample(ops, x0, label, norm, start=None, channels=1, margin=0.0, time_limit=30, solver=solver)
        if math.isinf(want):
            assert res.status == "robust"
            continue
        assert res.status == "optimal", res
        assert res.lower <= want * (1 + 1e-6) + 1e-9, (res, want)
        assert res.upper == pytest.approx(want, rel=1e-4, abs=1e-6), (res, want)


def _tiny_cnn():
    torch.manual_seed(1)  # a net whose box holds two classes (checked: 7% / 93% of random points)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 2, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2, stride=2, ceil_mode=True),
        nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3),
    )
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[5].weight.mul_(3)
        net[7].weight.mul_(3)
    return net.eval()


@pytest.mark.parametrize("norm", ["L1", "L2", "Linf"])
def test_tiny_cnn_minimum_is_never_beaten_by_random_search(norm):
    net = _tiny_cnn()
    ops = lower(net, (1, 2, 2))
    rng = np.random.default_rng(0)
    x0 = np.array([0.3, 0.7, 0.6, 0.2])
    label = int(forward(ops, x0[None])[0].argmax())
    res = solve_sample(ops, x0, label, norm, start=None, channels=1, margin=0.0, time_limit=30)
    assert res.status == "optimal", res
    # rays towards random box points: the first adversarial on each ray bounds the minimum from above
    X = rng.uniform(0, 1, (4000, 4))
    ts = np.linspace(0, 1, 401)[1:]
    best = math.inf
    for t in ts:
        P = x0 + t * (X - x0)
        adv = forward(ops, P).argmax(1) != label
        if adv.any():
            d = P[adv] - x0
            n = {"L1": np.abs(d).sum(1), "L2": np.sqrt((d * d).sum(1)), "Linf": np.abs(d).max(1)}[norm]
            best = min(best, float(n.min()))
    assert best >= res.lower * (1 - 1e-6)
    assert res.upper <= best * (1 + 1e-6) + 1e-9


def test_lowering_matches_torch_and_rejects_unknown_modules():
    ops = lower(_tiny_cnn(), (1, 2, 2))
    assert [type(o).__name__ for o in ops] == ["Affine", "ReLU", "MaxPool", "Affine", "ReLU", "Affine"]
    with pytest.raises(UnsupportedNetwork, match="Tanh"):
        lower(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), (1, 2, 2))

    class Skip(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(UnsupportedNetwork, match="disagrees"):
        lower(nn.Sequential(Skip(nn.Flatten(), nn.Linear(4, 2))), (1, 2, 2))


def _digits_mlp():
    from test_adapters_support import correct_batch, tiny_mlp

    x, y = correct_batch(3)
    return tiny_mlp(), x, y


@pytest.mark.parametrize("norm", NORMS)
def test_plugin_results_pass_verification_and_no_attack_beats_them(norm):
    from robench.verify import verify
    from robench_plugins.attacks_fab import FAB

    from robench.counting import CountingModel

    model, x, y = _digits_mlp()
    model.eval()
    attack = Exact(Exact.Params(norm=norm, time_limit=30))
    ctx = Context()
    # as the harness hands it over: through the counting wrapper, which gates layers() on the need
    adv = attack.run(CountingModel(model, needs=Exact.needs), x, y, eps=None, ctx=ctx)
    v = verify(model, x, y, adv, model.predict(x), Norm(norm))
    assert not v.rejected.any(), v.reasons
    assert bool(v.success.all())
    assert ctx.records["exact_optimal"] + ctx.records["exact_bracket"] == len(x)
    for r, n in zip(attack.results, v.norms[Norm(norm)].tolist()):
        assert r.lower <= n * (1 + 1e-6) + 1e-9
        assert n == pytest.approx(r.upper, rel=1e-5, abs=1e-6)
    if norm != "L0":  # FAB must not find anything smaller than the certified minimum
        fab_adv = FAB(FAB.Params(norm=norm, n_restarts=2)).run(model, x, y, eps=None, ctx=Context())
        vf = verify(model, x, y, fab_adv, model.predict(x), Norm(norm))
        for r, n, ok in zip(attack.results, vf.norms[Norm(norm)].tolist(), vf.success.tolist()):
            if ok:
                assert n >= r.lower * (1 - 1e-6)


def test_plugin_is_registered_with_every_norm_and_refuses_a_model_without_a_network():
    spec = robench_attacks()[0]
    assert spec.name == "exact" and set(spec.norms) == {Norm.L0, Norm.L1, Norm.L2, Norm.Linf}
    w, b = _linear()
    lin = LinearModel(w, b, (1, 2, 3))
    from robench.counting import CountingModel
    from robench.errors import RobenchError

    with pytest.raises(RobenchError, match="layers"):
        Exact(Exact.Params(norm="L2")).run(lin, torch.rand(2, 1, 2, 3), torch.zeros(2, dtype=torch.long), eps=None, ctx=Context())
    net = NetModel(nn.Sequential(nn.Flatten(), nn.Linear(6, 4)), (1, 2, 3), 4)
    with pytest.raises(RobenchError, match="declare needs 'weights'"):  # the wrapper refuses an undeclared read
        CountingModel(net, needs=("gradients",)).layers()


def test_a_suite_runs_the_exact_solver_through_the_harness(tmp_path):
    """robench run: the harness hands the attack a wrapped model whose layers() it may read
    because it declares the need 'weights'; every stored row is a verified adversarial."""
    import os
    import subprocess
    import sys

    from robench.results import read_cells

    suite = tmp_path / "exact.yaml"
    suite.write_text(
        "name: exact-e2e\n"
        "dataset: {name: digits, split: test, limit: 3}\n"
        "seed: 0\n"
        "device: cpu\n"
        "models:\n"
        "  - {name: mlp, plugin: mlp, params: {hidden: 16, layers: 1, epochs: 20}}\n"
        "attacks:\n"
        "  - {name: exact-linf, plugin: exact, params: {norm: Linf, time_limit: 20, init_iter: 20}}\n"
        "  - {name: exact-l1, plugin: exact, params: {norm: L1, time_limit: 20, init_iter: 20}}\n"
    )
    env = dict(os.environ, ROBENCH_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "run", str(suite), "--out", str(tmp_path / "run"), "--quiet"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = read_cells(tmp_path / "run" / "results.sqlite")
    assert {c["attack"] for c in cells} == {"exact-linf", "exact-l1"}
    for c in cells:
        rows = c["samples"]
        assert len(rows) == 3 and not any(r["rejected"] for r in rows)
        attacked = [r for r in rows if r["clean_pred"] == r["label"]]
        assert attacked and all(r["success"] for r in attacked), [(r["label"], r["clean_pred"], r["success"], r["linf"]) for r in rows]
        records = c.get("records") or {}
        assert records.get("exact_optimal", 0) + records.get("exact_bracket", 0) == len(attacked), records


def test_more_starting_attacks_only_shrink_the_region_and_keep_the_optimum():
    from test_adapters_support import correct_batch, tiny_mlp

    model = tiny_mlp().eval()
    x, y = correct_batch(1)
    plain = Exact(Exact.Params(norm="L2", time_limit=20))
    more = Exact(Exact.Params(norm="L2", time_limit=20, init_attacks=("fb-ddn", "pdpgd")))
    plain.run(model, x, y, eps=None, ctx=Context())
    more.run(model, x, y, eps=None, ctx=Context())
    for a, b in zip(plain.results, more.results):
        assert a.status == b.status == "optimal"
        assert b.upper == pytest.approx(a.upper, rel=1e-4)
