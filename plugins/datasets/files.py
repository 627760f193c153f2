"""File-based datasets: the ``.npz`` layout of robench's data folder, or the official archives.

``.npz`` layout (see the data README): ``x_train``/``x_test`` uint8 NHWC, ``y_train``/``y_test``
uint8, ``classes``. Official archives: MNIST-style ``*-idx3-ubyte.gz`` files, and CIFAR-10's
``cifar-10-python.tar.gz`` (read with a restricted unpickler that only builds numpy arrays, lists,
dicts, strings and numbers: a data file can never run code).
"""

from __future__ import annotations

import functools
import gzip
import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

import robench
from robench import find_file
from robench.errors import DataMissingError, UserInputError, damaged_file

#: What the readers below raise on a damaged, truncated or foreign file; each becomes one line
#: naming the file (DataFileError, exit code 2) instead of a traceback.
READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile, tarfile.TarError,
               pickle.UnpicklingError, struct.error, zlib.error)


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 NHWC -> float32 NCHW in [0, 1]; labels -> int64."""
    xt = torch.from_numpy(np.array(x, copy=True)).permute(0, 3, 1, 2).float().div_(255.0)
    return xt.contiguous(), torch.from_numpy(y.astype(np.int64))


@functools.lru_cache(maxsize=4)
def _read_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive[f"x_{split}"], archive[f"y_{split}"]
    except KeyError as exc:
        raise UserInputError(f"{path}: no array {exc} in this .npz (expected x_{split} and y_{split})") from None
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise damaged_file(path, "holds Python objects (pickled arrays), which robench never loads: "
                                     "a data file must hold plain numeric arrays") from None
        raise damaged_file(path, exc) from None
    except READ_ERRORS as exc:
        raise damaged_file(path, exc) from None


def _npz_rows(path: Path, split: str) -> int:
    """Rows of ``y_<split>`` in an .npz, from the array header only (no data read)."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"y_{split}.npy") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except KeyError:
        raise UserInputError(f"{path}: no array 'y_{split}' in this .npz (expected x_{split} and y_{split})") from None
    except READ_ERRORS as exc:
        raise damaged_file(path, exc) from None
    if dtype.hasobject:
        raise damaged_file(path, "holds Python objects (pickled arrays), which robench never loads: "
                                 "a data file must hold plain numeric arrays")
    if len(shape) != 1:
        raise damaged_file(path, f"y_{split} has shape {shape}, expected one label per sample")
    return int(shape[0])


def _read_idx(path: Path, header_only: bool = False) -> np.ndarray | tuple[int, ...]:
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            data = f.read(4 + 4 * 4) if header_only else f.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype_code != 0x08:
            raise damaged_file(path, "not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        if header_only:
            return shape
        return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    except READ_ERRORS as exc:
        raise damaged_file(path, exc) from None


class _IdxOrNpz(robench.Dataset):
    """MNIST-like: 28x28 grey images from ``<stem>.npz`` or the four official IDX files."""

    stem: str = ""
    display: str = ""
    classes: tuple[str, ...] = ()

    def info(self) -> robench.DatasetInfo:
        return robench.DatasetInfo(self.stem, (1, 28, 28), self.classes)

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        _check_split(self.stem, split)
        npz = data_dir / f"{self.stem}.npz"
        if npz.is_file():
            return _to_tensors(*_read_npz(npz, split))
        prefix = "train" if split == "train" else "t10k"
        images = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte"]
        labels = [f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"]
        folder = data_dir / self.stem
        try:
            img_path = find_file(folder, images, self.stem)
            lbl_path = find_file(folder, labels, self.stem)
        except DataMissingError:
            raise DataMissingError(
                f"dataset {self.stem!r}: no data found; expected {npz}\n"
                f"  or the official files {folder}/{images[0]} and {folder}/{labels[0]}.\n"
                f"  Put the .npz there with:  robench data import PATH/TO/{self.stem}.npz\n"
                f"  (or point --data-dir / $ROBENCH_DATA at the folder that holds it)"
            ) from None
        x = _read_idx(img_path)[..., None]
        y = _read_idx(lbl_path)
        if len(x) != len(y):
            raise damaged_file(img_path, f"{len(x)} images but {len(y)} labels in {lbl_path.name}")
        return _to_tensors(x, y)

    def size(self, split: str, data_dir: Path) -> int | None:
        if split not in ("train", "test"):
            return None
        npz = data_dir / f"{self.stem}.npz"
        if npz.is_file():
            return _npz_rows(npz, split)
        prefix = "train" if split == "train" else "t10k"
        for name in (f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte"):
            if (data_dir / self.stem / name).is_file():
                return _read_idx(data_dir / self.stem / name, header_only=True)[0]
        return None


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise UserInputError(f"dataset {name!r} has splits 'train' and 'test', not {split!r}")


class Mnist(_IdxOrNpz):
    stem = "mnist"
    classes = tuple(str(i) for i in range(10))


class FashionMnist(_IdxOrNpz):
    stem = "fashion_mnist"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


class _ArraysOnly(pickle.Unpickler):
    """Unpickler for CIFAR-10's python batches: numpy arrays and plain containers, nothing else."""

    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("copy_reg", "_reconstructor"),
        ("builtins", "object"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes: a pure function
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


class Cifar10(robench.Dataset):
    CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def info(self) -> robench.DatasetInfo:
        return robench.DatasetInfo("cifar10", (3, 32, 32), self.CLASSES)

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        _check_split("cifar10", split)
        path = find_file(data_dir, ["cifar10.npz", "cifar-10-python.tar.gz"], "cifar10")
        if path.suffix == ".npz":
            return _to_tensors(*_read_npz(path, split))
        return _to_tensors(*_read_cifar_tar(path, split))

    def size(self, split: str, data_dir: Path) -> int | None:
        if split not in ("train", "test"):
            return None
        if (data_dir / "cifar10.npz").is_file():
            return _npz_rows(data_dir / "cifar10.npz", split)
        if (data_dir / "cifar-10-python.tar.gz").is_file():
            return 50_000 if split == "train" else 10_000  # the official archive; read in full only by a run
        return None


@functools.lru_cache(maxsize=2)
def _read_cifar_tar(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    wanted = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    xs, ys = [], []
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            for name in wanted:
                if name not in members:
                    raise damaged_file(path, f"member {name} missing (is this cifar-10-python.tar.gz?)")
                raw = tar.extractfile(members[name]).read()
                try:
                    batch = _ArraysOnly(io.BytesIO(raw), encoding="bytes").load()
                except pickle.UnpicklingError as exc:
                    raise damaged_file(path, f"member {name}: {exc} (a data file may hold only arrays, never code)") from None
                if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
                    raise damaged_file(path, f"member {name} is not a CIFAR-10 batch (no data/labels)")
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
                ys.append(np.asarray(batch[b"labels"], dtype=np.uint8))
    except READ_ERRORS as exc:
        raise damaged_file(path, exc) from None
    return np.concatenate(xs), np.concatenate(ys)
