"""Query budgets and best-so-far tracking, applied by the counting wrapper (:class:`robench.counting.CountingModel`).

While an attack runs one batch, a :class:`BatchTracker` sees every call it makes to the model's
``scores`` (and so ``predict``) and every backward pass through them.

**Attributing rows to samples.** A call with exactly one row per sample of the batch (``n == B``,
the shape almost every attack iterates with) is attributed row by row: row ``i`` is a pass for
sample ``i``. The rows of any other call (a subset of the batch, or the batch repeated ``k`` times,
restarts, a population) cannot be attributed without guessing, so such a call charges **every**
sample ``ceil(n / B)`` passes, AttackBench's per-call rule (one call = one pass for all samples,
``k`` passes for ``k`` copies). An adapter that hands a library a subset of the batch (the correctly
classified samples, in chunks: :func:`robench.adapters.run_on_correct`), or an attack that queries a
subset or a population (several candidates of one sample per call), says whose rows they are through
:meth:`BatchTracker.focus` (row ``i`` of a call of ``len(rows)`` rows is a pass of sample ``rows[i]``;
samples may repeat); its calls are then attributed (and charged) among those samples only.
The rule is not adversary-proof: a call of ``n < B`` rows that
all perturb one sample gives that sample ``n`` queries for one charged pass; the harness's reported
forward/backward counts (rows actually computed) are unchanged by budgets and stay exact.

**Budgets.** ``budget: {forward: N, backward: M}`` is per sample. An attributed row whose sample has
spent its N forward passes is answered with constant scores (zeros: every class equal, argmax 0)
that carry no gradient; an unattributed call is answered (for all its rows) only while every sample
of the batch has ``ceil(n / B)`` passes left, else all its rows get the constant. A backward pass
through a row whose sample has spent its M backward passes gets a zero gradient (the same two
rules). Only rows answered within budget are charged, so a sample's spent passes never exceed its
budget. Methods a model exposes beyond ``scores`` (``Model.exposes`` kind ``"forward"``) cannot be
blanked and are refused under a budget.

**Best so far.** For attributed calls answered within budget, the tracker applies the harness's
own rules to the scores the attack asked for (no extra model call): a row is adversarial when it
is finite, lies in [0, 1] and its argmax is not the label; bounded attacks also need its norm
within eps (:func:`robench.verify.within_eps`). It keeps per sample the smallest-norm such row
(minimal attacks) or the first (bounded attacks), and a curve of ``(forward, backward, norm)``
points, one per improvement, where forward/backward are the passes the sample had spent then.
Samples the model already misclassifies start at norm 0. Tracking is off when the attack runs on a
surrogate (its scores are not the real model's). The harness re-verifies the kept candidates with
:func:`robench.verify.verify` before using any of them (:func:`robench.cell.verify_candidates`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import torch

from .api import Norm
from .norms import lp_norm
from .verify import ABS_TOL, REL_TOL, within_eps


@dataclass(frozen=True)
class Budget:
    """Passes per sample; None means unlimited."""

    forward: int | None = None
    backward: int | None = None

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None) -> Budget | None:
        if not value:
            return None
        budget = cls(value.get("forward"), value.get("backward"))
        return None if budget.forward is None and budget.backward is None else budget

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("forward", self.forward), ("backward", self.backward)) if v is not None}


class BatchTracker:
    """Per-sample pass accounting, budget enforcement and best-so-far for one batch of one attack."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, clean_pred: torch.Tensor, norm: Norm, eps: float | None,
                 budget: Budget | None = None, *, track: bool = True):
        self.x = x.detach()
        self.y = y.detach().to(x.device)
        self.n = len(x)
        self.norm = Norm(norm)
        self.eps = eps
        self.budget = budget
        self.track = track
        self.forward = torch.zeros(self.n, dtype=torch.long)  # passes charged per sample (CPU)
        self.backward = torch.zeros(self.n, dtype=torch.long)
        self.blanked_rows = 0  # rows answered with the constant (past budget)
        clean_wrong = clean_pred.detach().cpu() != y.detach().cpu()
        self.best = torch.full((self.n,), math.inf, dtype=torch.float64)
        self.best[clean_wrong] = 0.0
        self.best_x: torch.Tensor | None = None  # (N, ...) float32 on x's device; NaN rows: none kept
        self.curves: list[list[tuple[int, int, float]]] = [[(0, 0, 0.0)] if w else [] for w in clean_wrong.tolist()]
        # On the model's device, so a call costs one host sync (whether any row is a candidate):
        self._done_dev = clean_wrong.to(x.device)  # bounded: first success found; minimal: norm 0 (cannot improve)
        self._best_dev = self.best.to(x.device, torch.float32)
        self._all_done = bool(clean_wrong.all())
        self._rows: torch.Tensor | None = None  # focus(): the batch sample of each row of a call (None: row i is sample i)
        self._rows_dev: torch.Tensor | None = None
        self._samples: torch.Tensor | None = None  # focus(): the distinct samples of _rows (what other calls charge)
        self._repeats = False  # focus(): some sample has several rows (a population: candidates, runs, restarts)
        self._ref: tuple[torch.Tensor, torch.Tensor] = (self.x, self.y)  # inputs and labels of those rows

    @contextlib.contextmanager
    def focus(self, rows: torch.Tensor):
        """Within the block the attack's calls are for the batch samples ``rows``: a call of ``len(rows)``
        rows is attributed row by row, row ``i`` a pass of sample ``rows[i]``; any other call charges
        only the samples in ``rows``. ``rows`` may repeat a sample: an attack that evaluates several
        candidates per sample in one call (a population, one run per target class) names each row's
        sample, so every candidate is one pass of its own sample and is tracked as such. Used by the
        adapters (the correctly classified samples, in chunks) and by attacks on subsets of the batch."""
        rows = rows.detach().cpu().long().flatten()
        if self._rows is None and len(rows) == self.n and torch.equal(rows, torch.arange(self.n)):
            yield  # the whole batch in order: row i is sample i already (the cheaper unfocused path)
            return
        saved = self._rows, self._rows_dev, self._samples, self._repeats, self._ref
        self._rows = rows
        self._samples = torch.unique(self._rows)
        self._repeats = len(self._samples) < len(self._rows)
        self._rows_dev = self._rows.to(self.x.device)
        self._ref = (self.x[self._rows_dev], self.y[self._rows_dev])  # once per block, not once per model call
        try:
            yield
        finally:
            self._rows, self._rows_dev, self._samples, self._repeats, self._ref = saved

    def _width(self, rows: torch.Tensor | None) -> int:
        """How many score rows a call focused on ``rows`` has when each row is one sample's pass."""
        return self.n if rows is None else len(rows)

    # -- the wrapper's hooks ----------------------------------------------------------------
    def forward_call(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Charge one ``scores`` call, blank what is past budget, update best-so-far; returns the scores the attack gets."""
        n = out.shape[0]
        live = self._charge(self.forward, n, self.budget.forward if self.budget else None, self.focus_state())
        if self.track and n == self._width(self._rows):
            self._observe(x, out, live)
        if live is None:
            return out
        self.blanked_rows += int((~live).sum())
        return torch.where(live.to(out.device)[:, None], out, torch.zeros((), dtype=out.dtype, device=out.device))

    def focus_state(self) -> tuple:
        """The current focus (rows, distinct samples, repeats), which attributes a call's charge; the wrapper
        keeps the one of a forward call for its backward pass (charged as the forward was, wherever it runs)."""
        return self._rows, self._samples, self._repeats

    def backward_mask(self, n: int, state: tuple | None = None) -> torch.Tensor | None:
        """Charge one backward pass through ``n`` score rows, attributed as ``state`` (:meth:`focus_state`
        at the forward call) says; a (n,) mask of the rows whose gradient may flow (None: all)."""
        return self._charge(self.backward, n, self.budget.backward if self.budget else None,
                            self.focus_state() if state is None else state)

    def _charge(self, spent: torch.Tensor, n: int, limit: int | None, state: tuple) -> torch.Tensor | None:
        """Charge a call of ``n`` rows to ``spent`` (per sample, in place) under ``limit``, attributed by
        the focus ``state`` (:meth:`focus_state`); the (n,) mask of the rows answered within budget, or
        None when all are (the common case, no mask built)."""
        rows, samples, repeats = state
        if n == self._width(rows):  # row i is a pass of sample i (or of the focused row's sample)
            if rows is None:
                if limit is None:
                    spent.add_(1)  # one op (indexing with a slice then adding is three)
                    return None
                live = spent < limit
                spent.add_(live.long())
                return None if bool(live.all()) else live
            if limit is None:
                spent.index_add_(0, rows, torch.ones(n, dtype=torch.long))  # repeated samples pay once per row
                return None
            # a sample's k-th row of this call is live while its spent passes + k stay under the limit
            live = spent[rows] + (_rank_within(rows) if repeats else 0) < limit
            spent.index_add_(0, rows, live.long())
            return None if bool(live.all()) else live
        sel = slice(None) if rows is None else samples  # unattributed: the samples the call is for
        width = self._width(samples)  # samples is None exactly when rows is
        k = -(-n // width) if width else 0  # each pays ceil(n / width)
        if limit is None or bool((spent[sel] + k <= limit).all()):
            spent[sel] += k
            return None
        return torch.zeros(n, dtype=torch.bool)

    # -- best so far ------------------------------------------------------------------------
    def _observe(self, xq: torch.Tensor, out: torch.Tensor, live: torch.Tensor | None) -> None:
        # Cheap first: the scores say which rows are misclassified (nothing else is read for the others);
        # then one pass for the norm, in float32 on the model's device (over the candidate rows alone when
        # they are few, else over the batch), and the box check only for the rows that would improve (rare
        # after the first few calls). The tracked norms only rank candidates: the harness re-verifies
        # (float64) whatever it keeps.
        if self._all_done:
            return
        focus = self._rows_dev  # None: row i is batch sample i; else row i is sample focus[i]
        with torch.no_grad():
            x_ref, y_ref = self._ref
            if xq.shape != x_ref.shape:
                return
            xq = xq.detach()
            done = self._done_dev if focus is None else self._done_dev[focus]
            cand = out.detach().argmax(1) != y_ref
            cand &= ~done
            if live is not None:
                cand &= live.to(xq.device)
            k = int(cand.sum())  # the call's one host sync when no row is a candidate
            if not k:
                return
            n = len(cand)
            sub = torch.nonzero(cand).flatten() if 4 * k <= n else None  # few candidates: norms of those rows only
            if sub is None:
                norms = _delta_norm(xq, x_ref, self.norm)  # a NaN row's norm is NaN: it fails both tests
            else:
                norms = _delta_norm(xq[sub], x_ref[sub], self.norm)
            if self.eps is not None:
                fits = within_eps(norms, self.eps, self.norm)
            else:
                best = self._best_dev if focus is None else self._best_dev[focus]
                fits = norms < (best if sub is None else best[sub])
            if sub is None:
                local = torch.nonzero(cand & fits).flatten()  # rows of the call
                kept = norms[local]
            else:
                pick = torch.nonzero(fits).flatten()
                local, kept = sub[pick], norms[pick]
            if not len(local):
                return
            rows = xq[local].flatten(1)
            inside = (rows.amin(1) >= 0) & (rows.amax(1) <= 1)
            local, kept = local[inside], kept[inside]
            if not len(local):
                return
            idx_dev = local if focus is None else focus[local]  # batch sample of each kept row
            if self._repeats:  # several rows of one sample: keep its smallest (the first of equals)
                keep = _smallest_per_sample(idx_dev, kept)
                local, kept, idx_dev = local[keep], kept[keep], idx_dev[keep]
            if self.best_x is None:
                self.best_x = torch.full_like(self.x, float("nan"), dtype=torch.float32)
            self.best_x[idx_dev] = xq[local].float()
            self._best_dev[idx_dev] = kept
            if self.eps is not None:
                self._done_dev[idx_dev] = True
            else:
                self._done_dev[idx_dev] |= kept == 0
            idx, vals = idx_dev.cpu(), kept.double().cpu()
            self.best[idx] = vals
            for i, v in zip(idx.tolist(), vals.tolist()):
                self.curves[i].append((int(self.forward[i]), int(self.backward[i]), float(v)))
            self._all_done = bool(self._done_dev.all())


def _rank_within(rows: torch.Tensor) -> torch.Tensor:
    """For each position, how many earlier positions hold the same value ([3, 1, 3, 3] -> [0, 0, 1, 2])."""
    order = torch.argsort(rows, stable=True)
    ranked = rows[order]
    pos = torch.arange(len(rows))
    starts = torch.where(torch.cat([torch.ones(1, dtype=torch.bool), ranked[1:] != ranked[:-1]]), pos, 0)
    rank = torch.empty_like(pos)
    rank[order] = pos - torch.cummax(starts, 0).values
    return rank


def _smallest_per_sample(samples: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """Positions to keep: per distinct sample, its row of smallest norm (the first of equal ones)."""
    order = torch.argsort(norms, stable=True)  # smallest first, ties in row order
    by_sample = order[torch.argsort(samples[order], stable=True)]
    s = samples[by_sample]
    first = torch.cat([torch.ones(1, dtype=torch.bool, device=s.device), s[1:] != s[:-1]])
    return by_sample[first]


def _delta_norm(xq: torch.Tensor, x_ref: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-row ``norm`` of ``xq - x_ref`` in float32 (:func:`robench.norms.lp_norm` on the subtraction's
    temporary, which it may overwrite)."""
    return lp_norm(xq.float() - x_ref.float(), norm, overwrite=True)


def final_curve(curve: list[tuple[int, int, float]], success: bool, norm: float | None,
                forward: int, backward: int, *, bounded: bool = False) -> list[list[float]]:
    """The curve stored with a sample: its points that the verified result does not undercut, ending at that result.

    ``norm`` is the verified norm the harness stores; ``forward``/``backward`` what the sample had spent at
    the end of the batch (for a final point the queries never showed, e.g. a returned but unqueried candidate).
    For bounded attacks the curve is the first success only (or the end of the batch when no query showed one).
    Points the verification disowned (a tracked norm below the verified result: a randomized model, or the
    verifier's float-residue rule) are dropped, so the curve is monotone and its last point is the result.
    """
    if not success or norm is None or norm != norm:
        return []
    if bounded:  # the curve is the first success; which candidate the result kept does not move it
        return [[f, b, v] for f, b, v in curve[:1]] or [[int(forward), int(backward), float(norm)]]
    tol = norm * REL_TOL + ABS_TOL  # tracked norms are float32; the verified one is float64
    kept = [[f, b, v] for f, b, v in curve if v >= norm - tol]
    if not kept or kept[-1][2] > norm + tol:
        kept.append([int(forward), int(backward), float(norm)])
    kept[-1][2] = float(norm)  # the stored (float64, verified) value, not its float32 tracking
    return kept


__all__ = ["BatchTracker", "Budget", "final_curve"]
