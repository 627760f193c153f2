"""One cell: run one attack on one model over the cell's remaining samples, verify every
candidate, and produce the rows the store keeps. Every executor runs cells through :func:`attack_cell`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from .api import Attack, Context, Model, Norm, Params, construct
from .budget import BatchTracker, Budget, final_curve
from .counting import CountingModel, check_attack_output
from .curves import TrackedRow
from .data import EvalData, input_sha256
from .errors import RobenchError
from .guard import check_unchanged, fingerprint, freeze
from .norms import lp_norm, per_sample
from .seeds import batch_seed, seed_everything
from .store import SampleRow
from .verify import verify


@dataclass
class CellJob:
    """A cell's remaining work, self-contained and picklable: what an executor ships to a worker."""

    key: str
    label: str
    model: str
    model_plugin: str
    attack: str
    attack_plugin: str
    norm: Norm
    eps: float | None
    source: str | None
    via_surrogate: bool
    batch_size: int
    positions: list[int]  # positions in EvalData still to attack, ascending
    clean_pred: list[int]  # the model's clean prediction at each of those positions
    seed: int
    done_before: int  # samples already stored
    # What the harness checks its own copies against: the stored SHA-256 of each input and its stored label.
    sha256: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    needs: tuple[str, ...] = ()  # the attack's declared needs (white-box "weights" gates model.exposes)
    model_key: str = ""  # stable identity of the attacked model (attacks may key caches on it)
    #: passes per sample, {"forward": N, "backward": M} (either may be missing); None: unlimited (robench.budget)
    budget: dict | None = None
    #: track best-so-far curves (robench.budget) though no budget is set (the suite's ``curves: true``);
    #: a budgeted cell always tracks. Off: the wrapper carries no tracker, the default cell path.
    curves: bool = False


@dataclass
class Candidates:
    """One batch's attack output before verification: what a worker sends back to the driver."""

    chunk: list[int]  # indices into job.positions
    adv: torch.Tensor  # on the CPU, shaped like the batch; NaN rows mean "no adversarial"
    forward: float  # passes per sample, counted by the harness's wrapper
    backward: float
    seconds: float  # attack time per sample
    #: best-so-far from the wrapper's tracker (robench.budget): candidates (NaN rows: none), per-sample
    #: curves of (forward, backward, norm) and the passes each sample had spent; None where not tracked
    best: torch.Tensor | None = None
    curves: list | None = None
    spent: list | None = None
    #: per row the (status, lower, upper) the attack certified (Context.certify), or None; None: no certificates
    certificates: list | None = None
    #: per row the attack's note (Context.note) or None; None: no notes
    notes: list | None = None


#: Statuses a certificate may carry (Context.certify); the harness adds "unverified" and "contradicted".
CERTIFICATE_STATUSES = ("optimal", "bracket", "robust", "failed", "verified", "unknown")


