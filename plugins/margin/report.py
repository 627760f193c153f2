"""rho_adv per (model, minimal L2 attack) from a results store, as the thesis tables report it.

    python -m robench_plugins.margin.report runs/margin_mnist/results.sqlite suites/papers/margin_mnist.yaml

The store keeps per-sample L2 norms of verified adversarials; the input norms come from reloading
the suite's evaluation slice (the same dataset, split, offset and limit the runner used).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
from pathlib import Path

import torch

from .losses import rho_adv_from_norms


def rho_table(store: str | Path, suite: str | Path, data_dir: str | Path) -> list[dict]:
    """One row per (model, attack) of minimal L2 cells: rho_adv over correctly classified samples
    with a verified adversarial, their count, the clean error and the attack's failures."""
    from robench.plugins import get_registry
    from robench.runner import load_eval_data
    from robench.suite import load_suite

    registry = get_registry()
    resolved = load_suite(suite, registry)
    data = load_eval_data(resolved, registry, Path(data_dir), None)
    input_l2 = data.x.flatten(1).double().norm(dim=1)
    con = sqlite3.connect(str(store))
    rows = []
    cells = con.execute(
        "SELECT key, model, attack FROM cells WHERE suite = ? AND norm = 'L2' AND kind = 'minimal' ORDER BY model, attack",
        (resolved.suite.name,),
    ).fetchall()
    for key, model, attack in cells:
        samples = con.execute(
            "SELECT idx, label, clean_pred, success, rejected, l2 FROM samples WHERE cell = ?", (key,)
        ).fetchall()
        if not samples:
            continue
        idx = torch.tensor([s[0] for s in samples])
        correct = torch.tensor([s[1] == s[2] for s in samples])
        ok = torch.tensor([bool(s[3]) and not s[4] and s[5] is not None for s in samples])
        l2 = torch.tensor([s[5] if s[5] is not None else float("nan") for s in samples], dtype=torch.float64)
        rho, n = rho_adv_from_norms(l2, input_l2[idx], correct & ok)
        rows.append({
            "model": model, "attack": attack, "rho": rho, "n": n,
            "clean_error": float((~correct).float().mean()), "failed": int((correct & ~ok).sum()),
        })
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store")
    ap.add_argument("suite")
    ap.add_argument("--data-dir", default=os.environ.get("ROBENCH_DATA", str(Path.home() / ".cache/robench/data")))
    args = ap.parse_args()
    print("| model | attack | clean error % | rho_adv | averaged over | attack failed |")
    print("|---|---|---|---|---|---|")
    for r in rho_table(args.store, args.suite, args.data_dir):
        print(f"| {r['model']} | {r['attack']} | {100 * r['clean_error']:.2f} | {r['rho']:.3f} | {r['n']} | {r['failed']} |")


if __name__ == "__main__":
    main()
