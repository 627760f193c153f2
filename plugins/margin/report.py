"""rho_adv per (model, minimal L2 attack) from a results store, as the thesis tables report it.

    python -m robench_plugins.margin.report runs/margin_mnist/results.sqlite suites/papers/margin_mnist.yaml
    python -m robench_plugins.margin.report runs/critic_mnist/results.sqlite suites/papers/critic_mnist.yaml --over test

The store keeps per-sample L2 norms of verified adversarials; the input norms come from reloading
the suite's evaluation slice (the same dataset, split, offset and limit the runner used).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import yaml

from robench.results import evaluation_data, read_cells

from .losses import rho_adv_from_norms


def rho_of_samples(samples: list[dict], input_l2: torch.Tensor, over: str = "correct") -> dict:
    """rho_adv of one cell's stored samples (``input_l2`` indexed by sample idx).

    ``over``: ``correct`` averages over correctly classified samples with a verified adversarial
    (thesis chapter 3, eq. 3.20 as its tables use it); ``test`` over the test set (chapter 4, eq. 4.9):
    a clean error counts with ``r = 0``. Samples the attack failed on are left out either way (no
    ``r(x)`` to average) and counted in ``failed``."""
    if over not in ("correct", "test"):
        raise ValueError(f"rho: over must be 'correct' or 'test', not {over!r}")
    idx = torch.tensor([s["idx"] for s in samples])
    correct = torch.tensor([s["label"] == s["clean_pred"] for s in samples])
    ok = torch.tensor([bool(s["success"]) and not s["rejected"] and s["l2"] is not None for s in samples])
    l2 = torch.tensor([s["l2"] if s["l2"] is not None else float("nan") for s in samples], dtype=torch.float64)
    l2 = torch.where(correct, l2, torch.zeros_like(l2))  # a clean error is broken at norm 0
    keep = (correct & ok) if over == "correct" else (ok | ~correct)
    rho, n = rho_adv_from_norms(l2, input_l2[idx], keep)
    return {"rho": rho, "n": n, "clean_error": float((~correct).float().mean()), "failed": int((correct & ~ok).sum())}


def rho_table(store: str | Path, suite: str | Path, data_dir: str | Path, over: str = "correct") -> list[dict]:
    """One row per (model, attack) of minimal L2 cells: rho_adv (see :func:`rho_of_samples`), the
    count it averages over, the clean error and the attack's failures."""
    data = evaluation_data(suite, data_dir)
    input_l2 = data.x.flatten(1).double().norm(dim=1)
    name = yaml.safe_load(Path(suite).read_text())["name"]
    cells = sorted((c for c in read_cells(store, name) if c["norm"] == "L2" and c["kind"] == "minimal"),
                   key=lambda c: (c["model"], c["attack"]))
    rows = []
    for cell in cells:
        if cell["samples"]:
            rows.append({"model": cell["model"], "attack": cell["attack"], **rho_of_samples(cell["samples"], input_l2, over)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("suite")
    ap.add_argument("--over", choices=["correct", "test"], default="correct",
                    help="average over correctly classified samples (thesis chapter 3) or the test set (chapter 4)")
    ap.add_argument("--data-dir", default=os.environ.get("ROBENCH_DATA", str(Path.home() / ".cache/robench/data")))
    args = ap.parse_args()
    print("| model | attack | clean error % | rho_adv | averaged over | attack failed |")
    print("|---|---|---|---|---|---|")
    for r in rho_table(args.store, args.suite, args.data_dir, args.over):
        print(f"| {r['model']} | {r['attack']} | {100 * r['clean_error']:.2f} | {r['rho']:.3f} | {r['n']} | {r['failed']} |")


if __name__ == "__main__":
    main()
