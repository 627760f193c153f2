"""Suite -> cells (model x attack x eps) -> verified, stored per-sample results.

A cell is the unit of resume and of failure isolation: its key hashes everything that determines
its results (dataset slice, model config, attack config, eps, seed, plugin versions, batch size),
but not ``limit``, so a larger ``--limit`` extends a run instead of restarting it. Samples are
indexed by their position in the split after ``offset``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import __version__
from .api import Attack, Context, DatasetInfo, Model, Norm, Params
from .errors import RobenchError, UserInputError
from .plugins import Registry, plugin_version
from .store import SampleRow, Store
from .suite import Resolved
from .verify import verify

CACHE_ENV = "ROBENCH_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/robench/models").expanduser()


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device: cuda was asked for, but torch sees no CUDA device (use device: auto or cpu)")
    return torch.device(choice)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(resolved: Resolved, registry: Registry, device: torch.device) -> dict[str, Any]:
    s = resolved.suite
    used = {("dataset", s.dataset.name)} | {("model", m.plugin) for m in s.models} | {("attack", a.plugin) for a in s.attacks}
    versions: dict[str, Any] = {"robench": __version__, "torch": torch.__version__, "numpy": np.__version__,
                                "python": platform.python_version()}
    try:
        import importlib.metadata as md

        for dist in ("foolbox", "adversarial-robustness-toolbox", "tensorflow", "larq"):
            try:
                versions[dist] = md.version(dist)
            except md.PackageNotFoundError:
                pass
    except ImportError:  # pragma: no cover
        pass
    return {
        "versions": versions,
        "plugins": {f"{k}:{n}": plugin_version(registry.get(k, n)) for k, n in sorted(used)},
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "host": platform.node(),
        "platform": platform.platform(),
        "seed": s.seed,
        "suite_hash": s.content_hash(),
        "suite_path": resolved.path,
        "git_commit": _git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


# -- data ---------------------------------------------------------------------------------------


def select_classes(x: torch.Tensor, y: torch.Tensor, classes: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only ``classes``, relabelled 0..k-1 in the given order."""
    if not classes:
        return x, y
    mapping = torch.full((int(max(int(y.max()), max(classes))) + 1,), -1, dtype=torch.int64)
    for new, old in enumerate(classes):
        mapping[old] = new
    keep = mapping[y] >= 0
    return x[keep], mapping[y[keep]]


def check_batch(x: torch.Tensor, who: str, shape: tuple[int, ...] | None = None) -> None:
    """Inputs crossing a plugin boundary must be finite, in [0, 1], and of the declared shape."""
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise RobenchError(f"{who}: images have shape {tuple(x.shape[1:])}, but the dataset declares {tuple(shape)}")
    if not torch.isfinite(x).all():
        raise RobenchError(f"{who}: images contain NaN or Inf")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise RobenchError(f"{who}: image values must lie in [0, 1], found [{float(x.min()):.3g}, {float(x.max()):.3g}]")


@dataclass
class EvalData:
    info: DatasetInfo
    x: torch.Tensor
    y: torch.Tensor
    indices: list[int]  # position of each sample in the split (after offset)
    sha256: list[str]


def load_eval_data(resolved: Resolved, registry: Registry, data_dir: Path, limit: int | None) -> EvalData:
    ref = resolved.suite.dataset
    dataset = registry.get("dataset", ref.name).factory(resolved.dataset_params)
    info = dataset.info()
    if ref.classes:
        bad = [c for c in ref.classes if not 0 <= c < info.num_classes]
        if bad:
            raise UserInputError(f"dataset.classes: {bad} not in 0..{info.num_classes - 1} for {ref.name}")
        info = DatasetInfo(info.name, info.input_shape, tuple(info.class_names[c] for c in ref.classes))
    if ref.split not in dataset.splits:
        raise UserInputError(f"dataset.split: {ref.name} has splits {list(dataset.splits)}, not {ref.split!r}")
    x, y = dataset.load(ref.split, data_dir)
    check_batch(x, f"dataset {ref.name}", info.input_shape)
    x, y = select_classes(x, y, ref.classes)
    n = limit if limit is not None else ref.limit
    end = len(x) if n is None else min(len(x), ref.offset + n)
    x, y = x[ref.offset : end].contiguous(), y[ref.offset : end].contiguous()
    shas = [hashlib.sha256(xi.numpy().tobytes()).hexdigest() for xi in x]
    return EvalData(info, x, y, list(range(len(x))), shas)


# -- models ------------------------------------------------------------------------------------


