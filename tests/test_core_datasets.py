"""Dataset plugins read the real files, the official archive formats, and fail clearly without them."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from robench.errors import DataFileError, DataMissingError
from robench_plugins.datasets import Cifar10, Digits, Mnist


def test_digits_is_embedded():
    x, y = Digits(Digits.Params()).load("test", Path("/nonexistent"))
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= x.min() and x.max() <= 1 and len(x) == 540


def test_real_cifar10_test_part(shared_data):
    x, y = Cifar10(Cifar10.Params()).load("test", shared_data)
    assert x.shape == (1000, 3, 32, 32) and y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_real_mnist(shared_data):
    x, y = Mnist(Mnist.Params()).load("test", shared_data)
    assert x.shape == (10000, 1, 28, 28) and y[:2].tolist() == [7, 2]


def _idx(arr: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def test_official_mnist_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(_idx(imgs))
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(_idx(labels))
    x, y = Mnist(Mnist.Params()).load("test", tmp_path)
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(imgs))
    assert y.tolist() == [3, 1, 4, 1, 5]


def test_official_cifar_python_archive(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
    batch = {b"data": data, b"labels": [0, 9, 2, 3]}
    buf = io.BytesIO()
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        raw = pickle.dumps(batch, protocol=2)
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    x, y = Cifar10(Cifar10.Params()).load("test", tmp_path)
    assert y.tolist() == [0, 9, 2, 3]
    # CIFAR stores channel planes: R then G then B
    assert (x[1, 0].flatten() * 255).round().to(torch.uint8).tolist() == data[1, :1024].tolist()


def test_cifar_archive_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    raw = pickle.dumps({b"data": Evil(), b"labels": [0]}, protocol=2)
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    with pytest.raises(DataFileError, match=r"refusing to load (__builtin__|builtins)\.print"):  # one line, no traceback
        Cifar10(Cifar10.Params()).load("test", tmp_path)


def test_missing_file_names_file_and_import_command(tmp_path):
    with pytest.raises(DataMissingError) as info:
        Cifar10(Cifar10.Params()).load("test", tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "cifar10.npz") in msg and "robench data import" in msg
