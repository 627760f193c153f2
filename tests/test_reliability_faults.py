"""Faults a long run must survive: SIGKILL mid-batch, out-of-memory and CUDA errors in one cell,
an unwritable or full disk, two runs on one store, corrupt or foreign stores and checkpoints.

The runs use the fault plugins of tests/reliability_plugins.py (a least-squares model that trains
in milliseconds and a seeded random-sign attack), so each test takes seconds.
"""

from __future__ import annotations

import os
import pickle
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import store_snapshot

REPO = Path(__file__).resolve().parents[1]
ROBENCH = [sys.executable, "-m", "robench.cli"]


def write_suite(tmp: Path, attacks: list[str], *, limit: int = 60, batch_size: int = 10, name: str = "rel",
                models: list[str] | None = None, dataset: str = "{name: digits, split: test, limit: %(limit)d}") -> Path:
    models = models or ["{name: lsq, plugin: fault-linear, params: {}}"]
    text = "\n".join([
        f"name: {name}",
        "dataset: " + dataset % {"limit": limit},
        "seed: 3",
        f"batch_size: {batch_size}",
        "device: cpu",
        "models:", *[f"  - {m}" for m in models],
        "attacks:", *[f"  - {a}" for a in attacks],
        "epsilons: {Linf: [0.05, 0.2], L2: [0.5]}",
    ])
    path = tmp / f"{name}.yaml"
    path.write_text(text + "\n")
    return path


def robench(*args, env=None, check: int | None = 0, **kw) -> subprocess.CompletedProcess:
    args = [str(a) for a in args]
    proc = subprocess.run(ROBENCH + args + ["--plugin", "reliability_plugins"] if args[0] == "run" else ROBENCH + args,
                          capture_output=True, text=True, env=env, cwd=REPO, **kw)
    if check is not None and proc.returncode != check:
        raise AssertionError(f"robench {args} exited {proc.returncode}, expected {check}\n{proc.stdout}\n{proc.stderr}")
    return proc


def snapshot(db_path: Path):
    """Every stored result except timings, in a canonical order; and the number of duplicate rows."""
    return store_snapshot.snapshot(
        db_path, "c.key, c.model, c.attack, c.eps, s.idx, s.success, s.rejected, s.reject_reason, s.l0, s.l1, s.l2, s.linf, "
        "s.forward, s.backward", "1, 5")


