"""Where cells run: in this process (``local``, the default) or on Ray workers (``ray``, optional extra).

An executor sees a run through two narrow objects: the :class:`Workload` (the evaluation data,
the models, the plugins) and a :class:`CellSink` (open a cell, write a verified batch, finish,
fail, log), which the run implements on its store. Either way the driver process is the store's
only writer. Cells run through :func:`robench.cell.attack_cell` everywhere, and each batch is
seeded from (seed, cell key, first sample), so a cell's rows are the same wherever it ran.

Local: cell after cell in this process, or with ``isolate="process"`` each cell in a child
process (:mod:`robench.isolation`), so that a crash of a plugin (segfault, ``os._exit``) fails only
its cell.

Ray: the driver trains (or loads) the models, puts the evaluation data and every model's weights in
the object store once, and ships one task per cell (``cpus_per_cell`` CPUs, ``gpus_per_cell`` GPUs).
A worker that dies (crash, SIGKILL, node loss, Ray's out-of-memory killer) takes only its cell's
batch in flight with it: the cell is resubmitted with the samples still missing, up to
``max_retries`` times.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import sys
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from .cell import BatchResult, CellJob, attack_cell, describe_exception, verify_candidates
from .data import EvalData
from .errors import RobenchError, UserInputError
from .guard import changes, fingerprint
from .models import ModelPool, model_state
from .plugins import Registry
from .suite import Resolved
from .worker import cell_task, make_setup


class CellSink(Protocol):
    """What an executor may do to the run (implemented by :class:`robench.run.StoreSink`)."""

    def open(self, cell: dict[str, Any]) -> CellJob | None:
        """Register a planned cell; its remaining work, or None when every sample is stored."""

    def write(self, job: CellJob, batch: BatchResult) -> None:
        """Store one verified batch (one transaction)."""

    def finish(self, job: CellJob, records: dict[str, float], note: str = "") -> None: ...

    def fail(self, job: CellJob, error: str) -> None: ...

    def done_indices(self, job: CellJob) -> set[int]:
        """Sample indices of the cell already stored (to resubmit only the rest after a crash)."""

    def log(self, text: str) -> None: ...

    # optional: ``progress(job, samples)``, samples into the batch in flight (the attack's Context.report)


@dataclass
class Workload:
    """The inputs of a run's cells: what every executor needs besides the sink."""

    resolved: Resolved
    registry: Registry
    data: EvalData
    models: ModelPool
    device: torch.device
    data_dir: Path | None
    plugins: tuple[str, ...]
    log: Callable[[str], None]

    def cell_models(self, job: CellJob):
        """The (attacked model, transfer source) of a cell, or the reason they are missing."""
        model = self.models.get(job.model)
        source = None
        if job.source:
            source = self.models.models.get(job.source)
            if source is None:
                raise RobenchError(f"source model {job.source} is unavailable: {self.models.errors.get(job.source, 'not trained')}")
        return model, source


