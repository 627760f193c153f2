"""Exact minimal adversarial perturbations of lowered ReLU networks by mixed-integer programming.

For one input x0 of true class y, the program is

    minimise ||x - x0||_p   over x in [0, 1]^D
    subject to  f_k(x) - f_y(x) >= margin   for at least one class k != y,

with the network f encoded exactly (Tjeng, Xiao & Tedrake 2019, "MIPVerify"):

* every affine layer as equality rows z = A h + b;
* every ReLU with pre-activation bounds l < 0 < u as h >= 0, h >= z, h <= u a, h <= z - l (1 - a)
  with a binary a (stable ReLUs, l >= 0 or u <= 0, need no binary);
* every max-pool output as y >= x_i, y <= x_i + (U - l_i)(1 - q_i), sum q_i = 1 over the window
  inputs that can be the maximum (q binary);
* the disjunction over wrong classes with one binary c_k per reachable class:
  f_k - f_y >= margin - (1 - c_k)(margin - L_k), sum c_k = 1 (L_k a lower bound of f_k - f_y).

Objectives: L0 (pixels) with one binary per pixel that allows its channels to move; L1 with split
variables x = x0 + p - n, p, n >= 0; Linf with one variable t >= |x_i - x0_i|; L2 as a quadratic
cone t >= ||x - x0|| on a rescaled perturbation (HiGHS does not solve mixed-integer QPs - checked with highspy
1.16, ``run`` returns an error on a model with a Hessian and integers - so L2 goes to SCIP).

Pre-activation bounds decide how tight the big-M rows are. They are computed on the region that
can hold the optimum, ||x - x0|| <= r, where r is the norm of a known adversarial (a starting
point found by an attack): the first affine layer gets the dual-norm bound (x0 image +- r ||row||*,
or the top-r pixel gains for L0) intersected with interval arithmetic on the box
[x0 - r, x0 + r] cut to [0, 1]; later layers get interval arithmetic, then (``bounds="lp"``) each
unstable neuron is tightened by minimising and maximising it over the LP relaxation of the layers
before it, within a time budget, the neurons with the widest ambiguity first.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .network import Affine, MaxPool, Op, ReLU, forward

NORMS = ("L0", "L1", "L2", "Linf")
#: Curvature given to the non-perturbation columns of the L2 node QPs (see _solve_qp_bb).
QP_REG = 1e-9
#: The smallest relative gap asked of SCIP (its status then reads "gaplimit", counted as optimal).
L2_GAP = 1e-5
#: HiGHS time share for primal heuristics (its default is 0.05). The start and the region polish
#: already give good points, so the search goes to the bound (0 and 0.05 took the same time on
#: the MNIST sample compared).
_HEURISTIC_EFFORT = 0.0
#: ROBENCH_EXACT_VERBOSE=1 prints HiGHS's and SCIP's logs (for diagnosing a slow sample).
_SCIP_VERBOSE = bool(__import__("os").environ.get("ROBENCH_EXACT_VERBOSE"))


@dataclass
class Result:
    """The outcome for one sample. ``x`` is None when no adversarial is known."""

    status: str  # "optimal", "bracket" (time limit: lower <= minimum <= upper), "robust" (none exists in the box), "failed"
    lower: float  # certified lower bound on the minimal norm (for the margin problem)
    upper: float  # norm of ``x`` (inf when x is None)
    x: np.ndarray | None
    seconds: float
    solver_status: str = ""
    bound_seconds: float = 0.0
    binaries: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float:
        """Relative gap (upper - lower) / upper; 0 when optimal."""
        if self.x is None or not math.isfinite(self.upper):
            return math.inf
        return 0.0 if self.upper <= 0 else max(0.0, (self.upper - self.lower) / self.upper)


def norm_of(d: np.ndarray, norm: str, channels: int = 1) -> float:
    """L0 counts pixels (any channel changed; channels first in the flat vector), the others values."""
    d = np.asarray(d, dtype=np.float64).ravel()
    if norm == "L0":
        return float((d.reshape(channels, -1) != 0).any(axis=0).sum())
    if norm == "L1":
        return float(np.abs(d).sum())
    if norm == "L2":
        return float(np.sqrt((d * d).sum()))
    return float(np.abs(d).max()) if d.size else 0.0


# -- bounds ------------------------------------------------------------------------------------


def _interval(A: sp.csr_matrix, b: np.ndarray, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Ap, An = A.maximum(0), A.minimum(0)
    return Ap @ l + An @ u + b, Ap @ u + An @ l + b


def _first_layer_bounds(A, b, x0, lo, hi, norm, r, channels):
    """Interval on the box [lo, hi] intersected with the dual-norm bound of the ball of radius r."""
    L, U = _interval(A, b, lo, hi)
    if r is None or not math.isfinite(r):
        return L, U
    c = A @ x0 + b
    if norm in ("L1", "L2"):
        if norm == "L2":
            dual = np.sqrt(np.asarray(A.multiply(A).sum(axis=1)).ravel())
        else:
            dual = np.asarray(abs(A).max(axis=1).todense()).ravel()
        L, U = np.maximum(L, c - r * dual), np.minimum(U, c + r * dual)
    elif norm == "L0":
        k = int(math.floor(r + 1e-9))
        rows, d = A.shape
        if rows * d <= 3e7 and k < d // channels:
            Ad = A.toarray().reshape(rows, channels, d // channels)
            up = np.maximum(Ad * (hi - x0).reshape(1, channels, -1), Ad * (lo - x0).reshape(1, channels, -1)).sum(1)
            down = np.minimum(Ad * (hi - x0).reshape(1, channels, -1), Ad * (lo - x0).reshape(1, channels, -1)).sum(1)
            top_up = -np.sort(-up, axis=1)[:, :k].sum(1) if k > 0 else 0.0
            top_down = np.sort(down, axis=1)[:, :k].sum(1) if k > 0 else 0.0
            L, U = np.maximum(L, c + top_down), np.minimum(U, c + top_up)
    return L, U


def _relu_bounds(l, u):
    return np.maximum(l, 0), np.maximum(u, 0)


def _pool_bounds(windows, l, u):
    valid = windows >= 0
    w = np.maximum(windows, 0)
    return np.where(valid, l[w], -np.inf).max(1), np.where(valid, u[w], -np.inf).max(1)


# -- the program -------------------------------------------------------------------------------


class Program:
    """Columns and rows of a mixed-integer program, accumulated as it is built (COO triplets)."""

    def __init__(self):
        self.lb: list[float] = []
        self.ub: list[float] = []
        self.integer: list[bool] = []
        self.cost: list[float] = []
        self.start: list[float] = []
        self.ri: list[np.ndarray] = []
        self.ci: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.rlo: list[float] = []
        self.rhi: list[float] = []
        self.quadratic: tuple[np.ndarray, np.ndarray, int] | None = None  # (cols, centre, cone col): t >= ||v[cols] - centre||

    @property
    def ncols(self) -> int:
        return len(self.lb)

    @property
    def nrows(self) -> int:
        return len(self.rlo)

    def cols(self, lb, ub, integer=False, cost=0.0, start=None, n: int | None = None) -> np.ndarray:
        lb, ub = np.asarray(lb, dtype=np.float64), np.asarray(ub, dtype=np.float64)
        n = max(lb.size, ub.size) if n is None else n
        lb, ub = np.broadcast_to(lb.ravel(), (n,)), np.broadcast_to(ub.ravel(), (n,))
        first = self.ncols
        self.lb += lb.tolist()
        self.ub += ub.tolist()
        self.integer += [integer] * n
        self.cost += np.broadcast_to(np.asarray(cost, dtype=np.float64), (n,)).tolist()
        s = np.zeros(n) if start is None else np.broadcast_to(np.asarray(start, dtype=np.float64), (n,))
        self.start += s.tolist()
        return np.arange(first, first + n)

    def rows(self, M: sp.spmatrix, cols: np.ndarray, lo, hi) -> None:
        """Rows lo <= M @ v[cols] <= hi (M sparse, one row per constraint)."""
        M = sp.coo_matrix(M)
        first = self.nrows
        self.ri.append(M.row + first)
        self.ci.append(np.asarray(cols)[M.col])
        self.vals.append(M.data.astype(np.float64))
        n = M.shape[0]
        self.rlo += np.broadcast_to(np.asarray(lo, dtype=np.float64), (n,)).tolist()
        self.rhi += np.broadcast_to(np.asarray(hi, dtype=np.float64), (n,)).tolist()

    def matrix(self) -> sp.csc_matrix:
        if not self.ri:
            return sp.csc_matrix((0, self.ncols))
        return sp.csc_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.ri), np.concatenate(self.ci))), shape=(self.nrows, self.ncols)
        )


@dataclass
class Encoding:
    program: Program
    x: np.ndarray  # input columns
    pixel: np.ndarray | None  # L0 pixel indicators
    objective_scale: str | float  # L2: the scale s of the objective t (norm = s t); else "id"
    last_pre: np.ndarray | None = None  # columns of the last encoded pre-activation (bound tightening)
    binaries: int = 0


def _encode_input(P: Program, x0, lo, hi, norm, r, channels, relaxed, start_x):
    d = len(x0)
    x = P.cols(lo, hi, start=start_x)
    pixel = None
    scale = "id"
    sd = None if start_x is None else start_x - x0
    if norm == "Linf":
        t = P.cols(0.0, r if r is not None else 1.0, cost=1.0, start=None if sd is None else np.abs(sd).max())
        eye = sp.identity(d)
        ones = sp.csr_matrix(np.ones((d, 1)))
        P.rows(sp.hstack([eye, -ones]), np.concatenate([x, t]), -np.inf, x0)
        P.rows(sp.hstack([eye, ones]), np.concatenate([x, t]), x0, np.inf)
    elif norm == "L1":
        p = P.cols(0.0, hi - x0, cost=1.0, start=None if sd is None else np.maximum(sd, 0))
        n = P.cols(0.0, x0 - lo, cost=1.0, start=None if sd is None else np.maximum(-sd, 0))
        eye = sp.identity(d)
        P.rows(sp.hstack([eye, -eye, eye]), np.concatenate([x, p, n]), x0, x0)
        if r is not None:
            P.rows(sp.csr_matrix(np.ones((1, 2 * d))), np.concatenate([p, n]), -np.inf, r)
    elif norm == "L2":
        # SCIP meets its nonlinear rows to an absolute tolerance (1e-6): on a norm of 1e-2 that is a
        # 1e-4 error in the bound. So the cone is on the scaled perturbation e = d / r, whose norm
        # is at most 1: t >= ||e||, the norm is r t.
        s_ = 1.0 if r is None else r
        e = P.cols((lo - x0) / s_, (hi - x0) / s_, start=None if sd is None else sd / s_)
        eye = sp.identity(d)
        P.rows(sp.hstack([eye, -s_ * eye]), np.concatenate([x, e]), x0, x0)
        t = P.cols(0.0, 1.0 if r is not None else math.sqrt(d), cost=1.0, start=None if sd is None else np.sqrt(((sd / s_) ** 2).sum()))
        P.quadratic = (e, np.zeros(d), int(t[0]))
        scale = s_
    else:  # L0
        npx = d // channels
        s0 = None if sd is None else (sd.reshape(channels, npx) != 0).any(0).astype(float)
        pixel = P.cols(0.0, 1.0, integer=not relaxed, cost=1.0, start=s0, n=npx)
        rep = sp.vstack([sp.identity(npx)] * channels)  # channel value -> its pixel
        eye = sp.identity(d)
        P.rows(sp.hstack([eye, -sp.diags(hi - x0) @ rep]), np.concatenate([x, pixel]), -np.inf, x0)
        P.rows(sp.hstack([eye, sp.diags(x0 - lo) @ rep]), np.concatenate([x, pixel]), x0, np.inf)
        if r is not None:
            P.rows(sp.csr_matrix(np.ones((1, npx))), pixel, -np.inf, math.floor(r + 1e-9))
    return x, pixel, scale


def encode(ops: list[Op], bounds: list[tuple[np.ndarray, np.ndarray]], x0, lo, hi, norm, r, channels, *,
           label: int | None, margin: float, relaxed: bool, upto: int | None = None,
           start_x: np.ndarray | None = None, fixed: dict | None = None) -> Encoding:
    """Build the program. ``fixed`` ({"pool": {op index: chosen window position per output},
    "cls": class}) pins max-pool choices and the wrong class (used by :func:`_polish`). ``bounds[i]`` bounds the output of ``ops[i]``. With ``upto`` = i, encode
    ops[:i] and then ops[i] (an Affine) as free pre-activation columns, for bound tightening; else
    encode the whole network and the misclassification disjunction for ``label``."""
    P = Program()
    x, pixel, scale = _encode_input(P, x0, lo, hi, norm, r, channels, relaxed, start_x)
    h = x
    hval = None if start_x is None else start_x.copy()
    binaries = 0
    last = len(ops) - 1 if upto is None else upto
    for i, op in enumerate(ops[: last + 1]):
        lo_i, hi_i = bounds[i]
        if isinstance(op, Affine):
            zval = None if hval is None else op.A @ hval + op.b
            if i == last:
                if upto is not None:
                    z = P.cols(lo_i, hi_i)
                    P.rows(sp.hstack([sp.identity(len(z)), -op.A]), np.concatenate([z, h]), op.b, op.b)
                    return Encoding(P, x, pixel, scale, z, binaries)
                first = (x0, lo, hi, norm, r, channels) if i == 0 else None
                binaries += _encode_output(P, op, h, bounds[i - 1] if i else (lo, hi), label, margin, relaxed, zval, first,
                                           None if fixed is None else fixed.get("cls"))
                break
            z = P.cols(lo_i, hi_i, start=zval)
            P.rows(sp.hstack([sp.identity(len(z)), -op.A]), np.concatenate([z, h]), op.b, op.b)
            h, hval = z, zval
        elif isinstance(op, ReLU):
            l, u = bounds[i - 1]
            out = np.empty(len(h), dtype=np.int64)
            zero = P.cols(0.0, 0.0)[0]
            dead, alive = u <= 0, l >= 0
            out[dead] = zero
            out[alive] = h[alive]
            amb = np.nonzero(~dead & ~alive)[0]
            if len(amb):
                zv = None if hval is None else hval[amb]
                hn = P.cols(0.0, u[amb], start=None if zv is None else np.maximum(zv, 0))
                a = P.cols(0.0, 1.0, integer=not relaxed, start=None if zv is None else (zv > 0).astype(float), n=len(amb))
                binaries += 0 if relaxed else len(amb)
                k = len(amb)
                I = sp.identity(k)
                cols = np.concatenate([hn, h[amb], a])
                P.rows(sp.hstack([I, -I, sp.csr_matrix((k, k))]), cols, 0.0, np.inf)  # h >= z
                P.rows(sp.hstack([I, sp.csr_matrix((k, k)), -sp.diags(u[amb])]), cols, -np.inf, 0.0)  # h <= u a
                P.rows(sp.hstack([I, -I, -sp.diags(l[amb])]), cols, -np.inf, -l[amb])  # h <= z - l (1 - a)
                out[amb] = hn
            h = out
            hval = None if hval is None else np.maximum(hval, 0)
        else:  # MaxPool
            l, u = bounds[i - 1]
            out = np.empty(len(op.windows), dtype=np.int64)
            newval = None if hval is None else np.empty(len(op.windows))
            choice = None if fixed is None else fixed.get("pool", {}).get(i)
            for j, win in enumerate(op.windows):
                win = win[win >= 0]
                if choice is not None:  # y = x_c and x_c >= x_i over the window
                    c = int(choice[j])
                    others = win[win != c]
                    if len(others):
                        k = len(others)
                        P.rows(sp.hstack([sp.csr_matrix(np.ones((k, 1))), -sp.identity(k)]), np.concatenate([[h[c]], h[others]]), 0.0, np.inf)
                    out[j] = h[c]
                    if hval is not None:
                        newval[j] = hval[c]
                    continue
                top = l[win].max()
                win = win[u[win] >= top]  # inputs that can be the maximum
                if hval is not None:
                    newval[j] = hval[win].max()
                if len(win) == 1:
                    out[j] = h[win[0]]
                    continue
                yv = None if hval is None else newval[j]
                y = P.cols(top, u[win].max(), start=yv)[0]
                k = len(win)
                qs = None if hval is None else (np.arange(k) == int(np.argmax(hval[win]))).astype(float)
                q = P.cols(0.0, 1.0, integer=not relaxed, start=qs, n=k)
                binaries += 0 if relaxed else k
                U = u[win].max()
                ones = np.ones((k, 1))
                P.rows(sp.hstack([sp.csr_matrix(ones), -sp.identity(k)]), np.concatenate([[y], h[win]]), 0.0, np.inf)
                P.rows(sp.hstack([sp.csr_matrix(ones), -sp.identity(k), sp.diags(U - l[win])]),
                       np.concatenate([[y], h[win], q]), -np.inf, U - l[win])
                P.rows(sp.csr_matrix(np.ones((1, k))), q, 1.0, 1.0)
                out[j] = y
            h, hval = out, newval
    return Encoding(P, x, pixel, scale, None, binaries)


def _class_differences(op: Affine, label: int) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    classes = np.array([k for k in range(op.A.shape[0]) if k != label])
    D = op.A[classes] - sp.vstack([op.A[label]] * len(classes))
    return sp.csr_matrix(D), op.b[classes] - op.b[label], classes


def _encode_output(P, op, h, hb, label, margin, relaxed, zval, first=None, only=None) -> int:
    D, c, classes = _class_differences(op, label)
    if first is not None:  # a linear model: the class differences are affine in the input
        x0, lo, hi, norm, r, channels = first
        L, U = _first_layer_bounds(D, c, x0, lo, hi, norm, r, channels)
    else:
        L, U = _interval(D, c, *hb)
    reach = U >= margin
    if only is not None:
        reach = classes == only
    if not reach.any():
        raise _Unreachable()
    D, c, L = D[reach], c[reach], L[reach]
    k = D.shape[0]
    if k == 1:
        P.rows(D, h, margin - c, np.inf)
        return 0
    dv = None if zval is None else zval[classes[reach]] - zval[label]
    cs = None if dv is None else (np.arange(k) == int(np.argmax(dv))).astype(float)
    sel = P.cols(0.0, 1.0, integer=not relaxed, start=cs, n=k)
    # D h + c - (margin - L) sel >= L
    P.rows(sp.hstack([D, -sp.diags(margin - L)]), np.concatenate([h, sel]), L - c, np.inf)
    P.rows(sp.csr_matrix(np.ones((1, k))), sel, 1.0, 1.0)
    return 0 if relaxed else k


class _Unreachable(Exception):
    """No wrong class can reach the margin anywhere in the region: no adversarial exists there."""


# -- HiGHS -------------------------------------------------------------------------------------


def _highs(P: Program, *, time_limit: float, gap: float, threads: int, seed: int, integer: bool):
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", _SCIP_VERBOSE)
    h.setOptionValue("time_limit", float(max(time_limit, 0.01)))
    h.setOptionValue("threads", int(threads))
    h.setOptionValue("random_seed", int(seed) % 2147483647)
    h.setOptionValue("mip_rel_gap", float(gap))
    h.setOptionValue("mip_abs_gap", 1e-9)
    h.setOptionValue("mip_heuristic_effort", _HEURISTIC_EFFORT)
    inf = highspy.kHighsInf
    A = P.matrix()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = P.ncols, P.nrows
    lp.col_cost_ = np.asarray(P.cost)
    lp.col_lower_ = np.asarray(P.lb)
    lp.col_upper_ = np.asarray(P.ub)
    lp.row_lower_ = np.where(np.isinf(P.rlo), -inf, P.rlo)
    lp.row_upper_ = np.where(np.isinf(P.rhi), inf, P.rhi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr
    lp.a_matrix_.index_ = A.indices
    lp.a_matrix_.value_ = A.data
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = P.ncols, P.nrows
    if integer and any(P.integer):
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous for i in P.integer]
    h.passModel(lp)
    return h


def _solve_highs(P, enc, *, time_limit, gap, threads, seed, use_start, cutoff=None):
    import highspy

    h = _highs(P, time_limit=time_limit, gap=gap, threads=threads, seed=seed, integer=True)
    if cutoff is not None:  # only solutions below the best known norm matter
        h.setOptionValue("objective_bound", float(cutoff) * (1 + 1e-9) + 1e-12)
    if use_start:
        sol = highspy.HighsSolution()
        sol.col_value = list(P.start)
        sol.value_valid = True
        h.setSolution(sol)
    h.run()
    status = h.modelStatusToString(h.getModelStatus())
    info = h.getInfo()
    x = None
    if info.primal_solution_status == 2:  # feasible
        x = np.asarray(h.getSolution().col_value)
    optimal = h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    # with a cutoff, "nothing below it" reads as infeasible or as the objective bound being reached
    infeasible = h.getModelStatus() in (highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kObjectiveBound)
    dual = info.mip_dual_bound if any(P.integer) else info.objective_function_value
    if optimal and not any(P.integer):
        dual = info.objective_function_value
    return x, float(dual), status, optimal, infeasible


# -- L2: branch and bound over HiGHS convex QPs ---------------------------------------------------


def _solve_qp_bb(P, enc, *, time_limit, gap, threads, seed, use_start, cutoff=None):
    """Best-first branch and bound on the binaries, each node a convex QP (the LP relaxation of the
    network with the binaries fixed so far, objective ||e||^2) solved by HiGHS. SCIP's outer
    approximation of a 784-dimensional cone left its bound at 0 through a 30 s limit on an MNIST MLP;
    the QP relaxation is exact in the objective, so every node's bound is as strong as the LP
    relaxation allows. Returns the bound as the scaled norm (sqrt of the objective)."""
    import heapq

    import highspy

    t_end = time.perf_counter() + time_limit
    hs = _highs(P, time_limit=time_limit, gap=1e-9, threads=threads, seed=seed, integer=False)
    e, _, t = P.quadratic
    hs.changeColCost(int(t), 0.0)
    n = P.ncols
    # HiGHS's active-set QP cycled (1e5 iterations on a 4-input net) with curvature on e alone: every
    # other column gets a tiny curvature REG, and the most it can add, REG * sum max(lb^2, ub^2),
    # is subtracted from each node's value, so the bounds stay valid for the true objective.
    lbs, ubs = np.asarray(P.lb), np.asarray(P.ub)
    diag = np.full(n, 2.0 * QP_REG)
    diag[e] = 2.0
    other = np.ones(n, dtype=bool)
    other[e] = False
    big = np.maximum(np.abs(np.where(np.isfinite(lbs), lbs, 0)), np.abs(np.where(np.isfinite(ubs), ubs, 0)))
    slack = QP_REG * float((big[other] ** 2).sum())
    if not (np.isfinite(lbs[other]).all() and np.isfinite(ubs[other]).all()):
        slack = math.inf  # cannot happen for encodings built here (every column is bounded)
    nz = np.arange(n, dtype=np.int32)
    hstart = np.arange(n + 1, dtype=np.int32)
    hs.passHessian(n, n, highspy.HessianFormat.kTriangular, hstart, nz, diag)
    ints = np.nonzero(P.integer)[0].astype(np.int32)
    lb0, ub0 = np.asarray(P.lb)[ints], np.asarray(P.ub)[ints]
    best_val = math.inf if cutoff is None else float(cutoff) ** 2
    best_sol = None
    heap: list[tuple[float, int, dict[int, float]]] = [(0.0, 0, {})]
    counter = 1
    open_bound = math.inf  # bound of a node left unsolved at the time limit
    nodes = 0
    while heap:
        bound, _, fixes = heapq.heappop(heap)
        if bound >= best_val * (1 - gap) - 1e-15:
            continue
        left = t_end - time.perf_counter()
        if left <= 0:
            open_bound = min(open_bound, bound)
            break
        lo, hi = lb0.copy(), ub0.copy()
        if fixes:
            pos = np.searchsorted(ints, np.fromiter(fixes.keys(), dtype=np.int64))
            vals = np.fromiter(fixes.values(), dtype=np.float64)
            lo[pos], hi[pos] = vals, vals
        if len(ints):
            hs.changeColsBounds(len(ints), ints, lo, hi)
        hs.setOptionValue("time_limit", hs.getRunTime() + float(left))  # HiGHS's clock adds up over runs
        hs.run()
        nodes += 1
        st = hs.getModelStatus()
        if st == highspy.HighsModelStatus.kInfeasible:
            continue
        if st != highspy.HighsModelStatus.kOptimal:
            open_bound = min(open_bound, bound)  # unsolved (time or numerics): its parent's bound stands
            if time.perf_counter() >= t_end:
                break
            continue
        val = max(hs.getInfo().objective_function_value - slack, bound)
        if val >= best_val * (1 - gap):
            continue
        sol = np.asarray(hs.getSolution().col_value)
        frac = np.abs(sol[ints] - np.round(sol[ints])) if len(ints) else np.zeros(0)
        if not len(frac) or frac.max() < 1e-6:
            best_val, best_sol = min(best_val, float((sol[e] ** 2).sum())), sol
            continue
        j = int(ints[int(np.argmax(frac))])
        for v in (float(round(sol[j])), 1.0 - float(round(sol[j]))):  # the nearer side first
            child = dict(fixes)
            child[j] = v
            heapq.heappush(heap, (val, counter, child))
            counter += 1
    rest = min([b for b, _, _ in heap] + [open_bound, best_val])
    done = not heap and not math.isfinite(open_bound)
    status = f"qp-bb {'optimal' if done else 'time limit'} ({nodes} nodes)"
    infeasible = done and best_sol is None
    return best_sol, math.sqrt(max(rest, 0.0)) if math.isfinite(rest) else math.inf, status, done, infeasible


# -- SCIP --------------------------------------------------------------------------------------


def _solve_scip(P, enc, *, time_limit, gap, threads, seed, use_start, cutoff=None):
    from pyscipopt import SCIP_PARAMSETTING, Model, quicksum

    m = Model()
    m.hideOutput(not _SCIP_VERBOSE)
    m.setParam("limits/time", float(max(time_limit, 0.01)))
    # Outer approximation of the quadratic row closes the last 1e-6 of the gap slowly and can end in
    # numerical trouble: SCIP stops at a relative gap of at least L2_GAP.
    m.setParam("limits/gap", float(max(gap, L2_GAP)))
    m.setParam("limits/absgap", 1e-9)
    m.setParam("randomization/randomseedshift", int(seed) % 2147483647)
    # Primal heuristics off: the start and the region polish give the points, and on the MNIST MLP
    # (784 inputs, one class) SCIP's root heuristics took 22 of 30 s and left 2 nodes; without
    # them the same program was solved to optimality (13 nodes).
    m.setHeuristics(SCIP_PARAMSETTING.OFF)
    big = 1e20
    v = [
        m.addVar(lb=max(lo, -big), ub=min(hi, big), vtype="B" if (i and lo >= 0 and hi <= 1) else ("I" if i else "C"), obj=c)
        for lo, hi, i, c in zip(P.lb, P.ub, P.integer, P.cost)
    ]
    A = P.matrix().tocsr()
    for r in range(P.nrows):
        s, e = A.indptr[r], A.indptr[r + 1]
        expr = quicksum(float(a) * v[j] for j, a in zip(A.indices[s:e], A.data[s:e]))
        lo, hi = P.rlo[r], P.rhi[r]
        if lo == hi:
            m.addCons(expr == lo)
        elif math.isinf(lo):
            m.addCons(expr <= hi)
        elif math.isinf(hi):
            m.addCons(expr >= lo)
        else:
            m.addCons(lo <= (expr <= hi))
    if P.quadratic is not None:
        cols, centre, t = P.quadratic
        # second-order cone ||e|| <= t (SCIP detects it): the objective t is the scaled norm itself.
        # (Minimising ||e||^2 as a sum of per-coordinate epigraphs s_j >= e_j^2 instead, the bound
        # reported as its sqrt, was measured worse on the MNIST MLP: lower bounds 0.808 / 0.826
        # against the cone's 0.892 / optimal 0.848 on two images at 60 s.)
        m.addCons(quicksum((v[j] - float(c)) * (v[j] - float(c)) for j, c in zip(cols, centre)) <= v[t] * v[t])
    m.setMinimize()
    if cutoff is not None:
        m.setObjlimit(float(cutoff) * (1 + 1e-9) + 1e-12)
    if use_start:
        sol = m.createSol()
        for j, val in enumerate(P.start):
            m.setSolVal(sol, v[j], float(val))
        m.addSol(sol, free=True)
    m.optimize()
    status = m.getStatus()
    x = None
    if m.getNSols() > 0:
        best = m.getBestSol()
        x = np.array([m.getSolVal(best, vj) for vj in v])
    dual = m.getDualbound()
    return x, float(dual), status, status in ("optimal", "gaplimit"), status == "infeasible"


# -- one sample --------------------------------------------------------------------------------


def _polish(ops, bounds, x0, lo, hi, norm, r, channels, label, margin, point, threads) -> np.ndarray | None:
    """The exact minimum within the linear region of ``point`` (its ReLU pattern, max-pool choices
    and best wrong class fixed): an LP (L1, Linf) or a convex QP (L2) that HiGHS solves to its
    tight continuous tolerances. It turns a MIP solution met to the MIP's looser tolerances into
    a point at the region's true optimum; None when that problem is not solved."""
    import highspy

    if norm == "L0":
        return None
    bnd = [(l.copy(), u.copy()) for l, u in bounds]
    pool: dict[int, np.ndarray] = {}
    h = np.asarray(point, dtype=np.float64)
    for i, op in enumerate(ops):
        if isinstance(op, Affine):
            h = op.A @ h + op.b
        elif isinstance(op, ReLU):
            l, u = bnd[i - 1]
            on = h > 0
            bnd[i - 1] = (np.where(on, np.maximum(l, 0.0), l), np.where(on, u, np.minimum(u, 0.0)))
            h = np.maximum(h, 0.0)
        else:
            vals = np.where(op.windows >= 0, h[np.maximum(op.windows, 0)], -np.inf)
            pool[i] = op.windows[np.arange(len(op.windows)), vals.argmax(1)]
            h = vals.max(1)
    others = np.delete(np.arange(len(h)), label)
    cls = int(others[np.argmax(h[others])])
    if any((l > u + 1e-12).any() for l, u in bnd):
        return None
    try:
        enc = encode(ops, bnd, x0, lo, hi, norm, r, channels, label=label, margin=margin, relaxed=True,
                     fixed={"pool": pool, "cls": cls})
    except _Unreachable:
        return None
    P = enc.program
    hs = _highs(P, time_limit=30.0, gap=1e-9, threads=threads, seed=0, integer=False)
    if norm == "L2":
        e, _, t = P.quadratic
        hs.changeColCost(int(t), 0.0)
        n = P.ncols
        diag = np.zeros(n)
        diag[e] = 2.0
        nz = np.nonzero(diag)[0]
        start = np.zeros(n + 1, dtype=np.int32)
        start[1:] = np.cumsum(diag != 0)
        hs.passHessian(n, len(nz), highspy.HessianFormat.kTriangular, start, nz.astype(np.int32), diag[nz])
    hs.run()
    if hs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    return np.clip(np.asarray(hs.getSolution().col_value)[enc.x], 0.0, 1.0)


