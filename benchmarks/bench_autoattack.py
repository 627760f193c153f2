"""AutoAttack standard beside its components, full protocol settings, CPU 1 thread.

    python benchmarks/bench_autoattack.py [N] [FOLDER]
        the harness's digits MLP, Linf 8/255 and 0.1, plus ART's APGD and Square for comparison
    python benchmarks/bench_autoattack.py [N] [FOLDER] --weights zoo/<file>.safetensors
        a CIFAR-10 VGG of the model zoo (width 32, loaded by the torch-file plugin through
        benchmarks/zoo_vgg.py), Linf 8/255, the first N test images ($ROBENCH_DATA)
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from robench.plugins import get_registry
from robench.results import load_results
from robench.run import RunOptions, run_suite
from robench.suite import Suite, resolve

torch.set_num_threads(1)
parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("n", nargs="?", type=int, default=100, help="test images")
parser.add_argument("out", nargs="?", type=Path, default=Path("runs/bench-autoattack"), help="output folder")
parser.add_argument("--weights", type=Path, help="a zoo VGG's safetensors file: run on CIFAR-10 instead of digits")
args = parser.parse_args()

comps = ("apgd-ce", "apgd-t", "fab-t", "square")
attacks = [{"name": "autoattack", "plugin": "autoattack"}] + [
    {"name": c, "plugin": "autoattack", "params": {"components": [c]}} for c in comps]
if args.weights is None:
    dataset, data_dir = {"name": "digits", "limit": args.n}, args.out
    model = {"name": "mlp", "plugin": "mlp"}
    attacks += [{"name": "art-apgd-ce", "plugin": "art-apgd", "params": {"nb_random_init": 1}},
                {"name": "art-square", "plugin": "art-square"}]
    eps = {"Linf": ["8/255", 0.1]}
else:
    dataset, data_dir = {"name": "cifar10", "split": "test", "limit": args.n}, Path(os.environ.get("ROBENCH_DATA", "data"))
    factory = Path(__file__).resolve().with_name("zoo_vgg.py")
    model = {"name": args.weights.stem, "plugin": "torch-file",
             "params": {"architecture": f"{factory}:vgg32", "weights": str(args.weights.resolve())}}
    eps = {"Linf": ["8/255"]}
doc = {"name": "aa-bench", "dataset": dataset, "device": "cpu", "batch_size": 100, "models": [model],
       "attacks": attacks, "epsilons": eps}
reg = get_registry()
t = time.time()
s = run_suite(resolve(Suite.model_validate(doc), reg), reg, RunOptions(out_dir=args.out, data_dir=data_dir, cache_dir=args.out / "cache",
                                                                  allow_dirs=(Path(__file__).resolve().parent, Path("zoo").resolve())))
print("ok", s.ok, s.cells_failed, "wall", round(time.time() - t, 1))
for res in load_results(args.out):
    print("clean", res.clean)
    for r in res.rows:
        print(json.dumps({"attack": r.attack, "robust": {f"{k:.4f}": v for k, v in r.robust_accuracy.items()},
                          "s_per_sample": r.seconds_per_sample, "fwd": r.forward_per_sample, "bwd": r.backward_per_sample,
                          "records": r.records}))
