"""Cost of the counting wrapper's budget and best-so-far tracking (robench.budget), per pass.

A PGD-style loop (forward + backward on the whole batch, one signed-gradient step) through
:class:`robench.counting.CountingModel`, timed without a tracker, with tracking only, and with
tracking plus a budget that is never reached (the same work as an unbudgeted tracked run, plus the
budget checks). Tracking a minimal attack (norm of every misclassified row, every call) is its worst
case; runs alternate in rounds of ``--passes`` so machine noise hits all three alike, and the
minimum over rounds is reported (the least-disturbed run of each; a shared machine's load only adds).

    python benchmarks/bench_budget.py [--passes 1000] [--batch 100] [--dim 3072] [--hidden 256] [--repeats 3]
"""

from __future__ import annotations

import statistics
import time

import torch

from robench.api import DatasetInfo, Model, NoParams, Norm
from robench.budget import BatchTracker, Budget
from robench.counting import CountingModel

from bench_options import parse_options  # noqa: E402  (a sibling script module)


class MLP(Model):
    trainable = False

    def __init__(self, dim: int, hidden: int, classes: int = 10):
        side = int(round((dim / 3) ** 0.5))
        super().__init__(NoParams(), DatasetInfo("bench", (3, side, side), tuple(str(i) for i in range(classes))))
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * side * side, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, classes))
        for p in self.net.parameters():
            p.requires_grad_(False)

    def scores(self, x):
        return self.net(x)


def loop(model: CountingModel, x: torch.Tensor, y: torch.Tensor, passes: int) -> float:
    t0 = time.perf_counter()
    adv = x.clone()
    for _ in range(passes):
        adv.requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model.scores(adv), y)
        (g,) = torch.autograd.grad(loss, adv)
        adv = (adv.detach() + 0.002 * g.sign()).clamp(0, 1)
    return time.perf_counter() - t0


def main() -> None:
    args = parse_options(passes=1000, batch=100, dim=3072, hidden=256, repeats=5, threads=1)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    inner = MLP(args.dim, args.hidden)
    x = torch.rand(args.batch, *inner.info.input_shape)
    y = inner.scores(x).argmax(1)  # all correctly classified: every sample is tracked
    times: dict[str, list[float]] = {"untracked": [], "tracked": [], "tracked+budget": []}
    for _ in range(args.repeats):
        for mode in times:
            model = CountingModel(inner, "bench", check_nan=False)
            if mode != "untracked":
                budget = Budget(forward=10 * args.passes, backward=10 * args.passes) if mode == "tracked+budget" else None
                model.tracker = BatchTracker(x, y, y, Norm.L2, None, budget)
            times[mode].append(loop(model, x, y, args.passes))
            if mode != "untracked":
                improved = sum(len(c) for c in model.tracker.curves)
    per_call = isolated(inner, x, y, args.passes)
    base = min(times["untracked"])
    print(f"{args.passes} passes, batch {args.batch}, {args.dim}-{args.hidden}-10 MLP, {args.threads} thread(s), "
          f"min (median) of {args.repeats} rounds; curve points in the last tracked run: {improved}")
    for mode, ts in times.items():
        print(f"  {mode:15s} {min(ts):7.3f} s ({statistics.median(ts):7.3f} s)  ({(min(ts) / base - 1) * 100:+.1f}% vs untracked)")
    model_ms, track_ms = per_call
    print(f"  per call, interleaved, median of {args.passes}: model forward+backward {model_ms:.3f} ms, tracker (charge + "
          f"best-so-far + backward charge) {track_ms:.3f} ms = {100 * track_ms / model_ms:.1f}% of the model's time")


def isolated(inner: Model, x: torch.Tensor, y: torch.Tensor, passes: int) -> tuple[float, float]:
    """The tracker's own time per call beside the model's, interleaved call by call (so load hits both alike):
    a PGD loop whose every call is timed twice, the model's forward + backward and the tracker's hooks on its scores."""
    model = CountingModel(inner, "bench", check_nan=False)
    tracker = BatchTracker(x, y, y, Norm.L2, None, None)
    t_model, t_track = [], []
    adv = x.clone()
    for _ in range(passes):
        adv.requires_grad_(True)
        t0 = time.perf_counter()
        out = model.scores(adv)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(out, y), adv)
        t1 = time.perf_counter()
        tracker.forward_call(adv, out.detach())
        tracker.backward_mask(len(adv))
        t2 = time.perf_counter()
        t_model.append(t1 - t0)
        t_track.append(t2 - t1)
        adv = (adv.detach() + 0.002 * g.sign()).clamp(0, 1)
    return 1000 * statistics.median(t_model), 1000 * statistics.median(t_track)


if __name__ == "__main__":
    main()