def _margin(ops, x, label) -> float:
    out = forward(ops, x[None])[0]
    others = np.delete(out, label)
    return float(others.max() - out[label])


def compute_bounds(ops, x0, lo, hi, norm, r, channels, *, label, margin, lp: bool, budget: float, threads: int = 1):
    """Bounds on the output of every op (the last one: the logits)."""
    bounds: list[tuple[np.ndarray, np.ndarray]] = []
    l, u = lo, hi
    t_end = time.perf_counter() + budget
    first = True
    for i, op in enumerate(ops):
        if isinstance(op, Affine):
            if first:
                l, u = _first_layer_bounds(op.A, op.b, x0, lo, hi, norm, r, channels)
                first = False
            else:
                l, u = _interval(op.A, op.b, l, u)
            if lp and i < len(ops) - 1 and time.perf_counter() < t_end and not (i == 0 and norm == "Linf"):
                l, u = _tighten(ops, bounds + [(l, u)], i, x0, lo, hi, norm, r, channels, label, margin, t_end, threads)
        elif isinstance(op, ReLU):
            l, u = _relu_bounds(l, u)
        else:
            l, u = _pool_bounds(op.windows, l, u)
        bounds.append((l, u))
    return bounds


def _tighten(ops, bounds, i, x0, lo, hi, norm, r, channels, label, margin, t_end, threads):
    import highspy

    l, u = bounds[i]
    l, u = l.copy(), u.copy()
    amb = np.nonzero((l < 0) & (u > 0))[0]
    if not len(amb):
        return l, u
    nxt = ops[i + 1] if i + 1 < len(ops) else None
    if not isinstance(nxt, (ReLU, MaxPool)):
        return l, u
    enc = encode(ops, bounds, x0, lo, hi, norm, r, channels,
                 label=label, margin=margin, relaxed=True, upto=i)
    P = enc.program
    P.cost = [0.0] * P.ncols
    h = _highs(P, time_limit=max(t_end - time.perf_counter(), 0.01), gap=1e-6, threads=threads, seed=0, integer=False)
    order = amb[np.argsort(-np.minimum(-l[amb], u[amb]))]
    zcols = enc.last_pre
    tol = 1e-7
    for j in order:
        if time.perf_counter() > t_end:
            break
        col = int(zcols[j])
        for sense in (1.0, -1.0):  # minimise, then maximise
            h.changeColCost(col, sense)
            # HiGHS's run clock adds up over the runs of one instance: the limit is on the total
            h.setOptionValue("time_limit", h.getRunTime() + float(max(t_end - time.perf_counter(), 0.01)))
            h.run()
            if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                continue
            val = sense * h.getInfo().objective_function_value
            if sense > 0:
                l[j] = max(l[j], val - tol * (1 + abs(val)))
            else:
                u[j] = min(u[j], val + tol * (1 + abs(val)))
        h.changeColCost(col, 0.0)
    return l, u


