"""Batched stochastic coordinate descent (SCD) for 01-loss models: SCD01 (linear) and MLP01.

Algorithm (01-loss papers, ``01loss-*.md``; ALGORITHM-NOTES.md). Every vote is an independent
run with its own random stream; per iteration a vote

1. draws a class-balanced batch (``batch_fraction`` of each class, without replacement);
2. MLP01 only: tries ``coords`` random output weights (all of them when there are fewer), each
   moved by +-``step`` (random sign), with the output threshold chosen by an exact search;
3. tries ``coords`` random input weights of the node being trained (the linear node, or one
   random hidden unit of MLP01) moved by +-``step``, with that node's threshold chosen by an
   exact search that scores the *network's* 01 loss on the batch;
4. accepts the best candidate only if its batch loss is strictly below the loss of the current
   weights with their own best threshold on the same batch (candidate 0 below);
5. keeps the model with the lowest 01 loss on the full training data seen so far.

Weights stay unit-norm (a positive rescale of a node changes no decision, so candidates are
scored before the renormalisation). During the first ``balanced_fraction`` of the iterations the
objective is the class-balanced 01 loss (the mean of the per-class error rates), then the plain one.

Speed (the point of this module): votes are a tensor dimension and are trained together;
projections of the whole training set are kept and updated by the rank-1 change of the one
accepted coordinate instead of recomputing X.w; the best threshold of every (vote, candidate)
comes from one batched sort + cumulative sum, for a hidden unit over its pivotal samples only
(:func:`pivotal_losses`), for the output node over the distinct (projection, hidden pattern)
cells of the batch (:func:`collapse_identical`); accept/reject is a masked update. The random draws
happen per vote on CPU generators, in the same order as the per-vote reference
(:mod:`.reference`), so both follow the same trajectory and results do not depend on how many
votes are trained at once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class SCDConfig:
    iterations: int = 500
    votes: int = 32
    hidden: int = 0  # 0: linear SCD01; > 0: MLP01 with that many sign units
    coords: int = 128
    step: float = 0.17
    batch_fraction: float = 0.75
    balanced_fraction: float = 0.2
    memory_mb: int = 2048  # working-memory budget that decides how many votes train at once
    kernel: str = "auto"  # threshold-search kernel: auto | torch | numba (see candidate_cuts)


def vote_generator(seed: int, stream: int, vote: int) -> torch.Generator:
    """The random stream of one vote (``stream`` separates the one-vs-all classes)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream * 10_007 + vote)


# -- exact threshold search ----------------------------------------------------------------------