def count_samples(db_path: Path) -> int:
    try:
        db = sqlite3.connect(db_path, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


@pytest.fixture()
def env(isolated_env):
    data = isolated_env / "data"
    data.mkdir()
    return dict(os.environ, ROBENCH_DATA=str(data), COLUMNS="1000")  # no wrapped messages


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume_equals_uninterrupted(isolated_env, env):
    tmp = isolated_env
    flag = Path(env["ROBENCH_DATA"]) / "batches.txt"
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {norm: Linf, sleep: 0.4, flag: batches.txt}}"])
    robench("run", suite, "--out", tmp / "full", "-q", "--no-leaderboard", env=env)
    full, _ = snapshot(tmp / "full" / "results.sqlite")
    assert len(full) == 2 * 60

    flag.unlink()
    db_path = tmp / "killed" / "results.sqlite"
    proc = subprocess.Popen(ROBENCH + ["run", str(suite), "--out", str(tmp / "killed"), "-q", "--no-leaderboard",
                                       "--plugin", "reliability_plugins"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    stored = started = 0
    while time.time() < deadline and proc.poll() is None:
        # kill while a batch is in flight: more batches started than stored, and some already stored
        stored = count_samples(db_path)
        started = len(flag.read_text().splitlines()) if flag.exists() else 0
        if stored >= 20 and started * 10 > stored:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    partial, dup = snapshot(db_path)
    assert dup == 0
    assert 20 <= len(partial) < len(full)
    assert len(partial) % 10 == 0, "a batch is stored whole or not at all"

    robench("run", suite, "--out", tmp / "killed", "-q", "--no-leaderboard", env=env)
    resumed, dup = snapshot(db_path)
    assert dup == 0
    assert resumed == full
    db = sqlite3.connect(db_path)
    statuses = [r[0] for r in db.execute("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["running", "done"]  # the killed run is left 'running': its end was never recorded


def test_out_of_memory_and_cuda_errors_stay_in_their_cell(isolated_env, env):
    tmp = isolated_env
    suite = write_suite(tmp, [
        "{name: oom-once, plugin: fault-noise, params: {fault: oom_over, max_batch: 5}}",
        "{name: oom-always, plugin: fault-noise, params: {fault: oom_always}}",
        "{name: cuda, plugin: fault-noise, params: {fault: cuda_error}}",
        "{name: fine, plugin: fault-noise, params: {norm: L2}}",
    ], limit=30)
    proc = robench("run", suite, "--out", tmp / "out", "-q", "--no-leaderboard", env=env, check=1)
    db = sqlite3.connect(tmp / "out" / "results.sqlite")
    cells = {(a, e): (st, err, rec) for a, e, st, err, rec in db.execute("SELECT attack, eps, status, error, records FROM cells")}
    n = {(a, e): k for a, e, k in db.execute("SELECT c.attack, c.eps, COUNT(s.idx) FROM cells c LEFT JOIN samples s ON s.cell=c.key GROUP BY c.key")}
    for eps in (0.05, 0.2):
        status, err, records = cells[("oom-once", eps)]
        assert status == "done" and '"oom_retries": 3' in records  # 3 batches of 10, each retried as 5 + 5
        assert n[("oom-once", eps)] == 30
        status, err, _ = cells[("oom-always", eps)]
        assert status == "failed" and "again on half of it (5)" in err and "smaller batch_size" in err
        assert n[("oom-always", eps)] == 0
        status, err, _ = cells[("cuda", eps)]
        assert status == "failed" and "CUDA error: an illegal memory access" in err
    assert cells[("fine", 0.5)][0] == "done" and n[("fine", 0.5)] == 30
    assert "oom-always @ Linf 0.05 failed" in proc.stderr


def test_read_only_output_dir_fails_before_any_work(isolated_env, env):
    tmp = isolated_env
    ro = tmp / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True).returncode == 0
        if not mounted:
            pytest.skip("running as root without permission to mount: a read-only folder cannot be made")
    else:
        ro.chmod(0o555)
    try:
        suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {}}"])
        proc = robench("run", suite, "--out", ro / "out", "-q", env=env, check=2)
        assert "Traceback" not in proc.stderr
        assert str(ro / "out") in proc.stderr.replace("\n", "")
        assert not (tmp / "cache").exists(), "no model may be trained when results cannot be stored"
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)])
        else:
            ro.chmod(0o755)


def test_too_little_free_space_fails_before_any_work(isolated_env, env):
    tmp = isolated_env
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {}}"])
    proc = robench("run", suite, "--out", tmp / "out", "-q", env=dict(env, ROBENCH_MIN_FREE_MB="1e12"), check=2)
    assert "MiB free" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "out" / "results.sqlite").exists() and not (tmp / "cache").exists()


def _limit_file_size(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_disk_full_mid_run_stops_cleanly_and_resumes(isolated_env, env):
    tmp = isolated_env
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {norm: L2}}"], limit=300, batch_size=10)
    robench("run", suite, "--out", tmp / "full", "-q", "--no-leaderboard", env=env)  # also trains the model
    full, _ = snapshot(tmp / "full" / "results.sqlite")
    # The store (its WAL grows ~10 kB per batch) hits the file-size limit part-way (EFBIG is what a full disk looks like to SQLite's writes).
    proc = robench("run", suite, "--out", tmp / "full-disk", "-q", "--no-leaderboard", env=env, check=1,
                   preexec_fn=_limit_file_size(200_000))
    assert "cannot write results to" in proc.stderr and "run the same command again to resume" in proc.stderr
    assert "Traceback" not in proc.stderr
    partial, dup = snapshot(tmp / "full-disk" / "results.sqlite")
    assert dup == 0 and 0 < len(partial) < len(full)
    robench("run", suite, "--out", tmp / "full-disk", "-q", "--no-leaderboard", env=env)
    resumed, dup = snapshot(tmp / "full-disk" / "results.sqlite")
    assert dup == 0 and resumed == full


