"""Harness overhead: PGD through `robench run` vs the same attack called directly.

Same model (trained once, cached), same samples, same batches, same seeds. The direct loop does
only what an attack author would: model.to(device), attack.run per batch. The harness adds the
counting wrapper, verification (re-classification, norms), SHA-256 of inputs and SQLite writes.
Runs alternate (direct, harness, direct, harness, ...) so machine noise hits both alike.

    python benchmarks/bench_harness.py [--repeats 3] [--limit 540]
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robench.api import Context
from robench.plugins import load_registry
from robench.data import load_eval_data
from robench.run import RunOptions, Runner
from robench.seeds import batch_seed, seed_everything
from robench.suite import load_suite

from bench_options import parse_options  # noqa: E402  (a sibling script module)

SUITE = """\
name: overhead
dataset: {{name: digits, split: test, limit: {limit}}}
seed: 0
device: cpu
batch_size: 100
models:
  - {{name: mlp, plugin: mlp, params: {{hidden: 256, epochs: 10}}}}
attacks:
  - {{name: pgd, plugin: pgd, params: {{norm: Linf, steps: {steps}, restarts: 1}}}}
epsilons: {{Linf: [{eps}]}}
"""


def main() -> None:
    args = parse_options(repeats=3, limit=540, steps=100, eps=0.3,
                         threads=(1, "torch threads (1 keeps a shared machine's noise down)"))
    torch.set_num_threads(args.threads)
    reg = load_registry()
    tmp = Path(tempfile.mkdtemp())
    text = SUITE.format(limit=args.limit, steps=args.steps, eps=args.eps)
    resolved = load_suite("overhead.yaml", reg, text=text)
    opts = dict(data_dir=tmp, cache_dir=tmp / "cache")

    # Train once (cached) and get the exact model and data the harness uses.
    Runner(resolved, reg, RunOptions(out_dir=tmp / "warm", **opts)).run()
    runner = Runner(resolved, reg, RunOptions(out_dir=tmp / "probe", **opts))
    data = load_eval_data(resolved, reg, tmp, None)
    runner.pool.compute_keys()
    model = runner.pool.load("mlp", data.info)
    cell = runner.plan()[0]
    key = runner.cell_key(cell)
    attack = reg.get("attack", "pgd").factory(resolved.attack_params["pgd"])
    ctx = Context(device=runner.device, seed=0)

    def timed(fn) -> tuple[float, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w0, time.process_time() - c0

    def direct() -> None:
        for start in range(0, len(data.x), 100):
            seed_everything(batch_seed(0, key, start))
            attack.run(model, data.x[start : start + 100], data.y[start : start + 100], eps=args.eps, ctx=ctx)

    def harness(i: int):
        def go():
            s = Runner(resolved, reg, RunOptions(out_dir=tmp / f"run{i}", **opts)).run()
            assert s.ok and s.cells_done == 1
        return go

    d, h = [], []
    for i in range(args.repeats):
        d.append(timed(direct))
        h.append(timed(harness(i)))
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"samples {len(data.x)}, PGD Linf {args.steps} steps, eps {args.eps}, batch 100, repeats {args.repeats}")
    for label, k in (("wall", 0), ("CPU (process time)", 1)):
        dd, hh = [v[k] for v in d], [v[k] for v in h]
        ratios = [b / a for a, b in zip(dd, hh)]
        print(f"{label}: direct median {statistics.median(dd):.3f} s, harness median {statistics.median(hh):.3f} s "
              f"(whole run: load data, cached model, clean predictions, attack, verify, store); "
              f"ratio of medians {statistics.median(hh) / statistics.median(dd):.3f}, per-pair ratios {[round(r, 3) for r in ratios]}")


if __name__ == "__main__":
    main()
