"""A fused CPU kernel for the candidate threshold search of the SCD trainer (numba).

For every (vote, candidate) row it builds the candidate's batch projections
``base[v] + s * src[v, j, batch[v]]``, sorts them with an LSD radix sort on order-preserving
32-bit keys (carrying the per-sample loss differences), and scans the cumulative sum for the best
cut. It computes exactly what :func:`.scd.best_cut` computes on the same inputs (same float32
arithmetic, same tie rules, same threshold formula) but never materialises the (V, K, n) tensors
that the torch path needs: on a 2-core CPU this is several times faster than ``torch.sort``. The
torch path stays the reference and the CUDA path; ``tests/test_zero_one_scd.py`` checks that both
agree.
"""

from __future__ import annotations

import contextlib
import threading

import numba
import numpy as np
import torch

@numba.njit(cache=True, inline="always")
def _key(f):
    """Order-preserving uint32 key of a float32 (-0.0 must have been turned into +0.0)."""
    u = np.uint32(np.float32(f).view(np.uint32))
    if u & np.uint32(0x80000000):
        return ~u
    return u | np.uint32(0x80000000)


@numba.njit(cache=True, inline="always")
def _unkey(k):
    if k & np.uint32(0x80000000):
        u = k ^ np.uint32(0x80000000)
    else:
        u = ~k
    return np.uint32(u).view(np.float32)


