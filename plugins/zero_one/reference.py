"""A straightforward per-vote implementation of the SCD trainers, written from the papers' pseudocode.

It exists to check and to measure the batched trainer (:mod:`.scd`): one vote at a time, one
candidate at a time, every candidate's projections recomputed as ``X_batch @ w'`` from its
renormalised weights, the threshold found by sorting that candidate's projections, the loss on
the full training data recomputed from scratch. It draws its random numbers exactly as
:mod:`.scd` does (same generators, same order), so both follow the same trajectory up to float
rounding. Not used by the model plugins.
"""

from __future__ import annotations

import numpy as np
import torch

from .scd import SCDConfig, class_weights, vote_generator


def best_cut_1d(q: np.ndarray, e_lo: np.ndarray, e_hi: np.ndarray) -> tuple[int, float]:
    """Exact best threshold of one node: the pseudocode's sort + scan over midpoints.

    A sample is on the hi side when ``q > t`` and then costs ``e_hi``, else ``e_lo``. Returns
    (loss, threshold); ties go to the lowest cut, like :func:`.scd.best_cut`.
    """
    q = q + 0.0
    order = np.argsort(q, kind="stable")
    v = q[order]
    n = len(q)
    lo_cost = np.concatenate([[0], np.cumsum(e_lo[order])])  # cost of the k lowest on the lo side
    hi_cost = np.concatenate([np.cumsum(e_hi[order][::-1])[::-1], [0]])  # the rest on the hi side
    total = lo_cost + hi_cost
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = v[:-1] < v[1:]
    total = np.where(valid, total, np.iinfo(np.int64).max)
    k = int(np.argmin(total))
    if k == 0:
        t = v[0] - 1.0
    elif k == n:
        t = v[-1]
    else:
        mid = (v[k - 1] + v[k]) / 2
        t = mid if mid < v[k] else v[k - 1]
    return int(total[k]), float(t)


def _batch(g, neg, pos, cfg):
    m_neg = max(1, int(cfg.batch_fraction * len(neg)))
    m_pos = max(1, int(cfg.batch_fraction * len(pos)))
    bn = neg[torch.randperm(len(neg), generator=g)[:m_neg].numpy()]
    bp = pos[torch.randperm(len(pos), generator=g)[:m_pos].numpy()]
    return np.concatenate([bn, bp]), m_neg, m_pos


def _coords(g, cfg, size):
    k = min(cfg.coords, size)
    j = torch.randperm(size, generator=g)[:k].numpy()
    s = ((torch.randint(0, 2, (k,), generator=g) * 2 - 1).float() * cfg.step).numpy()
    return j, s


def _label_costs(yb, w_neg, w_pos):
    """(e_lo, e_hi) of an output node: a positive errs on the lo side, a negative on the hi side."""
    return np.where(yb, w_pos, 0).astype(np.int64), np.where(yb, 0, w_neg).astype(np.int64)


def _full_error(pred, ypos, balanced):
    """01 loss on the full training data; balanced: errors of each class weighted by the other's size."""
    wrong = pred != ypos
    if not balanced:
        return int(wrong.sum())
    return int((wrong & ypos).sum()) * int((~ypos).sum()) + int((wrong & ~ypos).sum()) * int(ypos.sum())


def _init_threshold(proj, ypos, balanced):
    e_lo, e_hi = _label_costs(ypos, *class_weights(balanced, int((~ypos).sum()), int(ypos.sum())))
    return best_cut_1d(proj, e_lo, e_hi)[1]


def train_linear_vote(x: np.ndarray, ypos: np.ndarray, cfg: SCDConfig, seed: int, stream: int, vote: int, trace=None):
    """One SCD01 vote. ``x`` (N, d) float32, ``ypos`` (N,) bool. Returns (w, t, train_error)."""
    g = vote_generator(seed, stream, vote)
    neg, pos = np.nonzero(~ypos)[0], np.nonzero(ypos)[0]
    d = x.shape[1]
    w = torch.randn(d, generator=g).numpy()
    w = w / np.linalg.norm(w)
    n_bal = round(cfg.balanced_fraction * cfg.iterations)
    t = _init_threshold(x @ w, ypos, n_bal > 0)
    best = (w.copy(), t, _full_error(x @ w > t, ypos, n_bal > 0))
    for it in range(cfg.iterations):
        if it == n_bal > 0:  # objective switches to the plain 01 loss: refit t, restart the kept model here
            t = _init_threshold(x @ w, ypos, False)
            best = (w.copy(), t, _full_error(x @ w > t, ypos, False))
        b, m_neg, m_pos = _batch(g, neg, pos, cfg)
        js, ss = _coords(g, cfg, d)
        xb, yb = x[b], ypos[b]
        e_lo, e_hi = _label_costs(yb, *class_weights(it < n_bal, m_neg, m_pos))
        base, _ = best_cut_1d(xb @ w, e_lo, e_hi)
        loss, t2, w2 = _best_move(w, js, ss, lambda v: xb @ v, e_lo, e_hi)
        if loss < base:
            w, t = w2, t2
            err = _full_error(x @ w > t, ypos, it < n_bal)
            if err < best[2]:
                best = (w.copy(), t, err)
        if trace is not None:
            trace.append(loss < base)
    return best[0], best[1], _full_error(x @ best[0] > best[1], ypos, False)


