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


@numba.njit(parallel=True, cache=True)
def _cuts(base, src, batch, coords, steps, dlt, e_hi_total, loss_out, thr_out):
    V, nb = base.shape
    K1 = coords.shape[1] + 1
    shared_src = src.shape[0] == 1
    for r in numba.prange(V * K1):
        v = r // K1
        c = r % K1
        keys = np.empty(nb, np.uint32)
        pay = np.empty(nb, dlt.dtype)
        sv = 0 if shared_src else v
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
        keys, pay = _radix(keys, pay)
        vals = np.empty(nb, np.float32)
        for i in range(nb):
            vals[i] = _unkey(keys[i])
        _scan(vals, pay, e_hi_total[v], loss_out, thr_out, v, c)


def set_threads(n: int) -> None:
    """Threads of the kernel (numba's own pool, independent of torch's)."""
    numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, n)))


def candidate_cuts_numba(base, src, batch, coords, steps, dlt, e_hi_total):
    """See :func:`.scd.candidate_cuts`; CPU tensors only."""
    V = base.shape[0]
    K1 = coords.shape[1] + 1
    loss = np.empty((V, K1), np.int64)
    thr = np.empty((V, K1), np.float32)
    _cuts(
        base.contiguous().numpy(), src.contiguous().numpy(), batch.contiguous().numpy(),
        coords.contiguous().numpy(), steps.contiguous().numpy(), dlt.contiguous().numpy(),
        e_hi_total.to(torch.int64).expand(V).contiguous().numpy(), loss, thr,
    )
    return torch.from_numpy(loss), torch.from_numpy(thr)

