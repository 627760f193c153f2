"""Harness overhead: PGD through `robench run` vs the same attack called directly.

Same model (trained once, cached), same samples, same batches, same seeds. The direct loop does
only what an attack author would: model.to(device), attack.run per batch. The harness adds the
counting wrapper, verification (re-classification, norms), SHA-256 of inputs and SQLite writes.
Runs alternate (direct, harness, direct, harness, ...) so machine noise hits both alike.

    python benchmarks/bench_harness.py [--repeats 3] [--limit 540]

``--mode tracking`` measures instead what best-so-far tracking (issue 20, a suite's ``curves: true``)
costs an attack: the same attack cell (robench.cell.attack_cell, the code every executor runs) on
the same CIFAR-10 test images with the same seeds, once with the counting wrapper's tracker and once
without, alternating (untracked, tracked, tracked, untracked, ...) ``--repeats`` times in one
process. The time compared is the attack's own wall time as the harness measures it for the store
(``attack.run`` on a batch, verification excluded). Models: the 3072-256-10 MLP and the cifar_l0 VGG
(cnn plugin, arch vgg, width 32). The MLP is untrained (seed 0); the VGG is the cnn plugin's own
model trained for a minute (:func:`quick_vgg`: untrained, it scores all images alike and attacks find
nothing, so the tracker would idle). The cost of a pass does not depend on the weights; the tracker's
does depend on how many candidates the attack shows it. The images are labelled with the model's own
predictions, so every sample is attacked and tracked (a misclassified one costs the tracker nothing).

    ROBENCH_DATA=/work/shared/data python benchmarks/bench_harness.py --mode tracking \
        [--models mlp,vgg] [--attacks pdpgd-l0,pdpgd-linf,fb-fmn-l0] [--passes 1000] [--samples 100] [--vgg-samples 20]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from robench.api import Context, DatasetInfo, Model, NoParams, Norm
from robench.cell import CellJob, attack_cell
from robench.data import EvalData, input_sha256
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
                         threads=(1, "torch threads (1 keeps a shared machine's noise down)"),
                         mode=("overhead", "overhead: robench run vs the attack called directly; tracking: the cost of best-so-far tracking"),
                         models=("mlp,vgg", "tracking: models, of mlp (3072-256-10) and vgg (cifar_l0's, width 32)"),
                         attacks=("pdpgd-l0,pdpgd-linf,fb-fmn-l0", "tracking: attacks, of " + ",".join(TRACKED_ATTACKS)),
                         passes=(1000, "tracking: steps of each attack (one forward and one backward pass each)"),
                         samples=(100, "tracking: CIFAR-10 test images per MLP run (one batch)"),
                         vgg_samples=(20, "tracking: CIFAR-10 test images per VGG run (one batch)"),
                         json=(None, "tracking: write the figures here"))
    torch.set_num_threads(args.threads)
    if args.mode == "tracking":
        tracking(args)
        return
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


#: The attacks --mode tracking runs: (plugin, parameters with the steps as "{passes}", the norm).
TRACKED_ATTACKS = {
    "pdpgd-l0": ("pdpgd", {"norm": "L0", "steps": "{passes}"}, Norm.L0),
    "pdpgd-linf": ("pdpgd", {"norm": "Linf", "steps": "{passes}"}, Norm.Linf),
    "fb-fmn-l0": ("fb-fmn", {"norm": "L0", "steps": "{passes}"}, Norm.L0),
    "fb-fmn-l2": ("fb-fmn", {"norm": "L2", "steps": "{passes}"}, Norm.L2),
}


class BenchMLP(Model):
    """The 3072-256-10 MLP of benchmarks/bench_budget.py, untrained (seeded)."""

    trainable = False

    def __init__(self, info: DatasetInfo, hidden: int = 256):
        super().__init__(NoParams(), info)
        torch.manual_seed(0)
        dim = 1
        for d in info.input_shape:
            dim *= d
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(dim, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, info.num_classes))
        for p in self.net.parameters():
            p.requires_grad_(False)

    def scores(self, x):
        return self.net(x)


def build_model(name: str, reg, info: DatasetInfo) -> Model:
    if name == "mlp":
        return BenchMLP(info)
    if name == "vgg":  # the cnn plugin's own constructor and recipe: the cifar_l0 architecture, briefly trained
        return quick_vgg(reg, info)
    raise SystemExit(f"--models: unknown model {name!r} (mlp, vgg)")


def quick_vgg(reg, info: DatasetInfo, n_train: int = 5000, epochs: int = 2) -> Model:
    """cifar_l0's VGG (cnn plugin, arch vgg, width 32) trained by the plugin's own fit on the first ``n_train``
    CIFAR-10 training images for ``epochs`` epochs (about a minute; cached). Untrained, it scores every image
    alike (all one class, margins ~1e-3), so attacks find nothing and the tracker idles: the timing of a pass
    does not depend on the weights, but the tracker's work does (it grows with the candidates it sees)."""
    from safetensors.torch import load_file, save_file

    from robench.api import Context as Ctx

    cls = reg.get("model", "cnn").factory
    model = cls(cls.Params(arch="vgg", width=32, epochs=epochs), info)
    cache = Path(os.environ.get("ROBENCH_BENCH_CACHE", Path.home() / ".cache" / "robench" / "bench"))
    path = cache / f"cifar10-vgg-w32-quick{n_train}x{epochs}.safetensors"
    if path.exists():
        model.load_state_dict(load_file(path))
    else:
        ds_cls = reg.get("dataset", "cifar10").factory
        x, y = ds_cls(ds_cls.Params()).load("train", Path(os.environ.get("ROBENCH_DATA", "/work/shared/data")))
        t = time.perf_counter()
        model.fit(x[:n_train], y[:n_train], Ctx(seed=0))
        print(f"trained the VGG on {n_train} images x {epochs} epochs in {time.perf_counter() - t:.0f} s", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))  # channels_last weights
    for p in model.net.parameters():
        p.requires_grad_(False)
    return model.eval()


