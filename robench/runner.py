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
import shutil
import sqlite3
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from . import __version__
from .api import Attack, Context, DatasetInfo, Model, Norm, Params
from .errors import RobenchError, StoreError, UserInputError
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


def check_labels(x: torch.Tensor, y: torch.Tensor, num_classes: int, who: str) -> None:
    """Labels from a dataset: one integer in 0..num_classes-1 per image."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise RobenchError(f"{who}: expected one label per image ({len(x)}), got labels of shape {shape}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise RobenchError(f"{who}: labels must be integers, got {y.dtype}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise RobenchError(f"{who}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")


def check_scores(s: Any, n: int, num_classes: int, who: str, *, nan: bool = True) -> None:
    """Scores from a model: (N, C) for N inputs, no NaN (argmax of a NaN row would fake a prediction)."""
    if not isinstance(s, torch.Tensor):
        raise RobenchError(f"{who}: scores() returned {type(s).__name__}, expected a tensor")
    if s.dim() != 2 or s.shape[0] != n or s.shape[1] != num_classes:
        raise RobenchError(f"{who}: scores() returned shape {tuple(s.shape)} for {n} inputs; expected ({n}, {num_classes})")
    if nan and torch.isnan(s.detach()).any():
        bad = int(torch.isnan(s.detach()).any(1).sum())
        raise RobenchError(f"{who}: scores() returned NaN for {bad} of {n} inputs")


def check_attack_output(adv: Any, x: torch.Tensor, who: str) -> None:
    """An attack's candidates: a float tensor shaped like its input (NaN rows mean 'no adversarial')."""
    if not isinstance(adv, torch.Tensor):
        raise RobenchError(f"{who}: run() returned {type(adv).__name__}, expected a tensor")
    if tuple(adv.shape) != tuple(x.shape):
        raise RobenchError(f"{who}: run() returned shape {tuple(adv.shape)} for inputs of shape {tuple(x.shape)}")
    if not adv.dtype.is_floating_point:
        raise RobenchError(f"{who}: run() returned dtype {adv.dtype}, expected a floating-point tensor")


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
    check_labels(x, y, dataset.info().num_classes, f"dataset {ref.name}")
    x, y = select_classes(x, y, ref.classes)
    n = limit if limit is not None else ref.limit
    end = len(x) if n is None else min(len(x), ref.offset + n)
    x, y = x[ref.offset : end].contiguous(), y[ref.offset : end].contiguous()
    shas = [hashlib.sha256(xi.numpy().tobytes()).hexdigest() for xi in x]
    return EvalData(info, x, y, list(range(len(x))), shas)


# -- models ------------------------------------------------------------------------------------


class CountingModel(Model):
    """Wraps a model so the harness, not the attack, counts forward and backward passes (rows)."""

    def __init__(self, inner: Model, who: str | None = None, *, check_nan: bool = True):
        self.inner = inner
        self.who = who or f"model {type(inner).__name__}"
        # The NaN scan forces a host sync per call (costly in an attack's inner loop on CUDA); the
        # harness's own predictions (clean, verification) always scan, so a NaN cannot fake a result.
        self.check_nan = check_nan
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
        check_scores(out, x.shape[0], self.info.num_classes, self.who, nan=self.check_nan)
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
    # The folder name is the model key; stamping it into the file lets a load detect a checkpoint
    # copied or renamed from another model (same shapes would otherwise load silently).
    save_file(state, str(tmp), metadata={"robench_model_key": folder.name})
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp, folder / "weights.safetensors")  # the weights file appears only when complete