class CountingModel(Model):
    """Wraps a model so the harness, not the attack, counts forward and backward passes (rows)."""

    def __init__(self, inner: Model):
        self.inner = inner
        self.params = inner.params
        self.info = inner.info
        self.device = inner.device
        self.differentiable = inner.differentiable
        self.randomized = inner.randomized
        self.framework = inner.framework
        self.forward_rows = 0
        self.backward_rows = 0

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner.scores(x)
        n = out.shape[0]
        self.forward_rows += n
        if out.requires_grad:
            def count(grad, n=n):
                self.backward_rows += n
                return grad
            out.register_hook(count)
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.scores(x).argmax(dim=1)

    def surrogate(self) -> Model | None:
        return self.inner.surrogate()

    def reset(self) -> None:
        self.forward_rows = self.backward_rows = 0


def model_key(resolved: Resolved, registry: Registry, name: str, device: torch.device) -> str:
    s = resolved.suite
    entry = next(m for m in s.models if m.name == name)
    spec = registry.get("model", entry.plugin)
    return _hash({
        "plugin": entry.plugin,
        "version": plugin_version(spec),
        "params": resolved.model_params[name].model_dump(mode="json"),
        "dataset": {"name": s.dataset.name, "params": resolved.dataset_params.model_dump(mode="json"), "classes": s.dataset.classes},
        "seed": s.seed,
        "device": device.type,
    })


def save_checkpoint(model: Model, folder: Path, config: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / "weights.safetensors.part"
    save_file(state, str(tmp))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp, folder / "weights.safetensors")  # the weights file appears only when complete


