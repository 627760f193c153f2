"""The batched SCD trainer: exact threshold search, agreement with the per-vote reference, progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robench_plugins.zero_one import reference, scd


def _brute_force(q: np.ndarray, e_lo: np.ndarray, e_hi: np.ndarray) -> int:
    """Min over every threshold that splits the sorted values (and the two outside ones)."""
    v = np.unique(q)
    ts = np.concatenate([[v[0] - 1], (v[:-1] + v[1:]) / 2, [v[-1]]])
    return min(int(np.where(q > t, e_hi, e_lo).sum()) for t in ts)


@pytest.mark.parametrize("seed", range(5))
def test_best_cut_is_exact_and_its_threshold_achieves_it(seed):
    rng = np.random.default_rng(seed)
    rows, n = 7, 15
    q = np.round(rng.normal(size=(rows, n)), 1).astype(np.float32)  # rounding makes ties
    q[0] = 0.5  # all equal: only "all lo" and "all hi" remain
    e_lo = rng.integers(0, 4, size=(rows, n))
    e_hi = rng.integers(0, 4, size=(rows, n))
    loss, thr = scd.best_cut(torch.from_numpy(q), torch.from_numpy(e_lo - e_hi), torch.from_numpy(e_hi.sum(1)))
    for r in range(rows):
        assert int(loss[r]) == _brute_force(q[r], e_lo[r], e_hi[r])
        assert int(np.where(q[r] > thr[r].item(), e_hi[r], e_lo[r]).sum()) == int(loss[r])
        assert reference.best_cut_1d(q[r], e_lo[r], e_hi[r])[0] == int(loss[r])


def test_numba_kernel_equals_torch_sort_path():
    g = torch.Generator().manual_seed(0)
    V, K, nb, d, N = 3, 6, 40, 9, 50
    src = (torch.randint(0, 5, (1, d, N), generator=g) / 4).float()  # few distinct values: ties
    base = (torch.randint(-8, 8, (V, nb), generator=g) / 8).float()
    batch = torch.stack([torch.randperm(N, generator=g)[:nb] for _ in range(V)])
    coords = torch.stack([torch.randperm(d, generator=g)[:K] for _ in range(V)])
    steps = (torch.randint(0, 2, (V, K), generator=g) * 2 - 1).float() * 0.17
    dlt = torch.randint(-3, 4, (V, nb), generator=g, dtype=torch.int32)
    e_hi = torch.randint(0, 50, (V,), generator=g)
    lt, tt = scd.candidate_cuts(base, src, batch, coords, steps, dlt, e_hi, kernel="torch")
    ln, tn = scd.candidate_cuts(base, src, batch, coords, steps, dlt, e_hi, kernel="numba")
    assert torch.equal(lt, ln)
    assert torch.equal(tt, tn)
    # one row per vote (the accepted move's threshold): the numba row kernel equals best_cut
    rl, rt = scd.row_cut(base, dlt, e_hi, kernel="numba")
    bl, bt = scd.best_cut(base, dlt, e_hi)
    assert torch.equal(rl, bl) and torch.equal(rt, bt) and torch.equal(rl, lt[:, 0])


@pytest.mark.parametrize("step", [0.17, 0.25])
def test_signed_kernel_equals_the_sorting_kernel(step):
    """The output node's merge kernel (src of +1/-1 only) returns exactly the radix kernel's losses
    and thresholds, with ties inside and across the two shifted runs, -0.0 and padded rows."""
    g = torch.Generator().manual_seed(1)
    V, h, nb, N = 4, 7, 300, 400
    sg = torch.where(torch.rand((V, h, N), generator=g) < 0.5, 1.0, -1.0)
    base = (torch.randint(-6, 7, (V, nb), generator=g) * 0.25).float()  # base +- 0.25 lands on other entries
    base[0, :5] = -0.0
    batch = torch.stack([torch.randperm(N, generator=g)[:nb] for _ in range(V)])
    coords = torch.stack([torch.randperm(h, generator=g) for _ in range(V)])
    steps = (torch.randint(0, 2, (V, h), generator=g) * 2 - 1).float() * step
    dlt = torch.randint(-3, 4, (V, nb), generator=g, dtype=torch.int32)
    e_hi = torch.randint(0, 50, (V,), generator=g)
    lengths = torch.tensor([nb, 1, 17, nb - 3])
    cases = [(base, None), (base, lengths), (base.sort(dim=1).values, None)]  # sorted rows skip the sort
    for base, lens in cases:
        want = scd.candidate_cuts(base, sg, batch, coords, steps, dlt, e_hi, kernel="numba", lengths=lens)
        got = scd.candidate_cuts(base, sg, batch, coords, steps, dlt, e_hi, kernel="numba", lengths=lens, signs=True)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        if lens is None:  # and the torch reference
            ref = scd.candidate_cuts(base, sg, batch, coords, steps, dlt, e_hi, kernel="torch")
            assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def _toy(n=240, d=12, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    s = x @ rng.normal(size=d)
    y = s + noise * rng.normal(size=n) > np.median(s)
    return x, y


@pytest.mark.parametrize("hidden", [0, 4])
def test_batched_trainer_follows_the_per_vote_reference_step_for_step(hidden):
    x, y = _toy()
    cfg = scd.SCDConfig(iterations=25, votes=3, hidden=hidden, coords=6, balanced_fraction=0.2)
    xt, yt = torch.from_numpy(x).T.contiguous(), torch.from_numpy(y)
    gens = [scd.vote_generator(3, 0, v) for v in range(cfg.votes)]
    trace: list = []
    out = (scd.train_mlp if hidden else scd.train_linear)(xt, yt, gens, cfg, trace=trace)
    accepted = torch.stack(trace)  # (iterations, votes)
    assert accepted.any() and not accepted.all()
    for v in range(cfg.votes):
        ref_trace: list = []
        if hidden:
            W, th, a, to, err = reference.train_mlp_vote(x, y, cfg, 3, 0, v, trace=ref_trace)
            np.testing.assert_allclose(out["hidden_weight"][v].numpy(), W, atol=1e-5)
            np.testing.assert_allclose(out["out_weight"][v].numpy(), a, atol=1e-5)
        else:
            w, t, err = reference.train_linear_vote(x, y, cfg, 3, 0, v, trace=ref_trace)
            np.testing.assert_allclose(out["weight"][v].numpy(), w, atol=1e-5)
        assert accepted[:, v].tolist() == ref_trace
        assert int(out["train_error"][v]) == err


@pytest.mark.parametrize("hidden", [0, 4])
def test_training_reduces_the_01_loss(hidden):
    x, y = _toy(seed=1)
    xt, yt = torch.from_numpy(x).T.contiguous(), torch.from_numpy(y)
    short = scd.train(xt, yt, scd.SCDConfig(iterations=1, votes=3, hidden=hidden, coords=6), seed=0)
    long = scd.train(xt, yt, scd.SCDConfig(iterations=60, votes=3, hidden=hidden, coords=6), seed=0)
    assert (long["train_error"] < short["train_error"]).all()


def test_vote_groups_do_not_change_the_result():
    x, y = _toy(seed=2)
    xt, yt = torch.from_numpy(x).T.contiguous(), torch.from_numpy(y)
    cfg = scd.SCDConfig(iterations=10, votes=4, coords=6)
    together = scd.train(xt, yt, cfg, seed=5)
    one_by_one = scd.train(xt, yt, scd.SCDConfig(iterations=10, votes=4, coords=6, memory_mb=0), seed=5)
    assert all(torch.equal(together[k], one_by_one[k]) for k in together)  # thresholds to the last bit too


@pytest.mark.parametrize("hidden", [0, 4])
def test_vote_groups_on_parallel_threads_give_the_same_model(hidden):
    """With several torch threads the vote groups train at once, one per thread (one-thread
    kernels without the GIL): the same tensors as one thread, and progress still counts to the end."""
    x, y = _toy(seed=3)
    xt, yt = torch.from_numpy(x).T.contiguous(), torch.from_numpy(y)
    cfg = scd.SCDConfig(iterations=12, votes=5, hidden=hidden, coords=6)
    threads = torch.get_num_threads()
    seen = []
    try:
        torch.set_num_threads(1)
        alone = scd.train(xt, yt, cfg, seed=2)
        torch.set_num_threads(3)
        together = scd.train(xt, yt, cfg, seed=2, progress=lambda done, total: seen.append((done, total)))
        assert torch.get_num_threads() == 3  # restored after training
    finally:
        torch.set_num_threads(threads)
    assert alone.keys() == together.keys()
    assert all(torch.equal(alone[k], together[k]) for k in alone)
    assert seen[-1] == (60, 60) and all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def test_a_failing_vote_group_stops_the_others():
    x, y = _toy(seed=3)
    xt, yt = torch.from_numpy(x).T.contiguous(), torch.from_numpy(y)
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(KeyboardInterrupt):
            scd.train(xt, yt, scd.SCDConfig(iterations=500, votes=4, coords=6), seed=0, progress=progress)
    finally:
        torch.set_num_threads(threads)
    assert len(calls) < 50  # the other group stopped at its next iteration instead of running 500


def test_a_separable_problem_is_solved_exactly():
    rng = np.random.default_rng(3)
    x = rng.random((600, 6)).astype(np.float32)
    s = x @ np.array([1.0, -1.0, 0.5, 0.0, 0.3, -0.4]) - 0.2
    keep = np.abs(s) > 0.08  # a margin
    x, y = x[keep], s[keep] > 0
    out = scd.train(torch.from_numpy(x).T.contiguous(), torch.from_numpy(y), scd.SCDConfig(iterations=150, votes=3, coords=6), seed=0)
    assert out["train_error"].tolist() == [0, 0, 0]
    pred = torch.from_numpy(x) @ out["weight"].T > out["threshold"]
    assert (pred == torch.from_numpy(y)[:, None]).all()



def test_pivotal_losses_equal_the_full_batch_search():
    """Dropping the samples whose cost does not depend on the unit changes no candidate's loss."""
    g = torch.Generator().manual_seed(1)
    V, K, nb, d, N = 4, 7, 300, 9, 400
    xt = (torch.randint(0, 5, (d, N), generator=g) / 4).float()  # ties
    base = (torch.randint(-8, 8, (V, nb), generator=g) / 8).float()
    batch = torch.stack([torch.randperm(N, generator=g)[:nb] for _ in range(V)])
    coords = torch.stack([torch.randperm(d, generator=g)[:K] for _ in range(V)])
    steps = (torch.randint(0, 2, (V, K), generator=g) * 2 - 1).float() * 0.17
    dlt = torch.randint(-2, 3, (V, nb), generator=g, dtype=torch.int32)
    dlt[torch.rand((V, nb), generator=g) < 0.9] = 0  # most samples not pivotal, as in training
    dlt[3] = 0  # a vote where no sample is
    e_hi = torch.randint(0, 50, (V,), generator=g)
    for kernel in ("torch", "numba"):
        full, _ = scd.candidate_cuts(base, xt[None], batch, coords, steps, dlt, e_hi, kernel=kernel)
        assert torch.equal(scd.pivotal_losses(base, xt, batch, coords, steps, dlt, e_hi, kernel), full)


