"""A 100-cell suite on digits: the local executor vs Ray with N workers, results compared row by row.

    python benchmarks/reliability_ray.py --workers 4 --limit 200 --out /tmp/rel-bench

Trains the five models once (a --limit 1 warm-up run fills the model cache), then times
`robench run` with the local executor and with `--executor ray --workers N` side by side, and
checks that both stores hold exactly the same rows (every column but the timings).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

SUITE = """
name: reliability100
description: 5 MLPs x (FGSM, PGD) x (Linf, L2) x 5 eps = 100 cells, to compare executors
dataset: {{name: digits, split: test, limit: {limit}}}
seed: 0
device: cpu
batch_size: 50
models:
  - {{name: mlp32, plugin: mlp, params: {{hidden: 32, layers: 1, epochs: 10}}}}
  - {{name: mlp64, plugin: mlp, params: {{hidden: 64, layers: 1, epochs: 10}}}}
  - {{name: mlp128, plugin: mlp, params: {{hidden: 128, layers: 1, epochs: 10}}}}
  - {{name: mlp64x2, plugin: mlp, params: {{hidden: 64, layers: 2, epochs: 10}}}}
  - {{name: mlp32x2, plugin: mlp, params: {{hidden: 32, layers: 2, epochs: 10}}}}
attacks:
  - {{name: fgsm-linf, plugin: fgsm, params: {{norm: Linf}}}}
  - {{name: fgsm-l2, plugin: fgsm, params: {{norm: L2}}}}
  - {{name: pgd-linf, plugin: pgd, params: {{norm: Linf, steps: 20}}}}
  - {{name: pgd-l2, plugin: pgd, params: {{norm: L2, steps: 20}}}}
epsilons: {{Linf: [0.01, 0.03, 0.05, 0.1, 0.2], L2: [0.25, 0.5, 1.0, 1.5, 2.0]}}
"""


def rows(db_path: Path):
    db = sqlite3.connect(db_path)
    out = db.execute(
        "SELECT c.key, c.model, c.attack, c.eps, c.status, s.idx, s.success, s.rejected, s.reject_reason, s.l0, s.l1, s.l2, s.linf, "
        "s.forward, s.backward FROM samples s JOIN cells c ON s.cell=c.key ORDER BY 1, 6").fetchall()
    cells = db.execute("SELECT COUNT(*), SUM(status='done') FROM cells").fetchone()
    db.close()
    return out, cells


def robench(*args: str) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "run", *args, "-q", "--no-leaderboard"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"robench run {args} failed ({proc.returncode}):\n{proc.stderr}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("/tmp/robench-reliability-bench"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    suite = a.out / "reliability100.yaml"
    suite.write_text(SUITE.format(limit=a.limit))
    os.environ.setdefault("ROBENCH_CACHE", str(a.out / "cache"))
    for d in ("warm", "local", "ray"):
        for f in (a.out / d).glob("results.sqlite*"):
            f.unlink()
    warm = robench(str(suite), "--out", str(a.out / "warm"), "--limit", "1")
    local = robench(str(suite), "--out", str(a.out / "local"))
    ray = robench(str(suite), "--out", str(a.out / "ray"), "--executor", "ray", "--workers", str(a.workers))
    (lr, lc), (rr, rc) = rows(a.out / "local" / "results.sqlite"), rows(a.out / "ray" / "results.sqlite")
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cells": lc[0], "cells_done_local": lc[1], "cells_done_ray": rc[1], "samples": len(lr),
        "identical_rows": lr == rr, "differing_rows": sum(x != y for x, y in zip(lr, rr)) + abs(len(lr) - len(rr)),
        "warmup_train_s": round(warm, 1), "local_s": round(local, 1), "ray_s": round(ray, 1), "workers": a.workers,
        "ray_over_local": round(ray / local, 2), "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if not result["identical_rows"]:
        raise SystemExit("the Ray run's rows differ from the local run's")


if __name__ == "__main__":
    main()
