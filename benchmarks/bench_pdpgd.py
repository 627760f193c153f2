"""Strength and speed of our PDPGD against adv-lib's PDPGD/PDGD and FMN and foolbox's Brendel-Bethge.

Same model, same images (the first ``--n`` test images the model classifies correctly), every
attack's output checked by robench's own verifier (re-classification, [0, 1] box, the 1e-6 residue
rule, L0 counted in pixels). Reported per norm and attack: success rate, mean and median norm of the
verified adversarials, and seconds per sample (wall clock, all attacks run one after the other in
this process, so the ratios are comparable even when the machine is busy).

Needs the benchmark-only extra adv-lib 0.2.8 (``make install-bench``: ``adv-lib==0.2.8 --no-deps``
plus ``tqdm``): its ``adv_lib.attacks`` package imports torchvision at import time, so we register
an empty package and import the two attack modules directly; they import ``visdom`` only for the
optional live-plot callback we never pass, so a missing visdom is replaced by an empty module.

    .venv/bin/python benchmarks/bench_pdpgd.py --dataset cifar10 --arch lenet --epochs 3 --n 100
    .venv/bin/python benchmarks/bench_pdpgd.py --arch vgg --width 32 --epochs 30 \
        --weights .robench/cache/<key of cifar_l0's vgg-plain>/weights.safetensors --n 50

Writes a JSON file and prints a markdown table (paste it into docs/benchmarks/pdpgd.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from pathlib import Path
from typing import Callable

import torch

import robench
from robench import Norm
from robench.plugins import load_registry
from robench.verify import verify

DATA_DIR = Path(os.environ.get("ROBENCH_DATA", "/work/shared/data"))
CACHE = Path(os.environ.get("ROBENCH_BENCH_CACHE", Path.home() / ".cache" / "robench" / "bench"))


def import_adv_lib():
    """adv-lib's attack functions without its package __init__ (which pulls in torchvision)."""
    import adv_lib

    try:
        import visdom  # noqa: F401
    except ImportError:  # only adv-lib's optional VisdomLogger uses it; no callback is passed here
        stub = types.ModuleType("visdom")
        stub.Visdom = None
        sys.modules["visdom"] = stub
    if "adv_lib.attacks" not in sys.modules:
        pkg = types.ModuleType("adv_lib.attacks")
        pkg.__path__ = [str(Path(adv_lib.__file__).parent / "attacks")]
        sys.modules["adv_lib.attacks"] = pkg
    from adv_lib.attacks.fast_minimum_norm import fmn
    from adv_lib.attacks.primal_dual_gradient_descent import pdgd, pdpgd

    return pdpgd, pdgd, fmn


def get_model(dataset: str, arch: str, epochs: int, width: int | None, weights: Path | None, registry) -> robench.Model:
    """Train (or load from the cache, or from ``weights``) a ``cnn`` plugin model on the dataset's training split."""
    from safetensors.torch import load_file, save_file

    ds_cls = registry.get("dataset", dataset).factory
    ds = ds_cls(ds_cls.Params())
    model_cls = registry.get("model", "cnn").factory
    params = {"arch": arch, "epochs": epochs} | ({"width": width} if width else {})
    model = model_cls(model_cls.Params(**params), ds.info())
    path = weights or CACHE / f"{dataset}-{arch}-w{width or 'default'}-e{epochs}.safetensors"
    if weights is not None and not weights.exists():
        raise SystemExit(f"--weights {weights}: no such file")
    if path.exists():
        model.load_state_dict(load_file(path))
    else:
        x, y = ds.load("train", DATA_DIR)
        t = time.time()
        model.fit(x, y, robench.Context(seed=0, progress=lambda d, n: print(f"  epoch {d}/{n}", flush=True)))
        print(f"trained {arch} on {dataset} in {time.time() - t:.0f} s")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), str(path))
    return model.eval()


