"""``--isolate process``: each cell in a fresh child process, so that a plugin that crashes the
interpreter (a segfault, ``os._exit``, an abort in native code) or patches global code fails only
its own cell.

The child is started with ``spawn`` (no inherited threads, locks or CUDA state) and runs the cell
exactly as a Ray worker does (:func:`robench.worker.cell_task`: plugins rebuilt from the suite,
models rebuilt from the driver's weights, same thread count, same per-batch seeds), so its rows
equal those of an in-process run. It gets private copies of the data and weights (pickled by
value, not shared memory) and streams each batch's candidates back, which the parent verifies with
its own model and data and writes to the store.

What comes back from the child is never unpickled: a message is one JSON line (kind, batch
positions, shape, counts, records, log lines) followed by the raw float32 bytes of the
candidates, so a plugin in the child can at worst send wrong candidates, which verification
rejects, or wrong pass counts (see docs/reliability.md).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import signal
import uuid

import numpy as np
import torch

from .cell import CERTIFICATE_STATUSES, BatchResult, Candidates, CellJob, verify_candidates
from .errors import RobenchError
from .models import model_state
from .worker import cell_task, make_setup


class CellFailed(RobenchError):
    """The cell failed in its child process; ``error`` is the child's description of why."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


_SETUPS: dict[int, object] = {}  # one WorkerSetup (and run token) per workload


def _child_main(setup, job, data, state, source_state, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends this process
    try:
        for msg in cell_task(setup, job, data, state, source_state):
            conn.send_bytes(encode_message(msg))
    finally:
        conn.close()


def encode_message(msg: tuple) -> bytes:
    """A worker message as one JSON line plus, for a batch, the raw float32 bytes of its candidates."""
    kind, logs = msg[0], list(msg[-1])
    if kind == "batch":
        cand, records = msg[1], msg[2]
        adv = cand.adv.detach().to("cpu", torch.float32).contiguous().numpy()
        head = {"kind": kind, "chunk": list(cand.chunk), "shape": list(adv.shape), "forward": cand.forward,
                "backward": cand.backward, "seconds": cand.seconds, "records": dict(records), "logs": logs}
        payload = adv.tobytes()
        if cand.certificates is not None:
            head["certificates"] = [None if c is None else list(c) for c in cand.certificates]
        if cand.notes is not None:
            head["notes"] = list(cand.notes)
        if cand.curves is not None and cand.spent is not None:  # the wrapper's best-so-far (robench.budget)
            head["curves"] = [[list(p) for p in c] for c in cand.curves]
            head["spent"] = [list(p) for p in cand.spent]
            head["best"] = cand.best is not None
            if cand.best is not None:
                payload += cand.best.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        return json.dumps(head).encode() + b"\n" + payload
    head = {"kind": kind, "logs": logs}
    if kind == "failed":
        head["error"] = str(msg[1])
    return json.dumps(head).encode() + b"\n"


def decode_message(raw: bytes, job: CellJob, sent: set[int]) -> dict:
    """Parse (and sanity-check) one message from the child; ``sent`` holds the positions already received."""
    line, _, payload = raw.partition(b"\n")
    try:
        head = json.loads(line)
    except ValueError:
        raise RobenchError("the cell's child process sent a message that is not robench's") from None
    if not isinstance(head, dict) or head.get("kind") not in ("batch", "done", "failed"):
        raise RobenchError("the cell's child process sent a message that is not robench's")
    if head["kind"] != "batch":
        return head
    chunk, shape = head.get("chunk"), head.get("shape")
    if (not isinstance(chunk, list) or not chunk or not all(isinstance(k, int) and 0 <= k < len(job.positions) for k in chunk)
            or len(set(chunk)) != len(chunk) or sent & set(chunk)):
        raise RobenchError("the cell's child process sent a batch of positions that are not this cell's remaining ones")
    best = head.get("best") is True
    if (not isinstance(shape, list) or not shape or not all(isinstance(d, int) and d >= 0 for d in shape) or shape[0] != len(chunk)
            or math.prod(shape) * 4 * (2 if best else 1) != len(payload)):
        raise RobenchError("the cell's child process sent candidates whose size does not match their shape")
    counts = [head.get(k) for k in ("forward", "backward", "seconds")]
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in counts):
        raise RobenchError("the cell's child process sent pass counts that are not finite non-negative numbers")
    size = math.prod(shape) * 4
    adv = torch.from_numpy(np.frombuffer(payload[:size], dtype=np.float32).copy()).reshape(shape)
    cand = Candidates(chunk, adv, float(counts[0]), float(counts[1]), float(counts[2]))
    if "certificates" in head:
        cand.certificates = _certificates(head["certificates"], len(chunk))
    if "notes" in head:
        notes = head["notes"]
        if not isinstance(notes, list) or len(notes) != len(chunk) or not all(v is None or isinstance(v, str) for v in notes):
            raise RobenchError("the cell's child process sent notes that are not one text (or null) per sample")
        cand.notes = notes
    if "curves" in head or "spent" in head:
        cand.curves, cand.spent = _tracked(head.get("curves"), head.get("spent"), len(chunk))
        if best:  # kept candidates: verified by the parent like any returned one
            cand.best = torch.from_numpy(np.frombuffer(payload[size:], dtype=np.float32).copy()).reshape(shape)
    head["candidates"] = cand
    return head


