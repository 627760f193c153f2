"""The model zoo: trained weights of the committed suites' models, shipped with the repository.

``zoo/manifest.json`` lists one entry per model key: the weights file (safetensors, under
``zoo/``), its SHA-256, the model's config (plugin, params, dataset, seed, device), its clean
accuracy where measured, the training time and the command that retrains it. When a run needs a
trainable model whose key has a zoo entry and no cached weights, the zoo file is checked against
its hash and copied into the cache, so the run starts attacking instead of training. A file whose
hash does not match is refused, with the command that retrains it.

The key includes the device type (training is not bit-identical across devices); a run on
another device type takes the CPU entry under its CPU key (``ModelPool._zoo_cpu_key``: the key
names the weights, the cell keys add the run's device). It includes the plugin version too, so a
new robench version retrains.
Adding models and the ``robench zoo`` commands: :mod:`robench.zoo_commands`.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .content import sha256_file
from .errors import RobenchError

ZOO_ENV = "ROBENCH_ZOO"
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"  # held while the manifest is read and rewritten (git-ignored)


def zoo_dir() -> Path:
    """``$ROBENCH_ZOO``, else the ``zoo/`` folder of this checkout."""
    env = os.environ.get(ZOO_ENV)
    return Path(env).expanduser() if env else Path(__file__).resolve().parents[1] / "zoo"


@dataclass
class Entry:
    key: str
    file: str
    sha256: str
    config: dict[str, Any]
    command: str
    train_seconds: float | None = None
    clean_accuracy: float | None = None
    clean_n: int | None = None
    suites: list[str] | None = None

    def retrain_hint(self) -> str:
        return f"retrain it with: {self.command}"


def read_manifest(folder: Path | None = None) -> dict[str, Entry]:
    folder = folder or zoo_dir()
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {e["key"]: Entry(**e) for e in raw["models"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise RobenchError(f"{path}: not a robench zoo manifest ({exc})") from None


def write_manifest(entries: dict[str, Entry], folder: Path | None = None) -> None:
    folder = folder or zoo_dir()
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": 1, "models": [e.__dict__ for e in sorted(entries.values(), key=lambda e: e.key)]}
    tmp = folder / (MANIFEST + ".part")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / MANIFEST)


def update_manifest(added: list[Entry], folder: Path | None = None) -> None:
    """Put ``added`` into the manifest as it is on disk now, under an exclusive lock: two ``robench zoo
    add`` run side by side (one per model) each keep the other's entries instead of writing back the
    manifest they read when they started."""
    import fcntl

    folder = folder or zoo_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = read_manifest(folder)
        entries.update({e.key: e for e in added})
        write_manifest(entries, folder)


def verify_entry(entry: Entry, folder: Path | None = None) -> str | None:
    """None when the file exists and matches its hash; else what is wrong (with the fix)."""
    path = (folder or zoo_dir()) / entry.file
    if not path.is_file():
        return f"zoo file {path} is missing; {entry.retrain_hint()}"
    actual = sha256_file(path)
    if actual != entry.sha256:
        return (f"zoo file {path} does not match its manifest (sha256 {actual[:16]}..., manifest {entry.sha256[:16]}...): "
                f"it was changed or damaged; {entry.retrain_hint()} (or restore it with git checkout)")
    return None


def seed_cache(key: str, folder: Path, zoo: Path | None = None) -> Entry | None:
    """Copy the zoo's weights for ``key`` into the cache folder; None when the zoo has no entry.
    A file that does not match its hash is refused (RobenchError naming the retrain command)."""
    zoo = zoo or zoo_dir()
    entry = read_manifest(zoo).get(key)
    if entry is None:
        return None
    problem = verify_entry(entry, zoo)
    if problem:
        raise RobenchError(problem)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "weights.safetensors.part"
    shutil.copyfile(zoo / entry.file, tmp)
    (folder / "config.json").write_text(json.dumps({**entry.config, "from_zoo": entry.file}, indent=2, sort_keys=True))
    os.replace(tmp, folder / "weights.safetensors")
    return entry
