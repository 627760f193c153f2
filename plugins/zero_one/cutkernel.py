"""A fused CPU kernel for the candidate threshold search of the SCD trainer (numba).

For every (vote, candidate) row it builds the candidate's batch projections
``base[v] + s * src[v, j, batch[v]]``, sorts them with a 3-pass LSD radix sort on order-preserving
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

_BITS = 11
_BUCKETS = 1 << _BITS
_MASK = _BUCKETS - 1


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
        keys2 = np.empty(nb, np.uint32)
        pay2 = np.empty(nb, dlt.dtype)
        sv = 0 if shared_src else v
        if c == 0:
            for i in range(nb):
                keys[i] = _key(base[v, i] + np.float32(0.0))
                pay[i] = dlt[v, i]
        else:
            j = coords[v, c - 1]
            s = steps[v, c - 1]
            for i in range(nb):
                qi = base[v, i] + s * src[sv, j, batch[v, i]]
                keys[i] = _key(qi + np.float32(0.0))
                pay[i] = dlt[v, i]
        # LSD radix sort, 3 passes of 11 bits (the payload moves with its key)
        for p in range(3):
            shift = p * _BITS
            count = np.zeros(_BUCKETS + 1, np.int64)
            for i in range(nb):
                count[((keys[i] >> shift) & _MASK) + 1] += 1
            for bkt in range(_BUCKETS):
                count[bkt + 1] += count[bkt]
            for i in range(nb):
                dgt = (keys[i] >> shift) & _MASK
                pos = count[dgt]
                count[dgt] = pos + 1
                keys2[pos] = keys[i]
                pay2[pos] = pay[i]
            keys, keys2 = keys2, keys
            pay, pay2 = pay2, pay
        # scan the cuts: cut k puts the k lowest on the lo side; cut 0 costs 0 (+ e_hi_total)
        best = np.int64(0)
        best_k = 0
        run = np.int64(0)
        for k in range(1, nb + 1):
            run += pay[k - 1]
            if k < nb and keys[k - 1] == keys[k]:
                continue
            if run < best:
                best = run
                best_k = k
        loss_out[v, c] = e_hi_total[v] + best
        if best_k == 0:
            thr_out[v, c] = _unkey(keys[0]) - np.float32(1.0)
        elif best_k == nb:
            thr_out[v, c] = _unkey(keys[nb - 1])
        else:
            lo = _unkey(keys[best_k - 1])
            hi = _unkey(keys[best_k])
            mid = (lo + hi) / np.float32(2.0)
            thr_out[v, c] = mid if mid < hi else lo


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
