"""Native (batched torch) JSMA and pixel attack against ART's, on the same model and images.

Runs robench's ``jsma`` / ``pixel`` plugins and the ``art-jsma`` / ``art-pixel`` adapters (ART 1.20,
what the suites ran so far) with their default parameters unless told otherwise, on the first ``--n``
test images the model classifies correctly, one attack after the other in this process. Every
output goes through robench's verifier (re-classification, [0, 1] box, L0 counted in pixels).
Reported per attack: success rate, mean and median L0 of the verified adversarials, seconds per
image (wall clock; with ``--repeat R`` the fastest of R round-robin rounds) and model evaluations
(forward rows) per image.

    .venv/bin/python benchmarks/bench_l0_native.py --dataset cifar10 --arch lenet --epochs 3 --n 20

The model is the ``cnn`` plugin's, trained here (or loaded from the benchmark cache that
benchmarks/bench_pdpgd.py also uses). Writes a JSON file and prints a markdown table for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import robench
from robench import Norm

sys.path.insert(0, str(Path(__file__).parent))
from bench_pdpgd import add_model_args, md_table, meta, start, verified  # noqa: E402  (same model training and cache)


class Counted(robench.Model):
    """A model view that counts the rows of every forward pass."""

    def __init__(self, model: robench.Model):
        self.inner = model
        self.info = model.info
        self.params = model.params
        self.device = model.device
        self.rows = 0

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += len(x)
        return self.inner.scores(x)


ATTACKS = {
    "jsma": [("native jsma", "jsma"), ("ART jsma", "art-jsma")],
    "pixel": [("native pixel", "pixel"), ("ART pixel", "art-pixel")],
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap, n=20, out="bench_l0_native.json")
    ap.add_argument("--attacks", nargs="+", default=["jsma", "pixel"], choices=sorted(ATTACKS))
    ap.add_argument("--pixel-params", type=json.loads, default={}, help='JSON params for both pixel attacks, e.g. {"max_iter": 20}')
    ap.add_argument("--native-pixel-params", type=json.loads, default={}, help="JSON params for the native pixel attack only")
    ap.add_argument(
        "--repeat", type=int, default=1,
        help="run the attacks this many rounds, round-robin, and report each one's fastest round "
        "(a busy shared machine inflates single timings; results are identical across rounds)",
    )
    args, registry, model, x, y, acc = start(ap, argv)
    runs = []
    for family in args.attacks:
        for label, plugin in ATTACKS[family]:
            if args.only and not any(o in label for o in args.only):
                continue
            params = dict(args.pixel_params) if family == "pixel" else {}
            if plugin == "pixel":
                params |= args.native_pixel_params
            runs.append((label, plugin, params))
    results: dict[str, dict] = {}
    for _ in range(args.repeat):
        for label, plugin, params in runs:
            spec = registry.get("attack", plugin)
            atk = spec.factory(spec.factory.Params(**params))
            counted = Counted(model)
            torch.manual_seed(0)
            t = time.perf_counter()
            adv = atk.run(counted, x, y, eps=None, ctx=robench.Context(seed=0, pool=x))
            seconds = time.perf_counter() - t
            v, ok, stats = verified(model, x, y, adv, Norm.L0)
            row = {
                "attack": label,
                "plugin": plugin,
                "params": params,
                "n": stats["n"],
                "success": stats["success"],
                "rejected": stats["rejected"],
                "mean_l0": stats["mean"],
                "median_l0": stats["median"],
                "s_per_image": seconds / len(x),
                "forward_rows_per_image": counted.rows / len(x),
                "l0": [float(n) if s else None for n, s in zip(v.norms[Norm.L0].tolist(), ok.tolist())],
            }
            prev = results.get(label)
            if prev is not None:
                if prev["l0"] != row["l0"]:
                    raise SystemExit(f"{label}: a repeated round gave different results")
                row["rounds_s_per_image"] = prev["rounds_s_per_image"] + [row["s_per_image"]]
                row["s_per_image"] = min(row["s_per_image"], prev["s_per_image"])
            else:
                row["rounds_s_per_image"] = [row["s_per_image"]]
            results[label] = row
            print(
                f"{label:14s} success {row['success']:.3f} rejected {row['rejected']} mean L0 {row['mean_l0']:.3g} "
                f"median {row['median_l0']:.3g}  {seconds / len(x):.3f} s/image  "
                f"{row['forward_rows_per_image']:.0f} forward rows/image",
                flush=True,
            )
            args.out.write_text(json.dumps(meta(args, acc, len(x), "bench_l0_native.py") | {"results": list(results.values())}, indent=1))
    results = list(results.values())
    print()
    print(markdown(results))


def markdown(results: list[dict]) -> str:
    return md_table(
        ["attack", "success", "mean L0", "median L0", "s / image", "forward rows / image"], 5,
        [[r["attack"], f"{r['success']:.0%}", f"{r['mean_l0']:.2f}", f"{r['median_l0']:.1f}", f"{r['s_per_image']:.3f}",
          f"{r['forward_rows_per_image']:.0f}"] for r in results],
    )


if __name__ == "__main__":
    main()