def solve_sample(ops: list[Op], x0: np.ndarray, label: int, norm: str, *, start: np.ndarray | None, channels: int,
                 margin: float = 1e-4, time_limit: float = 60.0, gap: float = 1e-6, bounds: str = "lp",
                 bound_time: float = 10.0, solver: str = "auto", threads: int = 1, seed: int = 0,
                 is_adversarial=None) -> Result:
    """Minimal ``norm`` perturbation of ``x0`` (see :func:`_solve_once`). When the first solve ends
    with a bracket whose point is much smaller than the region it searched (no start, or a poor
    one), it is solved again from that point within the time left: a smaller region gives tighter
    bounds (and, for L2, a better-scaled quadratic row). Both lower bounds are valid; the larger is kept."""
    t0 = time.perf_counter()
    kw = dict(channels=channels, margin=margin, gap=gap, bounds=bounds, bound_time=bound_time, solver=solver,
              threads=threads, seed=seed, is_adversarial=is_adversarial)
    res = _solve_once(ops, x0, label, norm, start=start, time_limit=time_limit, **kw)
    left = time_limit - (time.perf_counter() - t0)
    r0 = math.inf if start is None else norm_of(np.asarray(start, dtype=np.float64).ravel() - np.asarray(x0).ravel(), norm, channels)
    if res.status == "bracket" and res.x is not None and r0 > 1.5 * res.upper and left > 1.0:
        again = _solve_once(ops, x0, label, norm, start=res.x, time_limit=left, **kw)
        lower = max(res.lower, again.lower)
        best = again if again.x is not None and again.upper <= res.upper else res
        upper = best.upper
        used_gap = max(gap, L2_GAP) if norm == "L2" else gap
        close = upper - lower <= max(used_gap * upper, 1e-9) + (1e-6 * upper if norm != "L0" else 0.0)
        status = best.status if best.status != "bracket" else ("optimal" if close or (norm == "L0" and upper - lower < 1) else "bracket")
        res = Result(status, min(lower, upper), upper, best.x, time.perf_counter() - t0, f"{res.solver_status}, then {again.solver_status}",
                     res.bound_seconds + again.bound_seconds, again.binaries, res.notes + again.notes + ["solved again from its own point"])
    return res