def best_cut(q: torch.Tensor, dlt: torch.Tensor, e_hi_total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact best threshold of a node for every row of ``q``.

    ``q`` (..., n): projections; a sample is on the "hi" side when ``q > t``. The loss of a sample
    is ``e_hi`` when it is on the hi side and ``e_lo`` otherwise (integer weights);
    ``dlt = e_lo - e_hi`` (broadcastable to ``q``), ``e_hi_total`` (...) = sum of ``e_hi``.
    Candidate thresholds are the midpoints between consecutive distinct sorted values plus one
    below and one above all values; the loss of cut k (k lowest samples on the lo side) is
    ``e_hi_total + cumsum(dlt sorted)[k]``. Ties go to the lowest cut. Returns (loss (...) int64,
    threshold (...) float).
    """
    n = q.shape[-1]
    vals, order = torch.sort(q + 0.0, dim=-1)  # + 0.0 turns -0.0 into +0.0 (one value, one key)
    csum = torch.gather(dlt.expand(q.shape), -1, order).cumsum(-1)
    # a cut between two equal values is no cut at all
    tied = torch.zeros(q.shape, dtype=torch.bool, device=q.device)
    tied[..., :-1] = vals[..., :-1] == vals[..., 1:]
    csum.masked_fill_(tied, torch.iinfo(csum.dtype).max // 2)
    zero = torch.zeros(q.shape[:-1] + (1,), dtype=csum.dtype, device=q.device)
    full = torch.cat([zero, csum], dim=-1)  # full[..., k] = loss of cut k minus e_hi_total
    k = full.argmin(dim=-1, keepdim=True)  # first minimum = lowest cut
    loss = e_hi_total.to(torch.int64) + full.gather(-1, k).squeeze(-1).to(torch.int64)
    below = vals.gather(-1, (k - 1).clamp(min=0)).squeeze(-1)
    above = vals.gather(-1, k.clamp(max=n - 1)).squeeze(-1)
    mid = (below + above) / 2
    thr = torch.where(mid < above, mid, below)  # rounding may not put the midpoint on `above`
    k = k.squeeze(-1)
    thr = torch.where(k == 0, vals[..., 0] - 1.0, thr)
    thr = torch.where(k == n, vals[..., -1], thr)
    return loss, thr


def uses_numba(kernel: str, device: torch.device) -> bool:
    """Whether :func:`candidate_cuts` runs the fused numba kernel for ``kernel`` on ``device``."""
    return kernel == "numba" or (kernel == "auto" and device.type == "cpu")


def row_cut(q: torch.Tensor, dlt: torch.Tensor, e_hi_total: torch.Tensor, kernel: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`best_cut` of every row of ``q`` (V, n), by the numba kernel where
    :func:`candidate_cuts` uses it (its radix sort is several times faster than torch.sort)."""
    if uses_numba(kernel, q.device):
        from .cutkernel import best_cut_numba

        return best_cut_numba(q, dlt, e_hi_total)
    return best_cut(q, dlt, e_hi_total)


def candidate_cuts(
    base: torch.Tensor, src: torch.Tensor, batch: torch.Tensor, coords: torch.Tensor, steps: torch.Tensor,
    dlt: torch.Tensor, e_hi_total: torch.Tensor, kernel: str = "auto", lengths: torch.Tensor | None = None,
    signs: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Best cut of every (vote, candidate): candidate 0 keeps the node, candidate c >= 1 adds
    ``steps[v, c-1]`` to input ``coords[v, c-1]``, whose batch values are ``src[v, j, batch[v]]``
    (``src`` (1 or V, rows, N)). ``base`` (V, nb) current batch projections, ``dlt`` (V, nb),
    ``e_hi_total`` (V,). Returns (loss (V, K+1) int64, threshold (V, K+1)).

    ``kernel``: "torch" (one batched sort + cumsum; CPU or CUDA), "numba" (fused CPU kernel, same
    results, less memory traffic), "auto" (numba on CPU, torch elsewhere). ``lengths`` (V,), where
    given, says that row v's entries past ``lengths[v]`` are zero-cost padding (copies of an
    entry with ``dlt = 0``, which change no cut): the numba kernel skips them. ``signs``: ``src``
    holds only +1 and -1 (the output node's inputs), so the numba kernel sorts each vote's row once
    and merges it per candidate (same results).
    """
    if uses_numba(kernel, base.device):
        from .cutkernel import candidate_cuts_numba

        return candidate_cuts_numba(base, src, batch, coords, steps, dlt, e_hi_total, lengths, signs)
    V = base.shape[0]
    vi = torch.zeros(V, dtype=torch.long, device=base.device) if src.shape[0] == 1 else torch.arange(V, device=base.device)
    cols = src[vi[:, None, None], coords[:, :, None], batch[:, None, :]]  # (V, K, nb)
    q = torch.cat([base[:, None, :], base[:, None, :] + steps[:, :, None] * cols], dim=1)
    del cols
    return best_cut(q, dlt[:, None, :], e_hi_total[:, None])


def pivotal_losses(
    base: torch.Tensor, xt: torch.Tensor, batch: torch.Tensor, coords: torch.Tensor, steps: torch.Tensor,
    dlt: torch.Tensor, e_hi_total: torch.Tensor, kernel: str = "auto",
) -> torch.Tensor:
    """The losses of :func:`candidate_cuts` for a hidden unit, searched over its pivotal samples only.

    A sample with ``dlt == 0`` costs the same on both sides of the unit's threshold (flipping the
    unit does not change the network's answer on it; usually over 90% of the batch), so dropping
    it changes no cut's loss: every (vote, candidate) loss is exactly the full-batch one. The
    thresholds would differ (their midpoints see other neighbours), so none are returned: the
    caller recomputes the accepted move's threshold on the whole batch with :func:`best_cut`.
    Rows are padded to the longest with ``dlt = 0`` entries (which again change no loss).
    """
    V = base.shape[0]
    keep = dlt != 0
    m = int(keep.sum(1).max())
    if m == 0:  # no sample depends on the unit: every candidate costs the same, none is accepted
        return e_hi_total[:, None].expand(V, coords.shape[1] + 1).clone()
    rows, cols = keep.nonzero(as_tuple=True)
    pos = (keep.cumsum(1) - 1)[rows, cols]
    bb = batch[:, :1].expand(V, m).clone()
    bb[rows, pos] = batch[rows, cols]
    qb = base[:, :1].expand(V, m).clone()
    qb[rows, pos] = base[rows, cols]
    dd = torch.zeros((V, m), dtype=dlt.dtype, device=dlt.device)
    dd[rows, pos] = dlt[rows, cols]
    return candidate_cuts(qb, xt[None], bb, coords, steps, dd, e_hi_total, kernel, keep.sum(1))[0]


def pattern_keys(sg: torch.Tensor) -> torch.Tensor | None:
    """(V, N) int64 bit patterns of the hidden signs ``sg`` (V, h, N); None when h > 62 (no room)."""
    h = sg.shape[1]
    if h > 62:
        return None
    shifts = torch.arange(h, device=sg.device)[None, :, None]
    return ((sg > 0).to(torch.int64) << shifts).sum(1)


def collapse_identical(
    base: torch.Tensor, pat: torch.Tensor, batch: torch.Tensor, dlt: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merge the batch samples that every output-node candidate sees alike, for the numba kernel.

    Two samples with the same projection ``base`` and the same hidden pattern ``pat[v, batch]``
    get the same projection under every candidate (a candidate adds ``step * sign`` of one hidden
    unit), so one entry carrying the sum of their ``dlt`` leaves every cut's loss unchanged, and
    the set of distinct values, hence every threshold, too: :func:`candidate_cuts` on the merged
    rows returns exactly what it returns on the batch. By iteration 200 the hidden units cut a
    one-vs-all CIFAR-10 batch of 37 500 images into 14 000-20 000 cells, so the 21-row search sorts
    about 2x fewer values. Returns (base, batch, dlt) of the merged entries, rows padded with
    zero-cost copies of their first entry (a copy of an existing value changes no cut either),
    and the number of merged entries of each row (the ``lengths`` of :func:`candidate_cuts`).
    """
    from .cutkernel import collapse_identical_numba

    return collapse_identical_numba(base, pat, batch, dlt)


def _int_dtype(bound: int) -> torch.dtype:
    return torch.int32 if bound < 2**31 - 1 else torch.int64


# -- shared pieces --------------------------------------------------------------------------------


class _Draws:
    """Per-vote random draws of one iteration, made on CPU generators in a fixed order."""

    def __init__(self, gens: list[torch.Generator], neg: torch.Tensor, pos: torch.Tensor, cfg: SCDConfig, d: int):
        self.gens, self.neg, self.pos, self.cfg, self.d = gens, neg, pos, cfg, d
        self.m_neg = max(1, int(cfg.batch_fraction * len(neg)))
        self.m_pos = max(1, int(cfg.batch_fraction * len(pos)))

    def batch(self, g: torch.Generator) -> torch.Tensor:
        bn = self.neg[torch.randperm(len(self.neg), generator=g)[: self.m_neg]]
        bp = self.pos[torch.randperm(len(self.pos), generator=g)[: self.m_pos]]
        return torch.cat([bn, bp])

    def coords(self, g: torch.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(self.cfg.coords, size)
        j = torch.randperm(size, generator=g)[:k]
        s = (torch.randint(0, 2, (k,), generator=g) * 2 - 1).float() * self.cfg.step
        return j, s


def class_weights(balanced: bool, n_neg: int, n_pos: int) -> tuple[int, int]:
    """Integer error weights (negative class, positive class): the balanced loss scaled by n_neg*n_pos."""
    return (n_pos, n_neg) if balanced else (1, 1)


def _label_dlt(yb: torch.Tensor, w_neg: int, w_pos: int, dtype: torch.dtype) -> torch.Tensor:
    """dlt = e_lo - e_hi for an output node: a positive sample errs on the lo side, a negative on the hi side."""
    return torch.where(yb, w_pos, -w_neg).to(dtype)


def full_error(pred: torch.Tensor, ypos: torch.Tensor, balanced: bool) -> torch.Tensor:
    """01 loss of (V, N) decisions on the full training data; balanced: scaled by n_neg * n_pos."""
    wrong = pred != ypos
    if not balanced:
        return wrong.sum(1)
    n_pos = int(ypos.sum())
    return (wrong & ypos).sum(1) * (len(ypos) - n_pos) + (wrong & ~ypos).sum(1) * n_pos


def init_threshold(proj: torch.Tensor, ypos: torch.Tensor, balanced: bool) -> torch.Tensor:
    """Exact best threshold on the full training data under the first iteration's objective."""
    n_pos = int(ypos.sum())
    w_neg, w_pos = class_weights(balanced, len(ypos) - n_pos, n_pos)
    dt = _int_dtype(len(ypos) * max(w_neg, w_pos))
    e_hi_total = torch.tensor(w_neg * (len(ypos) - n_pos), device=proj.device)
    return best_cut(proj, _label_dlt(ypos, w_neg, w_pos, dt), e_hi_total)[1]


def votes_per_group(cfg: SCDConfig, n: int, d: int, nb: int) -> int:
    """How many votes fit the memory budget at once (state on full data + candidate tensors)."""
    h = max(cfg.hidden, 1)
    per_vote = (cfg.coords + 1) * nb * 32  # q, sorted values, int64 order, gathered dlt, cumsum
    per_vote += h * n * 8 + h * d * 8  # hidden projections and signs (float32), weights and best weights
    return max(1, min(cfg.votes, cfg.memory_mb * 2**20 // per_vote))


def project(w: torch.Tensor, xt: torch.Tensor) -> torch.Tensor:
    """``w @ xt`` for weight rows ``w`` (R, d), each row's result independent of R.

    A one-row product takes BLAS's matrix-vector path, which rounds differently from the
    matrix-matrix path that every larger group of votes takes; a second (discarded) row keeps a
    lone vote on the same path, so a model does not depend on how its votes were grouped.
    """
    if len(w) == 1:
        return (torch.cat([w, w]) @ xt)[:1]
    return w @ xt


# -- SCD01 -------------------------------------------------------------------------------------


def train_linear(
    xt: torch.Tensor, ypos: torch.Tensor, gens: list[torch.Generator], cfg: SCDConfig,
    progress: Callable[[int], None] | None = None, trace: list | None = None,
) -> dict[str, torch.Tensor]:
    """Train one group of linear votes. ``xt`` (d, N) data transposed, ``ypos`` (N,) bool.

    Returns ``weight`` (V, d) unit-norm and ``threshold`` (V,): vote v says "positive" when
    ``weight[v] . x > threshold[v]``; also ``train_error`` (V,) of the kept models.
    """
    dev = xt.device
    d, n = xt.shape
    V = len(gens)
    neg = torch.nonzero(~ypos.cpu()).squeeze(1)
    pos = torch.nonzero(ypos.cpu()).squeeze(1)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("SCD training needs samples of both classes")
    draws = _Draws(gens, neg, pos, cfg, d)
    w = torch.stack([torch.randn(d, generator=g) for g in gens]).to(dev)
    w /= w.norm(dim=1, keepdim=True)
    proj = project(w, xt)  # (V, N): kept up to date by rank-1 changes
    n_bal = round(cfg.balanced_fraction * cfg.iterations)
    thr = init_threshold(proj, ypos, n_bal > 0)
    best_w, best_t, best_err = w.clone(), thr.clone(), full_error(proj > thr[:, None], ypos, n_bal > 0)
    dt = _int_dtype((draws.m_neg + draws.m_pos) * max(draws.m_neg, draws.m_pos))
    for it in range(cfg.iterations):
        bs, js, ss = [], [], []
        for g in gens:
            bs.append(draws.batch(g))
            j, s = draws.coords(g, d)
            js.append(j)
            ss.append(s)
        b = torch.stack(bs).to(dev)
        jj = torch.stack(js).to(dev)
        sg = torch.stack(ss).to(dev)
        if it == n_bal > 0:
            # the objective switches to the plain 01 loss: refit the thresholds on the full data and
            # restart the kept model from the current one (else a one-vs-all problem keeps its
            # all-negative start: "always negative" is only 10% plain error there)
            thr = init_threshold(proj, ypos, False)
            best_w, best_t, best_err = w.clone(), thr.clone(), full_error(proj > thr[:, None], ypos, False)
        w_neg, w_pos = class_weights(it < n_bal, draws.m_neg, draws.m_pos)
        yb = ypos[b]
        dlt = _label_dlt(yb, w_neg, w_pos, dt)
        e_hi_total = torch.full((V,), w_neg * draws.m_neg, dtype=torch.int64, device=dev)
        loss, cut = candidate_cuts(proj.gather(1, b), xt[None], b, jj, sg, dlt, e_hi_total, cfg.kernel)
        c_loss, c = loss[:, 1:].min(dim=1)
        acc = torch.nonzero(c_loss < loss[:, 0]).squeeze(1)
        if len(acc):
            j = jj[acc, c[acc]]
            s = sg[acc, c[acc]]
            w[acc, j] += s
            proj[acc] += s[:, None] * xt[j]
            nrm = w[acc].norm(dim=1)
            w[acc] /= nrm[:, None]
            proj[acc] /= nrm[:, None]
            thr[acc] = cut[acc, 1 + c[acc]] / nrm
            err_acc = full_error(proj[acc] > thr[acc, None], ypos, it < n_bal)
            better = err_acc < best_err[acc]
            keep = acc[better]
            best_w[keep], best_t[keep], best_err[keep] = w[keep], thr[keep], err_acc[better]
        if trace is not None:  # per iteration: which votes accepted a change (tests compare with the reference)
            trace.append((c_loss < loss[:, 0]).cpu())
        if progress is not None:
            progress(it + 1)
    return {"weight": best_w, "threshold": best_t, "train_error": full_error(project(best_w, xt) > best_t[:, None], ypos, False)}


# -- MLP01 -------------------------------------------------------------------------------------


def _signs(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.where(p > t, 1.0, -1.0)


def _refresh_sums(z: torch.Tensor, a: torch.Tensor, sg: torch.Tensor, votes: torch.Tensor) -> None:
    """``z[v] = a[v] . sg[v]`` (the output node's sums) for the given votes, in place. One vote at a
    time on views: the same per-vote product, bit for bit, as one einsum over ``sg[votes]``, without
    copying that (votes, h, N) block (about 4 MB a vote on CIFAR-10, twice an iteration)."""
    for v in votes.tolist():
        z[v] = torch.einsum("vh,vhn->vn", a[v : v + 1], sg[v : v + 1])[0]


def train_mlp(
    xt: torch.Tensor, ypos: torch.Tensor, gens: list[torch.Generator], cfg: SCDConfig,
    progress: Callable[[int], None] | None = None, trace: list | None = None,
) -> dict[str, torch.Tensor]:
    """Train one group of MLP01 votes (``cfg.hidden`` sign units, one 01-loss output node).

    Returns ``hidden_weight`` (V, h, d), ``hidden_threshold`` (V, h), ``out_weight`` (V, h),
    ``out_threshold`` (V,), ``train_error`` (V,): unit u of vote v outputs +1 when
    ``hidden_weight[v, u] . x > hidden_threshold[v, u]`` else -1, and the vote says "positive"
    when ``out_weight[v] . signs > out_threshold[v]``.
    """
    dev = xt.device
    d, n = xt.shape
    V, h = len(gens), cfg.hidden
    neg = torch.nonzero(~ypos.cpu()).squeeze(1)
    pos = torch.nonzero(ypos.cpu()).squeeze(1)
    if len(neg) == 0 or len(pos) == 0:
        raise ValueError("SCD training needs samples of both classes")
    draws = _Draws(gens, neg, pos, cfg, d)
    W = torch.stack([torch.randn(h, d, generator=g) for g in gens]).to(dev)
    a = torch.stack([torch.randn(h, generator=g) for g in gens]).to(dev)
    W /= W.norm(dim=2, keepdim=True)
    a /= a.norm(dim=1, keepdim=True)
    ph = project(W.reshape(V * h, d), xt).reshape(V, h, n)  # hidden projections of all training data
    th = ph.median(dim=2).values  # hidden thresholds start at the median projection (paper)
    sg = _signs(ph, th[:, :, None])
    z = torch.einsum("vh,vhn->vn", a, sg)
    # hidden patterns of all training data, for merging identical batch samples (numba path only)
    pat = pattern_keys(sg) if uses_numba(cfg.kernel, dev) else None
    n_bal = round(cfg.balanced_fraction * cfg.iterations)
    to = init_threshold(z, ypos, n_bal > 0)
    best = {"W": W.clone(), "th": th.clone(), "a": a.clone(), "to": to.clone(), "err": full_error(z > to[:, None], ypos, n_bal > 0)}
    vr = torch.arange(V, device=dev)
    dt = _int_dtype((draws.m_neg + draws.m_pos) * max(draws.m_neg, draws.m_pos))

    for it in range(cfg.iterations):
        bs, jo, so, us, jh, sh = [], [], [], [], [], []
        for g in gens:
            bs.append(draws.batch(g))
            j, s = draws.coords(g, h)
            jo.append(j)
            so.append(s)
            us.append(torch.randint(0, h, (1,), generator=g))
            j, s = draws.coords(g, d)
            jh.append(j)
            sh.append(s)
        b = torch.stack(bs).to(dev)
        if it == n_bal > 0:  # switch to the plain 01 loss: refit, restart the kept model here (see train_linear)
            to = init_threshold(z, ypos, False)
            best = {"W": W.clone(), "th": th.clone(), "a": a.clone(), "to": to.clone(), "err": full_error(z > to[:, None], ypos, False)}
        w_neg, w_pos = class_weights(it < n_bal, draws.m_neg, draws.m_pos)
        wcls = torch.where(ypos[b], w_pos, w_neg).to(dt)
        yb = ypos[b]
        changed = torch.zeros(V, dtype=torch.bool, device=dev)

        # 1. output node: candidates move one output weight; the output threshold is searched
        jj = torch.stack(jo).to(dev)
        ss = torch.stack(so).to(dev)
        e_hi_total = torch.full((V,), w_neg * draws.m_neg, dtype=torch.int64, device=dev)
        zb, bo, dlo, lens = z.gather(1, b), b, _label_dlt(yb, w_neg, w_pos, dt), None
        if pat is not None:
            zb, bo, dlo, lens = collapse_identical(zb, pat, b, dlo)
        loss, cut = candidate_cuts(zb, sg, bo, jj, ss, dlo, e_hi_total, cfg.kernel, lens, signs=True)
        c_loss, c = loss[:, 1:].min(dim=1)
        acc = torch.nonzero(c_loss < loss[:, 0]).squeeze(1)
        if len(acc):
            j = jj[acc, c[acc]]
            a[acc, j] += ss[acc, c[acc]]
            nrm = a[acc].norm(dim=1)
            a[acc] /= nrm[:, None]
            to[acc] = cut[acc, 1 + c[acc]] / nrm
            _refresh_sums(z, a, sg, acc)
            changed[acc] = True

        # 2. one random hidden unit: candidates move one of its input weights; its threshold is
        #    searched, scoring the network's loss with the output node fixed
        u = torch.cat(us).to(dev)
        jj = torch.stack(jh).to(dev)
        ss = torch.stack(sh).to(dev)
        zb = z.gather(1, b)
        au = a[vr, u][:, None]
        su = sg[vr, u].gather(1, b)
        zrest = zb - au * su
        e_hi = (((zrest + au) > to[:, None]) != yb).to(dt) * wcls
        e_lo = (((zrest - au) > to[:, None]) != yb).to(dt) * wcls
        pu = ph[vr, u].gather(1, b)
        dlt, e_hi_total = e_lo - e_hi, e_hi.sum(1, dtype=torch.int64)
        loss = pivotal_losses(pu, xt, b, jj, ss, dlt, e_hi_total, cfg.kernel)
        c_loss, c = loss[:, 1:].min(dim=1)
        acc = torch.nonzero(c_loss < loss[:, 0]).squeeze(1)
        if len(acc):
            ua = u[acc]
            j = jj[acc, c[acc]]
            s = ss[acc, c[acc]]
            # the threshold of the accepted move, from the whole batch (as before the pivotal speed-up)
            cut = row_cut(pu[acc] + s[:, None] * xt[j[:, None], b[acc]], dlt[acc], e_hi_total[acc], cfg.kernel)[1]
            W[acc, ua, j] += s
            ph[acc, ua] += s[:, None] * xt[j]
            nrm = W[acc, ua].norm(dim=1)
            W[acc, ua] /= nrm[:, None]
            ph[acc, ua] /= nrm[:, None]
            th[acc, ua] = cut / nrm
            sg[acc, ua] = _signs(ph[acc, ua], th[acc, ua][:, None])
            if pat is not None:  # only bit u of the accepted votes' patterns can change
                bit = torch.ones_like(ua) << ua
                pat[acc] = (pat[acc] & ~bit[:, None]) | torch.where(sg[acc, ua] > 0, bit[:, None], 0)
            _refresh_sums(z, a, sg, acc)
            changed[acc] = True

        # 3. keep the best model on the full training data
        ch = torch.nonzero(changed).squeeze(1)
        if len(ch):
            e = full_error(z[ch] > to[ch, None], ypos, it < n_bal)
            better = e < best["err"][ch]
            k = ch[better]
            best["W"][k], best["th"][k], best["a"][k], best["to"][k] = W[k], th[k], a[k], to[k]
            best["err"][k] = e[better]
        if trace is not None:
            trace.append(changed.cpu())
        if progress is not None:
            progress(it + 1)
    return {
        "hidden_weight": best["W"], "hidden_threshold": best["th"], "out_weight": best["a"],
        "out_threshold": best["to"], "train_error": full_error(_mlp_decide(xt, best), ypos, False),
    }


def _mlp_decide(xt: torch.Tensor, m: dict[str, torch.Tensor]) -> torch.Tensor:
    """(V, N) decisions of MLP01 votes on the columns of ``xt``."""
    sg = _signs(torch.einsum("vhd,dn->vhn", m["W"], xt), m["th"][:, :, None])
    return torch.einsum("vh,vhn->vn", m["a"], sg) > m["to"][:, None]


class _Stopped(Exception):
    """Raised in a vote group's thread when another group failed or training was interrupted."""


def train(
    xt: torch.Tensor, ypos: torch.Tensor, cfg: SCDConfig, seed: int, stream: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train ``cfg.votes`` votes in groups that fit ``cfg.memory_mb``; results are concatenated.

    Grouping changes nothing but speed and memory: each vote has its own random stream. On CPU
    with the numba kernel and several torch threads, the groups train at once, one per thread
    (each with a one-thread kernel that releases the GIL): the torch work around the kernel then
    runs in parallel too, where a single group would leave it on one thread.
    """
    d, n = xt.shape
    nb = int(cfg.batch_fraction * int(ypos.sum())) + int(cfg.batch_fraction * int((~ypos).sum()))
    threads = torch.get_num_threads()
    numba_cpu = xt.device.type == "cpu" and uses_numba(cfg.kernel, xt.device)
    workers = min(threads, cfg.votes) if numba_cpu else 1
    budget = dataclasses.replace(cfg, memory_mb=max(1, cfg.memory_mb // workers))  # the groups share it
    group = min(votes_per_group(budget, n, d, nb), -(-cfg.votes // workers))
    starts = list(range(0, cfg.votes, group))
    fn = train_mlp if cfg.hidden > 0 else train_linear
    total = cfg.votes * cfg.iterations
    done = [0] * len(starts)
    lock, stop = threading.Lock(), threading.Event()

    def run_group(k: int) -> dict[str, torch.Tensor]:
        start = starts[k]
        gens = [vote_generator(seed, stream, v) for v in range(start, min(cfg.votes, start + group))]

        def cb(i: int) -> None:
            if stop.is_set():
                raise _Stopped
            with lock:
                done[k] = i * len(gens)
                if progress is not None:
                    progress(sum(done), total)

        if workers == 1:
            return fn(xt, ypos, gens, cfg, cb)
        from .cutkernel import one_thread_per_caller

        try:
            with one_thread_per_caller():
                return fn(xt, ypos, gens, cfg, cb)
        except BaseException:  # the other groups stop at their next iteration
            stop.set()
            raise

    if numba_cpu:
        # The fused kernel does the heavy work with its own threads (or one per vote group); the
        # many small torch ops around it run faster on one thread than with OpenMP barriers.
        from .cutkernel import set_threads

        set_threads(threads)
        torch.set_num_threads(1)
    try:
        if workers == 1:
            parts = [run_group(k) for k in range(len(starts))]
        else:
            with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="scd-votes") as pool:
                futures = [pool.submit(run_group, k) for k in range(len(starts))]
                try:
                    parts = [f.result() for f in futures]
                except BaseException as e:  # Ctrl-C here, or a failed group: the others stop at their next iteration
                    stop.set()
                    concurrent.futures.wait(futures)
                    errors = [f.exception() for f in futures if not f.cancelled()]
                    raise next((x for x in errors if x is not None and not isinstance(x, _Stopped)), e)
    finally:
        torch.set_num_threads(threads)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
