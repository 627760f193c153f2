"""Where datasets live on disk, how files get there (``robench data import``), and how a suite's
evaluation slice and training split are loaded and checked."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .api import Context, DatasetInfo, construct
from .errors import DataMissingError, RobenchError, UserInputError, damaged_file

if TYPE_CHECKING:
    from .plugins import Registry
    from .suite import Resolved

ENV_VAR = "ROBENCH_DATA"
DEFAULT_DIR = Path("~/.cache/robench/data")


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--data-dir`` if given, else ``$ROBENCH_DATA``, else ``~/.cache/robench/data``."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    return DEFAULT_DIR.expanduser().resolve()


def find_file(data_dir: Path, candidates: list[str], dataset: str) -> Path:
    """The first of ``candidates`` (file names) present in ``data_dir``; else a clear error."""
    for name in candidates:
        path = data_dir / name
        if path.is_file():
            return path
    wanted = " or ".join(str(data_dir / c) for c in candidates)
    raise DataMissingError(
        f"dataset {dataset!r}: no data file found; expected {wanted}.\n"
        f"  Put the file there with:  robench data import PATH/TO/{candidates[0]}\n"
        f"  (or point --data-dir / ${ENV_VAR} at the folder that holds it)"
    )


def import_file(src: str | os.PathLike, data_dir: Path) -> Path:
    """Copy a dataset file into the data dir (refuses to overwrite a different file)."""
    src = Path(src).expanduser()
    if not src.is_file():
        raise UserInputError(f"robench data import: {src} is not a file")
    data_dir.mkdir(parents=True, exist_ok=True)
    dest = data_dir / src.name
    if dest.exists() and dest.resolve() == src.resolve():
        return dest
    tmp = dest.with_suffix(dest.suffix + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)  # atomic: a half-copied file never looks like data
    return dest


# -- the suite's data ---------------------------------------------------------------------------


def select_classes(x: torch.Tensor, y: torch.Tensor, classes: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep only ``classes``, relabelled 0..k-1 in the given order."""
    if not classes:
        return x, y
    mapping = torch.full((int(max(int(y.max()), max(classes))) + 1,), -1, dtype=torch.int64)
    for new, old in enumerate(classes):
        mapping[old] = new
    keep = mapping[y] >= 0
    return x[keep], mapping[y[keep]]


@dataclass
class EvalData:
    info: DatasetInfo
    x: torch.Tensor
    y: torch.Tensor
    indices: list[int]  # position of each sample in the split (after offset)
    sha256: list[str]


#: What file readers raise on damaged, truncated or foreign files (PIL's UnidentifiedImageError is an OSError).
_READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, tarfile.TarError, pickle.UnpicklingError, struct.error, zlib.error)


def read_split(dataset, name: str, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``dataset.load`` where a low-level read error (a damaged or foreign file that the plugin did not
    name itself) becomes one line naming the dataset and its folder (exit code 2), not a traceback."""
    try:
        return dataset.load(split, data_dir)
    except RobenchError:
        raise
    except _READ_ERRORS as exc:
        raise damaged_file(f"dataset {name!r} ({split} split, files under {data_dir})", exc) from None


def input_sha256(x: torch.Tensor) -> list[str]:
    """The SHA-256 of each input's float32 bytes: what the store keeps per sample and cells check against."""
    cpu = x.detach().cpu().contiguous()
    return [hashlib.sha256(xi.numpy().tobytes()).hexdigest() for xi in cpu]


def load_eval_data(resolved: Resolved, registry: Registry, data_dir: Path, limit: int | None) -> EvalData:
    from .counting import check_batch, check_labels

    ref = resolved.suite.dataset
    dataset = construct(registry.get("dataset", ref.name).factory, resolved.dataset_params, Context(registry=registry))
    info = dataset.info()
    if ref.classes:
        bad = [c for c in ref.classes if not 0 <= c < info.num_classes]
        if bad:
            raise UserInputError(f"dataset.classes: {bad} not in 0..{info.num_classes - 1} for {ref.name}")
        info = DatasetInfo(info.name, info.input_shape, tuple(info.class_names[c] for c in ref.classes))
    if ref.split not in dataset.splits:
        raise UserInputError(f"dataset.split: {ref.name} has splits {list(dataset.splits)}, not {ref.split!r}")
    x, y = read_split(dataset, ref.name, ref.split, data_dir)
    check_batch(x, f"dataset {ref.name}", info.input_shape)
    check_labels(x, y, dataset.info().num_classes, f"dataset {ref.name}")
    positions = None  # samples chosen by index keep their index in the split as their sample index
    if ref.indices is not None:
        beyond = [i for i in ref.indices if i >= len(x)]
        if beyond:
            raise UserInputError(f"dataset.indices: {beyond[:5]}{' ...' if len(beyond) > 5 else ''} beyond the {len(x)} samples "
                                 f"of {ref.name} {ref.split} (indices count from 0)")
        positions = torch.tensor(ref.indices, dtype=torch.int64)
        x, y = x[positions], y[positions]
        if ref.classes:
            positions = positions[torch.isin(y, torch.tensor(ref.classes))]
    x, y = select_classes(x, y, ref.classes)
    n = limit if limit is not None else ref.limit
    end = len(x) if n is None else min(len(x), ref.offset + n)
    x, y = x[ref.offset : end].contiguous(), y[ref.offset : end].contiguous()
    shas = input_sha256(x)
    idx = list(range(len(x))) if positions is None else [int(i) for i in positions[ref.offset : end]]
    return EvalData(info, x, y, idx, shas)


def load_train_data(resolved: Resolved, registry: Registry, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split models are fitted on (checked like the evaluation data, same classes)."""
    from .counting import check_batch, check_labels

    ref = resolved.suite.dataset
    dataset = construct(registry.get("dataset", ref.name).factory, resolved.dataset_params, Context(registry=registry))
    x, y = read_split(dataset, ref.name, "train", data_dir)
    check_batch(x, f"dataset {ref.name} (train split)", dataset.info().input_shape)
    check_labels(x, y, dataset.info().num_classes, f"dataset {ref.name} (train split)")
    return select_classes(x, y, ref.classes)
