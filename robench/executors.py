"""Where cells run: in this process (``local``, the default) or on Ray workers (``ray``, optional extra).

Either way the driver process is the store's only writer: workers attack cells and stream each
verified batch back, and the driver writes it in one transaction, exactly as the local executor
does. Cells run through :func:`robench.runner.attack_cell` on both, and each batch is seeded from
(seed, cell key, first sample), so a cell's rows are the same wherever it ran.

Ray: the driver trains (or loads) the models, puts the evaluation data and every model's weights in
the object store once, and ships one task per cell (``cpus_per_cell`` CPUs, ``gpus_per_cell`` GPUs).
A worker that dies (crash, SIGKILL, node loss, Ray's out-of-memory killer) takes only its cell's
batch in flight with it: the cell is resubmitted with the samples still missing, up to
``max_retries`` times.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import RobenchError, UserInputError


class Executor:
    """Runs the cells of a :class:`robench.runner.Runner`; the runner owns the store."""

    def describe(self) -> str:
        raise NotImplementedError

    def run_cells(self, runner, store, summary, data, cells: list[dict[str, Any]]) -> None:
        raise NotImplementedError


class LocalExecutor(Executor):
    """Cell after cell in this process."""

    def describe(self) -> str:
        return "local"

    def run_cells(self, runner, store, summary, data, cells):
        for c in cells:
            runner._run_cell(store, summary, data, c)


def make_executor(name: str, *, workers: int | None = None, address: str | None = None,
                  gpus_per_cell: float | None = None, plugins: tuple[str, ...] = ()) -> Executor | None:
    """The executor named on the command line (None = the runner's built-in local loop)."""
    if name == "local":
        if workers not in (None, 1) or address:
            raise UserInputError("--workers and --ray-address need --executor ray")
        return None
    if name == "ray":
        return RayExecutor(workers=workers, address=address, gpus_per_cell=gpus_per_cell, plugins=plugins)
    raise UserInputError(f"--executor must be local or ray, not {name!r}")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray needs Ray: pip install 'robench[ray]' (or pip install 'ray[default]')") from None
    return ray


@dataclass
class WorkerSetup:
    """What every worker needs to rebuild the run's plugins (sent once through the object store)."""

    suite: dict
    suite_path: str
    plugins: tuple[str, ...]
    versions: dict[str, str]  # "kind:plugin" -> version on the driver; workers must have the same
    device_type: str
    data_dir: str | None
    run_token: str  # new per driver run: a long-lived worker must not reuse models of an earlier run
    # torch's intra-op thread count on the driver: CPU kernels split work by thread, and float sums in a
    # different order differ in the last bits, so workers compute with the same count to match it exactly.
    threads: int


@dataclass
class _Flight:
    job: Any  # runner.CellJob
    attempts: int = 0
    completed: int = 0
    records: dict = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)


class RayExecutor(Executor):
    """Cells as Ray tasks; results stream back to this process, the store's one writer."""

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
            ray.init(num_cpus=workers * self.cpus_per_cell, num_gpus=gpus, include_dashboard=False,
                     runtime_env=env, log_to_driver=False)
        return True

    # -- the run ----------------------------------------------------------------------------
    def run_cells(self, runner, store, summary, data, cells):
        from .plugins import plugin_version
        from .runner import _describe_exception

        ray = _import_ray()
        started = self._connect(ray, runner.device.type)
        try:
            s = runner.suite
            used = {("model", m.plugin) for m in s.models} | {("attack", a.plugin) for a in s.attacks}
            setup = WorkerSetup(
                suite=s.model_dump(mode="json"), suite_path=runner.resolved.path, plugins=self.plugins or tuple(runner.opt.plugins),
                versions={f"{k}:{n}": plugin_version(runner.registry.get(k, n)) for k, n in sorted(used)},
                device_type=runner.device.type, data_dir=str(runner.opt.data_dir) if runner.opt.data_dir else None,
                run_token=uuid.uuid4().hex, threads=torch.get_num_threads(),
            )
            setup_ref = ray.put(setup)
            data_ref = ray.put(data)
            states = {name: ray.put(_model_state(name, model)) for name, model in runner.models.items()}
            gpus = self.gpus_per_cell if self.gpus_per_cell is not None else (1 if runner.device.type == "cuda" else 0)
            task = ray.remote(_cell_task).options(num_cpus=self.cpus_per_cell, num_gpus=gpus, max_retries=0,
                                                  num_returns="streaming")
            limit = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_cell))

            queue: deque[_Flight] = deque()
            for c in cells:
                job = runner.open_cell(store, summary, data, c)
                if job is None:
                    continue
                try:
                    runner.cell_models(job)  # a model that failed to train fails its cells here, not on a worker
                except RobenchError as exc:
                    runner.cell_failed(store, summary, job, _describe_exception(exc))
                    _report(runner, job.label, "[red]failed[/red]")
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
                    runner.rep.log(f"{j.label}: running on a Ray worker ({fl.completed}/{len(data.x)} samples stored)")
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
                    runner.cell_failed(store, summary, fl.job, f"ray task error: {exc}")
                    _report(runner, fl.job.label, "[red]failed[/red]")
                    continue
                except ray.exceptions.RayError as exc:  # the worker or its node died: retry what is missing
                    del running[gen]
                    fl.crashes.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                    if fl.attempts > self.max_retries:
                        err = f"the worker running this cell died {fl.attempts} times; last: {fl.crashes[-1]}"
                        runner.cell_failed(store, summary, fl.job, err)
                        _report(runner, fl.job.label, "[red]failed[/red]")
                    else:
                        runner.rep.log(f"[yellow]cell {fl.job.label}: worker died ({fl.crashes[-1]}); retrying[/yellow]")
                        fl.job = _remaining(fl.job, store.done_indices(fl.job.key), data)
                        queue.appendleft(fl)
                    continue
                kind = msg[0]
                for line in msg[-1]:
                    runner.rep.log(line)
                if kind == "batch":
                    _, rows, records, _logs = msg
                    store.write_samples(fl.job.key, rows, records=records or None)
                    fl.completed += len(rows)
                    fl.records = records
                    if fl.completed < len(data.x):
                        runner.rep.log(f"{fl.job.label}: {fl.completed}/{len(data.x)} samples stored")
                elif kind == "done":
                    runner.cell_done(store, summary, fl.job, fl.records)
                    _report(runner, fl.job.label, "done" + (f" (after {len(fl.crashes)} worker crash(es))" if fl.crashes else ""))
                elif kind == "failed":
                    runner.cell_failed(store, summary, fl.job, msg[1])
                    _report(runner, fl.job.label, "[red]failed[/red]")
        finally:
            if started:
                ray.shutdown()