def load_checkpoint(model: Model, folder: Path, identity: dict | None = None) -> None:
    """Tensors only (safetensors): a checkpoint can never run code.

    The file must belong to this folder's model key (its metadata), or, for files written before
    keys were stamped, its config.json must match ``identity`` (plugin, params, seed).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = folder / "weights.safetensors"
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RobenchError(f"checkpoint {path} is corrupt or not a safetensors file ({exc}); delete {folder} to retrain") from None
    owner = meta.get("robench_model_key")
    if owner is not None and owner != folder.name:
        raise RobenchError(f"checkpoint {path} belongs to model key {owner}, not {folder.name} (copied from another model?); delete {folder} to retrain")
    if owner is None and identity is not None:
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            config = None
        if not isinstance(config, dict) or any(config.get(k) != v for k, v in identity.items()):
            raise RobenchError(f"checkpoint {path} has no robench model key and its config.json does not describe this model; delete {folder} to retrain")
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
    shard: tuple[int, int] | None = None  # (i, n), 1 <= i <= n: run only this deterministic share of the cells
    executor: Any = None  # an executors.Executor; None = in this process, cell after cell
    plugins: tuple[str, ...] = ()  # the --plugin modules (remote workers import them too)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 1 <= i <= n."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserInputError(f"--shard must look like i/n (e.g. 1/4), not {text!r}") from None
    if not 1 <= i <= n:
        raise UserInputError(f"--shard {text}: need 1 <= i <= n")
    return i, n


def select_shard(cells: list, shard: tuple[int, int] | None) -> list:
    """Share i of n: the suite's cells dealt round-robin in plan order, so shards differ by at most one cell."""
    if shard is None:
        return cells
    i, n = shard
    return cells[i - 1 :: n]


MIN_FREE_ENV = "ROBENCH_MIN_FREE_MB"


def check_output_dir(out_dir: Path) -> None:
    """Fail before any work when results could not be stored: the folder must be creatable and
    writable (tested by writing, since permission bits do not tell for root or read-only mounts) and
    its disk must have room ($ROBENCH_MIN_FREE_MB, default 50)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"output folder {out_dir}: cannot create it ({exc.strerror or exc})") from None
    probe = out_dir / f".robench-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"robench")
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise UserInputError(f"output folder {out_dir}: not writable ({exc.strerror or exc})") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    try:
        need = float(os.environ.get(MIN_FREE_ENV, "50"))
    except ValueError:
        raise UserInputError(f"${MIN_FREE_ENV} must be a number of MiB, not {os.environ[MIN_FREE_ENV]!r}") from None
    free = shutil.disk_usage(out_dir).free / 2**20
    if free < need:
        raise UserInputError(f"output folder {out_dir}: only {free:.0f} MiB free on its disk, robench wants at least {need:g} MiB "
                             f"(free some space, use another --out, or lower ${MIN_FREE_ENV})")


def _is_path_field(annotation: Any) -> bool:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
        return True
    return any(_is_path_field(a) for a in typing.get_args(annotation))


def confine_paths(resolved: Resolved, data_dir: Path) -> None:
    """Plugin parameters that are paths must stay inside the data dir.

    A parameter is a path when its annotation is ``pathlib.Path`` (or a list / optional of one) or
    its Field carries ``json_schema_extra={"robench_path": True}``. Relative values are taken from
    the data dir; every value is resolved (``..`` and symlinks included) before the check, so a
    suite cannot point a plugin at files elsewhere on the machine.
    """
    base = Path(data_dir).expanduser().resolve()
    s = resolved.suite
    entries = [("dataset.params", resolved.dataset_params)]
    entries += [(f"models[{i}].params", resolved.model_params.get(m.name)) for i, m in enumerate(s.models)]
    entries += [(f"attacks[{i}].params", resolved.attack_params.get(a.name)) for i, a in enumerate(s.attacks)]
    for loc, params in entries:
        if params is None:
            continue
        for name, f in type(params).model_fields.items():
            extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
            if not (_is_path_field(f.annotation) or extra.get("robench_path")):
                continue
            value = getattr(params, name)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if v is None:
                    continue
                p = Path(v).expanduser()
                full = (p if p.is_absolute() else base / p).resolve()
                if not full.is_relative_to(base):
                    raise UserInputError(f"{loc}.{name}: {str(v)!r} resolves to {full}, outside the data dir {base}; "
                                         "put the file under the data dir (or point --data-dir / $ROBENCH_DATA at its folder)")


def check_store_file(path: Path) -> None:
    """An existing store file must be a robench store; checked read-only, so a foreign file is left
    exactly as it was (opening it as a store would switch it to WAL mode)."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head and head != b"SQLite format 3\x00":
        raise StoreError(f"{path} is not a robench results store (not an SQLite file); move it away or use another --out")
    if not head:
        return  # an empty file: SQLite makes a new database of it
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a robench results store ({exc}); move it away or use another --out") from None
    if "meta" not in tables or "samples" not in tables:
        raise StoreError(f"{path} is an SQLite file but not a robench results store (tables: {sorted(tables)}); "
                         "move it away or use another --out")


