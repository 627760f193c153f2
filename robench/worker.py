"""The worker side of a cell that runs outside the driver (a Ray task, or a child process).

A worker rebuilds the run's plugins from a :class:`WorkerSetup`, rebuilds each model exactly as
the driver holds it (constructed under the suite seed, then the driver's weights), runs the cell
through :func:`robench.cell.attack_cell`, and streams messages back: ``("batch", candidates,
records, logs)`` per batch, then ``("done", logs)`` or ``("failed", error, logs)``. The driver
verifies every batch itself (:func:`robench.cell.verify_candidates`, with its own model and data:
nothing that ran beside the attack decides what counts) and stays the store's only writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import RobenchError


@dataclass
class WorkerSetup:
    """What every worker needs to rebuild the run's plugins (sent once per run)."""

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


def make_setup(work, run_token: str) -> WorkerSetup:
    """The setup of a run's workers, from the driver's :class:`robench.executors.Workload`."""
    from .plugins import plugin_version

    s = work.resolved.suite
    used = {("model", m.plugin) for m in s.models} | {("attack", a.plugin) for a in s.attacks}
    return WorkerSetup(
        suite=s.model_dump(mode="json"), suite_path=work.resolved.path, plugins=tuple(work.plugins),
        versions={f"{k}:{n}": plugin_version(work.registry.get(k, n)) for k, n in sorted(used)},
        device_type=work.device.type, data_dir=str(work.data_dir) if work.data_dir else None,
        run_token=run_token, threads=torch.get_num_threads(),
    )


_WORKER: dict[str, Any] = {}  # per worker process: plugins, suite and recently used models


def worker_runtime(setup: WorkerSetup):
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
                raise RobenchError(f"this worker has {kind} plugin {plugin} at {mine}, the driver at {version}; "
                                   "install the same versions on every node")
        if setup.device_type == "cuda" and not torch.cuda.is_available():
            raise RobenchError("the run uses CUDA, but this worker sees no GPU (give cells GPUs: --gpus-per-cell)")
        _WORKER.clear()
        _WORKER.update(key=key, registry=registry, resolved=resolved, models={})
    return _WORKER["registry"], _WORKER["resolved"]


def worker_model(resolved, registry, name: str, state, info, device: torch.device):
    """Rebuild a model exactly as the driver holds it: constructed under the suite seed, then its weights."""
    from .guard import ClassSnapshot, fingerprint, freeze
    from .models import build_model

    models = _WORKER["models"]
    if name in models:
        return models[name][0]
    model = freeze(build_model(resolved, registry, name, info, device, state))
    if len(models) >= 2:  # keep memory bounded: a worker sees a few models in turn
        models.pop(next(iter(models)))
    models[name] = (model, fingerprint(model), ClassSnapshot(model))
    return model


def _drop_changed(job) -> None:
    """A model a cell changed is not reused: its classes are put back and it is rebuilt next time."""
    from .guard import changes, fingerprint

    models = _WORKER.get("models") or {}
    for name in {job.model, job.source} - {None}:
        entry = models.get(name)
        if entry is not None and changes(entry[1], fingerprint(entry[0])):
            entry[2].restore()
            del models[name]


def cell_task(setup: WorkerSetup, job, data, state, source_state) -> Iterator[tuple]:
    """Run one cell on this worker; a generator of the messages described in the module docstring."""
    from .cell import attack_cell, describe_exception

    logs: list[str] = []
    try:
        registry, resolved = worker_runtime(setup)
        if torch.get_num_threads() != setup.threads:
            torch.set_num_threads(setup.threads)
        device = torch.device(setup.device_type)
        model = worker_model(resolved, registry, job.model, state, data.info, device)
        source = worker_model(resolved, registry, job.source, source_state, data.info, device) if job.source else None
        factory = registry.get("attack", job.attack_plugin).factory
        data_dir = Path(setup.data_dir) if setup.data_dir else None
        for batch in attack_cell(job, factory, resolved.attack_params[job.attack], model, source, data, device, data_dir, logs.append,
                                 registry=registry, verify_rows=False):
            yield ("batch", batch.candidates, batch.records, logs[:])
            logs.clear()
        yield ("done", logs[:])
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as exc:  # SystemExit from a plugin too: only this cell fails
        yield ("failed", describe_exception(exc), logs[:])
    finally:
        _drop_changed(job)