def _best_move(v: np.ndarray, js, ss, project, e_lo, e_hi):
    """Each candidate move ``v[j] += s`` (renormalised), scored by the best 1-D cut of
    ``project(v2)``: the best (loss, threshold, v2); the first of equal losses wins."""
    cands = []
    for j, s in zip(js, ss):
        v2 = v.copy()
        v2[j] += s
        v2 /= np.linalg.norm(v2)
        cands.append((*best_cut_1d(project(v2), e_lo, e_hi), v2))
    return min(cands, key=lambda c: c[0])


def _sign(p, t):
    return np.where(p > t, 1.0, -1.0).astype(np.float32)


def train_mlp_vote(x: np.ndarray, ypos: np.ndarray, cfg: SCDConfig, seed: int, stream: int, vote: int, trace=None):
    """One MLP01 vote. Returns (W (h, d), th (h,), a (h,), to, train_error)."""
    g = vote_generator(seed, stream, vote)
    neg, pos = np.nonzero(~ypos)[0], np.nonzero(ypos)[0]
    d, h = x.shape[1], cfg.hidden
    W = torch.randn(h, d, generator=g).numpy()
    a = torch.randn(h, generator=g).numpy()
    W = W / np.linalg.norm(W, axis=1, keepdims=True)
    a = a / np.linalg.norm(a)
    th = torch.from_numpy(x @ W.T).median(dim=0).values.numpy()  # torch's (lower) median, as scd.py
    n_bal = round(cfg.balanced_fraction * cfg.iterations)
    to = _init_threshold(_sign(x @ W.T, th) @ a, ypos, n_bal > 0)

    def full_error(W, th, a, to, balanced):
        return _full_error(_sign(x @ W.T, th) @ a > to, ypos, balanced)

    best = (W.copy(), th.copy(), a.copy(), to, full_error(W, th, a, to, n_bal > 0))
    for it in range(cfg.iterations):
        if it == n_bal > 0:  # objective switches to the plain 01 loss: refit to, restart the kept model here
            to = _init_threshold(_sign(x @ W.T, th) @ a, ypos, False)
            best = (W.copy(), th.copy(), a.copy(), to, full_error(W, th, a, to, False))
        b, m_neg, m_pos = _batch(g, neg, pos, cfg)
        jo, so = _coords(g, cfg, h)
        u = int(torch.randint(0, h, (1,), generator=g))
        jh, sh = _coords(g, cfg, d)
        w_neg, w_pos = class_weights(it < n_bal, m_neg, m_pos)
        xb, yb = x[b], ypos[b]
        changed = False
        # output node
        hid = _sign(xb @ W.T, th)
        e_lo, e_hi = _label_costs(yb, w_neg, w_pos)
        base, _ = best_cut_1d(hid @ a, e_lo, e_hi)
        loss, t2, a2 = _best_move(a, jo, so, lambda v: hid @ v, e_lo, e_hi)
        if loss < base:
            a, to, changed = a2, t2, True
        # hidden unit u: its threshold is searched, the network's loss scored
        wcls = np.where(yb, w_pos, w_neg).astype(np.int64)
        rest = hid @ a - a[u] * hid[:, u]
        e_hi = (((rest + a[u]) > to) != yb) * wcls
        e_lo = (((rest - a[u]) > to) != yb) * wcls
        base, _ = best_cut_1d(xb @ W[u], e_lo, e_hi)
        cands = []
        for j, s in zip(jh, sh):
            wu = W[u].copy()
            wu[j] += s
            wu /= np.linalg.norm(wu)
            cands.append((*best_cut_1d(xb @ wu, e_lo, e_hi), wu))
        loss, t2, wu = min(cands, key=lambda c: c[0])
        if loss < base:
            W = W.copy()
            th = th.copy()
            W[u], th[u], changed = wu, t2, True
        if changed:
            err = full_error(W, th, a, to, it < n_bal)
            if err < best[4]:
                best = (W.copy(), th.copy(), a.copy(), to, err)
        if trace is not None:
            trace.append(changed)
    return (*best[:4], full_error(*best[:4], False))