@dataclass
class BatchResult:
    rows: list[SampleRow]
    records: dict[str, float]
    #: set instead of rows when the cell ran with ``verify_rows=False`` (a worker): the driver verifies
    candidates: Candidates | None = None


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def attack_cell(job: CellJob, factory: type[Attack], params: Params, model: Model, source: Model | None, data: EvalData,
                device: torch.device, data_dir: Path | None, log: Callable[[str], None], registry=None,
                verify_rows: bool = True, progress: Callable[[float], None] | None = None) -> Iterator[BatchResult]:
    """Attack a cell's remaining samples, yielding each verified batch for the caller to store.

    With ``verify_rows=False`` (a worker process, where the attack's code also runs) each batch
    carries the unverified :class:`Candidates` instead, for the driver to verify with its own
    model and data (:func:`verify_candidates`): code that ran beside the attack never decides.

    Every executor runs cells through this function, and each batch is seeded from (seed, cell
    key, index of its first sample), so a cell's rows do not depend on where or after what it ran,
    nor on a resume. A batch that runs out of memory is retried once as two halves.

    ``progress``, if given, is called with how many samples into the current batch the attack is,
    from its ``ctx.report(done, total)`` calls (so a long batch moves the progress bar).
    """
    # The attack's own copy of the pool: nothing it writes there reaches the harness's data.
    ctx = Context(device=device, seed=job.seed, data_dir=data_dir, log=log, pool=data.x.clone(), registry=registry)
    attack: Attack = construct(factory, params, ctx)
    freeze(model)
    if source is not None:
        freeze(source)
    attacked = model
    if job.via_surrogate:
        attacked = model.surrogate()
        if attacked is None:
            raise RobenchError(
                f"{job.attack} needs gradients, but model {job.model} is not differentiable and offers no surrogate; "
                "use a decision- or score-based attack instead"
            )
        attacked.to(device).eval()
        freeze(attacked)
    counting = CountingModel(attacked, f"model plugin {job.model_plugin}" + (" (surrogate)" if job.via_surrogate else ""),
                             check_nan=False, needs=job.needs or tuple(factory.needs), model_key=job.model_key)
    checked = CountingModel(model, f"model plugin {job.model_plugin}")  # verification sees the real model, checked
    who = f"attack plugin {job.attack_plugin}"
    # Taken before the attack ever sees the models; compared after each of its batches, before verifying.
    watched = [(model, fingerprint(model), f"model {job.model}")]
    if source is not None:
        watched.append((source, fingerprint(source), f"source model {job.source}"))

    def one_batch(chunk: list[int]) -> BatchResult:
        pos = [job.positions[k] for k in chunk]
        # Harness-owned tensors: verification reads these; the attack gets clones it may do anything with.
        xb = data.x[pos].to(device)
        yb = data.y[pos].to(device)
        seed_everything(batch_seed(job.seed, job.key, data.indices[pos[0]]))
        counting.reset()
        # Best-so-far needs the real model's scores: not tracked when the attack runs on a surrogate.
        clean_b = torch.tensor([job.clean_pred[k] for k in chunk]) if job.clean_pred else yb.detach().cpu()
        budget = Budget.from_dict(job.budget)
        tracker = None
        if budget is not None or job.curves:
            tracker = BatchTracker(xb, yb, clean_b, job.norm, job.eps, budget, track=not job.via_surrogate)
        counting.tracker = tracker
        ctx.certificates.clear()
        ctx.notes.clear()
        if progress is not None:  # the attack's share of its batch, in samples
            ctx.progress = lambda done, total, n=len(pos): progress(n * min(max(done / total, 0.0), 1.0)) if total > 0 else None
        t0 = time.perf_counter()
        try:
            adv = attack.run(counting, xb.clone(), yb.clone(), eps=job.eps, ctx=ctx, source=source)
        finally:
            counting.tracker = None
            ctx.progress = None
        if tracker is not None and tracker.budget is not None:  # kept with the cell: how often the budget answered for the attack
            ctx.records["budget_blanked_rows"] = ctx.records.get("budget_blanked_rows", 0) + tracker.blanked_rows
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        for m, before, name in watched:
            check_unchanged(before, m, f"{who} (on {name})")
        check_attack_output(adv, xb, who)
        n = len(pos)
        cand = Candidates(chunk, adv.detach().to("cpu", torch.float32), counting.forward_rows / n, counting.backward_rows / n,
                          seconds / n)
        cand.certificates = _certificates(ctx.certificates, n, who)
        if ctx.notes:
            if not all(isinstance(r, int) and 0 <= r < n for r in ctx.notes):
                raise RobenchError(f"{who}: note() for a row outside the batch of {n}")
            cand.notes = [ctx.notes.get(j) for j in range(n)]
        if tracker is not None and tracker.track:
            cand.best = None if tracker.best_x is None else tracker.best_x.to("cpu", torch.float32)
            cand.curves = tracker.curves
            cand.spent = list(zip(tracker.forward.tolist(), tracker.backward.tolist()))
        if not verify_rows:
            return BatchResult([], dict(ctx.records), cand)
        return BatchResult(verify_candidates(job, data, cand, checked, device), dict(ctx.records))

    oom_retries = 0
    for start in range(0, len(job.positions), job.batch_size):
        chunk = list(range(start, min(start + job.batch_size, len(job.positions))))
        try:
            parts = [one_batch(chunk)]
        except Exception as exc:
            if not is_out_of_memory(exc) or len(chunk) < 2:
                raise
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            oom_retries += 1
            ctx.records["oom_retries"] = oom_retries  # kept with the cell: this batch ran in halves
            log(f"{job.label}: out of memory on a batch of {len(chunk)} ({error}); retrying it once as two halves")
            del exc
            if device.type == "cuda":
                torch.cuda.empty_cache()
            half = len(chunk) // 2
            parts = []
            for part in (chunk[:half], chunk[half:]):
                try:
                    parts.append(one_batch(part))
                except Exception as again:
                    if is_out_of_memory(again):
                        raise RobenchError(
                            f"out of memory on a batch of {len(chunk)} ({error}) and again on half of it ({len(part)}); "
                            f"set a smaller batch_size for attack {job.attack}"
                        ) from None
                    raise
        for part in parts:
            part.records = dict(ctx.records)
            yield part