def _certificates(certs, n: int) -> list:
    """Per-row certificates from the child: None or [status, lower, upper] with a known status and numbers."""
    def number(v):
        return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))

    if (not isinstance(certs, list) or len(certs) != n
            or not all(c is None or (isinstance(c, list) and len(c) == 3 and c[0] in CERTIFICATE_STATUSES and number(c[1]) and number(c[2]))
                       for c in certs)):
        raise RobenchError("the cell's child process sent certificates that are not a status and two numbers per sample")
    return [None if c is None else (c[0], c[1], c[2]) for c in certs]


def _tracked(curves, spent, n: int) -> tuple[list, list]:
    """Best-so-far curves and per-sample passes from the child: checked for shape and finite non-negative numbers.

    Like the pass counts, they are the child's account (a dishonest plugin could misstate when a point was
    reached); the point they end at is replaced by the parent's verified result (robench.budget.final_curve)."""
    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    def point(p):
        return (isinstance(p, list) and len(p) == 3 and count(p[0]) and count(p[1]) and isinstance(p[2], (int, float))
                and not isinstance(p[2], bool) and math.isfinite(p[2]) and p[2] >= 0)

    if (not isinstance(curves, list) or len(curves) != n or not all(isinstance(c, list) and all(map(point, c)) for c in curves)
            or not isinstance(spent, list) or len(spent) != n
            or not all(isinstance(p, list) and len(p) == 2 and count(p[0]) and count(p[1]) for p in spent)):
        raise RobenchError("the cell's child process sent best-so-far curves that are not lists of passes and norms per sample")
    return [[tuple(p) for p in c] for c in curves], [tuple(p) for p in spent]


def _exit_description(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_in_child(work, job: CellJob, sink) -> dict[str, float]:
    """Run ``job`` in a child process, writing each batch it streams back through ``sink``; return
    the cell's records. Raises :class:`CellFailed` when the cell fails or the child dies."""
    setup = _SETUPS.get(id(work))
    if setup is None or setup[0] is not work:
        setup = (work, make_setup(work, uuid.uuid4().hex))
        _SETUPS.clear()
        _SETUPS[id(work)] = setup
    models = work.models.models
    state = model_state(models[job.model])
    source_state = model_state(models[job.source]) if job.source else None
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    # The arguments go to the child by spawn's own pickling: the trusted direction (parent to child).
    proc = ctx.Process(target=_child_main, args=(setup[1], job, work.data, state, source_state, child), daemon=True,
                       name=f"robench cell {job.label}")
    proc.start()
    child.close()
    records: dict[str, float] = {}
    outcome = None
    sent: set[int] = set()
    model = models[job.model]
    try:
        while outcome is None:
            try:
                raw = parent.recv_bytes()
            except EOFError:  # the child is gone without a last word
                break
            msg = decode_message(raw, job, sent)
            for line in msg["logs"] if isinstance(msg.get("logs"), list) else []:
                sink.log(str(line))
            if msg["kind"] == "batch":
                cand = msg["candidates"]
                rows = verify_candidates(job, work.data, cand, model, work.device)  # the parent's verdict
                sent.update(cand.chunk)
                records = {str(k): float(v) for k, v in (msg.get("records") or {}).items()}
                sink.write(job, BatchResult(rows, records))
            else:
                outcome = msg
        proc.join(timeout=60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if outcome is None:
        raise CellFailed(f"the child process running this cell died ({_exit_description(proc.exitcode)}) before finishing it; "
                         "batches it had sent are stored, the rest of the cell is not (a plugin crashed the interpreter?)")
    if outcome["kind"] == "failed":
        raise CellFailed(str(outcome.get("error")))
    return records
