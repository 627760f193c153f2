"""Run progress in the terminal: rich bars with ETA on a terminal (:class:`RichReporter`), plain
lines for logs and pipes (:class:`LineReporter`). Both implement :class:`robench.run.Reporter`."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from .terminal import RunEta, message, plain, plan_lines, seconds_text


class RichReporter:
    """Overall progress (cells) and per-cell progress (samples) with ETA."""

    def __init__(self, progress: Progress):
        self.p = progress
        self.overall = None
        self.task = None
        self.eta = RunEta()
        self.started = 0.0
        self.base: float | None = None  # samples stored before this run, for the measured rate
        self.cells_ended = 0

    def plan(self, plan) -> None:
        self.eta.set_plan(plan)
        for line in plan_lines(plan):
            self.p.console.print(Text(line, style="dim"))

    def phase(self, text: str) -> None:
        self.p.console.print(message(text, style="dim"))

    def log(self, text: str) -> None:
        self.p.console.print(message(text))  # robench's style tags only: other brackets stay literal

    def start_cells(self, total: int) -> None:
        self.overall = self.p.add_task(self._overall_text(), total=total)

    def _overall_text(self) -> str:
        eta = self.eta.text()
        return "[bold]all cells[/bold]" + (f" ({eta})" if eta else "")

    def start_task(self, label: str, total: int) -> None:
        self.task = self.p.add_task(label, total=total)
        self.started, self.base = time.perf_counter(), None

    def advance_task(self, done: int, total: int | None = None) -> None:
        if self.task is not None:
            if self.base is None:
                self.base = done
            self.p.update(self.task, completed=done, **({"total": total} if total is not None else {}))
            task = next(t for t in self.p.tasks if t.id == self.task)
            if self.overall is not None and not task.description.startswith("train ") and task.total:
                # the cell in flight counts by its share done, so the all-cells bar and its ETA move within a cell
                self.p.update(self.overall, completed=self.cells_ended + min(done / task.total, 1.0))

    def end_task(self, status: str) -> None:
        if self.task is None:
            return
        task = next(t for t in self.p.tasks if t.id == self.task)
        self.p.remove_task(self.task)
        self.task = None
        label = task.description
        cell = not label.startswith("train ")
        took = f" ({seconds_text(time.perf_counter() - self.started)})" if cell and status != "stored" else ""
        self.p.console.print(Text.assemble(f"  {label}: ", message(status), took))
        if cell:
            if status.startswith("done") and self.base is not None:
                self.eta.measured(label, int(task.completed) - self.base, time.perf_counter() - self.started)
            self.eta.finish(label)
            self.cells_ended += 1
            if self.overall is not None:
                self.p.update(self.overall, completed=self.cells_ended, description=self._overall_text())

    def end_cell(self, label: str, status: str, seconds: float) -> None:
        """A cell that ran on a Ray worker: its attack time, summed over its batches."""
        self.p.console.print(Text.assemble(f"  {label}: ", message(status), f" ({seconds_text(seconds)} of attack time)"))
        self.eta.finish(label)
        self.cells_ended += 1
        if self.overall is not None:
            self.p.update(self.overall, completed=self.cells_ended)


class LineReporter:
    """Progress as plain lines for logs and pipes, where rich draws no bars: a line when a task
    starts and ends, and in between at most one line per ``every`` seconds with percent and ETA.
    A cell's end line carries the run's estimated time left, once each attack has been timed."""

    def __init__(self, console: Console, every: float = 30.0):
        self.c = console
        self.every = every
        self.cells_total = 0
        self.cells_done = 0
        self.label: str | None = None
        self.total = 1
        self.started = self.last = 0.0
        self.base: int | None = None  # samples stored before this run (the first advance)
        self.done = 0
        self.eta = RunEta()

    def _say(self, text: str) -> None:
        # one line, however long; the runner's style tags ([red]...) are dropped, every other bracket kept
        self.c.print(plain(text), highlight=False, markup=False, soft_wrap=True)

    def plan(self, plan) -> None:
        self.eta.set_plan(plan)
        for line in plan_lines(plan):
            self._say(line)

    def phase(self, text: str) -> None:
        self._say(text)

    def log(self, text: str) -> None:
        self._say(text)

    def start_cells(self, total: int) -> None:
        self.cells_total = total

    def start_task(self, label: str, total: int) -> None:
        self.label, self.total = label, max(total, 1)
        self.started = self.last = time.perf_counter()
        self.base, self.done = None, 0
        if label.startswith("train "):
            self._say(f"{label}: started")
        # a cell says "started" at its first progress report (with what was stored before): a cell
        # whose samples are all stored prints one "stored" line only

    def advance_task(self, done: int, total: int | None = None) -> None:
        if self.label is None:
            return
        if total is not None:
            self.total = max(total, 1)
        self.done = done
        if self.base is None:
            self.base = done
            if not self.label.startswith("train "):
                self._say(f"{self.label}: started" + (f" ({done}/{self.total} stored before)" if done else ""))
            return
        now = time.perf_counter()
        if now - self.last < self.every:
            return
        self.last = now
        frac = min(done / self.total, 1.0)
        elapsed = now - self.started
        ran = done - self.base  # this run's samples: the rate leaves out what was stored before
        eta = f", ETA {elapsed * (self.total - done) / ran:.0f}s" if ran > 0 else ""
        self._say(f"{self.label}: {done:.0f}/{self.total} ({100 * frac:.0f}%), {elapsed:.0f}s elapsed{eta}")

    def end_task(self, status: str) -> None:
        if self.label is None:
            return
        label, self.label = self.label, None
        if label.startswith("train "):
            self._say(f"{label}: {status}")  # training's status names its time
            return
        self.cells_done += 1
        elapsed = time.perf_counter() - self.started
        if status.startswith("done") and self.base is not None:
            self.eta.measured(label, self.done - self.base, elapsed)
        self.eta.finish(label)
        eta = self.eta.text()
        count = f" [cell {self.cells_done}/{self.cells_total}" + (f"; {eta}" if eta else "") + "]" if self.cells_total else ""
        took = f" ({seconds_text(elapsed)})" if status != "stored" else ""
        self._say(f"{label}: {status}{took}{count}")

    def end_cell(self, label: str, status: str, seconds: float) -> None:
        """A cell that ran on a Ray worker: its attack time, summed over its batches."""
        self.cells_done += 1
        self.eta.finish(label)
        count = f" [cell {self.cells_done}/{self.cells_total}]" if self.cells_total else ""
        self._say(f"{label}: {status} ({seconds_text(seconds)} of attack time){count}")
