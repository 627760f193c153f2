"""Benchmark of the 01-loss trainer and models (issue 4). Results: docs/benchmarks/zero_one.md.

Parts, each in its own subprocess so that its peak memory (max RSS) is its own:

  ref      (a) batched SCD01 trainer vs the per-vote reference (reference.py), CIFAR-10 0 vs 1,
           same hyperparameters, data and seed, side by side for R iterations: seconds per
           vote-iteration of both, test accuracy of vote 0 from both, and the torch sort path.
  scd01    SCD01, 32 votes, 500 iterations, CIFAR-10 0 vs 1: time, accuracies.
  mlp01    MLP01, 32 votes, 20 hidden, 1000 iterations, CIFAR-10 0 vs 1: time, accuracies.
  svm      LinearSVC; mlp  sigmoid MLP (20 hidden, SGD 200/0.9/0.01) on the same split.
  ova      (b) one-vs-all MLP01 on all of CIFAR-10 (votes/iterations reduced by flags).
  speedup  the trainer at --old-commit vs today's, side by side on full-size one-vs-all
           sub-problems (--classes x --votes x --iterations): wall and CPU ratio, same tensors.
  ovamem   one full-size one-vs-all sub-problem (0 vs rest, 50000 images) with 32 votes: peak
           memory and seconds per iteration, for extrapolating the full one-vs-all run.

0 vs 1 split: the first 9000 of the 10000 training images of the two classes train, the last
1000 are the held-out part of train; "test" is the 2000 test images of the two classes.

  .venv/bin/python benchmarks/bench_zero_one.py all --out /tmp/zero_one.json
  .venv/bin/python benchmarks/bench_zero_one.py ref --ref-iterations 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(os.environ.get("ROBENCH_DATA", "/work/shared/data"))


def cifar(classes=(0, 1)):
    from robench_plugins.datasets.files import Cifar10

    ds = Cifar10(Cifar10.Params())
    xtr, ytr = ds.load("train", DATA)
    xte, yte = ds.load("test", DATA)
    if classes is None:
        return ds.info(), xtr, ytr, xte, yte
    import robench

    def pick(x, y):
        keep = torch.isin(y, torch.tensor(classes))
        return x[keep], torch.searchsorted(torch.tensor(classes), y[keep])

    xtr, ytr = pick(xtr, ytr)
    xte, yte = pick(xte, yte)
    info = robench.DatasetInfo("cifar10", (3, 32, 32), tuple(ds.info().class_names[c] for c in classes))
    return info, xtr, ytr, xte, yte


def split01():
    info, xtr, ytr, xte, yte = cifar()
    return info, xtr[:9000], ytr[:9000], xtr[9000:], ytr[9000:], xte, yte


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def acc(model, x, y) -> float:
    return float((model.predict(x) == y).float().mean())


def fit_and_score(model, xtr, ytr, xho, yho, xte, yte) -> dict:
    import robench

    t = time.perf_counter()
    model.fit(xtr, ytr, robench.Context(seed=0))
    sec = time.perf_counter() - t
    return {"fit_s": round(sec, 1), "acc_test": acc(model, xte, yte), "acc_heldout": acc(model, xho, yho), "acc_train": acc(model, xtr, ytr)}


# -- parts ---------------------------------------------------------------------------------------


def part_ref(args) -> dict:
    from robench_plugins.zero_one import reference, scd

    _, xtr, ytr, xho, yho, xte, yte = split01()
    x = xtr.flatten(1).contiguous()
    ypos = ytr == 1
    R = args.ref_iterations
    cfg = scd.SCDConfig(iterations=R, votes=args.votes)
    res = {"iterations": R, "votes_batched": args.votes, "votes_reference": args.ref_votes}

    t = time.perf_counter()
    out = scd.train(x.T.contiguous(), ypos, cfg, seed=0)
    res["batched_s"] = time.perf_counter() - t
    res["batched_s_per_vote_it"] = res["batched_s"] / (R * args.votes)

    t = time.perf_counter()
    torch_votes = min(args.votes, 8)
    out_t = scd.train(x.T.contiguous(), ypos, scd.SCDConfig(iterations=max(2, R // 4), votes=torch_votes, kernel="torch"), seed=0)
    res["batched_torch_sort_s_per_vote_it"] = (time.perf_counter() - t) / (max(2, R // 4) * torch_votes)
    del out_t

    xn, yn = x.numpy(), ypos.numpy()
    t = time.perf_counter()
    ref = [reference.train_linear_vote(xn, yn, cfg, 0, 0, v) for v in range(args.ref_votes)]
    res["reference_s"] = time.perf_counter() - t
    res["reference_s_per_vote_it"] = res["reference_s"] / (R * args.ref_votes)
    res["speedup"] = res["reference_s_per_vote_it"] / res["batched_s_per_vote_it"]

    xt_test = xte.flatten(1)
    for v in range(args.ref_votes):
        w, thr, err = ref[v]
        res[f"vote{v}_acc_test_reference"] = float(((xt_test @ torch.from_numpy(w) > thr) == (yte == 1)).float().mean())
        res[f"vote{v}_acc_test_batched"] = float(((xt_test @ out["weight"][v] > out["threshold"][v]) == (yte == 1)).float().mean())
        res[f"vote{v}_train_error_reference"] = err
        res[f"vote{v}_train_error_batched"] = int(out["train_error"][v])
    votes = torch.where(xt_test @ out["weight"].T > out["threshold"], 1.0, -1.0).mean(1)
    res["batched_ensemble_acc_test"] = float(((votes > 0) == (yte == 1)).float().mean())
    return res


def part_model(args) -> dict:
    from robench_plugins.convex.models import SVM, MLPSigmoid
    from robench_plugins.zero_one.models import MLP01, SCD01

    info, *data = split01()
    if args.part == "scd01":
        m = SCD01(SCD01.Params(votes=args.votes, iterations=args.iterations or 500), info)
    elif args.part == "mlp01":
        m = MLP01(MLP01.Params(votes=args.votes, iterations=args.iterations or 1000, hidden=args.hidden), info)
    elif args.part == "svm":
        m = SVM(SVM.Params(C=args.svm_c), info)
    else:
        m = MLPSigmoid(MLPSigmoid.Params(epochs=args.epochs), info)
    res = {"params": m.params.model_dump(mode="json"), "n_train": len(data[0]), "n_heldout": len(data[2]), "n_test": len(data[4])}
    res.update(fit_and_score(m, *data))
    return res


def part_ova(args) -> dict:
    from robench_plugins.zero_one.models import MLP01

    info, xtr, ytr, xte, yte = cifar(classes=None)
    m = MLP01(MLP01.Params(votes=args.votes, iterations=args.iterations or 1000, hidden=args.hidden), info)
    import robench

    t = time.perf_counter()
    shown = [-1]

    def progress(done: int, total: int) -> None:  # a line per 5% on stderr: the full run takes about an hour
        step = 20 * done // total
        if step > shown[0]:
            shown[0] = step
            print(f"ova: {done}/{total} vote-iterations, {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)

    m.fit(xtr, ytr, robench.Context(seed=0, progress=progress))
    res = {"params": m.params.model_dump(mode="json"), "fit_s": round(time.perf_counter() - t, 1)}
    t = time.perf_counter()
    res["acc_test"] = acc(m, xte, yte)
    res["predict_test_s"] = round(time.perf_counter() - t, 1)
    res["acc_train_first10k"] = acc(m, xtr[:10000], ytr[:10000])
    return res


def part_ovamem(args) -> dict:
    """One full-size one-vs-all sub-problem (class 0 vs the other 49999 images): peak memory and
    seconds per iteration of a 32-vote MLP01, to extrapolate the full one-vs-all run."""
    from robench_plugins.zero_one import scd

    _, xtr, ytr, _, _ = cifar(classes=None)
    xt = xtr.flatten(1).T.contiguous()
    del xtr
    ypos = ytr == 0
    t = time.perf_counter()
    scd.train(xt, ypos, scd.SCDConfig(iterations=1, votes=args.votes, hidden=args.hidden), seed=0)
    one = time.perf_counter() - t
    n = args.iterations or 5
    t = time.perf_counter()
    scd.train(xt, ypos, scd.SCDConfig(iterations=1 + n, votes=args.votes, hidden=args.hidden), seed=0)
    per_it = (time.perf_counter() - t - one) / n
    return {"votes": args.votes, "hidden": args.hidden, "setup_and_first_iteration_s": round(one, 1), "s_per_iteration": round(per_it, 2)}


def _trainer_at(commit: str):
    """The zero_one trainer (scd.py + cutkernel.py) as it was at ``commit``, imported from git."""
    import importlib
    import tempfile

    root = Path(__file__).resolve().parents[1]
    pkg = Path(tempfile.mkdtemp()) / f"zo_{commit[:8]}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("scd.py", "cutkernel.py"):
        src = subprocess.run(["git", "-C", str(root), "show", f"{commit}:plugins/zero_one/{name}"], check=True, capture_output=True, text=True)
        (pkg / name).write_text(src.stdout)
    sys.path.insert(0, str(pkg.parent))
    return importlib.import_module(f"{pkg.name}.scd")


def part_speedup(args) -> dict:
    """Old trainer (--old-commit) vs today's, side by side in one process on full-size one-vs-all
    sub-problems (class c vs the other 49 999 CIFAR-10 training images), alternating per class so
    both see the same machine load; checks that both return the same tensors."""
    from robench_plugins.zero_one import scd

    old = _trainer_at(args.old_commit)
    _, xtr, ytr, _, _ = cifar(classes=None)
    xt = xtr.flatten(1).T.contiguous()
    del xtr
    cfg = scd.SCDConfig(iterations=args.iterations or 100, votes=args.votes, hidden=args.hidden)
    small = scd.SCDConfig(iterations=1, votes=1, hidden=args.hidden, coords=4)
    for mod in (old, scd):  # compile / load the numba kernels outside the timed part
        mod.train(xt[:, :2000], ytr[:2000] == 0, mod.SCDConfig(**vars(small)), seed=0)
    res = {"old_commit": args.old_commit, "classes": args.classes, "votes": cfg.votes, "iterations": cfg.iterations, "hidden": cfg.hidden}
    tot = {"old": [0.0, 0.0], "new": [0.0, 0.0]}
    setup = 0.0  # CPU s of a 1-iteration run (initial projections, same code in both), today's trainer
    for c in range(args.classes):
        p = time.process_time()
        scd.train(xt, ytr == c, scd.SCDConfig(**{**vars(cfg), "iterations": 1}), seed=0, stream=c)
        setup += time.process_time() - p
        outs = {}
        for name, mod in (("old", old), ("new", scd)):
            w, p = time.perf_counter(), time.process_time()
            outs[name] = mod.train(xt, ytr == c, mod.SCDConfig(**vars(cfg)), seed=0, stream=c)
            tot[name][0] += time.perf_counter() - w
            tot[name][1] += time.process_time() - p
        res[f"class{c}_identical"] = all(torch.equal(outs["old"][k], outs["new"][k]) for k in outs["old"])
        res[f"class{c}_train_error"] = outs["new"]["train_error"].tolist()
    votes = args.classes * cfg.votes
    res["setup_cpu_s_per_vote"] = round(setup / votes, 2)
    for name, (wall, cpu) in tot.items():
        res[f"{name}_wall_s"], res[f"{name}_cpu_s"] = round(wall, 1), round(cpu, 1)
        # per vote-iteration after the setup (iterations 2..N; the 1-iteration run holds the first)
        per = (cpu - setup) / (votes * (cfg.iterations - 1)) if cfg.iterations > 1 else float("nan")
        res[f"{name}_cpu_ms_per_vote_it"] = round(1000 * per, 2)
        # full one-vs-all MLP01: 10 classes x 32 votes = 320 votes, x 1000 iterations each
        res[f"full_{name}_cpu_h"] = round((320 * res["setup_cpu_s_per_vote"] + 320_000 * per) / 3600, 2)
    res["speedup_wall"] = round(tot["old"][0] / tot["new"][0], 2)
    res["speedup_cpu"] = round(tot["old"][1] / tot["new"][1], 2)
    res["speedup_cpu_per_vote_it"] = round(res["old_cpu_ms_per_vote_it"] / res["new_cpu_ms_per_vote_it"], 2)
    return res


PARTS = {"speedup": part_speedup, "ref": part_ref, "scd01": part_model, "mlp01": part_model, "svm": part_model, "mlp": part_model, "ova": part_ova, "ovamem": part_ovamem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=[*PARTS, "all"])
    ap.add_argument("--votes", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=None, help="override the model's default iterations")
    ap.add_argument("--hidden", type=int, default=20)
    ap.add_argument("--ref-iterations", type=int, default=20, help="iterations of the side-by-side comparison")
    ap.add_argument("--ref-votes", type=int, default=1, help="votes the per-vote reference trains (extrapolated per vote-iteration)")
    ap.add_argument("--svm-c", type=float, default=0.01)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--ova-votes", type=int, default=8)
    ap.add_argument("--ova-iterations", type=int, default=100)
    ap.add_argument("--classes", type=int, default=2, help="speedup: one-vs-all sub-problems timed (classes 0..N-1)")
    ap.add_argument("--old-commit", default="6bfd5dfbc6c8de2af967531fbfbec61d54a4dbe8", help="speedup: the trainer to compare with")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = ap.parse_args()
    if args.part != "all":
        t = time.perf_counter()
        res = PARTS[args.part](args)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        res.update(part=args.part, wall_s=round(time.perf_counter() - t, 1), cpu_s=round(ru.ru_utime + ru.ru_stime, 1),
                   peak_rss_mb=round(peak_mb()), threads=torch.get_num_threads(), load_avg=os.getloadavg())
        line = json.dumps(res)
        print(line, flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(line + "\n")
        return
    base = [sys.executable, __file__, "--out", str(args.out or "/tmp/zero_one.json")]
    for part, extra in [
        ("ref", ["--ref-iterations", str(args.ref_iterations), "--ref-votes", str(args.ref_votes)]),
        ("mlp01", []), ("scd01", []), ("svm", []), ("mlp", ["--epochs", str(args.epochs)]),
        ("ova", ["--votes", str(args.ova_votes), "--iterations", str(args.ova_iterations)]),
    ]:
        subprocess.run([*base[:2], part, *base[2:], *extra], check=False)


if __name__ == "__main__":
    main()
