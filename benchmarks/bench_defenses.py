"""Training cost and clean accuracy of the defense model plugins (cnn, bnn, margin, critic).

    .venv/bin/python benchmarks/bench_defenses.py vgg --width 32 --epochs 30
    .venv/bin/python benchmarks/bench_defenses.py digits
    .venv/bin/python benchmarks/bench_defenses.py mnist --limit 10000 --epochs 2

``vgg`` trains the cnn plugin's VGG on the CIFAR-10 training part and prints, after every
epoch, the wall time and the accuracy on the (1000-image) CIFAR-10 test part, so a run cut short
still gives epochs/minute and the accuracy curve. ``digits``/``mnist`` time every defense model.
Results are printed as JSON lines (append them to docs/benchmarks/defenses.md by hand).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import torch

import robench
from robench.training import accuracy

DATA = Path(os.environ.get("ROBENCH_DATA", "/work/shared/data"))


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def bench_vgg(args) -> None:
    from robench_plugins.cnn import CNN
    from robench_plugins.datasets import Cifar10

    ds = Cifar10(Cifar10.Params())
    xtr, ytr = ds.load("train", DATA)
    xte, yte = ds.load("test", DATA)
    if args.limit:
        xtr, ytr = xtr[: args.limit], ytr[: args.limit]
    params = {"arch": "vgg", "width": args.width, "epochs": args.epochs}
    if args.lr:
        params["lr"] = args.lr
    if args.no_bf16:
        params["bf16"] = False
    model = CNN(CNN.Params(**params), ds.info())
    t0 = time.time()

    def progress(done: int, total: int) -> None:
        model.net.eval()
        acc = accuracy(model.scores, xte, yte)
        model.net.train()
        emit(epoch=done, of=total, minutes=round((time.time() - t0) / 60, 2), test_acc=round(acc, 4))

    model.fit(xtr, ytr, robench.Context(progress=progress, log=lambda s: None))
    emit(model="cnn/vgg", params=model.params.model_dump(exclude_none=True), train_size=len(xtr),
         minutes=round((time.time() - t0) / 60, 2), test_acc=round(accuracy(model.scores, xte, yte), 4),
         threads=torch.get_num_threads(), machine=platform.processor() or platform.machine())


def _models(dataset: str, epochs: int | None):
    """(label, plugin factory, params) of every defense timed on digits / MNIST."""
    from robench_plugins.cnn import CNN

    e = {} if epochs is None else {"epochs": epochs}
    rows = [(f"cnn/{a}", CNN, {"arch": a, **e}) for a in ("small", "lenet", "simplenet80", "simplenet500", "conv4")]
    rows += [("cnn/lenet pgd-at Linf", CNN, {"arch": "lenet", **e, "adversarial": {"method": "pgd", "norm": "Linf", "eps": 0.1, "steps": 10}})]
    rows += [("cnn/lenet fgsm-rs Linf", CNN, {"arch": "lenet", **e, "adversarial": {"method": "fgsm-rs", "norm": "Linf", "eps": 0.1}})]
    rows += [("cnn/lenet pgd-at L2", CNN, {"arch": "lenet", **e, "adversarial": {"method": "pgd", "norm": "L2", "eps": 1.0, "steps": 10}})]
    try:
        from robench_plugins.margin import Margin

        for arch in ("mlp", "lenet"):
            for reg in ("l2", "l1"):
                rows.append((f"margin/{arch} {reg}", Margin, {"arch": arch, "reg": reg, **e}))
    except ImportError:
        pass
    try:
        from robench_plugins.critic import Critic

        for arch in ("mlp", "lenet"):
            rows.append((f"critic/{arch}", Critic, {"arch": arch, **e}))
    except ImportError:
        pass
    if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("larq"):  # no import: TF_USE_LEGACY_KERAS
        from robench_plugins.bnn import BNN

        rows.append(("bnn/mlp", BNN, {**e}))
    return rows


def bench_models(args) -> None:
    from robench_plugins.datasets import Digits, Mnist

    ds = Digits(Digits.Params()) if args.which == "digits" else Mnist(Mnist.Params())
    xtr, ytr = ds.load("train", DATA)
    xte, yte = ds.load("test", DATA)
    if args.limit:
        xtr, ytr = xtr[: args.limit], ytr[: args.limit]
    for label, factory, params in _models(args.which, args.epochs):
        if args.only and not any(o in label for o in args.only):
            continue
        model = factory(factory.Params(**params), ds.info())
        t0 = time.time()
        model.fit(xtr, ytr, robench.Context(log=lambda s: None))
        dt = time.time() - t0
        emit(dataset=args.which, model=label, train_size=len(xtr), epochs=model.params.epochs,
             seconds=round(dt, 2), test_acc=round(accuracy(model.scores, xte, yte), 4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["vgg", "digits", "mnist"])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N training examples")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--only", nargs="*", help="substrings of model labels to run")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.which == "vgg":
        args.epochs = args.epochs or 30
        bench_vgg(args)
    else:
        bench_models(args)


if __name__ == "__main__":
    main()
