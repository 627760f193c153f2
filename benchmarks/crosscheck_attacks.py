"""Cross-check attacks against their twins and against closed-form optima.

1. Twins on the same model and images: C&W L2 (foolbox vs ART), HopSkipJump L2 (foolbox vs ART,
   same starting points), PGD Linf (robench `pgd` vs ART), FAB (ours vs adv-lib's, when adv-lib is
   importable). Compared by success rate and mean norm over samples both broke (minimal
   attacks), or robust accuracy (bounded). A twin is flagged when its mean norm is > 1.2x the
   other's or its robust accuracy is > 0.1 higher.
2. Every minimal attack on a binary linear model (8x8 inputs), against the exact minimum inside
   the box (robench.testing.minimal_perturbation): mean of per-sample ratio norm / optimum, flagged
   when > 1.5 (or when it breaks fewer than 90% of the samples).

Usage:  .venv/bin/python benchmarks/crosscheck_attacks.py [--n 20] [--out docs/benchmarks/crosscheck.md]

adv-lib (for FAB's twin) is optional and never installed into the project venv (its dependencies
would move torch): ``pip install --no-deps --target /tmp/advlib_site adv-lib`` and point
ROBENCH_ADVLIB at that folder. Only its FAB submodule is imported (see ALGORITHM-NOTES.md).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
import time
import types
import warnings
from pathlib import Path

import torch

import robench
from robench.api import Context, NoParams, Norm
from robench.testing import LinearModel, minimal_perturbation
from robench.verify import verify

warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]


def digits_mlp():
    from robench_plugins.datasets import Digits

    ds = Digits(Digits.Params())
    x, y = ds.load("train", None)
    xt, yt = ds.load("test", None)

    class MLP(robench.TorchModel):
        def build(self):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    torch.manual_seed(0)
    m = MLP(NoParams(), ds.info())
    opt = torch.optim.Adam(m.net.parameters(), lr=1e-2)
    for _ in range(300):
        loss = torch.nn.functional.cross_entropy(m.net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    acc = float((m.predict(xt) == yt).float().mean())
    return m, xt, yt, acc


def load_advlib_fab():
    """adv-lib's fab() without importing adv_lib.attacks (which pulls torchvision and visdom)."""
    path = os.environ.get("ROBENCH_ADVLIB", "/tmp/advlib_site")
    if not Path(path, "adv_lib").is_dir():
        return None
    sys.path.insert(0, path)
    for name in ("adv_lib", "adv_lib.attacks"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(Path(path, *name.split(".")))]
            sys.modules[name] = pkg
    mod = importlib.import_module("adv_lib.attacks.fast_adaptive_boundary.fast_adaptive_boundary")
    return mod.fab


class AdvLibFAB(robench.Attack):
    """adv-lib 0.2.8's FAB behind the Attack interface (benchmark only)."""

    kind = "minimal"

    def __init__(self, fab_fn, norm: Norm, n_iter: int, restarts: int | None = None):
        super().__init__(NoParams())
        self.fab_fn, self.norm, self.n_iter, self.restarts = fab_fn, norm, n_iter, restarts
        self.plugin_name = f"adv-lib fab {norm}"

    def run(self, model, x, y, *, eps, ctx, source=None):
        p = {Norm.L1: 1, Norm.L2: 2, Norm.Linf: float("inf")}[self.norm]
        torch.manual_seed(ctx.seed)
        return self.fab_fn(robench.api.ScoresModule(model), x, y, norm=p, n_iter=self.n_iter, restarts=self.restarts)


def measure(model, x, y, attack, eps=None, ctx=None):
    ctx = ctx or Context(seed=0, pool=x)
    t = time.perf_counter()
    adv = attack.run(model, x, y, eps=eps, ctx=ctx)
    secs = time.perf_counter() - t
    v = verify(model, x, y, adv, model.predict(x), attack.norm, eps)
    return v, secs, dict(ctx.records)


def make(name, **params):
    from robench.plugins import get_registry

    spec = get_registry().get("attack", name)
    attack = spec.factory(spec.factory.Params(**params))
    attack.plugin_name = name + (f" {params['norm']}" if "norm" in params else "")
    return attack