def _solve_once(ops: list[Op], x0: np.ndarray, label: int, norm: str, *, start: np.ndarray | None, channels: int,
                margin: float = 1e-4, time_limit: float = 60.0, gap: float = 1e-6, bounds: str = "lp",
                bound_time: float = 10.0, solver: str = "auto", threads: int = 1, seed: int = 0,
                is_adversarial=None) -> Result:
    """Minimal ``norm`` perturbation of ``x0`` (flat float64 in [0, 1]) that makes the network
    prefer a class other than ``label`` by ``margin``.

    ``start``: a known adversarial (flat), or None. Its norm r bounds the region searched; it is first
    pushed (delta scaled up) until its float64 margin is at least ``margin``. ``is_adversarial``
    (flat float64 -> bool) is the final check of a returned point (the harness's model in float32);
    by default the lowered network's margin > 0.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}")
    t0 = time.perf_counter()
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    notes: list[str] = []
    check = is_adversarial or (lambda v: _margin(ops, v, label) > 0)

    def pushed(v: np.ndarray, need: float) -> np.ndarray | None:
        """v's perturbation scaled up (support kept) until margin >= need and ``check`` holds."""
        d = v - x0
        for j in range(40):
            f = 1.0 + (0.0 if j == 0 else 1e-7 * 2 ** (j - 1))
            w = np.clip(x0 + f * d, 0.0, 1.0)
            if norm == "L0":
                w = np.where(d != 0, w, x0)
            if _margin(ops, w, label) >= need and check(w):
                return w
            if f > 4:
                break
        return None

    r = None
    if start is not None:
        start = pushed(np.asarray(start, dtype=np.float64).ravel(), margin)
        if start is None:
            notes.append("the starting adversarial could not be pushed to the margin; searching the whole box")
        else:
            r = norm_of(start - x0, norm, channels) * (1 + 1e-6) + 1e-9
    if norm == "L0" or r is None:
        lo, hi = np.zeros_like(x0), np.ones_like(x0)
    else:
        lo, hi = np.clip(x0 - r, 0, 1), np.clip(x0 + r, 0, 1)

    tb = time.perf_counter()
    bnd = compute_bounds(ops, x0, lo, hi, norm, r, channels, label=label, margin=margin, lp=bounds == "lp",
                         budget=min(bound_time, time_limit / 2), threads=threads)
    bound_seconds = time.perf_counter() - tb
    upper = norm_of(start - x0, norm, channels) if start is not None else math.inf
    # L2 auto: SCIP (outer approximation of the cone, primal heuristics off). With its heuristics
    # on, its bound stayed at 0 for 30 s on MNIST (784 inputs), which is why the QP branch and
    # bound exists; without them SCIP closed 1 of 2 MNIST samples in 28 s where qp-bb closed
    # none in 30 s (docs/benchmarks/exact.md).
    auto_l2 = "scip"
    backend = solver if solver != "auto" else (auto_l2 if norm == "L2" else "highs")
    if backend == "highs" and norm == "L2":
        raise ValueError("HiGHS does not solve mixed-integer QPs: use solver 'qp-bb' or 'scip' (or 'auto') for L2")
    if backend == "qp-bb" and norm != "L2":
        raise ValueError("solver 'qp-bb' is for L2 only")
    run = {"highs": _solve_highs, "scip": _solve_scip, "qp-bb": _solve_qp_bb}[backend]
    used_gap = max(gap, L2_GAP) if backend in ("scip", "qp-bb") else gap

    # One program per wrong class that can reach the margin (the disjunction's LP relaxation is
    # weak: its root bound is 0), the start's class first; each is cut off at the best norm so far,
    # and the minimum over classes of their lower bounds is the sample's lower bound.
    D, c, classes = _class_differences(ops[-1], label)
    if start is not None:
        at_start = forward(ops, start[None])[0]
        classes = sorted(classes.tolist(), key=lambda k: -(at_start[k] - at_start[label]))
    best, best_norm = start, upper
    statuses: list[str] = []
    binaries = 0
    any_class = False
    solved: dict[int, bool] = {}  # class -> solved to optimality (or cut off)
    low_of: dict[int, float] = {}
    # pass 1 gives each class a share of the time; pass 2 returns to the unsolved ones with what is left
    queue = [(n_cls, int(k), 1) for n_cls, k in enumerate(classes)]
    while queue:
        n_cls, k, round_ = queue.pop(0)
        start_k = start if (start is not None and n_cls == 0 and round_ == 1) else None
        try:
            enc = encode(ops, bnd, x0, lo, hi, norm, r, channels, label=label, margin=margin, relaxed=False,
                         start_x=start_k, fixed={"cls": int(k)})
        except _Unreachable:
            continue  # class k cannot reach the margin in the region: no bound needed
        any_class = True
        binaries = max(binaries, enc.binaries)
        left = time_limit - (time.perf_counter() - t0)
        if left <= 0.05:
            low_of.setdefault(k, 0.0)
            solved.setdefault(k, False)
            statuses.append(f"{k}: not solved (time)")
            continue
        cutoff = best_norm if math.isfinite(best_norm) else None
        if cutoff is not None and norm == "L2":
            cutoff = cutoff / enc.objective_scale
        try:
            todo = len(queue) + 1  # this class and those queued after it share the time left; the first (the start's class) gets half
            share = left if todo == 1 else (left / 2 if n_cls == 0 and round_ == 1 else left / todo)
            sol, dual, status, optimal, infeasible = run(enc.program, enc, time_limit=share, gap=gap, threads=threads,
                                                         seed=seed, use_start=start_k is not None, cutoff=cutoff)
        except Exception as exc:  # a solver's numerical failure: no bound from this class
            notes.append(f"{backend} failed on class {k}: {type(exc).__name__}: {exc}")
            sol, dual, status, optimal, infeasible = None, 0.0, "error", False, False
        statuses.append(f"{k}: {status}")
        if infeasible:  # nothing below the cutoff (or nothing at all) for this class
            low_of[k], solved[k] = best_norm, True
            continue
        low = dual
        if norm == "L2":
            low = enc.objective_scale * max(low, 0.0)
        if norm == "L0" and math.isfinite(low):
            low = math.ceil(low - 1e-6)
        low_of[k] = max(low_of.get(k, 0.0), max(low, 0.0))  # both passes' bounds are valid
        solved[k] = bool(optimal)
        if not optimal and round_ == 1:
            queue.append((n_cls, k, 2))
        if sol is None:
            continue
        xs = np.clip(sol[enc.x], 0.0, 1.0)
        if norm == "L0":
            keep = np.repeat(sol[enc.pixel][None] > 0.5, channels, 0).ravel()
            xs = np.where(keep, xs, x0)
        cand = pushed(xs, margin * 0.5)
        if cand is None:
            cand = pushed(xs, 0.0)
        if cand is None:
            notes.append(f"the solver's point for class {k} did not verify as adversarial, even pushed")
            continue
        if norm_of(cand - x0, norm, channels) < best_norm:
            best, best_norm = cand, norm_of(cand - x0, norm, channels)
        polished = _polish(ops, bnd, x0, lo, hi, norm, r, channels, label, margin, cand, threads)
        if polished is not None:
            pol = pushed(polished, margin * 0.5)
            if pol is None:
                pol = pushed(polished, 0.0)
            if pol is not None and norm_of(pol - x0, norm, channels) < best_norm:
                best, best_norm = pol, norm_of(pol - x0, norm, channels)
    secs = time.perf_counter() - t0
    status = "; ".join(statuses) if statuses else "bounds"
    lowers = list(low_of.values())
    all_optimal = all(solved.values())
    if best is None:
        if not any_class or (lowers and all(math.isinf(v) for v in lowers)):
            return Result("robust", math.inf, math.inf, None, secs, status, bound_seconds, binaries, notes)
        return Result("failed", min(lowers) if lowers else 0.0, math.inf, None, secs, status, bound_seconds, binaries, notes)
    lower = min([best_norm] + lowers)
    tight = best_norm - lower <= max(used_gap * best_norm, 1e-9) + (1e-6 * best_norm if norm != "L0" else 0.0)
    st = "optimal" if (all_optimal and tight) or (norm == "L0" and best_norm - lower < 1) else "bracket"
    return Result(st, float(lower), float(best_norm), best, secs, status, bound_seconds, binaries, notes)
