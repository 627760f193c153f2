"""One cell: run one attack on one model over the cell's remaining samples, verify every
candidate, and produce the rows the store keeps. Every executor runs cells through :func:`attack_cell`.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from .api import Attack, Context, Model, Norm, Params
from .counting import CountingModel, check_attack_output
from .data import EvalData
from .errors import RobenchError
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


@dataclass
class BatchResult:
    rows: list[SampleRow]
    records: dict[str, float]


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def attack_cell(job: CellJob, factory: type[Attack], params: Params, model: Model, source: Model | None, data: EvalData,
                device: torch.device, data_dir: Path | None, log: Callable[[str], None]) -> Iterator[BatchResult]:
    """Attack a cell's remaining samples, yielding each verified batch for the caller to store.

    Every executor runs cells through this function, and each batch is seeded from (seed, cell
    key, index of its first sample), so a cell's rows do not depend on where or after what it ran,
    nor on a resume. A batch that runs out of memory is retried once as two halves.
    """
    attack: Attack = factory(params)
    attacked = model
    if job.via_surrogate:
        attacked = model.surrogate()
        if attacked is None:
            raise RobenchError(
                f"{job.attack} needs gradients, but model {job.model} is not differentiable and offers no surrogate; "
                "use a decision- or score-based attack instead"
            )
        attacked.to(device).eval()
    counting = CountingModel(attacked, f"model plugin {job.model_plugin}" + (" (surrogate)" if job.via_surrogate else ""), check_nan=False)
    checked = CountingModel(model, f"model plugin {job.model_plugin}")  # verification sees the real model, checked
    ctx = Context(device=device, seed=job.seed, data_dir=data_dir, log=log, pool=data.x)

    def one_batch(chunk: list[int]) -> list[SampleRow]:
        pos = [job.positions[k] for k in chunk]
        xb = data.x[pos].to(device)
        yb = data.y[pos].to(device)
        clean_pred = torch.tensor([job.clean_pred[k] for k in chunk])
        seed_everything(batch_seed(job.seed, job.key, data.indices[pos[0]]))
        counting.reset()
        t0 = time.perf_counter()
        adv = attack.run(counting, xb, yb, eps=job.eps, ctx=ctx, source=source)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        check_attack_output(adv, xb, f"attack plugin {job.attack_plugin}")
        verdict = verify(checked, xb, yb, adv, clean_pred, job.norm, job.eps)
        n = len(pos)
        return [
            SampleRow(
                idx=data.indices[i], sha256=data.sha256[i], label=int(data.y[i]), clean_pred=int(clean_pred[j]),
                success=bool(verdict.success[j]), rejected=bool(verdict.rejected[j]), reject_reason=verdict.reasons[j],
                l0=float(verdict.norms[Norm.L0][j]), l1=float(verdict.norms[Norm.L1][j]),
                l2=float(verdict.norms[Norm.L2][j]), linf=float(verdict.norms[Norm.Linf][j]),
                forward=counting.forward_rows / n, backward=counting.backward_rows / n, seconds=seconds / n,
            )
            for j, i in enumerate(pos)
        ]

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
        for rows in parts:
            yield BatchResult(rows, dict(ctx.records))


def describe_exception(exc: BaseException) -> str:
    if isinstance(exc, RobenchError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
