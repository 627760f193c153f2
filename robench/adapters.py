"""Helpers for attack plugins, library-independent: the shared pieces of the attack adapters
(attacks_foolbox, attacks_art) and of attacks such as FAB. A public module: third-party attacks may use it.

Everything here works on canonical tensors (float32 NCHW in [0, 1], int64 labels) and calls the
model only through ``model.scores`` so the harness's counting wrapper sees every pass.

* :func:`seeded` - library randomness (torch and numpy global generators) seeded from ctx.seed
  without disturbing the caller's generators.
* :func:`keep_adversarial` - the adapter's own check of what a library returned: a row is kept
  only if it is finite, inside [0, 1] and misclassified; otherwise it becomes NaN ("no
  adversarial"). The harness re-verifies anyway; this keeps a library's failure sentinel (e.g.
  foolbox C&W's all-zero image) from ever reaching it as a claimed success.
* :class:`Oracle` - a decision oracle that counts queries per sample, enforces a query cap and
  remembers the best adversarial seen for each sample (so a capped attack still returns its best).
* :func:`starting_points` - the documented initialisation of attacks that must start from an
  adversarial (Brendel-Bethge, HopSkipJump, Boundary); see its docstring.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from .api import Attack, Context, Model, Norm, Params
from .norms import lp_norm, per_sample


class LibraryAttack(Attack):
    """Shared base of the foolbox and ART adapters: minimal, gradient-based unless a subclass says
    otherwise, with a norm fixed by the class or taken from ``params.norm``.

    Most adapters are declarations: :attr:`library_class` names the library's attack class (one
    name, or one per norm) and the ``Params`` fields carry the library's own parameter names, so
    :meth:`library_kwargs` passes them through unchanged; :attr:`adapter_params` lists the fields
    the adapter consumes itself instead (the norm, query caps, starting-point options, ...).
    """

    kind = "minimal"
    needs = frozenset({"gradients"})
    #: the library's attack class: its name, or its name per norm.
    library_class: ClassVar[str | dict[Norm, str]] = ""
    #: parameters the adapter uses itself; every other field goes to the library under its name.
    adapter_params: ClassVar[frozenset[str]] = frozenset({"norm"})
    #: samples per library call (robench.adapters.run_on_correct): a library attack runs a call silently,
    #: so progress is reported between calls; each call is seeded alike, so results depend on it only
    #: through the library's random draws
    progress_chunk: ClassVar[int | None] = 10

    def library_class_name(self) -> str:
        """The library class to run for this attack's norm."""
        c = self.library_class
        if isinstance(c, dict):
            return c[self.norm]
        if not c:
            raise NotImplementedError(f"{type(self).__name__} names no library_class")
        return c

    def library_kwargs(self) -> dict[str, Any]:
        """Every parameter not in :attr:`adapter_params`, under its own name."""
        return self.params.model_dump(exclude=set(self.adapter_params))


#: Channel changes at most this large are float residue, not perturbation (same rule as verify.py).
RESIDUE = 1e-6


