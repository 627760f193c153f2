"""A run: suite -> plan -> models -> cells (through an executor) -> store, with a summary.

The pieces live in their own modules (:mod:`robench.plan`, :mod:`robench.models`,
:mod:`robench.cell`, :mod:`robench.executors`, :mod:`robench.store`); this one orchestrates them.
Executors see the run only through :class:`StoreSink` (open a cell, write a batch, finish, fail)
and the :class:`robench.executors.Workload` (data, models, plugins).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .cell import BatchResult, CellJob, describe_exception
from .counting import CountingModel
from .curves import write_curves
from .data import EvalData, load_eval_data, load_train_data
from .errors import StoreError, UserInputError
from .models import ModelPool, default_cache_dir, resolve_device
from .paths import check_output_dir, confine_paths
from .plan import cell_key, cell_label, plan_cells, select_shard, shard_positions
from .plugins import Registry
from .provenance import provenance, recorded_weights
from .store import Store, StoreLock, check_store_file
from .suite import Resolved


@dataclass
class PlannedCell:
    label: str
    model: str
    attack: str
    todo: int  # samples still to attack
    seconds_per_sample: float | None = None  # from samples of this model and attack stored earlier


@dataclass
class RunPlan:
    """What a run is about to do, told to the reporter before any model trains."""

    suite: str
    samples: int  # evaluation samples (after --limit)
    cells: list[PlannedCell]
    models: dict[str, str]  # name -> "cached", "from the zoo", "to train", "retrain" or "pretrained"
    estimate: str | None = None  # the suite's own estimate (for its full sample count)
    suite_samples: int | None = None  # the sample count the suite's estimate is for (its dataset limit)

    @property
    def cells_stored(self) -> int:
        return sum(1 for c in self.cells if c.todo == 0)

    @property
    def samples_todo(self) -> int:
        return sum(c.todo for c in self.cells)

    def stored_estimate(self) -> tuple[float, int]:
        """(seconds, cells without timing): the cells left, at the rates of their stored samples."""
        seconds, unknown = 0.0, 0
        for c in self.cells:
            if c.todo:
                if c.seconds_per_sample is None:
                    unknown += 1
                else:
                    seconds += c.todo * c.seconds_per_sample
        return seconds, unknown


class Reporter:
    """Progress callbacks (the CLI draws rich bars; tests use the silent default)."""

    def plan(self, plan: RunPlan) -> None: ...
    def phase(self, text: str) -> None: ...
    def start_cells(self, total: int) -> None: ...
    def start_task(self, label: str, total: int) -> None: ...
    def advance_task(self, done: int, total: int | None = None) -> None: ...
    def end_task(self, status: str) -> None: ...
    def log(self, text: str) -> None: ...

    def end_cell(self, label: str, status: str, seconds: float) -> None:
        """A cell that ran elsewhere (a Ray worker) ended after ``seconds`` of attack time."""
        self.start_task(label, 1)
        self.advance_task(1)
        self.end_task(status)


@dataclass
class RunSummary:
    run_id: int
    store_path: Path
    cells_total: int = 0
    cells_skipped: int = 0
    cells_done: int = 0
    cells_failed: list[tuple[str, str]] = field(default_factory=list)  # (cell label, error)
    models_failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.cells_failed and not self.models_failed


@dataclass
class RunOptions:
    out_dir: Path
    data_dir: Path
    cache_dir: Path = field(default_factory=default_cache_dir)
    limit: int | None = None
    device: str | None = None  # overrides the suite's
    retrain: bool = False
    shard: tuple[int, int] | None = None  # (i, n), 1 <= i <= n: run only this deterministic share
    shard_by: str = "samples"  # what the shard splits: "samples" (blocks of batch_size) or "cells"
    executor: Any = None  # an executors.Executor; None = the local executor, in this process
    plugins: tuple[str, ...] = ()  # the --plugin modules (remote workers import them too)
    isolate: str = "none"  # "none": cells run in this process; "process": each in a child process (local executor)
    allow_dirs: tuple[Path, ...] = ()  # folders besides the data dir (and the suite's) that path parameters may name


def _predict_all(model, x: torch.Tensor, device: torch.device, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.predict(x[i : i + batch].to(device)).cpu() for i in range(0, len(x), batch)])


class StoreSink:
    """What an executor may do to a run: open a cell, write a verified batch, finish it, fail it, log.

    ``interleaved``: cells finish out of order (Ray), so each is shown once when it ends instead
    of with a live bar.
    """

    def __init__(self, runner: Runner, store: Store, summary: RunSummary, data: EvalData, *, interleaved: bool = False,
                 positions: list[int] | None = None):
        self.runner = runner
        self.positions = list(range(len(data.x))) if positions is None else positions  # this run's samples (a shard's)
        self.store = store
        self.summary = summary
        self.data = data
        self.interleaved = interleaved
        self.rep = runner.rep
        self._completed: dict[str, int] = {}
        self._seconds: dict[str, float] = {}  # attack time of each cell's batches in this run

    def log(self, text: str) -> None:
        self.rep.log(text)

    def open(self, c: dict[str, Any]) -> CellJob | None:
        """Register the cell; return its remaining work, or None when every sample is stored."""
        r, store, data = self.runner, self.store, self.data
        s = r.suite
        m, a, spec = c["model"], c["attack"], c["spec"]
        key = r.cell_key(c)
        label = cell_label(c)
        factory = spec.factory
        model = r.models.get(m.name)
        needs_grad = "gradients" in factory.needs
        via_surrogate = bool(model is not None and needs_grad and not model.differentiable)
        status = store.ensure_cell(
            key, self.summary.run_id, suite=s.name, model=m.name, model_plugin=m.plugin, attack=a.name, attack_plugin=a.plugin,
            norm=str(c["norm"]), kind=c.get("kind", factory.kind), eps=c["eps"], source=a.source, needs=sorted(factory.needs),
            via_surrogate=int(via_surrogate), n_total=len(data.x),
            config={"model_key": r.model_keys[m.name], "attack_params": r.resolved.attack_params[a.name].model_dump(mode="json")},
        )
        done = store.done_indices(key)
        todo = [i for i in self.positions if data.indices[i] not in done]
        if not todo:
            if status != "done":
                store.set_cell_status(key, "done")
            self.summary.cells_skipped += 1
            self.rep.start_task(label, 1)
            self.rep.end_task("stored")
            return None
        store.set_cell_status(key, "running", run_id=self.summary.run_id)
        clean = store.clean(s.name).get(m.name, {}) if model is not None else {}
        stored = [clean[data.indices[i]] for i in todo] if clean else []  # (label, pred, sha256) per sample
        job = CellJob(
            key=key, label=label, model=m.name, model_plugin=m.plugin, attack=a.name, attack_plugin=a.plugin,
            norm=c["norm"], eps=c["eps"], source=a.source, via_surrogate=via_surrogate, batch_size=a.batch_size or s.batch_size,
            positions=todo, clean_pred=[p for _, p, _ in stored], seed=s.seed, done_before=len(self.positions) - len(todo),
            sha256=[sha for _, _, sha in stored], labels=[lbl for lbl, _, _ in stored], needs=tuple(sorted(factory.needs)),
            model_key=r.model_keys[m.name], budget=s.budget_for(a), curves=s.curves,
        )
        self._completed[key] = job.done_before
        if not self.interleaved:
            self.rep.start_task(label, len(self.positions))
            self.rep.advance_task(job.done_before)
        return job

    def write(self, job: CellJob, batch: BatchResult) -> None:
        self.store.write_samples(job.key, batch.rows, records=batch.records or None)
        write_curves(self.store, job.key, batch.rows)  # best-so-far curves (robench.curves), where tracked
        self._seconds[job.key] = self._seconds.get(job.key, 0.0) + sum(r.seconds for r in batch.rows)
        self._completed[job.key] = done = self._completed.get(job.key, 0) + len(batch.rows)
        if not self.interleaved:
            self.rep.advance_task(done)
        elif done < len(self.positions):
            self.rep.log(f"{job.label}: {done}/{len(self.positions)} samples stored")

    def progress(self, job: CellJob, in_batch: float) -> None:
        """The attack reported that it is ``in_batch`` samples into the batch in flight."""
        if not self.interleaved:
            self.rep.advance_task(self._completed.get(job.key, 0) + in_batch)

    def finish(self, job: CellJob, records: dict[str, float], note: str = "") -> None:
        self.store.set_cell_status(job.key, "done", records=dict(records))
        self.summary.cells_done += 1
        self._end(job, "done" + note)

    def fail(self, job: CellJob, error: str) -> None:
        self.store.set_cell_status(job.key, "failed", error=error)
        self.summary.cells_failed.append((job.label, error))
        self.rep.log(f"[red]cell {job.label} failed[/red]: {error.strip().splitlines()[-1]}")
        self._end(job, "[red]failed[/red]")

    def done_indices(self, job: CellJob) -> set[int]:
        return self.store.done_indices(job.key)

    def _end(self, job: CellJob, status: str) -> None:
        if self.interleaved:  # one finished cell on the progress display, with the attack time its batches took
            self.rep.end_cell(job.label, status, self._seconds.get(job.key, 0.0))
        else:
            self.rep.end_task(status)


class Runner:
    def __init__(self, resolved: Resolved, registry: Registry, options: RunOptions, reporter: Reporter | None = None):
        self.resolved = resolved
        self.suite = resolved.suite
        self.registry = registry
        self.opt = options
        self.rep = reporter or Reporter()
        self.device = resolve_device(options.device or self.suite.device)
        self.pool = ModelPool(resolved, registry, self.device, options.cache_dir, options.data_dir, retrain=options.retrain,
                              reporter=self.rep, train_data=self._train_split)
        self.models = self.pool.models
        self.model_keys = self.pool.keys
        self.model_errors = self.pool.errors
        self._train_data: tuple[torch.Tensor, torch.Tensor] | None = None

    def _train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._train_data is None:
            self._train_data = load_train_data(self.resolved, self.registry, self.opt.data_dir)
        return self._train_data

    def plan(self) -> list[dict[str, Any]]:
        """Every cell of the suite, in run order."""
        return plan_cells(self.resolved, self.registry)

    def cell_key(self, c: dict[str, Any]) -> str:
        return cell_key(self.resolved, c, self.model_keys)

    def executor(self):
        from .executors import LocalExecutor

        return self.opt.executor if self.opt.executor is not None else LocalExecutor(isolate=self.opt.isolate)

    def run(self) -> RunSummary:
        s = self.suite
        check_output_dir(self.opt.out_dir)
        confine_paths(self.resolved, self.opt.data_dir, self.opt.allow_dirs)
        path = self.opt.out_dir / "results.sqlite"
        executor = self.executor()
        with StoreLock(path):
            check_store_file(path)
            store = Store(path)
            try:
                prov = provenance(self.resolved, self.registry, self.device)
                prov["executor"] = executor.describe()
                if self.opt.shard is not None:
                    prov["shard"] = ("cells:" if self.opt.shard_by == "cells" else "") + "{}/{}".format(*self.opt.shard)
                run_id = store.start_run(s.name, s.content_hash(), prov)
                store.save_suite(s.name, s.content_hash(), s.model_dump(mode="json"))
                summary = RunSummary(run_id, store.path)
                status = "failed"
                try:
                    self._run(store, summary, executor)
                    status = "done" if summary.ok else "failed"
                except KeyboardInterrupt:
                    status = "interrupted"
                    raise
                except sqlite3.Error as exc:
                    raise StoreError(
                        f"cannot write results to {path}: {exc}. Every batch stored so far is kept; "
                        "fix the cause (disk full? read-only?) and run the same command again to resume"
                    ) from None
                finally:
                    try:
                        store.finish_run(run_id, status)
                    except sqlite3.Error:
                        pass  # the error that brought us here is the one to report
                return summary
            finally:
                store.close()

    def _run(self, store: Store, summary: RunSummary, executor) -> None:
        from .executors import Workload

        s = self.suite
        self.rep.phase(f"loading {s.dataset.name} ({s.dataset.split})")
        data = load_eval_data(self.resolved, self.registry, self.opt.data_dir, self.opt.limit)
        if len(data.x) == 0:
            raise UserInputError(f"dataset.offset/limit select no samples of {s.dataset.name} {s.dataset.split}")
        self.pool.compute_keys()
        cells = self.plan()
        needed = {m.name for m in s.models}
        positions = None  # every sample
        if self.opt.shard is not None and self.opt.shard_by == "cells":  # a shard trains only the models its cells attack
            cells = select_shard(cells, self.opt.shard)
            needed = {c["model"].name for c in cells} | {c["attack"].source for c in cells if c["attack"].source}
        elif self.opt.shard is not None:
            positions = shard_positions(len(data.x), s.batch_size, self.opt.shard)
            if not positions:
                raise UserInputError(f"--shard {self.opt.shard[0]}/{self.opt.shard[1]} holds no samples: {len(data.x)} samples make "
                                     f"{-(-len(data.x) // s.batch_size)} batches of {s.batch_size}; use fewer shards")
        mine = positions if positions is not None else range(len(data.x))
        self.rep.plan(self._plan(store, data, cells, needed, mine))

        recorded = recorded_weights(store.runs(s.name))  # the weights earlier runs' results were computed on
        for m in s.models:
            if m.name not in needed:
                continue
            try:
                model = self.pool.load(m.name, data.info, recorded=recorded)
                pred = _predict_all(CountingModel(model, f"model plugin {m.plugin}"), data.x, self.device)
                # a sample shard stores the clean predictions of its samples only: its leaderboard covers them
                if not {data.indices[i] for i in mine} <= store.clean_indices(s.name, m.name, self.model_keys[m.name]):
                    store.write_clean(s.name, m.name, self.model_keys[m.name], [
                        (data.indices[i], data.sha256[i], int(data.y[i]), int(pred[i])) for i in mine
                    ])
                self.models[m.name] = model
                acc = float((pred == data.y).float().mean())
                self.rep.log(f"model {m.name}: clean accuracy {acc:.3f} on {len(pred)} samples")
            except (KeyboardInterrupt, sqlite3.Error):
                raise
            except BaseException as exc:  # SystemExit from a plugin too: only this model fails
                err = describe_exception(exc)
                self.model_errors[m.name] = err
                summary.models_failed.append((m.name, err))
                self.rep.log(f"[red]model {m.name} failed[/red]: {err.splitlines()[-1]}")
        if self.pool.cards:  # each model's card (weights hash, origin, training time), for the published Models table
            store.add_run_provenance(summary.run_id, "models", self.pool.cards)

        if s.noise:
            self._run_noise(store, data)

        summary.cells_total = len(cells)
        self.rep.start_cells(len(cells))
        work = Workload(resolved=self.resolved, registry=self.registry, data=data, models=self.pool, device=self.device,
                        data_dir=self.opt.data_dir, plugins=tuple(self.opt.plugins), log=self.rep.log)
        sink = StoreSink(self, store, summary, data, interleaved=executor.interleaved, positions=positions)
        executor.run_cells(work, cells, sink)

    def _plan(self, store: Store, data: EvalData, cells: list[dict[str, Any]], needed: set[str], mine) -> RunPlan:
        """Cells and samples left (of the positions ``mine``), the models to train, and what earlier runs' timing predicts."""
        s = self.suite
        planned, rates = [], {}
        indices = {data.indices[i] for i in mine}
        for c in cells:
            key = self.cell_key(c)
            done = store.done_indices(key) & indices
            m, a = c["model"].name, c["attack"].name
            if done and (m, a) not in rates:  # s/sample of this model and attack (any eps) stored earlier
                secs = [r["seconds"] for r in store.samples(key) if r["seconds"] is not None]
                if secs:
                    rates[(m, a)] = sum(secs) / len(secs)
            planned.append(PlannedCell(cell_label(c), m, a, len(indices) - len(done)))
        for p in planned:
            p.seconds_per_sample = rates.get((p.model, p.attack))
        models = {}
        for m in s.models:
            if m.name not in needed:
                continue
            factory = self.registry.get("model", m.plugin).factory
            cached = (self.opt.cache_dir / self.model_keys[m.name] / "weights.safetensors").is_file()
            from .zoo import read_manifest

            in_zoo = not cached and not self.opt.retrain and self.model_keys[m.name] in read_manifest()
            models[m.name] = ("pretrained" if not getattr(factory, "trainable", True)
                              else "retrain" if cached and self.opt.retrain else "cached" if cached
                              else "from the zoo" if in_zoo else "to train")
        return RunPlan(s.name, len(indices), planned, models, estimate=s.estimate, suite_samples=s.dataset.limit)

    def _run_noise(self, store: Store, data: EvalData) -> None:
        s = self.suite
        for name, model in self.models.items():
            for k, sigma in enumerate(s.noise.sigmas):
                if store.noise_done(s.name, name, self.model_keys[name], sigma):
                    continue
                gen = torch.Generator().manual_seed(s.seed * 1000 + k)
                noisy = (data.x + sigma * torch.randn(data.x.shape, generator=gen)).clamp_(0, 1)
                pred = _predict_all(model, noisy, self.device)
                store.write_noise(s.name, name, self.model_keys[name], sigma,
                                  [(i, int(lbl), int(p)) for i, lbl, p in zip(data.indices, data.y, pred)])


def run_suite(resolved: Resolved, registry: Registry, options: RunOptions, reporter: Reporter | None = None) -> RunSummary:
    return Runner(resolved, registry, options, reporter).run()