def _report(runner, label: str, status: str) -> None:
    """One finished cell on the progress display (cells finish out of order, so no per-cell bar)."""
    runner.rep.start_task(label, 1)
    runner.rep.advance_task(1)
    runner.rep.end_task(status)


def _remaining(job, done: set[int], data):
    """The same cell, restricted to the samples not stored yet."""
    import dataclasses

    keep = [k for k, p in enumerate(job.positions) if data.indices[p] not in done]
    return dataclasses.replace(job, positions=[job.positions[k] for k in keep], clean_pred=[job.clean_pred[k] for k in keep],
                               done_before=len(data.x) - len(keep))


def _model_state(name: str, model) -> dict[str, torch.Tensor] | None:
    if not model.trainable:
        return None  # complete at construction (seeded the same way on the worker)
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


# -- the worker side ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}  # per worker process: plugins, suite and recently used models


def _worker_runtime(setup: WorkerSetup):
    from .plugins import get_registry, plugin_version
    from .suite import Suite, resolve

    key = repr((setup.suite, setup.plugins, setup.run_token))
    if _WORKER.get("key") != key:
        registry = get_registry(setup.plugins)
        resolved = resolve(Suite.model_validate(setup.suite), registry, setup.suite_path)
        for name, version in setup.versions.items():
            kind, plugin = name.split(":", 1)
            mine = plugin_version(registry.get(kind, plugin))
            if mine != version:
                raise RobenchError(f"this Ray worker has {kind} plugin {plugin} at {mine}, the driver at {version}; "
                                   "install the same versions on every node")
        if setup.device_type == "cuda" and not torch.cuda.is_available():
            raise RobenchError("the run uses CUDA, but this Ray worker sees no GPU (give cells GPUs: --gpus-per-cell)")
        _WORKER.clear()
        _WORKER.update(key=key, registry=registry, resolved=resolved, models={})
    return _WORKER["registry"], _WORKER["resolved"]


def _worker_model(resolved, registry, name: str, state, info, device: torch.device):
    """Rebuild a model exactly as the driver holds it: constructed under the suite seed, then its weights."""
    from .runner import _seed_everything

    models = _WORKER["models"]
    if name in models:
        return models[name]
    entry = next(m for m in resolved.suite.models if m.name == name)
    _seed_everything(resolved.suite.seed)
    model = registry.get("model", entry.plugin).factory(resolved.model_params[name], info)
    if state is not None:
        model.load_state_dict(state)
    model.to(device)
    model.eval()
    if len(models) >= 2:  # keep memory bounded: a worker sees a few models in turn
        models.pop(next(iter(models)))
    models[name] = model
    return model


def _cell_task(setup: WorkerSetup, job, data, state, source_state):
    """A Ray task (a generator: each yielded message streams back to the driver as it is made)."""
    from .runner import _describe_exception, attack_cell

    logs: list[str] = []
    try:
        registry, resolved = _worker_runtime(setup)
        if torch.get_num_threads() != setup.threads:
            torch.set_num_threads(setup.threads)
        device = torch.device(setup.device_type)
        model = _worker_model(resolved, registry, job.model, state, data.info, device)
        source = _worker_model(resolved, registry, job.source, source_state, data.info, device) if job.source else None
        factory = registry.get("attack", job.attack_plugin).factory
        data_dir = Path(setup.data_dir) if setup.data_dir else None
        for batch in attack_cell(job, factory, resolved.attack_params[job.attack], model, source, data, device, data_dir, logs.append):
            yield ("batch", batch.rows, batch.records, logs[:])
            logs.clear()
        yield ("done", logs[:])
    except Exception as exc:
        yield ("failed", _describe_exception(exc), logs[:])
