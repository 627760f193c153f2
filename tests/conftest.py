"""Shared fixtures. Tests never download: real datasets come from $ROBENCH_DATA or ../shared/data."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any test module imports torch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # so `--plugin robench_test_plugins` imports in-process too


def _shared_data() -> Path | None:
    for cand in (os.environ.get("ROBENCH_DATA"), REPO.parent / "shared" / "data"):
        if cand and (Path(cand) / "mnist.npz").is_file():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real dataset folder (mnist.npz, cifar10.npz, ...); skips if it is not beside the repo."""
    p = _shared_data()
    if p is None:
        pytest.skip("real datasets not found (set ROBENCH_DATA or put ../shared/data beside the repo)")
    return p


@pytest.fixture()
def isolated_env(tmp_path, monkeypatch):
    """A private model cache and data dir, exported for subprocesses too."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROBENCH_CACHE", str(cache))
    data = _shared_data()
    if data is not None:
        monkeypatch.setenv("ROBENCH_DATA", str(data))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return tmp_path


@pytest.fixture(scope="session")
def registry():
    from robench.plugins import load_registry

    return load_registry()


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny networks: intra-op threads only add synchronisation
    there (10-100x slower on a busy 2-core machine). A module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
