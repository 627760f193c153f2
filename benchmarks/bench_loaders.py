"""One trained digits MLP saved in each format; clean accuracy and attack results per loader."""
import sys, time, textwrap, torch
torch.set_num_threads(1)
from pathlib import Path
folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/bench-loaders"); folder.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from loader_formats import save_formats  # the net in every format, and the hand-written reference plugin (as the tests use)
save_formats(folder)
(folder / "suite.yaml").write_text(textwrap.dedent("""
    name: formats
    dataset: {name: digits}
    device: cpu
    models:
      - {name: hand-written, plugin: loader-reference}
      - {name: torch-file-pt, plugin: torch-file, params: {architecture: "loader_nets.py:make", weights: net.pt}}
      - {name: torch-file-safetensors, plugin: torch-file, params: {architecture: "loader_nets.py:make", weights: net.safetensors}}
      - {name: torchscript, plugin: torchscript, params: {file: net.ts}}
      - {name: onnx, plugin: onnx, params: {file: net.onnx}}
    attacks:
      - {name: fgsm, plugin: fgsm, params: {norm: Linf}}
      - {name: pgd, plugin: pgd, params: {norm: Linf, steps: 20, random_start: false}}
      - {name: deepfool, plugin: fb-deepfool, params: {norm: L2}}
    epsilons: {Linf: [0.05, 0.1], L2: [0.5]}
"""))
from robench.plugins import load_registry
from robench.suite import load_suite
from robench.run import RunOptions, run_suite
from robench.results import load_results
import sqlite3
reg = load_registry(("loader_ref_plugin",))
t = time.time()
s = run_suite(load_suite(folder / "suite.yaml", reg), reg, RunOptions(out_dir=folder / "out", data_dir=folder, cache_dir=folder / "cache"))
print("ok", s.ok, "wall", round(time.time() - t, 1))
[res] = load_results(folder / "out")
for r in res.rows:
    print(r.model, r.attack, r.norm, "clean", round(r.clean_accuracy, 4), "robust", {k: round(v, 4) for k, v in r.robust_accuracy.items()},
          "mean_norm", None if r.mean_norm is None else round(r.mean_norm, 5))
db = sqlite3.connect(folder / "out" / "results.sqlite")
rows = {}
for m, a, e, i, su, l2, li in db.execute("SELECT c.model, c.attack, c.eps, s.idx, s.success, s.l2, s.linf FROM samples s JOIN cells c ON s.cell=c.key"):
    rows.setdefault(m, {})[(a, e, i)] = (su, l2, li)
ref = rows["hand-written"]
for m, r in rows.items():
    same = sum(r[k][0] == ref[k][0] for k in ref); maxd = max(abs((r[k][1] or 0) - (ref[k][1] or 0)) for k in ref)
    print(m, "same success", same, "of", len(ref), "max |L2 diff|", maxd)