def verify_candidates(job: CellJob, data: EvalData, cand: Candidates, model: Model, device: torch.device) -> list[SampleRow]:
    """The harness's verdict on one batch of candidates, from its own inputs, labels and model."""
    if not isinstance(model, CountingModel):
        model = CountingModel(model, f"model plugin {job.model_plugin}")
    pos = [job.positions[k] for k in cand.chunk]
    xb = data.x[pos].to(device)
    yb = data.y[pos].to(device)
    clean_pred = torch.tensor([job.clean_pred[k] for k in cand.chunk])
    check_attack_output(cand.adv, xb, f"attack plugin {job.attack_plugin}")
    _check_inputs(job, cand.chunk, xb, yb)
    verdict = verify(model, xb, yb, cand.adv.to(device), clean_pred, job.norm, job.eps)
    if cand.best is not None:
        verdict = _best_so_far(job, cand, verdict, model, xb, yb, clean_pred, device)
    rows = [
        SampleRow(
            idx=data.indices[i], sha256=data.sha256[i], label=int(yb[j]), clean_pred=int(clean_pred[j]),
            success=bool(verdict.success[j]), rejected=bool(verdict.rejected[j]), reject_reason=verdict.reasons[j],
            l0=float(verdict.norms[Norm.L0][j]), l1=float(verdict.norms[Norm.L1][j]),
            l2=float(verdict.norms[Norm.L2][j]), linf=float(verdict.norms[Norm.Linf][j]),
            forward=cand.forward, backward=cand.backward, seconds=cand.seconds,
        )
        for j, i in enumerate(pos)
    ]
    if cand.certificates is not None and len(cand.certificates) == len(rows):
        for j, row in enumerate(rows):
            row.certificate = checked_certificate(cand.certificates[j], row, float(verdict.norms[job.norm][j]))
    if cand.notes is not None and len(cand.notes) == len(rows):
        for j, row in enumerate(rows):
            row.note = cand.notes[j]
    if cand.curves is not None and cand.spent is not None and len(cand.curves) == len(rows) == len(cand.spent):
        rows = [TrackedRow(**vars(row), curve=final_curve(cand.curves[j], row.success, float(verdict.norms[job.norm][j]),
                                                         *cand.spent[j], bounded=job.eps is not None))
                for j, row in enumerate(rows)]
    return rows


def _certificates(given: dict, n: int, who: str) -> list | None:
    """The batch's certificates as a list per row (None where a row has none); None when the attack gave none."""
    if not given:
        return None
    out: list = [None] * n
    for row, cert in given.items():
        if not 0 <= row < n:
            raise RobenchError(f"{who}: certify() for row {row} of a batch of {n}")
        if cert[0] not in CERTIFICATE_STATUSES:
            raise RobenchError(f"{who}: certificate status {cert[0]!r}; expected one of {', '.join(CERTIFICATE_STATUSES)}")
        out[row] = cert
    return out