def timed_tracker(clock: list[float]) -> None:
    """Time the tracker's hooks (charging, blanking, best so far) from inside the attack's runs: their share of
    the same run's attack time is untouched by load that changes between runs, unlike two runs' difference."""
    from robench.budget import BatchTracker

    def timed(method):
        def wrapper(self, *a, **kw):
            t0 = time.perf_counter()
            try:
                return method(self, *a, **kw)
            finally:
                clock.append(time.perf_counter() - t0)
        return wrapper

    BatchTracker.forward_call = timed(BatchTracker.forward_call)
    BatchTracker.backward_mask = timed(BatchTracker.backward_mask)


def tracking(args) -> None:
    clock: list[float] = []
    timed_tracker(clock)
    reg = load_registry()
    ds_cls = reg.get("dataset", "cifar10").factory
    ds = ds_cls(ds_cls.Params())
    data_dir = Path(os.environ.get("ROBENCH_DATA", "/work/shared/data"))
    x_all, _ = ds.load("test", data_dir)
    info = ds.info()
    device = torch.device("cpu")
    results = []
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    for model_name in args.models.split(","):
        model = build_model(model_name, reg, info)
        n = args.samples if model_name == "mlp" else args.vgg_samples
        x = x_all[:n].contiguous()
        with torch.no_grad():
            y = model.scores(x).argmax(1)  # the model's own labels: every sample is attacked and tracked
        data = EvalData(info, x, y, list(range(n)), input_sha256(x))
        for attack_name in args.attacks.split(","):
            plugin, params, norm = TRACKED_ATTACKS[attack_name]
            params = {k: (args.passes if v == "{passes}" else v) for k, v in params.items()}
            spec = reg.get("attack", plugin)
            factory = spec.factory

            def cell(curves: bool):
                clock.clear()
                job = CellJob(key=f"track-{model_name}-{attack_name}", label=attack_name, model=model_name, model_plugin=model_name,
                              attack=attack_name, attack_plugin=plugin, norm=norm, eps=None, source=None, via_surrogate=False,
                              batch_size=n, positions=list(range(n)), clean_pred=y.tolist(), seed=0, done_before=0,
                              sha256=list(data.sha256), labels=y.tolist(), needs=tuple(factory.needs), curves=curves)
                (batch,) = attack_cell(job, factory, factory.Params(**params), model, None, data, device, None,
                                       lambda m: None, reg, verify_rows=False)
                c = batch.candidates
                points = sum(len(curve) for curve in c.curves) if c.curves is not None else 0
                return c.seconds * n, c.forward, c.backward, points, sum(clock)

            times: dict[bool, list[float]] = {False: [], True: []}
            shares: list[float] = []  # in each tracked run: the tracker's own time / the attack's time
            info_run = {}
            for r in range(args.repeats):
                for curves in ((False, True) if r % 2 == 0 else (True, False)):
                    seconds, fwd, bwd, points, in_tracker = cell(curves)
                    times[curves].append(seconds)
                    info_run[curves] = (fwd, bwd, points)
                    if curves:
                        shares.append(in_tracker / seconds)
            off, on = statistics.median(times[False]), statistics.median(times[True])
            pairs = [b / a for a, b in zip(times[False], times[True])]
            row = dict(model=model_name, attack=attack_name, samples=n, passes_forward=info_run[True][0],
                       passes_backward=info_run[True][1], curve_points=info_run[True][2], untracked_s=times[False],
                       tracked_s=times[True], ratio_of_medians=on / off, pair_ratios=pairs, tracker_shares=shares,
                       load=os.getloadavg()[0], finished=time.strftime("%H:%M UTC", time.gmtime()))
            results.append(row)
            print(f"{model_name} {attack_name}: {n} samples, {row['passes_forward']:.0f} fwd + {row['passes_backward']:.0f} bwd "
                  f"passes/sample, {row['curve_points']} curve points; attack time untracked median {off:.2f} s "
                  f"{[round(t, 2) for t in times[False]]}, tracked median {on:.2f} s {[round(t, 2) for t in times[True]]}; "
                  f"tracked/untracked {on / off:.3f} (pairs {[round(p, 3) for p in pairs]}); time inside the tracker "
                  f"{[f'{100 * x:.2f}%' for x in shares]} of the tracked runs' attack time; load {row['load']:.2f} "
                  f"at {row['finished']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
