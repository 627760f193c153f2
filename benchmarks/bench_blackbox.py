"""Cost of the substitute attack's training loop under different CPU threading settings.

The substitute is a small network trained for thousands of Adam steps; on a CPU shared with other
jobs, torch's OpenMP threads spin while they wait for a core, and one step can take 100x longer
than with a single thread. This benchmark runs the same substitute attack (MNIST 0 vs 1, a fixed
linear target, MLP substitute) in one subprocess per setting, so that OMP_WAIT_POLICY takes effect
before torch starts:

  .venv/bin/python benchmarks/bench_blackbox.py --rounds 8 --epochs 5

Prints one line per setting: wall seconds of the attack, target accuracy on its adversarials,
label match rate. Results: docs/benchmarks/blackbox.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

SETTINGS = [
    ("2 threads, OMP_WAIT_POLICY unset", {"threads": 2}, {}),
    ("1 thread", {"threads": 1}, {}),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", {"threads": 2}, {"OMP_WAIT_POLICY": "PASSIVE"}),
]


def child(args) -> None:
    import time
    from pathlib import Path

    import torch

    import robench
    from robench.testing import LinearModel
    from robench_plugins.blackbox.substitute import Substitute
    from robench_plugins.datasets.files import Mnist

    torch.set_num_threads(args.threads)
    data = Path(os.environ.get("ROBENCH_DATA", "/work/shared/data"))
    x, y = Mnist(Mnist.Params()).load("test", data)
    keep = y < 2
    x, y = x[keep][: args.n], y[keep][: args.n]
    # a fixed linear target separating 0 from 1 (difference of class means): no training noise
    w = x[y == 1].flatten(1).mean(0) - x[y == 0].flatten(1).mean(0)
    b = -(w @ x.flatten(1).mean(0))
    target = LinearModel(torch.stack([-w, w]) / 2, torch.stack([-b, b]) / 2, (1, 28, 28))
    attack = Substitute(Substitute.Params(rounds=args.rounds, epochs=args.epochs, lr=1e-3, record_rounds=False))
    ctx = robench.Context(seed=0, pool=x)
    t0 = time.perf_counter()
    x_adv = attack.run(target, x, y, eps=0.2, ctx=ctx)
    seconds = time.perf_counter() - t0
    acc = float((target.predict(x_adv) == y).float().mean())
    print(json.dumps({"seconds": seconds, "adv_acc": acc, "clean_acc": float((target.predict(x) == y).float().mean()),
                      "label_match_rate": ctx.records["label_match_rate"], "train_size": ctx.records["substitute_train_size"]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n", type=int, default=1000, help="evaluation images (also the seed pool)")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    for label, opts, env in SETTINGS:
        cmd = [sys.executable, __file__, "--child", "--threads", str(opts["threads"]), "--rounds", str(args.rounds),
               "--epochs", str(args.epochs), "--n", str(args.n)]
        full_env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
        out = subprocess.run(cmd, env=full_env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{label:<38} {r['seconds']:8.1f} s   clean {r['clean_acc']:.3f}  adversarial {r['adv_acc']:.3f}  "
              f"label match {r['label_match_rate']:.3f}  substitute set {r['train_size']:.0f}", flush=True)


if __name__ == "__main__":
    main()
