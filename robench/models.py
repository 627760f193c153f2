"""Models of a suite: their keys, their checkpoints, and the training cache that builds them.

A model key hashes everything that determines a model's weights (plugin, version, params,
dataset, seed, device type); trained weights are cached under ``<cache>/<model key>/`` as
safetensors (tensors only: a checkpoint can never run code).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import torch

from .api import Context, DatasetInfo, Model, Params
from .errors import RobenchError, UserInputError
from .guard import ClassSnapshot, freeze
from .plugins import Registry, plugin_version
from .provenance import weights_mismatch
from .seeds import seed_everything, stable_hash
from .content import content_digests, key_view, sha256_file, suite_folder
from .suite import Resolved

CACHE_ENV = "ROBENCH_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "~/.cache/robench/models").expanduser()


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise UserInputError("device: cuda was asked for, but torch sees no CUDA device (use device: auto or cpu)")
    return torch.device(choice)


def model_key(resolved: Resolved, registry: Registry, name: str, device: torch.device) -> str:
    s = resolved.suite
    entry = next(m for m in s.models if m.name == name)
    spec = registry.get("model", entry.plugin)
    params = resolved.model_params[name]
    base = suite_folder(resolved)
    identity = {
        "plugin": entry.plugin,
        "version": plugin_version(spec),
        "params": key_view(params, base),
        "dataset": {"name": s.dataset.name, "params": key_view(resolved.dataset_params, base), "classes": s.dataset.classes},
        "seed": s.seed,
        "device": device.type,
    }
    # Content, not names: the bytes of the files the model reads (weights, architecture source).
    # Added only when there are some, so keys of models without files are unchanged.
    files = content_digests(params, spec.factory, base=base)
    if files:
        identity["files"] = files
    return stable_hash(identity)


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


def _read_config(folder: Path) -> dict:
    """A cache folder's config.json ({} when absent or unreadable)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _zoo_train_seconds(key: str, entry=None) -> float | None:
    """The training seconds the model zoo's manifest records for ``key`` (None when it has none)."""
    from .zoo import read_manifest

    if entry is None:
        try:
            entry = read_manifest().get(key)
        except RobenchError:
            return None
    return getattr(entry, "train_seconds", None)


def build_model(resolved: Resolved, registry: Registry, name: str, info: DatasetInfo, device: torch.device,
                state: dict[str, torch.Tensor] | None = None) -> Model:
    """Construct model ``name`` under the suite seed (weight initialisation must not depend on what
    ran before), load ``state`` into it if given, and put it on ``device`` in inference mode."""
    entry = next(m for m in resolved.suite.models if m.name == name)
    seed_everything(resolved.suite.seed)
    model: Model = registry.get("model", entry.plugin).factory(resolved.model_params[name], info)
    if state is not None:
        model.load_state_dict(state)
    model.to(device)
    model.eval()
    return model


def model_state(model: Model) -> dict[str, torch.Tensor] | None:
    """A model's learned state as CPU tensors (None for models complete at construction)."""
    if not model.trainable:
        return None
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _snapshot_state(model: Model) -> dict[str, torch.Tensor] | None:
    """The weights to restore a model from: its learned state, or, for a model complete at
    construction that still reports a state (e.g. a wrapped in-memory network whose object a
    rebuild would reuse), that state; None when it has none."""
    if model.trainable:
        return model_state(model)
    try:
        return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    except Exception:
        return None


class ModelKeys(dict):
    """Model name -> model key. ``run_devices``: models whose weights were trained on another
    device type (the zoo's CPU weights on a CUDA run), name -> this run's device type; it enters
    their cell keys, so results computed on one device are never shown as another's."""

    def __init__(self) -> None:
        super().__init__()
        self.run_devices: dict[str, str] = {}


