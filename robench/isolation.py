"""``--isolate process``: each cell in a fresh child process, so that a plugin that crashes the
interpreter (a segfault, ``os._exit``, an abort in native code) or patches global code fails only
its own cell.

The child is started with ``spawn`` (no inherited threads, locks or CUDA state) and runs the cell
exactly as a Ray worker does (:func:`robench.worker.cell_task`: plugins rebuilt from the suite,
models rebuilt from the driver's weights, same thread count, same per-batch seeds), so its rows
equal those of an in-process run. It gets private copies of the data and weights (pickled by
value, not shared memory) and streams each verified batch back; the parent writes it to the store.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import uuid

from .cell import BatchResult, CellJob
from .errors import RobenchError
from .models import model_state
from .worker import cell_task, make_setup


class CellFailed(RobenchError):
    """The cell failed in its child process; ``error`` is the child's description of why."""

    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


_SETUPS: dict[int, object] = {}  # one WorkerSetup (and run token) per workload


def _child_main(payload: bytes, conn) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it ends this process
    setup, job, data, state, source_state = pickle.loads(payload)
    try:
        for msg in cell_task(setup, job, data, state, source_state):
            conn.send(msg)
    finally:
        conn.close()


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
    payload = pickle.dumps((setup[1], job, work.data, state, source_state))
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(payload, child), daemon=True, name=f"robench cell {job.label}")
    proc.start()
    child.close()
    records: dict[str, float] = {}
    outcome = None
    try:
        while outcome is None:
            try:
                msg = parent.recv()
            except EOFError:  # the child is gone without a last word
                break
            for line in msg[-1]:
                sink.log(line)
            if msg[0] == "batch":
                sink.write(job, BatchResult(msg[1], msg[2]))
                records = msg[2]
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
    if outcome[0] == "failed":
        raise CellFailed(outcome[1])
    return records