@contextlib.contextmanager
def seeded(seed: int, device: torch.device):
    """Seed torch (CPU and the CUDA device in use) and numpy's global generator; restore both after.

    foolbox draws from torch's global generator, ART from ``np.random``: seeding both makes every
    library attack reproducible for a given ctx.seed.
    """
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def predict(model: Model, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Predicted classes of ``x`` through ``model.scores`` (so the harness counts the passes), in batches."""
    with torch.no_grad():
        return torch.cat([model.scores(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def keep_adversarial(model: Model, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Rows of ``x_adv`` that are finite, in [0, 1] and misclassified; every other row becomes NaN.

    Values outside the box by at most RESIDUE are clipped first (libraries return 1 + 1e-7); for
    L0, channel changes of at most RESIDUE are reset to the input when the result stays adversarial,
    so pixels a library never meant to touch are not counted.
    """
    x_adv = x_adv.detach().to(device=x.device, dtype=x.dtype).reshape(x.shape)
    finite = torch.isfinite(x_adv.flatten(1)).all(1)
    safe = torch.where(per_sample(finite, x), x_adv, x)
    in_box = ((safe >= -RESIDUE) & (safe <= 1 + RESIDUE)).flatten(1).all(1)
    safe = safe.clamp(0, 1)
    if norm == Norm.L0:
        cleaned = torch.where((safe - x).abs() <= RESIDUE, x, safe)
        still = predict(model, cleaned) != y
        safe = torch.where(per_sample(still, x), cleaned, safe)
    ok = finite & in_box & (predict(model, safe) != y)
    return torch.where(per_sample(ok, x), safe, torch.full_like(x, math.nan))


def merge_best(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per row, the smaller-norm of two candidate adversarials (NaN rows lose)."""
    na = torch.where(torch.isnan(a.flatten(1)).any(1), math.inf, lp_norm((a.nan_to_num() - x).double(), norm))
    nb = torch.where(torch.isnan(b.flatten(1)).any(1), math.inf, lp_norm((b.nan_to_num() - x).double(), norm))
    take_b = per_sample(nb < na, x)
    return torch.where(take_b, b, a)


def run_on_correct(model: Model, x: torch.Tensor, y: torch.Tensor, attack_fn, ctx: Context | None = None,
                   chunk: int | None = None) -> torch.Tensor:
    """Attack only the samples the model classifies correctly; the others are returned unchanged
    (already broken at norm 0). ``attack_fn(x, y)`` returns candidate adversarials for its subset.

    With ``chunk``, the subset goes to ``attack_fn`` in calls of at most ``chunk`` samples and
    ``ctx.report`` tells the progress after each (a library attack runs a call silently; progress the
    library reports itself through ``ctx.report`` within a call counts as that call's share)."""
    out = x.clone()
    idx = (predict(model, x) == y).nonzero().flatten()
    if not len(idx):
        return out
    step = chunk or len(idx)
    outer = ctx.progress if ctx is not None else None
    try:
        for s in range(0, len(idx), step):
            part = idx[s : s + step]
            if outer is not None:
                ctx.progress = lambda d, t, s=s, k=len(part): outer(s + k * min(d / t, 1.0), len(idx)) if t > 0 else None
            with focus(model, part):  # the library's calls are for these samples (budgets, best so far)
                out[part] = attack_fn(x[part], y[part]).to(out)
            if outer is not None:
                outer(s + len(part), len(idx))
    finally:
        if ctx is not None:
            ctx.progress = outer
    return out


def focus(model: Model, rows: torch.Tensor):
    """Tell the harness's counting wrapper (when ``model`` is one and tracks this batch) that the calls
    inside the block are for the batch samples ``rows``; a no-op for any other model."""
    tracker = getattr(model, "tracker", None)
    return tracker.focus(rows) if tracker is not None else contextlib.nullcontext()


def unfocused(rows: torch.Tensor) -> contextlib.AbstractContextManager:
    """The ``focus`` argument of an attack function called outside the harness: names no rows."""
    return contextlib.nullcontext()


#: Model calls per sample an adapter makes outside its Oracle (the clean prediction in
#: run_on_correct, the final check in keep_adversarial, ART's class count): a query cap reserves
#: them, so the harness's own count of forward passes never exceeds ``max_queries``.
BOOKKEEPING_QUERIES = 3


def oracle_budget(max_queries: int | None) -> int | None:
    """The query cap left to a library attack once the adapter's own bookkeeping queries are taken off (None: no cap)."""
    return None if max_queries is None else max(max_queries - BOOKKEEPING_QUERIES, 1)


class QueryBudgetExhausted(Exception):
    """Raised inside a library's loop when the next query would exceed the per-sample cap."""


class Oracle:
    """Counts model queries per sample, enforces ``max_queries`` and tracks the best adversarial.

    ``query(xq, idx)`` evaluates rows ``xq`` where row k belongs to sample ``idx[k]``. A query is
    one model evaluation of one input. The cap is checked before evaluating, so no sample ever
    exceeds it; the library loop is then interrupted by :class:`QueryBudgetExhausted` and the
    adapter returns :attr:`best`.
    """

    def __init__(self, model: Model, x: torch.Tensor, y: torch.Tensor, norm: Norm, max_queries: int | None = None):
        self.model, self.x, self.y, self.norm = model, x, y, norm
        self.max_queries = max_queries
        self.queries = torch.zeros(len(x), dtype=torch.long)
        self.best = torch.full_like(x, math.nan)
        self.best_norm = torch.full((len(x),), math.inf, dtype=torch.float64)

    def query(self, xq: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        idx = idx.cpu()
        counts = torch.bincount(idx, minlength=len(self.x))
        if self.max_queries is not None and bool(((self.queries + counts) > self.max_queries).any()):
            raise QueryBudgetExhausted
        self.queries += counts
        with torch.no_grad():
            scores = self.model.scores(xq)
        self._track(xq.detach(), idx, scores.argmax(1).cpu())
        return scores

    def _track(self, xq: torch.Tensor, idx: torch.Tensor, pred: torch.Tensor) -> None:
        adv = pred != self.y.cpu()[idx]
        inside = ((xq >= 0) & (xq <= 1)).flatten(1).all(1).cpu()
        rows = (adv & inside).nonzero().flatten()
        if len(rows) == 0:
            return
        dev = rows.to(xq.device)
        norms = lp_norm((xq[dev] - self.x[idx[rows].to(xq.device)]).double(), self.norm).cpu()
        for r, n in zip(rows.tolist(), norms.tolist()):
            i = int(idx[r])
            if n < self.best_norm[i]:
                self.best_norm[i] = n
                self.best[i] = xq[r]

    def subset(self, mask: torch.Tensor) -> Oracle:
        """An oracle over the samples in ``mask`` that carries over their queries and best so far."""
        m = mask.cpu()
        md = m.to(self.x.device)
        sub = Oracle(self.model, self.x[md], self.y[md], self.norm, self.max_queries)
        sub.queries = self.queries[m].clone()
        sub.best = self.best[md].clone()
        sub.best_norm = self.best_norm[m].clone()
        return sub

    def absorb(self, sub: Oracle, mask: torch.Tensor) -> None:
        """Write back a :meth:`subset`'s queries and best adversarials."""
        m = mask.cpu()
        self.queries[m] = sub.queries
        self.best[m.to(self.x.device)] = sub.best
        self.best_norm[m] = sub.best_norm

    def record(self, ctx: Context, prefix: str = "queries") -> None:
        q = self.queries.double()
        ctx.record(f"{prefix}_mean", float(q.mean()) if len(q) else 0.0)
        ctx.record(f"{prefix}_max", float(q.max()) if len(q) else 0.0)


class OracleModule(torch.nn.Module):
    """An ``nn.Module`` over an :class:`Oracle`, for libraries that want a module.

    ``sample=None``: lock-step libraries (foolbox's decision attacks), where every call holds one
    row per sample in order. ``sample=i``: every row of every call belongs to sample i (ART's
    attacks that loop over samples, driven one sample at a time by the adapter).
    """

    def __init__(self, oracle: Oracle, sample: int | None = None):
        super().__init__()
        object.__setattr__(self, "oracle", oracle)
        self.sample = sample

    def forward(self, xq: torch.Tensor) -> torch.Tensor:
        n = len(self.oracle.x)
        if self.sample is None:
            if len(xq) != n:
                raise RuntimeError(f"OracleModule: lock-step call with {len(xq)} rows for {n} samples")
            idx = torch.arange(n)
        else:
            idx = torch.full((len(xq),), self.sample, dtype=torch.long)
        return self.oracle.query(xq, idx)


class StartingPointParams(Params):
    """Options of :func:`starting_points`, for attacks that must start from an adversarial."""

    init_pool: int = Field(100, ge=0, description="evaluation images (ctx.pool) tried as starting points besides the batch")
    init_noise_tries: int = Field(100, ge=0, description="uniform-noise draws tried for samples without a starting point")
    init_search_steps: int = Field(10, ge=0, description="bisection steps that move the start towards the input")


class DecisionParams(StartingPointParams):
    """A decision-based attack: starting points, and a cap on model queries per sample (the Oracle's)."""

    max_queries: int | None = Field(None, ge=10, description="cap on model queries per sample, init and the adapter's own checks included (None: no cap)")


def starting_points(
    oracle: Oracle,
    gen: torch.Generator,
    pool: torch.Tensor | None = None,
    pool_size: int = 100,
    noise_tries: int = 100,
    search_steps: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Documented initialisation for attacks that must start from an adversarial.

    For each sample, in order (all queries go through ``oracle``, so they count and are capped):

    1. **Other images**: among the other images of the batch and up to ``pool_size`` images of
       ``pool`` (the evaluation inputs the harness offers in ``ctx.pool``, drawn with ``gen``),
       those the model assigns to another class than the sample's label; the one nearest in the
       attack's norm is taken.
    2. **Uniform noise** for samples that found none: up to ``noise_tries`` draws of U[0, 1]
       noise (from ``gen``), the first one classified differently is taken.
    3. **Boundary search**: ``search_steps`` bisection steps on the blend (1 - t) x + t start,
       keeping the adversarial end, so the attack starts close to the decision boundary.

    Returns (starts, found): starts is NaN where nothing was found (those samples are reported
    as "no adversarial").
    """
    x, y = oracle.x, oracle.y
    n = len(x)
    dev = x.device
    starts = torch.full_like(x, math.nan)
    found = torch.zeros(n, dtype=torch.bool)

    # 1. other images. Classifying a candidate is a query of no particular sample: the rows are
    #    charged round-robin to the samples of the batch.
    cands = [x]
    if pool is not None and len(pool) and pool_size > 0:
        pick = torch.randperm(len(pool), generator=gen)[:pool_size]
        cands.append(pool[pick].to(dev, x.dtype))
    cand = torch.cat(cands)
    cand_pred = []
    for s in range(0, len(cand), n):
        chunk = cand[s : s + n]
        cand_pred.append(oracle.query(chunk, torch.arange(len(chunk))).argmax(1))
    cand_pred = torch.cat(cand_pred)
    for i in range(n):
        ok = cand_pred != y[i]
        if ok.any():
            pts = cand[ok]
            j = int(lp_norm((pts - x[i : i + 1]).double(), oracle.norm).argmin())
            starts[i] = pts[j]
            found[i] = True

    # 2. uniform noise
    missing = (~found).nonzero().flatten()
    for _ in range(noise_tries):
        if len(missing) == 0:
            break
        noise = torch.rand((len(missing), *x.shape[1:]), generator=gen).to(dev, x.dtype)
        pred = oracle.query(noise, missing).argmax(1).cpu()
        hit = pred != y.cpu()[missing]
        for k in hit.nonzero().flatten().tolist():
            starts[missing[k]] = noise[k]
            found[missing[k]] = True
        missing = missing[~hit]

    # 3. bisection towards the input, lock-step over the samples that have a start
    idx = found.nonzero().flatten()
    if len(idx):
        xi, si = x[idx.to(dev)], starts[idx.to(dev)]
        lo = torch.zeros(len(idx), device=dev)
        hi = torch.ones(len(idx), device=dev)
        for _ in range(search_steps):
            mid = (lo + hi) / 2
            blend = xi + per_sample(mid, x) * (si - xi)
            adv = (oracle.query(blend, idx).argmax(1) != y[idx.to(dev)])
            hi = torch.where(adv, mid, hi)
            lo = torch.where(adv, lo, mid)
        starts[idx.to(dev)] = xi + per_sample(hi, x) * (si - xi)
    return starts, found
