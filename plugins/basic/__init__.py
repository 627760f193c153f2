"""Built-in basics: the `mlp` model and the native `fgsm` and `pgd` attacks."""

from __future__ import annotations

import robench
from robench import Norm

from .gradient_attacks import FGSM, PGD
from .mlp import MLP


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("mlp", MLP, "Fully connected ReLU network trained with cross-entropy (optionally adversarially)")]


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec("fgsm", FGSM, "Fast gradient sign method (Linf) / fast gradient method (L2): one step of size eps", norms=(Norm.Linf, Norm.L2)),
        robench.AttackSpec("pgd", PGD, "Projected gradient descent with random start and restarts (Madry et al.), Linf or L2", norms=(Norm.Linf, Norm.L2)),
    ]
