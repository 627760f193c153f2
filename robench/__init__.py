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
    TorchModel,
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
    "TorchModel",
    "evaluate",
    "hookimpl",
    "__version__",
]