class Executor:
    """Runs the planned cells of a run through its sink."""

    #: cells finish out of order (progress shows each cell once, when it ends)
    interleaved = False

    def describe(self) -> str:
        raise NotImplementedError

    def run_cells(self, work: Workload, cells: list[dict[str, Any]], sink: CellSink) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Cell after cell, in this process (``isolate="none"``) or each in a child process (``"process"``)."""

    def __init__(self, isolate: str = "none"):
        if isolate not in ("none", "process"):
            raise UserInputError(f"--isolate must be none or process, not {isolate!r}")
        self.isolate = isolate

    def describe(self) -> str:
        return "local" + (" (one child process per cell)" if self.isolate == "process" else "")

    def run_cells(self, work: Workload, cells: list[dict[str, Any]], sink: CellSink) -> None:
        for c in cells:
            job = sink.open(c)
            if job is None:
                continue
            watched = {n: fingerprint(work.models.models[n]) for n in (job.model, job.source) if n in work.models.models}
            try:
                model, source = work.cell_models(job)
                if self.isolate == "process":
                    from .isolation import run_in_child

                    records = run_in_child(work, job, sink)
                else:
                    factory = work.registry.get("attack", job.attack_plugin).factory
                    records: dict[str, float] = {}
                    progress = getattr(sink, "progress", None)
                    for batch in attack_cell(job, factory, work.resolved.attack_params[job.attack], model, source, work.data,
                                             work.device, work.data_dir, work.log, registry=work.registry,
                                             progress=None if progress is None else lambda n, job=job: progress(job, n)):
                        sink.write(job, batch)
                        records = batch.records
                sink.finish(job, records)
            except (KeyboardInterrupt, sqlite3.Error):
                raise  # an interrupted run or an unwritable store ends the run; the cell is not at fault
            except BaseException as exc:  # SystemExit from a plugin too: only its cell fails
                from .isolation import CellFailed

                sink.fail(job, exc.error if isinstance(exc, CellFailed) else describe_exception(exc))
            finally:
                for name, before in watched.items():
                    diff = changes(before, fingerprint(work.models.models[name]))
                    if diff:
                        work.models.restore(name, work.data.info)
                        sink.log(f"[yellow]model {name} was changed during cell {job.label} ({'; '.join(diff)}); "
                                 "restored from its weights for the next cells[/yellow]")


def make_executor(name: str, *, workers: int | None = None, address: str | None = None,
                  gpus_per_cell: float | None = None, plugins: tuple[str, ...] = (), isolate: str = "none") -> Executor:
    """The executor named on the command line."""
    if name == "local":
        if workers not in (None, 1) or address:
            raise UserInputError("--workers and --ray-address need --executor ray")
        return LocalExecutor(isolate=isolate)
    if name == "ray":
        if isolate not in ("none", "process"):
            raise UserInputError(f"--isolate must be none or process, not {isolate!r}")
        # Ray cells already run in worker processes; a crashed worker fails (or retries) only its cell.
        return RayExecutor(workers=workers, address=address, gpus_per_cell=gpus_per_cell, plugins=plugins)
    raise UserInputError(f"--executor must be local or ray, not {name!r}")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray needs Ray: pip install 'robench[ray]' (or pip install 'ray[default]')") from None
    return ray


@dataclass
class _Flight:
    job: CellJob
    attempts: int = 0
    completed: int = 0
    records: dict = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)


class RayExecutor(Executor):
    """Cells as Ray tasks; results stream back to this process, the store's one writer."""

    interleaved = True

    def __init__(self, workers: int | None = None, address: str | None = None, cpus_per_cell: float = 1,
                 gpus_per_cell: float | None = None, max_retries: int = 2, plugins: tuple[str, ...] = ()):
        if workers is not None and workers < 1:
            raise UserInputError(f"--workers must be >= 1, not {workers}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.workers = workers
        self.cpus_per_cell = cpus_per_cell
        self.gpus_per_cell = gpus_per_cell
        self.max_retries = max_retries
        self.plugins = tuple(plugins)

    def describe(self) -> str:
        where = self.address or "local cluster"
        return f"ray ({where}, {self.workers or 'all'} workers)"

    # -- cluster --------------------------------------------------------------------------
    def _connect(self, ray, device_type: str) -> bool:
        """Join the cluster at ``address``, or start a private local one; True if we started it."""
        if ray.is_initialized():
            return False
        # Workers must import the same plugin modules the driver imported (e.g. --plugin my_mod from
        # the current folder): give local workers the driver's import path. Remote clusters need
        # robench and the plugins installed on every node (see docs/reliability.md).
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
        if self.address:
            ray.init(address=self.address, runtime_env=env, log_to_driver=False)
        else:
            workers = self.workers or os.cpu_count() or 1
            gpus = torch.cuda.device_count() if device_type == "cuda" else 0
            # the private cluster's start-up INFO/WARNING chatter (auth token, "Started a local Ray
            # instance") is not robench's output: only its errors are shown
            ray.init(num_cpus=workers * self.cpus_per_cell, num_gpus=gpus, include_dashboard=False,
                     runtime_env=env, log_to_driver=False, logging_level=logging.ERROR)
        return True

    # -- the run ----------------------------------------------------------------------------
    def run_cells(self, work: Workload, cells: list[dict[str, Any]], sink: CellSink) -> None:
        ray = _import_ray()
        started = self._connect(ray, work.device.type)
        data = work.data
        try:
            setup = make_setup(work, uuid.uuid4().hex)
            setup = dataclasses.replace(setup, plugins=self.plugins or setup.plugins)
            setup_ref = ray.put(setup)
            data_ref = ray.put(data)
            states = {name: ray.put(model_state(model)) for name, model in work.models.models.items()}
            gpus = self.gpus_per_cell if self.gpus_per_cell is not None else (1 if work.device.type == "cuda" else 0)
            task = ray.remote(cell_task).options(num_cpus=self.cpus_per_cell, num_gpus=gpus, max_retries=0,
                                                 num_returns="streaming")
            limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_cell))

            queue: deque[_Flight] = deque()
            for c in cells:
                job = sink.open(c)
                if job is None:
                    continue
                try:
                    work.cell_models(job)  # a model that failed to train fails its cells here, not on a worker
                except RobenchError as exc:
                    sink.fail(job, describe_exception(exc))
                    continue
                queue.append(_Flight(job, completed=job.done_before))

            running: dict[Any, _Flight] = {}
            while queue or running:
                while queue and len(running) < limit:
                    fl = queue.popleft()
                    fl.attempts += 1
                    j = fl.job
                    gen = task.remote(setup_ref, j, data_ref, states[j.model], states[j.source] if j.source else None)
                    running[gen] = fl
                    # Ray cells report only when a batch comes back: say what is in flight meanwhile
                    sink.log(f"{j.label}: running on a Ray worker ({fl.completed}/{len(data.x)} samples stored)")
                ready, _ = ray.wait(list(running), num_returns=1)
                gen = ready[0]
                fl = running[gen]
                try:
                    msg = ray.get(next(gen))
                except StopIteration:
                    del running[gen]
                    continue
                except ray.exceptions.RayTaskError as exc:  # our task body catches everything; this is a bug
                    del running[gen]
                    sink.fail(fl.job, f"ray task error: {exc}")
                    continue
                except ray.exceptions.RayError as exc:  # the worker or its node died: retry what is missing
                    del running[gen]
                    fl.crashes.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                    if fl.attempts > self.max_retries:
                        sink.fail(fl.job, f"the worker running this cell died {fl.attempts} times; last: {fl.crashes[-1]}")
                    else:
                        sink.log(f"[yellow]cell {fl.job.label}: worker died ({fl.crashes[-1]}); retrying[/yellow]")
                        fl.job = remaining(fl.job, sink.done_indices(fl.job), data)
                        queue.appendleft(fl)
                    continue
                kind = msg[0]
                for line in msg[-1]:
                    sink.log(line)
                if kind == "batch":
                    _, cand, records, _logs = msg
                    try:  # the driver's verdict, with its own model and data, on what the worker's attack returned
                        rows = verify_candidates(fl.job, data, cand, work.models.models[fl.job.model], work.device)
                    except Exception as exc:
                        try:
                            ray.cancel(gen, force=True)
                        except Exception:  # the task may be gone already; nothing more of it is read
                            pass
                        del running[gen]
                        sink.fail(fl.job, describe_exception(exc))
                        continue
                    sink.write(fl.job, BatchResult(rows, records))
                    fl.completed += len(rows)
                    fl.records = records
                elif kind == "done":
                    sink.finish(fl.job, fl.records, f" (after {len(fl.crashes)} worker crash(es))" if fl.crashes else "")
                elif kind == "failed":
                    sink.fail(fl.job, msg[1])
        finally:
            if started:
                ray.shutdown()


def remaining(job: CellJob, done: set[int], data: EvalData) -> CellJob:
    """The same cell, restricted to the samples not stored yet."""
    keep = [k for k, p in enumerate(job.positions) if data.indices[p] not in done]
    return dataclasses.replace(job, positions=[job.positions[k] for k in keep], clean_pred=[job.clean_pred[k] for k in keep],
                               done_before=len(data.x) - len(keep))