def eval_images(dataset: str, model: robench.Model, n: int, registry) -> tuple[torch.Tensor, torch.Tensor, float]:
    ds_cls = registry.get("dataset", dataset).factory
    x, y = ds_cls(ds_cls.Params()).load("test", DATA_DIR)
    x, y = x[:1000], y[:1000]
    pred = model.predict(x)
    acc = float((pred == y).float().mean())
    keep = (pred == y).nonzero().squeeze(1)[:n]
    return x[keep], y[keep], acc


def add_model_args(ap: argparse.ArgumentParser, n: int, out: str) -> None:
    """The model, image and run options every ``cnn``-model benchmark takes (bench_l0_native uses them too)."""
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--arch", default="lenet")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--width", type=int, help="cnn plugin width (default: the plugin's)")
    ap.add_argument(
        "--weights",
        type=Path,
        help="load these safetensors weights instead of training, e.g. a suite model's "
        ".robench/cache/<key>/weights.safetensors (its config.json must match --arch/--width/--epochs)",
    )
    ap.add_argument("--n", type=int, default=n, help="correctly classified test images to attack")
    ap.add_argument("--only", nargs="*", help="run only attacks whose label contains one of these strings")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: fastest on a busy machine)")
    ap.add_argument("--out", type=Path, default=Path(out), help="the JSON file of the results")


def start(ap: argparse.ArgumentParser, argv: list[str] | None):
    """Parse the options, set the threads, load the plugins, the model and its first ``--n`` correctly
    classified test images: (args, registry, model, x, y, clean accuracy on the first 1000)."""
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    registry = load_registry()
    model = get_model(args.dataset, args.arch, args.epochs, args.width, args.weights, registry)
    x, y, acc = eval_images(args.dataset, model, args.n, registry)
    print(f"{args.dataset} {args.arch}: clean accuracy {acc:.3f} on the first 1000 test images; attacking {len(x)}")
    return args, registry, model, x, y, acc


def verified(model: robench.Model, x: torch.Tensor, y: torch.Tensor, adv: torch.Tensor, norm: Norm):
    """robench's verdict on ``adv``: (verification, success mask, summary fields of the verified norms)."""
    v = verify(model, x, y, adv.detach(), model.predict(x), norm)
    ok = v.success
    values = v.norms[norm][ok]
    return v, ok, {
        "n": len(x),
        "success": float(ok.float().mean()),
        "rejected": int(v.rejected.sum()),
        "mean": float(values.mean()) if len(values) else float("nan"),
        "median": float(values.median()) if len(values) else float("nan"),
    }


def robench_attack(name: str, pool: torch.Tensor, **params) -> Callable:
    """A robench attack plugin as a function (model, x, y) -> x_adv."""
    spec = load_registry().get("attack", name)
    atk = spec.factory(spec.factory.Params(**params))

    def run(model, x, y):
        return atk.run(model, x, y, eps=None, ctx=robench.Context(seed=0, pool=pool))

    return run


def adv_lib_attack(fn: Callable, **kw) -> Callable:
    def run(model, x, y):
        return fn(robench.api.ScoresModule(model).eval(), x, y, **kw)

    return run


ADV_LIB_NORM = {Norm.L0: 0, Norm.L1: 1, Norm.L2: 2, Norm.Linf: float("inf")}