def load_checkpoint(model: Model, folder: Path) -> None:
    """Tensors only (safetensors): a checkpoint can never run code."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / "weights.safetensors"
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RobenchError(f"checkpoint {path} is corrupt or not a safetensors file ({exc}); delete {folder} to retrain") from None
    try:
        model.load_state_dict(state)
    except Exception as exc:
        raise RobenchError(f"checkpoint {path} does not fit this model ({exc}); delete {folder} to retrain") from None


# -- the run ------------------------------------------------------------------------------------


@dataclass
class RunOptions:
    out_dir: Path
    data_dir: Path
    cache_dir: Path = field(default_factory=default_cache_dir)
    limit: int | None = None
    device: str | None = None  # overrides the suite's
    retrain: bool = False


class Reporter:
    """Progress callbacks (the CLI draws rich bars; tests use the silent default)."""

    def phase(self, text: str) -> None: ...
    def start_cells(self, total: int) -> None: ...
    def start_task(self, label: str, total: int) -> None: ...
    def advance_task(self, done: int, total: int | None = None) -> None: ...
    def end_task(self, status: str) -> None: ...
    def log(self, text: str) -> None: ...


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _batch_seed(seed: int, cell_key: str, start: int) -> int:
    return int(hashlib.sha256(f"{seed}:{cell_key}:{start}".encode()).hexdigest()[:8], 16)


def _predict_all(model: Model, x: torch.Tensor, device: torch.device, batch: int = 500) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.predict(x[i : i + batch].to(device)).cpu() for i in range(0, len(x), batch)])


class Runner:
    def __init__(self, resolved: Resolved, registry: Registry, options: RunOptions, reporter: Reporter | None = None):
        self.resolved = resolved
        self.suite = resolved.suite
        self.registry = registry
        self.opt = options
        self.rep = reporter or Reporter()
        self.device = resolve_device(options.device or self.suite.device)
        self.models: dict[str, Model] = {}
        self.model_keys: dict[str, str] = {}
        self.model_errors: dict[str, str] = {}
        self._train_data: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- models ---------------------------------------------------------------------------
    def _train_split(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._train_data is None:
            ref = self.suite.dataset
            dataset = self.registry.get("dataset", ref.name).factory(self.resolved.dataset_params)
            x, y = dataset.load("train", self.opt.data_dir)
            check_batch(x, f"dataset {ref.name} (train split)", dataset.info().input_shape)
            self._train_data = select_classes(x, y, ref.classes)
        return self._train_data

    def _get_model(self, name: str, info: DatasetInfo) -> Model:
        entry = next(m for m in self.suite.models if m.name == name)
        spec = self.registry.get("model", entry.plugin)
        params: Params = self.resolved.model_params[name]
        _seed_everything(self.suite.seed)  # weight initialisation must not depend on what ran before
        model: Model = spec.factory(params, info)
        key = self.model_keys[name]
        folder = self.opt.cache_dir / key
        if model.trainable:
            if (folder / "weights.safetensors").is_file() and not self.opt.retrain:
                self.rep.phase(f"model {name}: loading cached weights ({folder})")
                load_checkpoint(model, folder)
            else:
                x, y = self._train_split()
                self.rep.start_task(f"train {name}", 1)
                ctx = Context(device=self.device, seed=self.suite.seed, data_dir=self.opt.data_dir,
                              progress=self.rep.advance_task, log=self.rep.log)
                _seed_everything(self.suite.seed)
                t0 = time.perf_counter()
                model.to(self.device)
                model.fit(x, y, ctx)
                seconds = time.perf_counter() - t0
                self.rep.end_task(f"trained in {seconds:.1f}s")
                save_checkpoint(model, folder, {
                    "plugin": entry.plugin, "params": params.model_dump(mode="json"), "dataset": self.suite.dataset.model_dump(mode="json"),
                    "seed": self.suite.seed, "device": str(self.device), "train_seconds": seconds,
                    "origin": spec.origin, "version": plugin_version(spec),
                })
        model.to(self.device)
        model.eval()
        return model

    # -- cells -----------------------------------------------------------------------------
    def plan(self) -> list[dict[str, Any]]:
        """Every cell of the suite, in run order."""
        cells = []
        for m in self.suite.models:
            for a in self.suite.attacks:
                if a.models is not None and m.name not in a.models:
                    continue
                spec = self.registry.get("attack", a.plugin)
                attack = spec.factory(self.resolved.attack_params[a.name])
                eps_list = self.suite.eps_for(attack.norm) if spec.factory.kind == "bounded" else [None]
                for eps in eps_list:
                    cells.append({"model": m, "attack": a, "spec": spec, "norm": attack.norm, "eps": eps})
        return cells

    def cell_key(self, c: dict[str, Any]) -> str:
        a = c["attack"]
        s = self.suite
        return _hash({
            "suite": s.name,
            "dataset": {k: v for k, v in s.dataset.model_dump(mode="json").items() if k != "limit"},
            "model": self.model_keys[c["model"].name],
            "attack": a.plugin,
            "attack_version": plugin_version(c["spec"]),
            "attack_params": self.resolved.attack_params[a.name].model_dump(mode="json"),
            "eps": c["eps"],
            "source": self.model_keys.get(a.source) if a.source else None,
            "seed": s.seed,
            "batch_size": a.batch_size or s.batch_size,
        })

    def run(self) -> RunSummary:
        s = self.suite
        store = Store(self.opt.out_dir / "results.sqlite")
        try:
            run_id = store.start_run(s.name, s.content_hash(), provenance(self.resolved, self.registry, self.device))
            store.save_suite(s.name, s.content_hash(), s.model_dump(mode="json"))
            summary = RunSummary(run_id, store.path)
            status = "failed"
            try:
                self._run(store, summary)
                status = "done" if summary.ok else "failed"
            except KeyboardInterrupt:
                status = "interrupted"
                raise
            finally:
                store.finish_run(run_id, status)
            return summary
        finally:
            store.close()

    def _run(self, store: Store, summary: RunSummary) -> None:
        s = self.suite
        self.rep.phase(f"loading {s.dataset.name} ({s.dataset.split})")
        data = load_eval_data(self.resolved, self.registry, self.opt.data_dir, self.opt.limit)
        if len(data.x) == 0:
            raise UserInputError(f"dataset.offset/limit select no samples of {s.dataset.name} {s.dataset.split}")
        for m in s.models:
            self.model_keys[m.name] = model_key(self.resolved, self.registry, m.name, self.device)

        for m in s.models:
            try:
                model = self._get_model(m.name, data.info)
                pred = _predict_all(model, data.x, self.device)
                if not set(data.indices) <= store.clean_indices(s.name, m.name, self.model_keys[m.name]):
                    store.write_clean(s.name, m.name, self.model_keys[m.name], [
                        (i, sha, int(lbl), int(p)) for i, sha, lbl, p in zip(data.indices, data.sha256, data.y, pred)
                    ])
                self.models[m.name] = model
                acc = float((pred == data.y).float().mean())
                self.rep.log(f"model {m.name}: clean accuracy {acc:.3f} on {len(pred)} samples")
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                err = _describe_exception(exc)
                self.model_errors[m.name] = err
                summary.models_failed.append((m.name, err))
                self.rep.log(f"[red]model {m.name} failed[/red]: {err.splitlines()[-1]}")

        if s.noise:
            self._run_noise(store, data)

        cells = self.plan()
        summary.cells_total = len(cells)
        self.rep.start_cells(len(cells))
        for c in cells:
            self._run_cell(store, summary, data, c)

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

    def _run_cell(self, store: Store, summary: RunSummary, data: EvalData, c: dict[str, Any]) -> None:
        s = self.suite
        m, a, spec = c["model"], c["attack"], c["spec"]
        eps = c["eps"]
        label = f"{m.name} / {a.name}" + (f" @ {c['norm']} {eps:g}" if eps is not None else "")
        key = self.cell_key(c)
        factory = spec.factory
        model = self.models.get(m.name)
        needs_grad = "gradients" in factory.needs
        via_surrogate = bool(model is not None and needs_grad and not model.differentiable)
        status = store.ensure_cell(
            key, summary.run_id, suite=s.name, model=m.name, model_plugin=m.plugin, attack=a.name, attack_plugin=a.plugin,
            norm=str(c["norm"]), kind=factory.kind, eps=eps, source=a.source, needs=sorted(factory.needs),
            via_surrogate=int(via_surrogate), n_total=len(data.x),
            config={"model_key": self.model_keys[m.name], "attack_params": self.resolved.attack_params[a.name].model_dump(mode="json")},
        )
        done = store.done_indices(key)
        todo = [i for i, idx in enumerate(data.indices) if idx not in done]
        if not todo:
            if status != "done":
                store.set_cell_status(key, "done")
            summary.cells_skipped += 1
            self.rep.start_task(label, 1)
            self.rep.end_task("stored")
            return
        self.rep.start_task(label, len(data.x))
        self.rep.advance_task(len(data.x) - len(todo))
        store.set_cell_status(key, "running", run_id=summary.run_id)
        try:
            if model is None:
                raise RobenchError(f"model {m.name} is unavailable: {self.model_errors.get(m.name, 'not trained')}")
            attack: Attack = factory(self.resolved.attack_params[a.name])
            attacked = model
            if via_surrogate:
                attacked = model.surrogate()
                if attacked is None:
                    raise RobenchError(
                        f"{a.name} needs gradients, but model {m.name} is not differentiable and offers no surrogate; "
                        "use a decision- or score-based attack instead"
                    )
                attacked.to(self.device).eval()
            source = None
            if a.source:
                source = self.models.get(a.source)
                if source is None:
                    raise RobenchError(f"source model {a.source} is unavailable: {self.model_errors.get(a.source, 'not trained')}")
            counting = CountingModel(attacked)
            clean = store.clean(s.name)[m.name]
            ctx = Context(device=self.device, seed=s.seed, data_dir=self.opt.data_dir, log=self.rep.log, pool=data.x)
            bs = a.batch_size or s.batch_size
            completed = len(data.x) - len(todo)
            for start in range(0, len(todo), bs):
                pos = todo[start : start + bs]
                xb = data.x[pos].to(self.device)
                yb = data.y[pos].to(self.device)
                clean_pred = torch.tensor([clean[data.indices[i]][1] for i in pos])
                _seed_everything(_batch_seed(s.seed, key, data.indices[pos[0]]))
                counting.reset()
                t0 = time.perf_counter()
                adv = attack.run(counting, xb, yb, eps=eps, ctx=ctx, source=source)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                if not isinstance(adv, torch.Tensor):
                    raise RobenchError(f"attack {a.plugin} returned {type(adv).__name__}, expected a tensor")
                verdict = verify(model, xb, yb, adv, clean_pred, c["norm"], eps)
                n = len(pos)
                rows = [
                    SampleRow(
                        idx=data.indices[i], sha256=data.sha256[i], label=int(data.y[i]), clean_pred=int(clean_pred[j]),
                        success=bool(verdict.success[j]), rejected=bool(verdict.rejected[j]), reject_reason=verdict.reasons[j],
                        l0=float(verdict.norms[Norm.L0][j]), l1=float(verdict.norms[Norm.L1][j]),
                        l2=float(verdict.norms[Norm.L2][j]), linf=float(verdict.norms[Norm.Linf][j]),
                        forward=counting.forward_rows / n, backward=counting.backward_rows / n, seconds=seconds / n,
                    )
                    for j, i in enumerate(pos)
                ]
                store.write_samples(key, rows, records=dict(ctx.records) or None)
                completed += n
                self.rep.advance_task(completed)
            store.set_cell_status(key, "done", records=dict(ctx.records))
            summary.cells_done += 1
            self.rep.end_task("done")
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            err = _describe_exception(exc)
            store.set_cell_status(key, "failed", error=err)
            summary.cells_failed.append((label, err))
            self.rep.end_task("[red]failed[/red]")
            self.rep.log(f"[red]cell {label} failed[/red]: {err.strip().splitlines()[-1]}")


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, RobenchError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def run_suite(resolved: Resolved, registry: Registry, options: RunOptions, reporter: Reporter | None = None) -> RunSummary:
    return Runner(resolved, registry, options, reporter).run()
