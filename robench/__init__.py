"""robench: benchmark the adversarial robustness of machine-learning models, with plugins."""

from __future__ import annotations

import pluggy

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
    TorchModel,
)

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
    "TorchModel",
    "hookimpl",
    "__version__",
]
