"""Built-in robench plugins: 01-loss models (SCD01, MLP01) and their white-box attacks.

See docs/models-zero-one.md for parameters and the surrogate; the trainer is in :mod:`.scd`.
"""

from __future__ import annotations

import robench

from .attacks import LinearSign, MLP01Hidden
from .models import MLP01, SCD01


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec("scd01", SCD01, "linear 01-loss classifier, vote ensemble trained by batched stochastic coordinate descent"),
        robench.ModelSpec("mlp01", MLP01, "one hidden layer of sign units + 01-loss output node, vote ensemble trained by SCD"),
    ]


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec("linear_sign", LinearSign, "x + eps*(-y)*sign(w) on linear models (scd01, svm); white box", norms=(robench.Norm.Linf,)),
        robench.AttackSpec("mlp01_hidden", MLP01Hidden, "MLP01 hidden-node heuristic: first unit whose sign step fools the model; white box", norms=(robench.Norm.Linf,)),
    ]
