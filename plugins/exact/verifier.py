"""Verified robustness at a given eps by bound propagation: interval arithmetic, then LP bounds.

For an input x0 of class y and a ball B = {x in [0, 1]^D : ||x - x0|| <= eps}, the network with
its last layer replaced by the class differences f_k - f_y (k != y) is bounded over B: the first
affine layer by the dual-norm bound intersected with interval arithmetic, every later layer by
interval arithmetic, tightened (``lp``) by minimising and maximising each unstable pre-activation
over the LP relaxation of the layers before it (triangle relaxation of each ReLU, the L1 / L0 ball
as linear rows, the L2 ball relaxed to its enclosing box) - the bounds the exact solver computes
(solver.compute_bounds). Finally each class difference still able to reach 0 is maximised over the
same LP. The sample is *verified* robust when every upper bound is below ``-margin``: no point of B
is classified other than y (a sound lower bound on robust accuracy, up to HiGHS's tolerances).

auto_LiRPA (CROWN) was not used: its only PyPI release (0.3) pins torch < 1.13 and, imported with
``--no-deps`` beside torch 2.13, fails on ``torch.onnx.symbolic_helper._set_opset_version``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .network import Affine, Op
from .solver import _class_differences, _highs, compute_bounds, encode


@dataclass
class Verdict:
    verified: bool
    margin: float  # certified lower bound on min over the ball of f_y - max_k f_k (> margin: verified)
    seconds: float
    lp_classes: int = 0  # class differences that needed the final LP


def ball_box(x0: np.ndarray, norm: str, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """The box [0, 1]^D cut to the coordinates the eps-ball can reach (|d_i| <= ||d||_p <= eps)."""
    if norm == "L0":
        return np.zeros_like(x0), np.ones_like(x0)
    return np.clip(x0 - eps, 0, 1), np.clip(x0 + eps, 0, 1)


def verify_sample(ops: list[Op], x0: np.ndarray, label: int, norm: str, eps: float, *, channels: int = 1,
                  margin: float = 1e-4, lp: bool = True, bound_time: float = 10.0, threads: int = 1) -> Verdict:
    """Whether no point within ``eps`` of ``x0`` (in the box) makes another class reach f_y - margin."""
    import highspy

    t0 = time.perf_counter()
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    D, c, _ = _class_differences(ops[-1], label)
    diff = list(ops[:-1]) + [Affine(D, c)]  # outputs: f_k - f_y for each wrong class
    lo, hi = ball_box(x0, norm, eps)
    t_end = t0 + bound_time
    bounds = compute_bounds(diff, x0, lo, hi, norm, eps, channels, label=label, margin=margin, lp=lp,
                            budget=bound_time, threads=threads)
    upper = bounds[-1][1].copy()
    open_ = np.nonzero(upper > -margin)[0]
    if lp and len(open_):
        last = len(diff) - 1
        enc = encode(diff, bounds, x0, lo, hi, norm, eps, channels, label=None, margin=margin, relaxed=True, upto=last)
        P = enc.program
        P.cost = [0.0] * P.ncols
        h = _highs(P, time_limit=max(t_end - time.perf_counter(), 1.0), gap=1e-6, threads=threads, seed=0, integer=False)
        for k in open_[np.argsort(-upper[open_])]:
            col = int(enc.last_pre[k])
            h.changeColCost(col, -1.0)  # maximise f_k - f_y
            h.setOptionValue("time_limit", h.getRunTime() + float(max(t_end - time.perf_counter(), 1.0)))
            h.run()
            if h.getModelStatus() == highspy.HighsModelStatus.kOptimal:
                val = -h.getInfo().objective_function_value
                upper[k] = min(upper[k], val + 1e-7 * (1 + abs(val)))  # HiGHS's tolerance, against soundness
            elif h.getModelStatus() == highspy.HighsModelStatus.kInfeasible:
                upper[k] = -math.inf  # the ball holds no point of the relaxation at all
            h.changeColCost(col, 0.0)
            if upper[k] > -margin:
                break  # one class that may win is enough: not verified
    worst = float(upper.max()) if len(upper) else -math.inf
    return Verdict(worst < -margin, -worst, time.perf_counter() - t0, int(len(open_)))