@numba.njit(cache=True)
def _radix(keys, pay):
    """LSD radix sort of uint32 keys carrying a payload: 3 passes of 11 bits, or 4 of 8 for short rows."""
    n = len(keys)
    bits = 11 if n > 4096 else 8
    buckets = 1 << bits
    mask = np.uint32(buckets - 1)
    keys2 = np.empty_like(keys)
    pay2 = np.empty_like(pay)
    for p in range((32 + bits - 1) // bits):
        shift = p * bits
        count = np.zeros(buckets + 1, np.int64)
        for i in range(n):
            count[((keys[i] >> shift) & mask) + 1] += 1
        for bkt in range(buckets):
            count[bkt + 1] += count[bkt]
        for i in range(n):
            dgt = (keys[i] >> shift) & mask
            pos = count[dgt]
            count[dgt] = pos + 1
            keys2[pos] = keys[i]
            pay2[pos] = pay[i]
        keys, keys2 = keys2, keys
        pay, pay2 = pay2, pay
    return keys, pay


@numba.njit(cache=True, inline="always")
def _scan(vals, pay, e_hi_total, loss_out, thr_out, v, c):
    """Best cut of sorted ``vals`` with costs ``pay``: cut k puts the k lowest on the lo side;
    cut 0 costs 0 (+ e_hi_total); a cut between equal values is none; ties go to the lowest cut."""
    nb = len(vals)
    best = np.int64(0)
    best_k = 0
    run = np.int64(0)
    for k in range(1, nb + 1):
        run += pay[k - 1]
        if k < nb and vals[k - 1] == vals[k]:
            continue
        if run < best:
            best = run
            best_k = k
    loss_out[v, c] = e_hi_total + best
    if best_k == 0:
        thr_out[v, c] = vals[0] - np.float32(1.0)
    elif best_k == nb:
        thr_out[v, c] = vals[nb - 1]
    else:
        lo = vals[best_k - 1]
        hi = vals[best_k]
        mid = (lo + hi) / np.float32(2.0)
        thr_out[v, c] = mid if mid < hi else lo


@numba.njit(cache=True, inline="always")
def _cut_row(r, base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out):
    """Best cut of row r = (vote v, candidate c) of :func:`candidate_cuts_numba`."""
    K1 = coords.shape[1] + 1
    v = r // K1
    c = r % K1
    nb = lengths[v]  # the entries past it are zero-cost padding: they change no cut
    keys = np.empty(nb, np.uint32)
    pay = np.empty(nb, dlt.dtype)
    sv = 0 if src.shape[0] == 1 else v
    if c == 0:
        for i in range(nb):
            keys[i] = _key(base[v, i] + np.float32(0.0))
            pay[i] = dlt[v, i]
    else:
        j = coords[v, c - 1]
        s = steps[v, c - 1]
        for i in range(nb):
            keys[i] = _key(base[v, i] + s * src[sv, j, batch[v, i]] + np.float32(0.0))
            pay[i] = dlt[v, i]
    _sort_scan(keys, pay, e_hi_total[v], loss_out, thr_out, v, c)


@numba.njit(cache=True, inline="always")
def _sort_scan(keys, pay, e_hi_total, loss_out, thr_out, v, c):
    """Sort one row's keys (carrying the loss differences) and write its best cut to [v, c]."""
    keys, pay = _radix(keys, pay)
    vals = np.empty(len(keys), np.float32)
    for i in range(len(keys)):
        vals[i] = _unkey(keys[i])
    _scan(vals, pay, e_hi_total, loss_out, thr_out, v, c)


@numba.njit(cache=True, inline="always")
def _signed_row(v, base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out):
    """All candidates of vote v when ``src`` holds only +1 and -1 (hidden signs).

    A candidate shifts each entry by +s or -s. Float rounding is monotone, so the entries of one
    sign keep their order under the same shift: sorting the node's own values once and merging
    the two shifted runs gives every candidate's sorted values in one linear pass instead of a
    radix sort. The scan sees the same sorted values (the order of equal values changes no cut),
    so the losses and thresholds are exactly those of :func:`_cut_row`. The split and the merge
    are branch-free (the signs are random: branches on them would mispredict half the time).
    """
    nb = lengths[v]
    keys = np.empty(nb, np.uint32)
    pos = np.empty(nb, np.int64)
    ordered = True
    for i in range(nb):
        keys[i] = _key(base[v, i] + np.float32(0.0))
        pos[i] = i
        ordered &= i == 0 or keys[i - 1] <= keys[i]
    if not ordered:  # the merged cells of collapse_identical come sorted already
        keys, pos = _radix(keys, pos)
    vals = np.empty(nb, np.float32)
    pay = np.empty(nb, dlt.dtype)
    col = np.empty(nb, np.int64)
    for t in range(nb):
        vals[t] = _unkey(keys[t])
        pay[t] = dlt[v, pos[t]]
        col[t] = batch[v, pos[t]]
    _scan(vals, pay, e_hi_total[v], loss_out, thr_out, v, 0)
    sv = 0 if src.shape[0] == 1 else np.int64(v)  # a prange index is unsigned: keep the index an int64
    inf = np.float32(np.inf)  # sentinels past each run's end (projections are finite)
    up_v = np.empty(nb + 1, np.float32)
    up_p = np.empty(nb + 1, dlt.dtype)
    dn_v = np.empty(nb + 1, np.float32)
    dn_p = np.empty(nb + 1, dlt.dtype)
    for c in range(1, coords.shape[1] + 1):
        j = coords[v, c - 1]
        s = steps[v, c - 1]
        nu = 0
        nd = 0
        for t in range(nb):
            sign = src[sv, j, col[t]]
            q = base[v, pos[t]] + s * sign + np.float32(0.0)  # the expression of _cut_row, -0.0 made +0.0
            up = np.int64(sign > 0)
            up_v[nu] = q
            up_p[nu] = pay[t]
            dn_v[nd] = q
            dn_p[nd] = pay[t]
            nu += up
            nd += 1 - up
        up_v[nu] = inf
        dn_v[nd] = inf
        # merge the two runs and scan them in one pass (the steps of _scan, on the merged stream)
        iu = 0
        idn = 0
        run = np.int64(0)
        best = np.int64(0)
        best_k = 0
        lo = np.float32(0.0)
        hi = np.float32(0.0)
        first = min(up_v[0], dn_v[0])
        prev = first
        for o in range(nb):
            x = up_v[iu]
            y = dn_v[idn]
            take = np.int64(x <= y)
            val = x if take else y
            cost = up_p[iu] if take else dn_p[idn]
            iu += take
            idn += 1 - take
            if o > 0 and val != prev:  # a cut between prev and val: k = o values below it
                if run < best:
                    best = run
                    best_k = o
                    lo = prev
                    hi = val
            run += cost
            prev = val
        if run < best:
            best = run
            best_k = nb
        loss_out[v, c] = e_hi_total[v] + best
        if best_k == 0:
            thr_out[v, c] = first - np.float32(1.0)
        elif best_k == nb:
            thr_out[v, c] = prev
        else:
            mid = (lo + hi) / np.float32(2.0)
            thr_out[v, c] = mid if mid < hi else lo


@numba.njit(cache=True, inline="always")
def _collapse_row(v, base, pat, batch, dlt, q_out, b_out, d_out, m_out):
    """Merge vote v's batch entries of equal projection and hidden pattern (:func:`collapse_identical_numba`)."""
    nb = base.shape[1]
    keys = np.empty(nb, np.uint32)
    pos = np.empty(nb, np.int64)
    for i in range(nb):
        keys[i] = _key(base[v, i] + np.float32(0.0))
        pos[i] = i
    keys, pos = _radix(keys, pos)
    heads = np.empty(nb, np.int64)  # pattern of each output entry
    m = 0
    i = 0
    while i < nb:
        r = i + 1
        while r < nb and keys[r] == keys[i]:
            r += 1
        first = m  # entries of this run of equal projections start here
        for t in range(i, r):
            p = pos[t]
            key = pat[v, batch[v, p]]
            g = first
            while g < m and heads[g] != key and g - first < 64:  # a long search only in degenerate runs
                g += 1
            if g < m and heads[g] == key:
                d_out[v, g] += dlt[v, p]
            else:
                heads[m] = key
                q_out[v, m] = base[v, p]
                b_out[v, m] = batch[v, p]
                d_out[v, m] = dlt[v, p]
                m += 1
        i = r
    m_out[v] = m


# Each kernel in two builds: rows spread over numba's threads, or one thread without the GIL
# for the vote-group worker threads of scd.train (which run several of them at once).
@numba.njit(parallel=True, cache=True)
def _cuts(base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out):
    for r in numba.prange(base.shape[0] * (coords.shape[1] + 1)):
        _cut_row(r, base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out)


@numba.njit(nogil=True, cache=True)
def _cuts_serial(base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out):
    for r in range(base.shape[0] * (coords.shape[1] + 1)):
        _cut_row(r, base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out)


@numba.njit(parallel=True, cache=True)
def _signed_cuts(base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out):
    for v in numba.prange(base.shape[0]):
        _signed_row(v, base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out)


@numba.njit(nogil=True, cache=True)
def _signed_cuts_serial(base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out):
    for v in range(base.shape[0]):
        _signed_row(v, base, src, batch, coords, steps, dlt, e_hi_total, lengths, loss_out, thr_out)


@numba.njit(parallel=True, cache=True)
def _collapse(base, pat, batch, dlt, q_out, b_out, d_out, m_out):
    for v in numba.prange(base.shape[0]):
        _collapse_row(v, base, pat, batch, dlt, q_out, b_out, d_out, m_out)


@numba.njit(nogil=True, cache=True)
def _collapse_serial(base, pat, batch, dlt, q_out, b_out, d_out, m_out):
    for v in range(base.shape[0]):
        _collapse_row(v, base, pat, batch, dlt, q_out, b_out, d_out, m_out)


_local = threading.local()


def _build(parallel, serial):
    return serial if getattr(_local, "serial", False) else parallel


@contextlib.contextmanager
def one_thread_per_caller():
    """Inside the block, this thread's kernel calls run on it alone and release the GIL, so that
    several threads can each train their own votes at once."""
    _local.serial = True
    try:
        yield
    finally:
        _local.serial = False


def set_threads(n: int) -> None:
    """Threads of the kernel (numba's own pool, independent of torch's)."""
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, n)))