@pytest.mark.slow
def test_two_runs_on_one_store(isolated_env, env):
    tmp = isolated_env
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {sleep: 0.6}}"], limit=60)
    db_path = tmp / "out" / "results.sqlite"
    first = subprocess.Popen(ROBENCH + ["run", str(suite), "--out", str(tmp / "out"), "-q", "--no-leaderboard",
                                        "--plugin", "reliability_plugins"], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while count_samples(db_path) == 0 and time.time() < deadline:
        time.sleep(0.05)
    second = robench("run", suite, "--out", tmp / "out", "-q", "--no-leaderboard", env=env, check=1)
    assert "is being written by another robench process (pid" in second.stderr
    assert "Traceback" not in second.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    rows, dup = snapshot(db_path)
    assert dup == 0 and len(rows) == 2 * 60
    # once the first has finished, the same command finds everything stored
    again = robench("run", suite, "--out", tmp / "out", "-q", "--no-leaderboard", env=env)
    assert "2 already stored" in again.stderr.replace("\n", " ")


@pytest.mark.parametrize("content", ["garbage", "foreign"])
def test_corrupt_or_foreign_store_is_refused_before_any_work(isolated_env, env, content):
    tmp = isolated_env
    out = tmp / "out"
    out.mkdir()
    store = out / "results.sqlite"
    if content == "garbage":
        store.write_bytes(os.urandom(8192))
    else:
        db = sqlite3.connect(store)
        db.execute("CREATE TABLE invoices (id INTEGER, amount REAL)")
        db.commit()
        db.close()
    before = store.read_bytes()
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {}}"])
    proc = robench("run", suite, "--out", out, "-q", env=env, check=1)
    assert "not a robench results store" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp / "cache").exists(), "nothing may be trained"
    assert store.read_bytes() == before, "the file must be left as it was"


class _Payload:
    """Unpickling this would create a file: proof that a checkpoint ran code."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


CHECKPOINT_MODELS = ["{name: a, plugin: fault-linear, params: {ridge: 1.0}}", "{name: b, plugin: fault-linear, params: {ridge: 50.0}}"]


@pytest.fixture(scope="module")
def trained_cache(tmp_path_factory):
    """Checkpoints of two models with the same shapes (trained once for the module)."""
    tmp = tmp_path_factory.mktemp("ckpt")
    (tmp / "data").mkdir()
    env = dict(os.environ, ROBENCH_CACHE=str(tmp / "cache"), ROBENCH_DATA=str(tmp / "data"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {}}"], models=CHECKPOINT_MODELS, limit=20)
    robench("run", suite, "--out", tmp / "first", "-q", "--no-leaderboard", env=env)
    return tmp / "cache"


@pytest.mark.parametrize("kind", ["garbage", "pickle", "foreign", "foreign_legacy"])
def test_corrupt_or_foreign_checkpoint_is_refused(isolated_env, env, trained_cache, kind):
    import json
    import shutil

    tmp = isolated_env
    cache = tmp / "cache"
    shutil.copytree(trained_cache, cache)
    suite = write_suite(tmp, ["{name: noise, plugin: fault-noise, params: {}}"], models=CHECKPOINT_MODELS, limit=20)
    folders = {json.loads((f / "config.json").read_text())["params"]["ridge"]: f for f in cache.iterdir()}
    a, b = folders[1.0], folders[50.0]
    weights = b / "weights.safetensors"
    evidence = tmp / "code-ran"
    if kind == "garbage":
        weights.write_bytes(os.urandom(4096))
    elif kind == "pickle":
        weights.write_bytes(pickle.dumps(_Payload(evidence)))
    elif kind == "foreign":  # same shapes, another model's weights
        weights.write_bytes((a / "weights.safetensors").read_bytes())
    else:  # a checkpoint without a model key (older robench) whose config names another model
        from safetensors.torch import load_file, save_file

        save_file(load_file(a / "weights.safetensors"), str(weights))
        (b / "config.json").write_text((a / "config.json").read_text())
    proc = robench("run", suite, "--out", tmp / "second", "-q", "--no-leaderboard", env=env, check=1)
    assert not evidence.exists(), "loading a checkpoint ran code"
    expected = {"garbage": "is corrupt or not a safetensors file", "pickle": "is corrupt or not a safetensors file",
                "foreign": f"belongs to model key {a.name}, not {b.name}",
                "foreign_legacy": "its config.json does not describe this model"}[kind]
    assert expected in proc.stderr.replace("\n", "")
    assert f"delete {b}" in proc.stderr.replace("\n", "")
    db = sqlite3.connect(tmp / "second" / "results.sqlite")
    status = dict(db.execute("SELECT model, status FROM cells WHERE attack='noise' AND eps=0.05").fetchall())
    assert status == {"a": "done", "b": "failed"}  # the healthy model's cells still ran