def test_mlp01_trainer_gives_the_same_model_as_before_the_speedups():
    """Digest of a model trained by the trainer before the pivotal-sample search (commit 6bfd5df):
    the speed-ups change no weight, threshold or error bit."""
    import hashlib

    x, y = _toy(n=400, d=12, seed=4)
    xt, yt = torch.from_numpy(x).T.contiguous(), torch.from_numpy(y)
    for kernel in ("auto", "torch"):
        out = scd.train(xt, yt, scd.SCDConfig(iterations=40, votes=3, hidden=5, coords=6, kernel=kernel), seed=1)
        assert out["train_error"].tolist() == [53, 172, 142]
        digest = hashlib.sha256(b"".join(out[k].numpy().tobytes() for k in sorted(out))).hexdigest()
        assert digest.startswith("6eb21c9779765588")


def test_merging_identical_samples_changes_no_output_node_cut():
    """collapse_identical keeps one entry per distinct (projection, hidden pattern) cell of each
    vote's batch, and the output-node search on the merged rows gives the same losses and
    thresholds as on the whole batch, ties included (equal projections with different patterns)."""
    g = torch.Generator().manual_seed(2)
    V, h, nb, N = 3, 4, 500, 700
    sg = torch.where(torch.rand((V, h, N), generator=g) < 0.5, 1.0, -1.0)
    a = torch.tensor([0.5, 0.5, 0.5, 0.5])  # equal weights: many patterns share a projection
    sg[2, 3] = 1.0  # vote 2 has half the cells: its row is shorter than the others
    z = torch.einsum("h,vhn->vn", a, sg)
    batch = torch.stack([torch.randperm(N, generator=g)[:nb] for _ in range(V)])
    coords = torch.stack([torch.randperm(h, generator=g) for _ in range(V)])
    steps = (torch.randint(0, 2, (V, h), generator=g) * 2 - 1).float() * 0.17
    dlt = torch.randint(-3, 4, (V, nb), generator=g, dtype=torch.int32)
    e_hi = torch.randint(0, 50, (V,), generator=g)
    pat = scd.pattern_keys(sg)
    zb = z.gather(1, batch)
    q, b, d, lens = scd.collapse_identical(zb, pat, batch, dlt)
    cells = [len({(float(zb[v, i]), int(pat[v, batch[v, i]])) for i in range(nb)}) for v in range(V)]
    assert lens.tolist() == cells and q.shape[1] == max(cells) <= 2**h and cells[2] < cells[0]
    assert [int(d[v].abs().sum() > 0) for v in range(V)] == [1] * V
    assert torch.equal(d.sum(1, dtype=torch.int64), dlt.sum(1, dtype=torch.int64))
    for kernel in ("torch", "numba"):
        want = scd.candidate_cuts(zb, sg, batch, coords, steps, dlt, e_hi, kernel=kernel)
        for lengths in (None, lens):  # the padding searched or skipped
            got = scd.candidate_cuts(q, sg, b, coords, steps, d, e_hi, kernel=kernel, lengths=lengths)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
