"""Progress inside a library cell (issue 23 item 6): a foolbox or ART attack runs a whole library call
silently, so the adapters call the library in sub-batches (LibraryAttack.progress_chunk) and report
between them (Context.report); the cell turns that into progress of its batch in flight, so the bar,
the 30-second log lines and the ETA move before the cell ends. Counted in events, not seconds."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from robench.plugins import get_registry
from robench.progress import LineReporter
from robench.run import Reporter, RunOptions, run_suite
from robench.suite import load_suite

from fault_suites import suite_text

ATTACKS = {
    "art": "name: a, plugin: art-pgd, params: {norm: Linf, max_iter: 3}",
    "foolbox": "name: a, plugin: fb-ddn, params: {steps: 5}",
}


def suite(library: str) -> str:
    """An MLP on 40 digits against the library's attack ``a`` at Linf 0.1 and L2 1.0, in one batch."""
    return suite_text("progress", "name: digits, split: test, limit: 40", ["name: mlp, plugin: mlp, params: {hidden: 32, epochs: 20}"],
                      [ATTACKS[library]], "Linf: [0.1], L2: [1.0]", settings=("seed: 0", "batch_size: 40", "device: cpu"))


class Recorder(Reporter):
    """Every advance of the cell's task, between its start and its end."""

    def __init__(self):
        self.cell, self.events, self.ended = None, [], []

    def start_task(self, label, total):
        self.cell = label if label.startswith("mlp / ") else None
        self.total = total

    def advance_task(self, done, total=None):
        if self.cell is not None:
            self.events.append(done)

    def end_task(self, status):
        if self.cell is not None:
            self.ended.append(status)
        self.cell = None


@pytest.mark.parametrize("library", sorted(ATTACKS))
def test_a_library_cell_reports_progress_inside_its_one_batch(library, tmp_path):
    (tmp_path / "suite.yaml").write_text(suite(library))
    reg = get_registry()
    rec = Recorder()
    summary = run_suite(load_suite(tmp_path / "suite.yaml", reg), reg,
                        RunOptions(out_dir=tmp_path / "run", data_dir=tmp_path, cache_dir=tmp_path / "cache"), rec)
    assert summary.ok and rec.ended == ["done"]
    inside = [d for d in rec.events if 0 < d < 40]  # one batch of 40: without progress, only 0 and 40
    assert len(inside) >= 2, rec.events
    assert rec.events == sorted(rec.events) and rec.events[-1] == 40


def test_line_reporter_prints_progress_and_eta_inside_a_batch():
    out = io.StringIO()
    rep = LineReporter(Console(file=out, width=200), every=0.0)
    rep.start_cells(1)
    rep.start_task("m / fb", 40)
    for done in (0, 12.5, 25.0):  # the first call is what was stored before
        rep.advance_task(done)
    lines = out.getvalue().splitlines()
    assert lines[0] == "m / fb: started"
    assert lines[1].startswith("m / fb: 12/40 (31%)") and "ETA" in lines[1]
    assert lines[2].startswith("m / fb: 25/40 (62%)")