def candidate_cuts_numba(base, src, batch, coords, steps, dlt, e_hi_total, lengths=None, signs=False):
    """See :func:`.scd.candidate_cuts`; CPU tensors only. ``signs``: ``src`` holds only +1 and -1
    (:func:`_signed_row`: one sort per vote, a merge per candidate)."""
    V, nb = base.shape
    K1 = coords.shape[1] + 1
    loss = np.empty((V, K1), np.int64)
    thr = np.empty((V, K1), np.float32)
    # a row keeps at least one entry (a padding copy when it has none): a cut needs a value
    lengths = np.full(V, nb, np.int64) if lengths is None else lengths.to(torch.int64).clamp(1, nb).contiguous().numpy()
    kernels = (_signed_cuts, _signed_cuts_serial) if signs else (_cuts, _cuts_serial)
    _build(*kernels)(
        base.contiguous().numpy(), src.contiguous().numpy(), batch.contiguous().numpy(),
        coords.contiguous().numpy(), steps.contiguous().numpy(), dlt.contiguous().numpy(),
        e_hi_total.to(torch.int64).expand(V).contiguous().numpy(), lengths, loss, thr,
    )
    return torch.from_numpy(loss), torch.from_numpy(thr)


def best_cut_numba(q, dlt, e_hi_total):
    """:func:`.scd.best_cut` of every row of ``q`` (V, n); CPU tensors only: the candidate search
    with no candidates, whose row 0 is the node itself (``src`` and ``batch`` are never read)."""
    V = q.shape[0]
    none = torch.zeros((V, 0), dtype=torch.int64)
    loss, thr = candidate_cuts_numba(q, q[:, None, :1], none, none, torch.zeros((V, 0)), dlt.expand(q.shape), e_hi_total)
    return loss[:, 0], thr[:, 0]


def collapse_identical_numba(base, pat, batch, dlt):
    """See :func:`.scd.collapse_identical`; CPU tensors only."""
    V, nb = base.shape
    q = np.empty((V, nb), np.float32)
    b = np.empty((V, nb), np.int64)
    d = np.zeros((V, nb), dlt.numpy().dtype)
    m = np.empty(V, np.int64)
    _build(_collapse, _collapse_serial)(
        base.contiguous().numpy(), pat.contiguous().numpy(), batch.contiguous().numpy(), dlt.contiguous().numpy(), q, b, d, m)
    w = int(m.max())
    q, b, d = q[:, :w], b[:, :w], d[:, :w]
    for v in range(V):  # pad with copies of the vote's first entry at zero cost (they change no cut)
        q[v, m[v]:], b[v, m[v]:], d[v, m[v]:] = q[v, 0], b[v, 0], 0
    return (torch.from_numpy(np.ascontiguousarray(q)), torch.from_numpy(np.ascontiguousarray(b)),
            torch.from_numpy(np.ascontiguousarray(d)), torch.from_numpy(m))
