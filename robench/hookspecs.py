"""The whole public plugin surface of robench, in one file.

A plugin is a module (or object) with functions marked ``@robench.hookimpl`` named like the
specs below. It is found through the ``robench`` entry-point group of an installed distribution,
or passed on the command line with ``--plugin module.path``. Built-in plugins use the same hooks
and the same entry-point group.

Example (in your package's ``pyproject.toml``)::

    [project.entry-points.robench]
    my_defense = "my_package.robench_plugin"

and in ``my_package/robench_plugin.py``::

    import robench

    @robench.hookimpl
    def robench_models():
        return [robench.ModelSpec("my-defense", MyDefense, "What it does, in one line")]
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("robench")


@hookspec
def robench_models():
    """Return a list of :class:`robench.ModelSpec`, one per model (defense) plugin.

    Each spec names the plugin (the ``plugin:`` key of a suite's model entry), its factory (a
    subclass of :class:`robench.Model` whose ``Params`` is a pydantic model of its parameters) and
    a one-line description. The factory declares its capabilities as class attributes:
    ``differentiable``, ``framework``, ``randomized``, and implements ``surrogate()`` if it can
    offer a differentiable stand-in.
    """


@hookspec
def robench_attacks():
    """Return a list of :class:`robench.AttackSpec`, one per attack plugin.

    The spec lists the norms the attack supports; the factory (a subclass of
    :class:`robench.Attack`) declares ``kind`` (``bounded`` or ``minimal``) and ``needs``
    (a subset of ``gradients``, ``scores``, ``decisions``, ``transfer``).
    """


@hookspec
def robench_datasets():
    """Return a list of :class:`robench.DatasetSpec`, one per dataset plugin.

    The factory (a subclass of :class:`robench.Dataset`) loads local files only; a missing file
    raises :class:`robench.errors.DataMissingError` naming the file and how to import it.
    """
