"""The measurement behind fb-cw-l2's and fb-ead's defaults (docs/attacks-library.md): steps and
EAD's decision rule against the exact minimum on a linear model.

A logistic regression on scikit-learn's digits 0 vs 1; for a binary linear model f(x) = w.x + b
the smallest L1 perturbation inside the [0, 1] box is a fractional knapsack (move the coordinates
with the largest |w_i| first, each as far as the box allows), and |f(x)| / ||w|| bounds the
smallest L2 from below. Usage: ``python benchmarks/bench_cw_ead_defaults.py [N]`` (N test images).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import robench
from robench.plugins import load_registry

warnings.simplefilter("ignore")
torch.set_num_threads(1)


def main(n: int = 30) -> None:
    d = load_digits()
    keep = (d.target == 0) | (d.target == 1)
    X = (d.images[keep] / 16.0).reshape(-1, 64).astype(np.float32)
    y = (d.target[keep] == 1).astype(np.int64)
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(X, y)
    w = torch.tensor(clf.coef_[0], dtype=torch.float32)
    b = float(clf.intercept_[0])

    class Linear(robench.Model):
        trainable = False

        def scores(self, x):
            s = x.reshape(len(x), -1) @ w + b
            return torch.stack([-s, s], 1)

    model = Linear(robench.NoParams(), robench.DatasetInfo("digits01", (1, 8, 8), ("0", "1")))
    xs, ys = torch.tensor(X[: n + 10]).reshape(-1, 1, 8, 8), torch.tensor(y[: n + 10])
    right = model.predict(xs) == ys
    xs, ys = xs[right][:n], ys[right][:n]

    def exact_l1(x: torch.Tensor) -> float:
        x = x.reshape(-1).double()
        f = float(x @ w.double() + b)
        need, total, down = abs(f), 0.0, f > 0  # f > 0: lower f (w > 0 down, w < 0 up)
        gains = [(abs(float(wi)), float(xi) if (wi > 0) == down else 1 - float(xi)) for wi, xi in zip(w, x)]
        for g, room in sorted(gains, reverse=True):
            if need <= 0 or g == 0:
                break
            take = min(room, need / g)
            total, need = total + take, need - take * g
        return total

    l1_exact = torch.tensor([exact_l1(x) for x in xs])
    l2_bound = torch.tensor([abs(float(x.reshape(-1) @ w + b)) / float(w.norm()) for x in xs])
    reg = load_registry()
    cases = [("fb-ead", {"steps": s, "decision_rule": r}, 1, l1_exact) for s in (1000, 10000) for r in ("EN", "L1")]
    cases += [("fb-cw-l2", {"steps": s}, 2, l2_bound) for s in (1000, 10000)]
    for name, params, p, ref in cases:
        spec = reg.get("attack", name)
        attack = spec.factory(spec.params.model_validate(params))
        t0 = time.perf_counter()
        adv = attack.run(model, xs, ys, eps=None, ctx=robench.Context())
        dt = time.perf_counter() - t0
        ok = (model.predict(adv) != ys) & ~torch.isnan(adv.reshape(len(adv), -1)).any(1)
        dist = (adv - xs).reshape(len(xs), -1).norm(p=p, dim=1)
        r = (dist[ok] / ref[ok]).numpy()
        print(f"{name:9s} {str(params):40s} broken {int(ok.sum())}/{len(xs)}  L{p}/reference mean {r.mean():.4f} "
              f"median {np.median(r):.4f}  {dt:.1f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
