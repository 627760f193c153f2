"""Verification rejects lies, crashing plugins fail only their cell, and a killed run resumes exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import store_snapshot

REPO = Path(__file__).resolve().parents[1]

SUITE = """\
name: iso
dataset: {{name: digits, limit: {limit}}}
batch_size: 10
models:
  - {{name: m, plugin: mlp, params: {{hidden: 16, epochs: 3}}}}
{extra_models}attacks:
{attacks}
epsilons: {{Linf: [0.05, 0.1], L2: [0.5, 1.0]}}
"""


def write_suite(tmp: Path, attacks: list[str], limit=40, extra_models="") -> Path:
    p = tmp / "suite.yaml"
    p.write_text(SUITE.format(limit=limit, attacks="\n".join(f"  - {a}" for a in attacks), extra_models=extra_models))
    return p


def robench(*args, check=None):
    proc = subprocess.run([sys.executable, "-m", "robench.cli", *map(str, args)], capture_output=True, text=True)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_lying_attacks_are_rejected_and_counted(isolated_env):
    tmp = isolated_env
    suite = write_suite(tmp, [
        "{name: oob, plugin: test-out-of-box}",
        "{name: same, plugin: test-unchanged}",
        "{name: notadv, plugin: test-not-adversarial}",
    ])
    robench("run", suite, "--out", tmp / "out", "-q", "-p", "robench_test_plugins", check=0)
    rows = json.loads(robench("leaderboard", tmp / "out", "-f", "json", check=0).stdout)
    by = {r["attack"]: r for r in rows}
    db = sqlite3.connect(tmp / "out" / "results.sqlite")
    clean_wrong = db.execute("SELECT SUM(label != pred) FROM clean").fetchone()[0]
    n = 40
    # out-of-box images: every claimed adversarial (all correctly classified samples) rejected
    assert by["oob"]["rejected"] == n - clean_wrong
    assert by["notadv"]["rejected"] == n - clean_wrong
    # an unchanged image is "no adversarial", not a success and not a rejection
    assert by["same"]["rejected"] == 0
    for a in ("oob", "same", "notadv"):
        assert by[a]["success_rate"] == 0.0
        assert by[a]["robust_accuracy"]["1"] == by[a]["clean_accuracy"]
    md = robench("leaderboard", tmp / "out", check=0).stdout
    assert f"m / oob: {n - clean_wrong} adversarial(s) returned by the attack were rejected" in md
    reasons = {r[0].split(" (")[0] for r in db.execute("SELECT reject_reason FROM samples WHERE rejected=1")}
    assert reasons == {"outside [0, 1]", "not misclassified"}


def test_crashing_plugins_fail_only_their_cells(isolated_env):
    tmp = isolated_env
    suite = write_suite(
        tmp,
        ["{name: boom, plugin: test-crash}", "{name: fgsm, plugin: fgsm}"],
        extra_models="  - {name: broken, plugin: test-crash-model}\n",
    )
    proc = robench("run", suite, "--out", tmp / "out", "-q", "-p", "robench_test_plugins", check=1)
    assert "this attack always crashes" in proc.stderr
    assert "training this model always crashes" in proc.stderr
    db = sqlite3.connect(tmp / "out" / "results.sqlite")
    status = dict(((m, a, e), s) for m, a, e, s in db.execute("SELECT model, attack, eps, status FROM cells"))
    assert status[("m", "fgsm", 0.05)] == "done" and status[("m", "fgsm", 0.1)] == "done"
    assert status[("m", "boom", None)] == "failed"
    assert all(s == "failed" for (m, _, _), s in status.items() if m == "broken")
    assert "Traceback" in db.execute("SELECT error FROM cells WHERE attack='boom' AND model='m'").fetchone()[0]
    # the good cells were fully stored
    assert db.execute("SELECT COUNT(*) FROM samples s JOIN cells c ON s.cell=c.key WHERE c.attack='fgsm' AND c.model='m'").fetchone()[0] == 80


def snapshot(db_path: Path):
    return store_snapshot.snapshot(
        db_path, "c.model, c.attack, c.eps, s.idx, s.success, s.rejected, s.l0, s.l1, s.l2, s.linf, s.forward, s.backward", "1, 2, 3, 4")


def test_sigkill_mid_run_then_rerun_equals_uninterrupted(isolated_env):
    tmp = isolated_env
    suite = write_suite(tmp, ["{name: pgd, plugin: pgd, params: {norm: L2, steps: 60}}"], limit=120)
    env = dict(os.environ)
    # train the model once so both runs use the same cached weights
    robench("run", suite, "--out", tmp / "full", "-q", "--no-leaderboard", check=0)
    full, _ = snapshot(tmp / "full" / "results.sqlite")

    killed = tmp / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "robench.cli", "run", str(suite), "--out", str(killed), "-q", "--no-leaderboard"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db_path = killed / "results.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some, but not all, batches are stored
        if db_path.exists():
            try:
                n = sqlite3.connect(db_path).execute("SELECT COUNT(*) FROM samples").fetchone()[0]
            except sqlite3.Error:
                n = 0
            if 0 < n < 240:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial, dup = snapshot(db_path)
    assert dup == 0
    assert 0 < len(partial) < len(full), "the run should have been killed part-way"
    robench("run", suite, "--out", killed, "-q", "--no-leaderboard", check=0)
    resumed, dup = snapshot(db_path)
    assert dup == 0
    assert resumed == full
