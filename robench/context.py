"""The run-time context a plugin is handed (:class:`Context`) and :func:`construct`, which builds an
attack or dataset plugin with it. Re-exported by ``robench`` and ``robench.api``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

if TYPE_CHECKING:
    from .api import Attack, Dataset, Params


def installed_registry() -> Any:
    """The installed plugins (``robench.plugins.get_registry()``), for a :class:`Context` made outside
    a run. robench.plugins replaces this function when it is imported, and the ``robench`` package
    imports robench.plugins, so this module need not import the registry: the registry is made of the
    spec classes of robench.api, which re-exports :class:`Context`, and that import would close a loop."""
    raise RuntimeError("robench.plugins is not imported: import robench first")


@dataclass
class Context:
    """Run-time facts the harness hands to plugins: where to compute, how to seed, how to report."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    data_dir: Path | None = None
    # Called with (done, total) by long loops (training epochs, attack iterations) to drive progress bars.
    progress: Callable[[int, int], None] | None = None
    log: Callable[[str], None] = print
    #: Unlabelled inputs of the evaluation split that an attack may use beyond its batch (e.g. the
    #: seed set of a substitute attack). Set by the harness for attack runs; None during training.
    pool: torch.Tensor | None = None
    #: Extra per-cell figures an attack reports (e.g. a substitute's label match rate); the harness
    #: stores the last value recorded under each name with the cell. Use :meth:`record`.
    records: dict[str, float] = field(default_factory=dict)
    #: The run's plugins (a :class:`robench.plugins.Registry`, ``--plugin`` modules included), from
    #: which wrapper plugins build the plugins they wrap (:meth:`attack`, :meth:`dataset`). Set by
    #: the harness; None outside a run, where the installed plugins are used.
    registry: Any = field(default=None, repr=False)
    #: Per-sample certificates of the current batch (row -> (status, lower, upper)); use :meth:`certify`.
    certificates: dict[int, tuple[str, float | None, float | None]] = field(default_factory=dict)
    #: Per-sample notes of the current batch (row -> text); use :meth:`note`.
    notes: dict[int, str] = field(default_factory=dict)

    def note(self, row: int, text: str) -> None:
        """Keep a text with row ``row`` of the current batch (e.g. ``"broken by apgd-t"``), stored with its sample.

        Table ``sample_notes``; the cell's records count the verified successes per note."""
        self.notes[int(row)] = str(text)

    def certify(self, row: int, status: str, lower: float | None = None, upper: float | None = None) -> None:
        """Report a certificate for row ``row`` of the current batch, kept with its sample row
        (table ``certificates``). A solver: ``optimal`` / ``bracket`` (lower <= minimal norm <= upper),
        ``robust`` (no adversarial exists), ``failed``; a verifier: ``verified`` (no adversarial
        within eps) or ``unknown``. The harness checks it against the verified row (robench.cell)."""
        self.certificates[int(row)] = (str(status), None if lower is None else float(lower), None if upper is None else float(upper))

    def record(self, name: str, value: float) -> None:
        """Report a named figure for the current cell (shown in the leaderboard's cell details)."""
        self.records[name] = float(value)

    def attack(self, name: str, params: dict[str, Any] | None = None) -> Attack:
        """Attack plugin ``name`` of this run, built with ``params`` (validated by its Params model:
        a ``pydantic.ValidationError`` when they do not fit), for wrapper attacks such as ``transfer``."""
        return self._build("attack", name, params)

    def dataset(self, name: str, params: dict[str, Any] | None = None) -> Dataset:
        """Dataset plugin ``name`` of this run, built with ``params`` (see :meth:`attack`)."""
        return self._build("dataset", name, params)

    def _build(self, kind: str, name: str, params: dict[str, Any] | None):
        registry = self.registry
        if registry is None:
            # Outside a run (a script or a test building a wrapper with a bare Context()): the
            # installed plugins, through the function robench.plugins installs below.
            registry = installed_registry()
        factory = registry.get(kind, name).factory
        return construct(factory, factory.Params(**(params or {})), self)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A CPU generator seeded from the run seed (offset separates independent streams)."""
        return torch.Generator().manual_seed(self.seed + offset)

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


def construct(factory: type, params: Params, ctx: Context | None = None) -> Any:
    """An attack or dataset plugin instance. A plugin whose constructor takes a ``ctx`` argument
    (a wrapper that builds other plugins through :meth:`Context.attack` / :meth:`Context.dataset`)
    gets ``ctx``; any other gets its params only."""
    try:
        takes_ctx = "ctx" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_ctx = False
    if takes_ctx:
        return factory(params, ctx=ctx if ctx is not None else Context())
    return factory(params)