def attacks_for(norm: Norm, pool: torch.Tensor, steps: int, bb_steps: int, only: set[str] | None, init_range: float):
    pdpgd_al, pdgd_al, fmn_al = import_adv_lib()
    p = ADV_LIB_NORM[norm]
    out: dict[str, Callable] = {
        "robench pdpgd": robench_attack("pdpgd", pool, norm=str(norm), steps=steps),
    }
    if norm == Norm.L0:
        out["robench pdpgd refine"] = robench_attack("pdpgd", pool, norm="L0", steps=steps, refine=True)
        out["robench pdpgd 10 restarts"] = robench_attack(
            "pdpgd", pool, norm="L0", steps=steps, restarts=10, init_range=init_range
        )
    if norm == Norm.L2:
        out["robench pdgd"] = robench_attack("pdgd", pool, steps=steps)
        out["adv-lib pdgd"] = adv_lib_attack(pdgd_al, num_steps=steps)
    out["adv-lib pdpgd"] = adv_lib_attack(pdpgd_al, norm=p, num_steps=steps)
    out["adv-lib fmn"] = adv_lib_attack(fmn_al, norm=p, steps=steps)
    out[f"foolbox B&B ({bb_steps} steps)"] = robench_attack("fb-bb", pool, norm=str(norm), steps=bb_steps)
    if only:
        out = {k: v for k, v in out.items() if any(o in k for o in only)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_args(ap, n=100, out="bench_pdpgd.json")
    ap.add_argument("--norms", nargs="+", default=["L0", "L1", "L2", "Linf"])
    ap.add_argument("--steps", type=int, default=500, help="iterations of PDPGD / PDGD / FMN (all)")
    ap.add_argument("--bb-steps", type=int, default=1000, help="steps of Brendel-Bethge")
    ap.add_argument("--batch", type=int, default=100)
    args, registry, model, x, y, acc = start(ap, argv)
    results = []
    for norm_name in args.norms:
        norm = Norm(norm_name)
        for label, attack in attacks_for(norm, x, args.steps, args.bb_steps, set(args.only or []), 0.5 if x.shape[1] == 1 else 0.25).items():
            torch.manual_seed(0)
            t = time.perf_counter()
            adv = torch.cat([attack(model, x[i : i + args.batch], y[i : i + args.batch]) for i in range(0, len(x), args.batch)])
            seconds = time.perf_counter() - t
            v, _, stats = verified(model, x, y, adv, norm)
            row = {
                "norm": str(norm),
                "attack": label,
                **stats,
                "s_per_sample": seconds / len(x),
                "norms": [float(v) for v in v.norms[norm]],
            }
            results.append(row)
            print(
                f"{row['norm']:>4} {label:28s} success {row['success']:.3f} rejected {row['rejected']} "
                f"mean {row['mean']:.4g} median {row['median']:.4g}  {row['s_per_sample']:.3f} s/sample",
                flush=True,
            )
            args.out.write_text(json.dumps(meta(args, acc, len(x), "bench_pdpgd.py") | {"results": results}, indent=1))
    print()
    print(markdown(results))


def meta(args, acc: float, n: int, script: str) -> dict:
    """What the JSON of a ``cnn``-model benchmark records about its run (``add_model_args``' options)."""
    return {
        "command": f"benchmarks/{script} " + " ".join(sys.argv[1:]),
        "dataset": args.dataset,
        "arch": args.arch,
        "epochs": args.epochs,
        "width": args.width,
        "weights": str(args.weights) if args.weights else None,
        "clean_accuracy_first_1000": acc,
        "images": n,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def md_table(columns: list[str], right: int, cells: list[list[str]]) -> str:
    """A markdown table: the header ``columns``, the last ``right`` of them right-aligned, one row per ``cells``."""
    align = "|" + "---|" * (len(columns) - right) + "---:|" * right
    return "\n".join(["| " + " | ".join(columns) + " |", align] + ["| " + " | ".join(row) + " |" for row in cells])


def markdown(results: list[dict]) -> str:
    rows = []
    for r in results:
        fmt = "{:.2f}" if r["norm"] == "L0" else "{:.4g}"
        rows.append([r["norm"], r["attack"], f"{r['success']:.1%}", fmt.format(r["mean"]), fmt.format(r["median"]), f"{r['s_per_sample']:.3f}"])
    return md_table(["norm", "attack", "success", "mean norm", "median norm", "s / sample"], 4, rows)


if __name__ == "__main__":
    main()
