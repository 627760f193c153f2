"""AutoAttack standard beside its components, full protocol settings, digits MLP, CPU 1 thread."""
import time, torch, sys, json
torch.set_num_threads(1)
from pathlib import Path
from robench.plugins import get_registry
from robench.suite import Suite, resolve
from robench.run import RunOptions, run_suite
from robench.results import load_results
N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
out = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/bench-autoattack")
comps = ("apgd-ce", "apgd-t", "fab-t", "square")
doc = {"name": "aa-bench", "dataset": {"name": "digits", "limit": N}, "device": "cpu", "batch_size": 100,
       "models": [{"name": "mlp", "plugin": "mlp"}],
       "attacks": [{"name": "autoattack", "plugin": "autoattack"}]
                  + [{"name": c, "plugin": "autoattack", "params": {"components": [c]}} for c in comps]
                  + [{"name": "art-apgd-ce", "plugin": "art-apgd", "params": {"nb_random_init": 1}},
                     {"name": "art-square", "plugin": "art-square"}],
       "epsilons": {"Linf": ["8/255", 0.1]}}
reg = get_registry()
t = time.time()
s = run_suite(resolve(Suite.model_validate(doc), reg), reg, RunOptions(out_dir=out, data_dir=out, cache_dir=out / "cache"))
print("ok", s.ok, s.cells_failed, "wall", round(time.time() - t, 1))
for res in load_results(out):
    print("clean", res.clean)
    for r in res.rows:
        print(json.dumps({"attack": r.attack, "robust": {f"{k:.4f}": v for k, v in r.robust_accuracy.items()},
                          "s_per_sample": r.seconds_per_sample, "fwd": r.forward_per_sample, "bwd": r.backward_per_sample,
                          "records": r.records}))