def checked_certificate(cert, row: SampleRow, norm: float):
    """A certificate as the store keeps it, checked against the harness's verdict on the row: a claimed
    optimum or bracket whose point did not verify becomes ``unverified``; one whose lower bound exceeds
    the verified norm of its own point, or a claim of robustness for a sample the harness broke, becomes
    ``contradicted``. The stored upper end is the verified norm (the solver's own claim is not kept)."""
    if cert is None:
        return None
    status, lower, upper = cert
    if status in ("optimal", "bracket"):
        if not row.success:
            status, upper = "unverified", None
        else:
            upper = norm
            if lower is not None and lower > norm * (1 + 1e-6) + 1e-9:
                status = "contradicted"
    elif status in ("robust", "verified") and row.success:
        status = "contradicted"
    return (status, lower, upper)


def _best_so_far(job: CellJob, cand: Candidates, verdict, model: Model, xb: torch.Tensor, yb: torch.Tensor,
                 clean_pred: torch.Tensor, device: torch.device):
    """Where the wrapper kept a better adversarial than the attack returned, the verified better one.

    The kept candidates go through :func:`verify` like any returned one (only rows where they could
    win: the attack's own failed, or for minimal attacks the kept one has a smaller norm); a row takes
    the kept candidate only when that verifies and beats the attack's verified result.
    """
    best = cand.best.to(torch.float32)
    if best.shape != xb.shape:
        return verdict
    have = ~torch.isnan(best.flatten(1)).any(1)
    norm_best = torch.full((len(best),), float("inf"), dtype=torch.float64)
    if bool(have.any()):
        norm_best[have] = lp_norm(best[have].double() - xb[have.to(xb.device)].detach().cpu().double(), job.norm)
    mine = verdict.norms[job.norm]
    try_ = have & (~verdict.success | ((job.eps is None) & (norm_best < torch.nan_to_num(mine, nan=float("inf")))))
    if not bool(try_.any()):
        return verdict
    alt = torch.where(per_sample(try_, best), best, torch.full_like(best, float("nan")))
    other = verify(model, xb, yb, alt.to(device), clean_pred, job.norm, job.eps)
    take = other.success & try_ & (~verdict.success | (other.norms[job.norm] < torch.nan_to_num(mine, nan=float("inf"))))
    if not bool(take.any()):
        return verdict
    verdict.success = verdict.success | take
    verdict.rejected = verdict.rejected & ~take  # the stored result is the kept, verified one
    verdict.reasons = [None if bool(take[j]) else r for j, r in enumerate(verdict.reasons)]
    for k in verdict.norms:
        verdict.norms[k] = torch.where(take, other.norms[k], verdict.norms[k])
    verdict.adversarial = torch.where(per_sample(take, verdict.adversarial), other.adversarial, verdict.adversarial)
    return verdict


def _check_inputs(job: CellJob, chunk: list[int], xb: torch.Tensor, yb: torch.Tensor) -> None:
    """The harness's inputs and labels must still be the stored ones (SHA-256 of each input)."""
    if job.sha256:
        for k, sha in zip(chunk, input_sha256(xb)):
            if sha != job.sha256[k]:
                raise RobenchError(f"input at position {job.positions[k]} no longer matches the SHA-256 stored for it; "
                                   "the evaluation data changed during the cell (or since the store was written)")
    if job.labels and yb.detach().cpu().tolist() != [job.labels[k] for k in chunk]:
        raise RobenchError("the labels of a batch no longer match the stored ones; the evaluation data changed during the cell")


def describe_exception(exc: BaseException) -> str:
    if isinstance(exc, RobenchError):
        return f"{type(exc).__name__}: {exc}"
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if not isinstance(exc, Exception):  # SystemExit, GeneratorExit-like escapes from plugin code
        return text + (f"plugin code raised {type(exc).__name__}({', '.join(map(repr, exc.args))}), which would have "
                       "ended the whole run; only this cell (or model) fails")
    return text