class ModelPool:
    """The models of one run: trained (or loaded from the cache) once, then handed to cells.

    ``models`` holds the ready ones, ``errors`` why the others are unavailable, ``keys`` every
    model's key.
    """

    def __init__(self, resolved: Resolved, registry: Registry, device: torch.device, cache_dir: Path,
                 data_dir: Path | None, *, retrain: bool = False, reporter=None,
                 train_data: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.resolved = resolved
        self.registry = registry
        self.device = device
        self.cache_dir = cache_dir
        self.data_dir = data_dir
        self.retrain = retrain
        self.rep = reporter
        self.train_data = train_data
        self.models: dict[str, Model] = {}
        self.keys = ModelKeys()
        self.errors: dict[str, str] = {}
        self.snapshots: dict[str, tuple[dict[str, torch.Tensor] | None, ClassSnapshot]] = {}
        #: per loaded model, its card: key, weights_sha256, weights_origin, train_seconds, description
        self.cards: dict[str, dict] = {}

    def compute_keys(self) -> None:
        for m in self.resolved.suite.models:
            self.keys[m.name] = model_key(self.resolved, self.registry, m.name, self.device)
            cpu_key = self._zoo_cpu_key(m.name)
            if cpu_key is not None:
                self.keys[m.name] = cpu_key
                self.keys.run_devices[m.name] = self.device.type

    def _zoo_cpu_key(self, name: str) -> str | None:
        """The CPU key of a trainable model whose weights this run takes from the zoo although it
        runs on another device type: a zoo file is plain weights, valid on any device. Only when
        this device has neither cached weights nor a zoo entry of its own and nothing is retrained;
        a run that trains keeps its own key."""
        from .zoo import read_manifest

        entry = next(m for m in self.resolved.suite.models if m.name == name)
        if self.device.type == "cpu" or self.retrain or not self.registry.get("model", entry.plugin).factory.trainable:
            return None
        manifest = read_manifest()
        if (self.cache_dir / self.keys[name] / "weights.safetensors").is_file() or self.keys[name] in manifest:
            return None
        cpu_key = model_key(self.resolved, self.registry, name, torch.device("cpu"))
        return cpu_key if cpu_key in manifest else None

    def load(self, name: str, info: DatasetInfo, recorded: dict | None = None) -> Model:
        """Model ``name`` with its weights: from the cache, else trained now and cached. ``recorded``: the
        weights a store's results were computed on (robench.provenance.recorded_weights); other weights
        for this model are refused (UserInputError), so a store never holds results of two networks as one."""
        s = self.resolved.suite
        entry = next(m for m in s.models if m.name == name)
        spec = self.registry.get("model", entry.plugin)
        params: Params = self.resolved.model_params[name]
        seed_everything(s.seed)  # weight initialisation must not depend on what ran before
        model: Model = spec.factory(params, info)
        folder = self.cache_dir / self.keys[name]
        if model.trainable:
            identity = {"plugin": entry.plugin, "params": params.model_dump(mode="json"), "seed": s.seed}
            if not self.retrain and not (folder / "weights.safetensors").is_file():
                from .zoo import seed_cache

                zoo_entry = seed_cache(self.keys[name], folder)  # the repository's trained weights, hash-checked
                if zoo_entry is not None:
                    self.rep.phase(f"model {name}: weights from the model zoo ({zoo_entry.file})")
                    origin = f"model zoo file {zoo_entry.file}"
            else:
                zoo_entry = None
            if (folder / "weights.safetensors").is_file() and not self.retrain:
                self.rep.phase(f"model {name}: loading cached weights ({folder})")
                load_checkpoint(model, folder, identity)
                if zoo_entry is None:
                    origin = "cache"
                    config = _read_config(folder)
                    if isinstance(config.get("from_zoo"), str):
                        origin = f"cache (from model zoo file {config['from_zoo']})"
            else:
                if self.train_data is None:
                    raise RobenchError(f"model {name}: no training data to fit it on")
                x, y = self.train_data()
                self.rep.start_task(f"train {name}", 1)
                ctx = Context(device=self.device, seed=s.seed, data_dir=self.data_dir,
                              progress=self.rep.advance_task, log=self.rep.log)
                seed_everything(s.seed)
                t0 = time.perf_counter()
                model.to(self.device)
                model.fit(x, y, ctx)
                seconds = time.perf_counter() - t0
                self.rep.end_task(f"trained in {seconds:.1f}s")
                save_checkpoint(model, folder, {
                    "plugin": entry.plugin, "params": params.model_dump(mode="json"), "dataset": s.dataset.model_dump(mode="json"),
                    "seed": s.seed, "device": str(self.device), "train_seconds": seconds,
                    "origin": spec.origin, "version": plugin_version(spec),
                })
                origin = "trained now"
            config = _read_config(folder)
            if name in self.keys.run_devices:  # the zoo's CPU weights, used on this device
                origin += f" (trained on {config.get('device', 'cpu')}; run on {self.device.type})"
            seconds = config.get("train_seconds")
            if not isinstance(seconds, (int, float)) and (zoo_entry is not None or isinstance(config.get("from_zoo"), str)):
                seconds = _zoo_train_seconds(self.keys[name], zoo_entry)  # the zoo's manifest records it
            self.cards[name] = {"key": self.keys[name], "weights_sha256": sha256_file(folder / "weights.safetensors"),
                                "weights_origin": origin, "description": spec.description,
                                "train_seconds": float(seconds) if isinstance(seconds, (int, float)) else None}
        else:
            self.cards[name] = {"key": self.keys[name], **self._file_weights(params),
                                "description": spec.description, "train_seconds": None}
        clash = weights_mismatch(name, self.cards[name], recorded or {})
        if clash:
            del self.cards[name]  # nothing is attacked with these weights: no card for them
            raise UserInputError(clash)
        model.to(self.device)
        model.eval()
        self.snapshots[name] = (_snapshot_state(model), ClassSnapshot(model))
        return freeze(model)

    def _file_weights(self, params: Params) -> dict:
        """A model complete at construction: the SHA-256 and path of the file its parameters name
        (``weights`` or ``file`` preferred; the same digests that enter its model key), or none."""
        base = suite_folder(self.resolved)
        digests = content_digests(params, None, data_dir=self.data_dir, base=base)
        if not digests:
            return {"weights_sha256": None, "weights_origin": "built by its plugin (no weights file)"}
        field = next((f for f in ("weights", "file") if f in digests), sorted(digests)[0])
        shown = key_view(params, base).get(field.split("[")[0])
        if isinstance(shown, list):
            shown = shown[int(field.split("[")[1].rstrip("]"))] if "[" in field else shown[0]
        return {"weights_sha256": digests[field], "weights_origin": f"loaded from file {shown}"}

    def restore(self, name: str, info: DatasetInfo) -> Model:
        """Model ``name`` as it was loaded: its classes' attributes put back, the instance rebuilt
        from its weights (an attack changed it)."""
        state, classes = self.snapshots[name]
        classes.restore()
        try:
            model = build_model(self.resolved, self.registry, name, info, self.device, state)
        except Exception:
            if state is None or self.models[name].trainable:
                raise
            # a model complete at construction that cannot take its state back: rebuilt as constructed
            model = build_model(self.resolved, self.registry, name, info, self.device, None)
        self.models[name] = freeze(model)
        return self.models[name]

    def get(self, name: str) -> Model:
        """A ready model, or the reason it is missing."""
        model = self.models.get(name)
        if model is None:
            raise RobenchError(f"model {name} is unavailable: {self.errors.get(name, 'not trained')}")
        return model