class StoreLock:
    """One writer per store: an exclusive ``flock`` on ``<store>.lock``, held for the whole run.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a crashed run never
    blocks the next one; the file keeps the holder's pid and host for the error message.
    """

    def __init__(self, store_path: Path):
        self.store_path = Path(store_path)
        self.path = self.store_path.with_name(self.store_path.name + ".lock")
        self.fd: int | None = None

    def acquire(self) -> StoreLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise StoreError(
                f"{self.store_path} is being written by another robench process ({holder}); "
                "wait for it to finish, or give this run another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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
            check_labels(x, y, dataset.info().num_classes, f"dataset {ref.name} (train split)")
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
            identity = {"plugin": entry.plugin, "params": params.model_dump(mode="json"), "seed": self.suite.seed}
            if (folder / "weights.safetensors").is_file() and not self.opt.retrain:
                self.rep.phase(f"model {name}: loading cached weights ({folder})")
                load_checkpoint(model, folder, identity)
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
                # the instance's kind: a wrapper (e.g. transfer) takes the kind of the attack it wraps
                eps_list = self.suite.eps_for(attack.norm) if attack.kind == "bounded" else [None]
                for eps in eps_list:
                    cells.append({"model": m, "attack": a, "spec": spec, "norm": attack.norm, "eps": eps, "kind": attack.kind})
        return cells

    def cell_key(self, c: dict[str, Any]) -> str:
        a = c["attack"]
        s = self.suite
        return _hash({
            "suite": s.name,
            "dataset": {k: v for k, v in s.dataset.model_dump(mode="json").items() if k != "limit"},
            # Names too: two entries with the same configuration are two rows of the leaderboard.
            "model_name": c["model"].name,
            "attack_name": a.name,
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
        check_output_dir(self.opt.out_dir)
        confine_paths(self.resolved, self.opt.data_dir)
        path = self.opt.out_dir / "results.sqlite"
        with StoreLock(path):
            check_store_file(path)
            store = Store(path)
            try:
                prov = provenance(self.resolved, self.registry, self.device)
                prov["executor"] = self.opt.executor.describe() if self.opt.executor is not None else "local"
                if self.opt.shard is not None:
                    prov["shard"] = "{}/{}".format(*self.opt.shard)
                run_id = store.start_run(s.name, s.content_hash(), prov)
                store.save_suite(s.name, s.content_hash(), s.model_dump(mode="json"))
                summary = RunSummary(run_id, store.path)
                status = "failed"
                try:
                    self._run(store, summary)
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

    def _run(self, store: Store, summary: RunSummary) -> None:
        s = self.suite
        self.rep.phase(f"loading {s.dataset.name} ({s.dataset.split})")
        data = load_eval_data(self.resolved, self.registry, self.opt.data_dir, self.opt.limit)
        if len(data.x) == 0:
            raise UserInputError(f"dataset.offset/limit select no samples of {s.dataset.name} {s.dataset.split}")
        for m in s.models:
            self.model_keys[m.name] = model_key(self.resolved, self.registry, m.name, self.device)
        cells = select_shard(self.plan(), self.opt.shard)
        needed = {m.name for m in s.models}
        if self.opt.shard is not None:  # a shard trains only the models its cells attack
            needed = {c["model"].name for c in cells} | {c["attack"].source for c in cells if c["attack"].source}

        for m in s.models:
            if m.name not in needed:
                continue
            try:
                model = self._get_model(m.name, data.info)
                pred = _predict_all(CountingModel(model, f"model plugin {m.plugin}"), data.x, self.device)
                if not set(data.indices) <= store.clean_indices(s.name, m.name, self.model_keys[m.name]):
                    store.write_clean(s.name, m.name, self.model_keys[m.name], [
                        (i, sha, int(lbl), int(p)) for i, sha, lbl, p in zip(data.indices, data.sha256, data.y, pred)
                    ])
                self.models[m.name] = model
                acc = float((pred == data.y).float().mean())
                self.rep.log(f"model {m.name}: clean accuracy {acc:.3f} on {len(pred)} samples")
            except (KeyboardInterrupt, sqlite3.Error):
                raise
            except Exception as exc:
                err = _describe_exception(exc)
                self.model_errors[m.name] = err
                summary.models_failed.append((m.name, err))
                self.rep.log(f"[red]model {m.name} failed[/red]: {err.splitlines()[-1]}")

        if s.noise:
            self._run_noise(store, data)

        summary.cells_total = len(cells)
        self.rep.start_cells(len(cells))
        if self.opt.executor is None:
            for c in cells:
                self._run_cell(store, summary, data, c)
        else:
            self.opt.executor.run_cells(self, store, summary, data, cells)

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

    # -- one cell: open it in the store, attack what is left, close it ------------------------
    def open_cell(self, store: Store, summary: RunSummary, data: EvalData, c: dict[str, Any]) -> CellJob | None:
        """Register the cell; return its remaining work, or None when every sample is stored."""
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
            norm=str(c["norm"]), kind=c.get("kind", factory.kind), eps=eps, source=a.source, needs=sorted(factory.needs),
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
            return None
        store.set_cell_status(key, "running", run_id=summary.run_id)
        clean = store.clean(s.name).get(m.name, {}) if model is not None else {}
        return CellJob(
            key=key, label=label, model=m.name, model_plugin=m.plugin, attack=a.name, attack_plugin=a.plugin,
            norm=c["norm"], eps=eps, source=a.source, via_surrogate=via_surrogate, batch_size=a.batch_size or s.batch_size,
            positions=todo, clean_pred=[clean[data.indices[i]][1] for i in todo] if clean else [], seed=s.seed,
            done_before=len(data.x) - len(todo),
        )

    def cell_models(self, job: CellJob) -> tuple[Model, Model | None]:
        """The (attacked model, transfer source) of a cell, or the reason they are missing."""
        model = self.models.get(job.model)
        if model is None:
            raise RobenchError(f"model {job.model} is unavailable: {self.model_errors.get(job.model, 'not trained')}")
        source = None
        if job.source:
            source = self.models.get(job.source)
            if source is None:
                raise RobenchError(f"source model {job.source} is unavailable: {self.model_errors.get(job.source, 'not trained')}")
        return model, source

    def cell_done(self, store: Store, summary: RunSummary, job: CellJob, records: dict[str, float]) -> None:
        store.set_cell_status(job.key, "done", records=dict(records))
        summary.cells_done += 1

    def cell_failed(self, store: Store, summary: RunSummary, job: CellJob, err: str) -> None:
        store.set_cell_status(job.key, "failed", error=err)
        summary.cells_failed.append((job.label, err))
        self.rep.log(f"[red]cell {job.label} failed[/red]: {err.strip().splitlines()[-1]}")

    def _run_cell(self, store: Store, summary: RunSummary, data: EvalData, c: dict[str, Any]) -> None:
        """The local executor: attack the cell in this process, storing each batch as it completes."""
        job = self.open_cell(store, summary, data, c)
        if job is None:
            return
        self.rep.start_task(job.label, len(data.x))
        self.rep.advance_task(job.done_before)
        try:
            model, source = self.cell_models(job)
            factory = self.registry.get("attack", job.attack_plugin).factory
            completed, records = job.done_before, {}
            for batch in attack_cell(job, factory, self.resolved.attack_params[job.attack], model, source, data,
                                     self.device, self.opt.data_dir, self.rep.log):
                store.write_samples(job.key, batch.rows, records=batch.records or None)
                completed += len(batch.rows)
                records = batch.records
                self.rep.advance_task(completed)
            self.cell_done(store, summary, job, records)
            self.rep.end_task("done")
        except (KeyboardInterrupt, sqlite3.Error):
            raise  # an interrupted run or an unwritable store ends the run; the cell is not at fault
        except Exception as exc:
            self.cell_failed(store, summary, job, _describe_exception(exc))
            self.rep.end_task("[red]failed[/red]")


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
        _seed_everything(_batch_seed(job.seed, job.key, data.indices[pos[0]]))
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


def _describe_exception(exc: BaseException) -> str:
    if isinstance(exc, RobenchError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def run_suite(resolved: Resolved, registry: Registry, options: RunOptions, reporter: Reporter | None = None) -> RunSummary:
    return Runner(resolved, registry, options, reporter).run()