def twins(model, x, y, advlib_fab, lines):
    pairs = [
        ("C&W L2", make("fb-cw-l2", steps=100, binary_search_steps=5, initial_const=0.1),
         make("art-cw-l2", max_iter=100, binary_search_steps=5, initial_const=0.1), None),
        ("HopSkipJump L2", make("fb-hsj", steps=10), make("art-hsj", max_iter=10), None),
        ("PGD Linf @ 0.1", make("pgd", steps=40, restarts=1), make("art-pgd", max_iter=40, rel_step_size=2.5 / 40, num_random_init=1), 0.1),
        ("PGD L2 @ 1.0", make("pgd", norm="L2", steps=40), make("art-pgd", norm="L2", max_iter=40, rel_step_size=2.5 / 40, num_random_init=1), 1.0),
    ]
    fab_pairs = [("L2", Norm.L2), ("Linf", Norm.Linf), ("L1", Norm.L1)]
    for label, norm in fab_pairs:
        if advlib_fab is not None:
            pairs.append((f"FAB {label}", make("fab", norm=label, n_iter=100), AdvLibFAB(advlib_fab, norm, 100), None))
    lines += [
        "| pair | attack | broken | mean norm (both broke) | robust acc | s | flag |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, a, b, eps in pairs:
        va, ta, ra = measure(model, x, y, a, eps)
        vb, tb, rb = measure(model, x, y, b, eps)
        both = va.success & vb.success
        ma = float(va.norms[a.norm][both].mean()) if both.any() else float("nan")
        mb = float(vb.norms[b.norm][both].mean()) if both.any() else float("nan")
        acc_a = 1 - float(va.success.float().mean())
        acc_b = 1 - float(vb.success.float().mean())
        for name, v, m, acc, other_m, other_acc, secs, rec in (
            (_name(a), va, ma, acc_a, mb, acc_b, ta, ra), (_name(b), vb, mb, acc_b, ma, acc_a, tb, rb)
        ):
            if eps is None:
                flag = "**weaker than twin**" if m > 1.2 * other_m else ""
                norm_cell = f"{m:.4f}"
            else:
                flag = "**weaker than twin**" if acc > other_acc + 0.1 else ""
                norm_cell = "-"
            q = f" ({rec['queries_mean']:.0f} queries/sample)" if "queries_mean" in rec else ""
            lines.append(f"| {label} | {name}{q} | {int(v.success.sum())}/{len(x)} | {norm_cell} | {acc:.3f} | {secs:.1f} | {flag} |")
        print(lines[-2], lines[-1], sep="\n", flush=True)


def _name(attack):
    return getattr(attack, "plugin_name", None) or type(attack).__name__


def linear_known_answer(advlib_fab, lines, n=20):
    g = torch.Generator().manual_seed(0)
    model = LinearModel(torch.randn(2, 64, generator=g), torch.zeros(2), (1, 8, 8))
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = model.predict(x)
    attacks = [
        ("fb-cw-l2", dict(steps=200, binary_search_steps=5, initial_const=0.1)),
        ("fb-ddn", dict()),
        ("fb-deepfool", dict(norm="L2")),
        ("fb-deepfool", dict(norm="Linf")),
        ("fb-ead", dict(steps=200, binary_search_steps=5, initial_const=0.1)),
        ("fb-fmn", dict(norm="L0")),
        ("fb-fmn", dict(norm="L1")),
        ("fb-fmn", dict(norm="L2")),
        ("fb-fmn", dict(norm="Linf")),
        ("fb-bb", dict(norm="L0", steps=100)),
        ("fb-bb", dict(norm="L1", steps=100)),
        ("fb-bb", dict(norm="L2", steps=100)),
        ("fb-bb", dict(norm="Linf", steps=100)),
        ("fb-hsj", dict(norm="L2", steps=20)),
        ("fb-hsj", dict(norm="Linf", steps=20)),
        ("fb-boundary", dict(steps=2000)),
        ("art-cw-l2", dict(max_iter=50, binary_search_steps=5, initial_const=0.1)),
        ("art-cw-linf", dict()),
        ("art-cw-l0", dict(max_iter=10, binary_search_steps=5, initial_const=0.1)),
        ("art-hsj", dict(norm="L2", max_iter=20)),
        ("art-hsj", dict(norm="Linf", max_iter=20)),
        ("art-jsma", dict()),
        ("fab", dict(norm="L1")),
        ("fab", dict(norm="L2")),
        ("fab", dict(norm="Linf")),
    ]
    lines += [
        "| attack | params | norm | broken | mean norm / optimum | worst | s | flag |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [(name, params, make(name, **params)) for name, params in attacks]
    if advlib_fab is not None:
        for norm in (Norm.L1, Norm.L2, Norm.Linf):
            rows.append(("adv-lib fab", {"norm": str(norm)}, AdvLibFAB(advlib_fab, norm, 100)))
    opt_cache = {}
    for name, params, attack in rows:
        norm = attack.norm
        if norm not in opt_cache:
            opt_cache[norm] = minimal_perturbation(model, x, y, norm)
        opt = opt_cache[norm]
        v, secs, rec = measure(model, x, y, attack, ctx=Context(seed=0, pool=torch.rand(100, 1, 8, 8, generator=g)))
        ok = v.success & torch.isfinite(opt) & (opt > 0)
        ratio = v.norms[norm][ok] / opt[ok]
        mean_r = float(ratio.mean()) if ok.any() else float("nan")
        worst = float(ratio.max()) if ok.any() else float("nan")
        reachable = int(torch.isfinite(opt).sum())
        flag = ""
        if not (mean_r <= 1.5):
            flag = "**> 1.5x optimum**"
        if int(v.success.sum()) < 0.9 * reachable:
            flag = (flag + " **misses samples**").strip()
        p = ", ".join(f"{k}={val}" for k, val in params.items())
        lines.append(f"| {name} | {p} | {norm} | {int(v.success.sum())}/{reachable} | {mean_r:.3f} | {worst:.3f} | {secs:.1f} | {flag} |")
        print(lines[-1], flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20, help="test digits attacked in the twin comparison")
    ap.add_argument("--out", default=str(REPO / "docs/benchmarks/crosscheck.md"))
    ap.add_argument("--skip-linear", action="store_true")
    args = ap.parse_args()
    advlib_fab = load_advlib_fab()
    model, xt, yt, acc = digits_mlp()
    ok = model.predict(xt) == yt
    x, y = xt[ok][: args.n], yt[ok][: args.n]
    lines = [
        "## Attack cross-checks (benchmarks/crosscheck_attacks.py)",
        "",
        f"Command: `.venv/bin/python benchmarks/crosscheck_attacks.py --n {args.n}`  ",
        f"Machine: {platform.machine()} CPU, {os.cpu_count()} cores (shared, heavily loaded: seconds are indicative only), no GPU; "
        f"torch {torch.__version__}; date {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}.  ",
        f"adv-lib FAB twin: {'adv-lib 0.2.8 (--no-deps, outside the venv)' if advlib_fab else 'not available (set ROBENCH_ADVLIB)'}.",
        "",
        f"### 1. Twins: same model, same images (64-64-10 MLP on 8x8 digits, test accuracy {acc:.3f}; {len(x)} correctly classified test digits)",
        "",
        "Mean norm over the samples *both* twins broke; robust accuracy = share not broken (bounded: within eps).",
        "Flag: mean norm > 1.2x the twin's, or robust accuracy > 0.1 above the twin's.",
        "",
    ]
    twins(model, x, y, advlib_fab, lines)
    if not args.skip_linear:
        lines += [
            "",
            "### 2. Known answer: binary linear model (64 inputs, random weights), 20 random inputs",
            "",
            "Ratio = attack's verified norm / exact box-constrained minimum (robench.testing.minimal_perturbation), "
            "per sample, over samples the attack broke. L0 counted in pixels (= values here: one channel). "
            "Flag: mean ratio > 1.5, or fewer than 90% of the reachable samples broken.",
            "",
        ]
        linear_known_answer(advlib_fab, lines)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
