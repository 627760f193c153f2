"""Built-in robench plugins: foolbox 3.3.4 attacks (names ``fb-<attack>``; see docs/attacks-library.md).

foolbox itself is imported only when an attack runs.
"""

from __future__ import annotations

import robench
from robench import Norm

from .adapters import (
    FoolboxBB,
    FoolboxBoundary,
    FoolboxCWL2,
    FoolboxDDN,
    FoolboxDeepFool,
    FoolboxEAD,
    FoolboxFMN,
    FoolboxHSJ,
)

ALL_NORMS = (Norm.L0, Norm.L1, Norm.L2, Norm.Linf)


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec("fb-cw-l2", FoolboxCWL2, "Carlini & Wagner L2 (foolbox); minimal, gradients", norms=(Norm.L2,)),
        robench.AttackSpec("fb-ddn", FoolboxDDN, "Decoupled Direction and Norm, L2 (foolbox); minimal, gradients", norms=(Norm.L2,)),
        robench.AttackSpec("fb-deepfool", FoolboxDeepFool, "DeepFool, norm L2 or Linf (foolbox); minimal, gradients", norms=(Norm.L2, Norm.Linf)),
        robench.AttackSpec("fb-ead", FoolboxEAD, "Elastic-net attack, L1 (foolbox); minimal, gradients", norms=(Norm.L1,)),
        robench.AttackSpec("fb-bb", FoolboxBB, "Brendel & Bethge, norm L0/L1/L2/Linf (foolbox); minimal, gradients, from the documented init", norms=ALL_NORMS),
        robench.AttackSpec("fb-fmn", FoolboxFMN, "Fast Minimum-Norm, norm L0/L1/L2/Linf (foolbox); minimal, gradients", norms=ALL_NORMS),
        robench.AttackSpec("fb-hsj", FoolboxHSJ, "HopSkipJump, norm L2 or Linf (foolbox); minimal, decisions only, query cap", norms=(Norm.L2, Norm.Linf)),
        robench.AttackSpec("fb-boundary", FoolboxBoundary, "Boundary attack, L2 (foolbox); minimal, decisions only, query cap", norms=(Norm.L2,)),
    ]
