"""Query budgets and best-so-far tracking in the counting wrapper (robench.budget, robench.cell)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from robench.api import Attack, DatasetInfo, Model, NoParams, Norm
from robench.budget import BatchTracker, Budget, final_curve
from robench.cell import CellJob, attack_cell
from robench.counting import CountingModel
from robench.curves import TrackedRow, read_curves, write_curves
from robench.data import EvalData
from robench.errors import RobenchError
from robench.store import Store

D = 8
INFO = DatasetInfo("toy", (1, 1, D), ("a", "b"))


class Linear(Model):
    """Two classes, s = W x + b: the exact minimal L2 adversarial is the projection on the boundary."""

    trainable = False

    def __init__(self):
        super().__init__(NoParams(), INFO)
        g = torch.Generator().manual_seed(0)
        self.lin = torch.nn.Linear(D, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(2, D, generator=g))
            self.lin.bias.copy_(-self.lin.weight.sum(1) * 0.5)  # the boundary passes through the box's centre

    def scores(self, x):
        return self.lin(x.flatten(1))


def make_data(model: Model, n: int = 6) -> EvalData:
    g = torch.Generator().manual_seed(1)
    x = 0.4 + 0.2 * torch.rand(n, *INFO.input_shape, generator=g)
    with torch.no_grad():
        y = model.scores(x).argmax(1)  # every sample correctly classified
    y[0] = 1 - y[0]  # except the first: already broken at norm 0
    sha = [hashlib.sha256(x[i].numpy().tobytes()).hexdigest() for i in range(n)]
    return EvalData(INFO, x, y, list(range(n)), sha)


def make_job(data: EvalData, model: Model, norm: Norm = Norm.L2, eps=None, budget=None, curves=True) -> CellJob:
    with torch.no_grad():
        pred = model.scores(data.x).argmax(1).tolist()
    n = len(data.x)
    return CellJob(key="k", label="toy", model="m", model_plugin="linear", attack="a", attack_plugin="a", norm=norm, eps=eps,
                   source=None, via_surrogate=False, batch_size=n, positions=list(range(n)), clean_pred=pred, seed=0,
                   done_before=0, sha256=list(data.sha256), labels=data.y.tolist(), budget=budget, curves=curves)


def run_cell(attack: type[Attack], model: Model, data: EvalData, **job_kw):
    job = make_job(data, model, **job_kw)
    batches = list(attack_cell(job, attack, NoParams(), model, None, data, torch.device("cpu"), None, lambda m: None))
    return [r for b in batches for r in b.rows]


class OneStepExact(Attack):
    """Pass 1: scores and gradient at x; the exact boundary projection (tiny overshoot) is queried at pass 2,
    then three farther points: nothing after the second pass can improve the best."""

    kind = "minimal"
    seen: list[torch.Tensor] = []

    def run(self, model, x, y, *, eps, ctx, source=None):
        x = x.clone().requires_grad_(True)
        s = model.scores(x)
        other = 1 - y
        margin = s.gather(1, y[:, None]) - s.gather(1, other[:, None])
        (g,) = torch.autograd.grad(margin.sum(), x)
        m = margin.detach().flatten()
        step = (m / g.flatten(1).pow(2).sum(1) * 1.001).reshape(-1, 1, 1, 1)
        adv = (x.detach() - step * g).clamp(0, 1)
        with torch.no_grad():
            for k in range(4):
                model.scores(x.detach() + (adv - x.detach()) * (1 + k))  # 1x, 2x, 3x, 4x the step
        return adv


class RandomSearch(Attack):
    """Minimal L2 by random directions of growing radius: 20 queries per sample, returns the LAST adversarial it saw
    (not the best): the harness's best-so-far must then beat the attack's own result."""

    kind = "minimal"
    randomized = True
    steps = 20
    log: list = []

    def run(self, model, x, y, *, eps, ctx, source=None):
        last = torch.full_like(x, float("nan"))
        for k in range(self.steps):
            d = torch.randn_like(x)
            d = d / d.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
            cand = (x + d * (0.1 + 0.3 * torch.rand(len(x), 1, 1, 1))).clamp(0, 1)
            with torch.no_grad():
                s = model.scores(cand)
            RandomSearch.log.append(s.detach().clone())
            hit = s.argmax(1) != y
            last[hit] = cand[hit]
        return last


def test_one_step_exact_curve_is_flat_after_its_pass():
    model = Linear()
    data = make_data(model)
    rows = run_cell(OneStepExact, model, data)
    w = model.lin.weight.detach()
    exact = []
    for i, r in enumerate(rows):
        assert isinstance(r, TrackedRow)
        if i == 0:  # misclassified: broken at norm 0 before any pass
            assert r.curve == [[0, 0, 0.0]] and r.l2 == 0.0
            continue
        assert r.success
        with torch.no_grad():
            s = model.scores(data.x[i : i + 1])[0]
        y = int(data.y[i])
        exact.append(float((s[y] - s[1 - y]) / (w[y] - w[1 - y]).norm()))
        # one improvement, at the second forward pass (the first query of the projection), after one backward
        assert len(r.curve) == 1, r.curve
        f, b, v = r.curve[0]
        assert (f, b) == (2, 1)
        assert v == pytest.approx(r.l2, rel=1e-9)
        assert v == pytest.approx(exact[-1] * 1.001, rel=1e-4)


def test_best_so_far_is_monotone_and_the_final_result():
    model = Linear()
    data = make_data(model)
    RandomSearch.log = []
    rows = run_cell(RandomSearch, model, data)
    broken = [r for r in rows if r.success and r.clean_pred == r.label]
    assert broken, "the random search should break some samples"
    for r in broken:
        f = [p[0] for p in r.curve]
        v = [p[2] for p in r.curve]
        assert f == sorted(f) and all(a > b for a, b in zip(v, v[1:])), r.curve
        assert v[-1] == pytest.approx(r.l2, rel=1e-9)  # the curve ends at the stored result
        assert f[-1] <= RandomSearch.steps
    for r in rows:
        if not r.success:
            assert r.curve == []


def test_best_so_far_beats_the_returned_candidate_and_is_reverified():
    """The attack returns its last hit; the stored result is the smallest one it queried (verified)."""
    model = Linear()
    data = make_data(model)

    class NoTracking(RandomSearch):
        pass

    rows = run_cell(RandomSearch, model, data)
    # the attack's own result, verified without best-so-far: run the cell with tracking off (a surrogate run turns it off)
    job = make_job(data, model)
    from robench import cell as cell_mod

    orig = cell_mod.BatchTracker

    def untracked(*a, **kw):
        kw["track"] = False
        return orig(*a, **kw)

    cell_mod.BatchTracker = untracked
    try:
        own = [r for b in attack_cell(job, NoTracking, NoParams(), model, None, data, torch.device("cpu"), None, lambda m: None)
               for r in b.rows]
    finally:
        cell_mod.BatchTracker = orig
    assert not any(isinstance(r, TrackedRow) for r in own)
    better = 0
    for a, b in zip(rows, own):
        assert a.success >= b.success
        if b.success:
            assert a.l2 <= b.l2 + 1e-12
            better += a.l2 < b.l2 - 1e-9
    assert better, "returning the last hit should lose to the best hit on some sample"


def test_budget_blanks_scores_and_gradients_past_it():
    model = Linear()
    data = make_data(model)
    RandomSearch.log = []
    job = make_job(data, model, budget={"forward": 5})
    batches = list(attack_cell(job, RandomSearch, NoParams(), model, None, data, torch.device("cpu"), None, lambda m: None))
    rows = [r for b in batches for r in b.rows]
    assert batches[-1].records["budget_blanked_rows"] == (RandomSearch.steps - 5) * len(data.x)
    assert len(RandomSearch.log) == RandomSearch.steps
    for k, s in enumerate(RandomSearch.log):
        if k < 5:
            assert (s != 0).any(1).all(), f"call {k + 1} is within budget"
        else:
            assert (s == 0).all(), f"call {k + 1} is past the budget of 5 but got informative scores"
    for r in rows:
        assert all(p[0] <= 5 for p in r.curve), r.curve
        assert r.forward == RandomSearch.steps  # the reported count is the rows the model computed

    # gradients: a backward budget of 1 lets the first gradient through, zeroes the second
    job = make_job(data, model, budget={"backward": 1})
    x, y = data.x.clone(), data.y.clone()
    counting = CountingModel(model, "toy")
    counting.tracker = BatchTracker(x, y, torch.tensor(job.clean_pred), Norm.L2, None, Budget.from_dict(job.budget))
    grads = []
    for _ in range(2):
        xr = x.clone().requires_grad_(True)
        counting.scores(xr)[:, 0].sum().backward()
        grads.append(xr.grad.clone())
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() == 0
    assert counting.tracker.backward.tolist() == [1] * len(x)


def test_budgeted_curve_is_the_prefix_of_the_unbudgeted_one():
    model = Linear()
    data = make_data(model)
    full = run_cell(RandomSearch, model, data)
    cut = run_cell(RandomSearch, model, data, budget={"forward": 7})
    for a, b in zip(full, cut):
        prefix = [p for p in a.curve if p[0] <= 7]
        # same passes; norms equal up to float32 (tracked points are float32, a curve's last point the stored float64)
        assert [p[:2] for p in b.curve] == [p[:2] for p in prefix], (a.curve, b.curve)
        assert [p[2] for p in b.curve] == pytest.approx([p[2] for p in prefix], rel=1e-6)


def test_unattributed_calls_charge_every_sample():
    x = torch.rand(4, *INFO.input_shape)
    y = torch.zeros(4, dtype=torch.long)
    t = BatchTracker(x, y, y, Norm.L2, None, Budget(forward=3))
    out = torch.ones(8, 2)
    assert (t.forward_call(torch.cat([x, x]), out) == 1).all()  # 8 rows for 4 samples: 2 passes each
    assert t.forward.tolist() == [2] * 4
    assert (t.forward_call(x[:1], out[:1]) == 1).all()  # a subset: one pass each (the per-call rule)
    assert t.forward.tolist() == [3] * 4
    assert (t.forward_call(x[:2], out[:2]) == 0).all()  # budget spent: constant scores
    assert t.forward.tolist() == [3] * 4 and t.blanked_rows == 2


def test_focused_calls_are_attributed_to_their_samples():
    x = 0.2 + 0.5 * torch.rand(4, *INFO.input_shape)  # inside the box after the 0.01 shift
    y = torch.zeros(4, dtype=torch.long)
    t = BatchTracker(x, y, y, Norm.L2, None, Budget(forward=5))
    rows = torch.tensor([1, 3])
    with t.focus(rows):
        wrong = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # the first row (sample 1) is adversarial
        t.forward_call(x[rows] + 0.01, wrong)
        t.forward_call(torch.cat([x[rows], x[rows]]), torch.ones(4, 2))  # 2 copies: 2 passes for samples 1, 3 only
    assert t.forward.tolist() == [0, 3, 0, 3]
    assert math.isclose(t.best[1].item(), 0.01 * math.sqrt(D), rel_tol=1e-4) and math.isinf(t.best[3].item())
    assert torch.allclose(t.best_x[1], x[1] + 0.01) and torch.isnan(t.best_x[0]).all()
    assert t.forward_call(x, torch.ones(4, 2)) is not None and t.forward.tolist() == [1, 4, 1, 4]  # focus ended


class ChunkedLibrary(Attack):
    """Like a library adapter: run_on_correct hands the correctly classified samples over in chunks of 2;
    each chunk queries the exact boundary projection of its own samples (one call of len(chunk) rows)."""

    kind = "minimal"

    def run(self, model, x, y, *, eps, ctx, source=None):
        from robench.adapters import run_on_correct

        def project(xc, yc):
            xg = xc.clone().requires_grad_(True)
            s = model.scores(xg)
            margin = s.gather(1, yc[:, None]) - s.gather(1, (1 - yc)[:, None])
            (g,) = torch.autograd.grad(margin.sum(), xg)
            step = (margin.detach().flatten() / g.flatten(1).pow(2).sum(1) * 1.001).reshape(-1, 1, 1, 1)
            adv = (xc - step * g).clamp(0, 1)
            with torch.no_grad():
                model.scores(adv)
            return torch.full_like(xc, float("nan"))  # returns nothing: only the tracked best can succeed

        return run_on_correct(model, x, y, project, ctx, chunk=2)


def test_chunked_library_calls_are_tracked_per_sample():
    model = Linear()
    data = make_data(model, n=7)
    rows = run_cell(ChunkedLibrary, model, data, budget={"forward": 100})
    assert rows[0].success and rows[0].l2 == 0  # misclassified from the start
    assert all(r.success for r in rows[1:])  # every attacked sample's own projection was tracked
    # found at the sample's third pass: run_on_correct's prediction, then its own chunk's two calls (no other chunk's)
    assert all(r.curve[-1][0] == 3 for r in rows[1:]), [r.curve for r in rows]


def test_exposed_forward_methods_are_refused_under_a_budget():
    class Exposing(Linear):
        exposes = {"logits": "forward"}

        def logits(self, x):
            return self.scores(x)

    m = Exposing()
    c = CountingModel(m, "toy")
    x = torch.rand(2, *INFO.input_shape)
    c.logits(x)
    c.tracker = BatchTracker(x, torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long), Norm.L2, None, Budget(5))
    with pytest.raises(RobenchError, match="query budget"):
        c.logits(x)


def test_bounded_curve_is_the_first_success():
    assert final_curve([(3, 0, 0.2), (9, 0, 0.1)], True, 0.25, 20, 0, bounded=True) == [[3, 0, 0.2]]
    assert final_curve([], True, 0.25, 20, 0, bounded=True) == [[20, 0, 0.25]]
    # minimal: points below the verified result are dropped, the result closes the curve
    assert final_curve([(1, 0, 0.5), (4, 0, 0.3)], True, 0.4, 10, 2) == [[1, 0, 0.5], [10, 2, 0.4]]
    assert final_curve([(1, 0, 0.5)], False, math.nan, 10, 2) == []


def test_curves_round_trip_through_the_store(tmp_path):
    model = Linear()
    data = make_data(model)
    rows = run_cell(OneStepExact, model, data)
    with Store(tmp_path / "r.sqlite") as store:
        assert read_curves(store, "k") == {}  # no table yet: a store from before curves
        assert write_curves(store, "k", rows) == len(rows)
        got = read_curves(store, "k")
    assert got == {r.idx: r.curve for r in rows}


def test_suite_budget_schema_and_keys():
    from robench.suite import AttackEntry, BudgetSpec, Suite

    base = dict(name="s", dataset={"name": "digits"}, models=[{"name": "m", "plugin": "mlp"}],
                attacks=[{"name": "a", "plugin": "pgd"}])
    plain = Suite(**base)
    assert plain.budget_for(plain.attacks[0]) is None
    hashed = plain.content_hash()
    wide = Suite(**base, budget={"forward": 100})
    assert wide.budget_for(wide.attacks[0]) == {"forward": 100}
    assert wide.content_hash() != hashed
    own = AttackEntry(name="b", plugin="pgd", budget={"forward": 10, "backward": 10})
    assert wide.budget_for(own) == {"forward": 10, "backward": 10}
    with pytest.raises(ValueError, match="forward, backward or both"):
        BudgetSpec()
    with pytest.raises(ValueError):
        BudgetSpec(forward=0)


def test_best_so_far_crosses_the_process_boundary_checked():
    """--isolate process: the child's kept candidates, curves and passes come back as JSON + raw bytes, checked."""
    import json

    from robench.isolation import decode_message, encode_message

    model = Linear()
    data = make_data(model)
    job = make_job(data, model)
    batches = list(attack_cell(job, RandomSearch, NoParams(), model, None, data, torch.device("cpu"), None, lambda m: None,
                               verify_rows=False))
    cand = batches[0].candidates
    assert cand.best is not None and cand.curves is not None
    raw = encode_message(("batch", cand, {}, []))
    got = decode_message(raw, job, set())["candidates"]
    assert torch.equal(torch.nan_to_num(got.best, nan=-1.0), torch.nan_to_num(cand.best, nan=-1.0))
    assert got.curves == cand.curves and got.spent == cand.spent
    line, _, payload = raw.partition(b"\n")
    head = json.loads(line)
    head["curves"][1] = [[1, 0, float("nan")]]
    with pytest.raises(RobenchError, match="best-so-far curves"):
        decode_message(json.dumps(head).encode() + b"\n" + payload, job, set())
    head = json.loads(line)
    with pytest.raises(RobenchError, match="size does not match"):
        decode_message(json.dumps(head).encode() + b"\n" + payload[: len(payload) // 2], job, set())


def test_strength_at_a_budget_reads_the_curves():
    from robench.curves import best_at, strength_at

    curves = [[[0, 0, 0.0]], [[3, 1, 0.8], [10, 4, 0.4]], [[50, 0, 0.2]], []]
    assert [best_at(c, 5) for c in curves] == [0.0, 0.8, math.inf, math.inf]
    assert best_at(curves[1], 3, backward=True) == 0.8 and best_at(curves[1], 4, backward=True) == 0.4
    s = strength_at(curves, 10, Norm.L2, eps=0.5)
    assert s == {"n": 4, "median_norm": math.inf, "robust": 0.5}  # (0.4 + inf) / 2; samples 2, 3 unbroken at 10
    s = strength_at(curves, 100, Norm.L2, eps=0.5)
    assert s["median_norm"] == pytest.approx(0.3) and s["robust"] == 0.25


@pytest.mark.parametrize("norm", list(Norm))
def test_tracked_best_matches_a_row_by_row_reference(norm):
    """Best-so-far over calls with few candidate rows (norms of those rows only) and many (norms of the batch),
    focused and not, with NaN and out-of-box rows: the same bests and curves as the rules applied row by row."""
    from robench.norms import lp_norm

    g = torch.Generator().manual_seed(3)
    n, shape = 12, (3, 4, 4)
    x = torch.rand(n, *shape, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    clean = y.clone()
    clean[5] = 1  # already misclassified: norm 0 from the start
    tracker = BatchTracker(x, y, clean, norm, None, None)
    best = [0.0 if i == 5 else math.inf for i in range(n)]
    curves = [[(0, 0, 0.0)] if i == 5 else [] for i in range(n)]
    spent = [0] * n
    focus_rows = torch.tensor([1, 4, 7, 10, 11])
    for step in range(30):
        rows = focus_rows if step % 3 == 2 else torch.arange(n)
        q = (x[rows] + 0.3 * torch.randn(len(rows), *shape, generator=g) * (torch.rand(len(rows), 1, 1, 1, generator=g) < 0.5)).clamp(0, 1)
        if step == 4:
            q[0] = float("nan")
            q[1, 0, 0, 0] = 1.5  # out of the box
        frac = 0.1 if step % 2 else 0.9  # few candidates (subset path) or many (whole batch)
        wrong = torch.rand(len(rows), generator=g) < frac
        out = torch.zeros(len(rows), 2)
        out[wrong, 1] = 1.0
        if step % 3 == 2:
            with tracker.focus(rows):
                tracker.forward_call(q, out)
        else:
            tracker.forward_call(q, out)
        for j, i in enumerate(rows.tolist()):
            spent[i] += 1
            v = float(lp_norm(q[j : j + 1].float() - x[i : i + 1].float(), norm)[0])
            ok = bool(wrong[j]) and bool(torch.isfinite(q[j]).all()) and 0 <= float(q[j].min()) and float(q[j].max()) <= 1
            if ok and v < best[i]:
                best[i] = v
                curves[i].append((spent[i], 0, v))
    assert tracker.forward.tolist() == spent
    assert tracker.best.tolist() == pytest.approx(best, rel=1e-6)
    assert [[(f, b) for f, b, _ in c] for c in tracker.curves] == [[(f, b) for f, b, _ in c] for c in curves]
    assert sum(len(c) for c in curves) > n  # the calls did improve some samples more than once


def test_repeated_focus_rows_are_each_a_pass_of_their_sample():
    """A population call (several candidate rows per sample, in any order): every row is one pass of its own
    sample; under a budget a sample's rows past its passes are blanked in call order; the best of a call is
    its smallest adversarial row of that sample, recorded with the passes spent after the call."""
    from robench.norms import lp_norm

    g = torch.Generator().manual_seed(5)
    n = 5
    x = 0.3 + 0.4 * torch.rand(n, *INFO.input_shape, generator=g)
    y = torch.zeros(n, dtype=torch.long)
    t = BatchTracker(x, y, y, Norm.L2, None, Budget(forward=6, backward=4))
    spent, best, curves = [0] * n, [math.inf] * n, [[] for _ in range(n)]
    for call in range(6):
        rows = torch.randint(0, n, (9,), generator=g)
        q = (x[rows] + 0.2 * torch.randn(len(rows), *INFO.input_shape, generator=g)).clamp(0, 1)
        scores = torch.zeros(len(rows), 2)
        wrong = torch.rand(len(rows), generator=g) < 0.6
        scores[wrong, 1] = 1.0
        scores[~wrong, 0] = 1.0
        with t.focus(rows):
            got = t.forward_call(q, scores)
        live = []
        for i in rows.tolist():  # the reference: rows in call order, each within its sample's budget or not
            live.append(spent[i] < 6)
            spent[i] += live[-1]
        live = torch.tensor(live)
        assert torch.equal(got[~live], torch.zeros(int((~live).sum()), 2)) and torch.equal(got[live], scores[live])
        for i in set(rows.tolist()):
            mine = [j for j in range(len(rows)) if rows[j] == i and live[j] and wrong[j]]
            if mine:
                v = min(float(lp_norm(q[j : j + 1] - x[i : i + 1], Norm.L2)[0]) for j in mine)
                if v < best[i]:
                    best[i] = v
                    curves[i].append(spent[i])
    assert t.forward.tolist() == spent and max(spent) == 6  # the budget was reached
    assert t.best.tolist() == pytest.approx(best, rel=1e-5)
    assert [[f for f, _, _ in c] for c in t.curves] == curves
    assert any(len(c) > 1 for c in curves)
    # a backward pass is charged as its forward call was focused, also when it runs after the block
    rows = torch.tensor([2, 2, 0])
    with t.focus(rows):
        state = t.focus_state()
    before = t.backward.clone()
    assert t.backward_mask(3, state) is None
    assert (t.backward - before).tolist() == [1, 0, 2, 0, 0]


@pytest.mark.parametrize("plugin", ["pdpgd", "jsma", "pixel"])
def test_native_attacks_on_subsets_are_tracked_during_the_run(plugin):
    """PDPGD (on the correctly classified samples), JSMA (one run per target and theta) and the pixel attack (a
    population per image) query subsets or populations; they name each row's sample, so their best-so-far curves
    show what they found along the way, not only their final result."""
    from robench.plugins import get_registry

    spec = get_registry().get("attack", plugin)
    g = torch.Generator().manual_seed(2)
    info = DatasetInfo("toy", (3, 4, 4), tuple("abc"))

    class Conv(Model):
        trainable = False

        def __init__(self):
            super().__init__(NoParams(), info)
            self.lin = torch.nn.Linear(48, 3)
            with torch.no_grad():
                self.lin.weight.copy_(torch.randn(3, 48, generator=g))
                self.lin.bias.zero_()

        def scores(self, x):
            return self.lin(x.flatten(1))

    model = Conv()
    x = torch.rand(8, 3, 4, 4, generator=g)
    with torch.no_grad():
        y = model.scores(x).argmax(1)
    y[0] = (y[0] + 1) % 3  # one sample misclassified: the attacks work on a subset of the batch
    sha = [hashlib.sha256(x[i].numpy().tobytes()).hexdigest() for i in range(8)]
    data = EvalData(info, x, y, list(range(8)), sha)
    params = spec.factory.Params(**({"norm": "L0", "steps": 60} if plugin == "pdpgd" else {}))
    job = make_job(data, model, norm=Norm.L0)
    batches = list(attack_cell(job, spec.factory, params, model, None, data, torch.device("cpu"), None, lambda m: None))
    rows = [r for b in batches for r in b.rows]
    found = [r for r in rows[1:] if r.success]
    assert found, "the attack broke nothing on this model"
    # curves start before the batch's last pass: the tracker saw the attack's own queries
    last = max(r.curve[-1][0] for r in found)
    assert any(r.curve[0][0] < last for r in found), [r.curve for r in found]
    assert len({r.curve[-1][0] for r in found}) > 1, "each sample's best is dated by its own passes"
    assert all(r.curve[-1][2] == r.l0 for r in found)
