"""The Ray executor on a small local cluster (2 CPUs): same rows as the local executor, cells of a
dying worker retried, a worker that always dies fails only its cell, and the CLI wiring."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import store_snapshot

ray = pytest.importorskip("ray")

from robench.executors import RayExecutor  # noqa: E402
from robench.plugins import get_registry  # noqa: E402
from robench.run import Reporter, RunOptions, run_suite  # noqa: E402
from robench.suite import load_suite  # noqa: E402

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
PLUGINS = ("reliability_plugins",)

SUITE = """
name: ray-small
dataset: {name: digits, split: test, limit: 40}
seed: 5
batch_size: 10
device: cpu
models:
  - {name: mlp, plugin: mlp, params: {hidden: 16, epochs: 2}}
  - {name: lsq, plugin: fault-linear, params: {}}
attacks:
  - {name: pgd, plugin: pgd, params: {norm: L2, steps: 5}}
  - {name: noise, plugin: fault-noise, params: {norm: Linf, fault: sigkill_once, flag: died.txt}}
epsilons: {Linf: [0.1], L2: [0.5, 1.0]}
"""


def snapshot(db_path: Path):
    rows, dup = store_snapshot.snapshot(
        db_path, "c.key, c.model, c.attack, c.eps, c.status, s.idx, s.success, s.rejected, s.reject_reason, s.l0, s.l1, s.l2, "
        "s.linf, s.forward, s.backward", "1, 6")
    db = sqlite3.connect(db_path)
    clean = db.execute("SELECT model, model_key, idx, pred FROM clean ORDER BY 1, 3").fetchall()
    db.close()
    return rows, clean, dup


class Recorder(Reporter):
    def __init__(self):
        self.lines: list[str] = []

    def log(self, text: str) -> None:
        self.lines.append(text)


def test_cli_runs_on_ray(isolated_env):
    """`robench run --executor ray` end to end (it starts and stops its own 2-CPU cluster), equal to a local run."""
    tmp = isolated_env
    (tmp / "data").mkdir()
    (tmp / "data" / "died.txt").write_text("present: no worker dies in this test")
    suite = tmp / "suite.yaml"
    suite.write_text(SUITE.replace("{name: mlp, plugin: mlp, params: {hidden: 16, epochs: 2}}\n  - ", ""))
    env = dict(os.environ, ROBENCH_DATA=str(tmp / "data"))
    base = [sys.executable, "-m", "robench.cli", "run", str(suite), "-q", "--no-leaderboard", "--plugin", "reliability_plugins"]
    for out, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        proc = subprocess.run(base + ["--out", str(tmp / out)] + extra, capture_output=True, text=True, env=env, cwd=REPO)
        assert proc.returncode == 0, proc.stderr
        assert "3 cells: 3 run" in proc.stderr.replace("\n", " ")
    a, b = snapshot(tmp / "local" / "results.sqlite"), snapshot(tmp / "ray" / "results.sqlite")
    assert a[2] == b[2] == 0
    assert len(a[0]) == 3 * 40
    assert a[0] == b[0] and a[1] == b[1]


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU local cluster whose workers can import the test plugins (as a user's cluster would have them installed)."""
    path = os.pathsep.join([str(TESTS), *[p for p in sys.path if p]])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def _run(tmp: Path, out: str, suite_text: str, executor=None):
    suite = tmp / "suite.yaml"
    suite.write_text(suite_text)
    reg = get_registry(PLUGINS)
    rep = Recorder()
    opts = RunOptions(out_dir=tmp / out, data_dir=tmp / "data", cache_dir=tmp / "cache", executor=executor, plugins=PLUGINS)
    summary = run_suite(load_suite(suite, reg), reg, opts, rep)
    return summary, rep


def test_worker_killed_mid_cell_is_retried_and_results_equal_local(cluster, tmp_path):
    (tmp_path / "data").mkdir()
    flag = tmp_path / "data" / "died.txt"
    flag.write_text("present: the local run must not die")
    local, _ = _run(tmp_path, "local", SUITE)
    assert local.ok
    flag.unlink()  # the first Ray worker to run the noise attack kills itself with SIGKILL
    summary, rep = _run(tmp_path, "ray", SUITE, RayExecutor(workers=2, plugins=PLUGINS))
    assert summary.ok, summary.cells_failed
    assert flag.exists(), "no worker died: the fault was not injected"
    assert any("worker died" in line for line in rep.lines)
    # what is in flight is visible before a cell ends: dispatch and every stored batch
    assert "lsq / pgd @ L2 0.5: running on a Ray worker (0/40 samples stored)" in rep.lines
    assert "lsq / pgd @ L2 0.5: 10/40 samples stored" in rep.lines
    a, b = snapshot(tmp_path / "local" / "results.sqlite"), snapshot(tmp_path / "ray" / "results.sqlite")
    assert a[2] == b[2] == 0
    assert len(b[0]) == 6 * 40
    assert a[0] == b[0] and a[1] == b[1]
    prov = sqlite3.connect(tmp_path / "ray" / "results.sqlite").execute("SELECT provenance FROM runs").fetchone()[0]
    assert '"executor": "ray (local cluster, 2 workers)"' in prov


def test_worker_that_always_dies_fails_only_its_cell(cluster, tmp_path):
    (tmp_path / "data").mkdir()
    text = SUITE.replace("fault: sigkill_once, flag: died.txt", "fault: sigkill").replace("{name: mlp, plugin: mlp, params: {hidden: 16, epochs: 2}}\n  - ", "")
    summary, rep = _run(tmp_path, "ray", text, RayExecutor(workers=2, max_retries=1, plugins=PLUGINS))
    failed = dict(summary.cells_failed)
    assert list(failed) == ["lsq / noise @ Linf 0.1"]
    assert "died 2 times" in failed["lsq / noise @ Linf 0.1"]
    assert summary.cells_done == 2  # the pgd cells
