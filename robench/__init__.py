"""robench: benchmark the adversarial robustness of machine-learning models, with plugins."""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a shared or oversubscribed CPU spinning made
# small torch steps 10x slower (measured). Must be set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pluggy  # noqa: E402

__version__ = "0.1.0"

#: Marker for hook implementations in plugins: ``@robench.hookimpl``.
hookimpl = pluggy.HookimplMarker("robench")

from .api import (  # noqa: E402  (hookimpl must exist before plugins import robench)
    Attack,
    AttackSpec,
    Context,
    Dataset,
    DatasetInfo,
    DatasetSpec,
    Model,
    ModelSpec,
    NoParams,
    Norm,
    Params,
    ScoresModule,
    TorchModel,
)
from .data import find_file, resolve_data_dir  # noqa: E402
from .errors import (  # noqa: E402
    DataMissingError,
    PluginError,
    RobenchError,
    StoreError,
    SuiteError,
    UserInputError,
)
from . import norms  # noqa: E402  (robench.norms.lp_norm, per_sample, ...)
from . import plugins as _plugins  # noqa: E402, F401  (a Context made outside a run finds the installed plugins through it)

#: The public modules besides this package: what a plugin or script may import from robench. Every
#: other module is internal (it may change without notice); tests/test_plugin_surface.py holds the
#: built-in plugins to this, and docs/reference/api.md lists each module's public names.
PUBLIC_MODULES = (
    "robench.adapters",
    "robench.errors",
    "robench.nets",
    "robench.norms",
    "robench.report",
    "robench.results",
    "robench.testing",
    "robench.training",
    "robench.verify",
)

from .evaluation import evaluate  # noqa: E402

__all__ = [
    "Attack",
    "AttackSpec",
    "Context",
    "Dataset",
    "DatasetInfo",
    "DatasetSpec",
    "Model",
    "ModelSpec",
    "NoParams",
    "Norm",
    "Params",
    "PUBLIC_MODULES",
    "ScoresModule",
    "TorchModel",
    "DataMissingError",
    "PluginError",
    "RobenchError",
    "StoreError",
    "SuiteError",
    "UserInputError",
    "find_file",
    "norms",
    "resolve_data_dir",
    "evaluate",
    "hookimpl",
    "__version__",
]
