"""Built-in robench plugins: ART 1.20 attacks (names ``art-<attack>``; see docs/attacks-library.md).

ART itself is imported only when an attack runs.
"""

from __future__ import annotations

import robench
from robench import Norm

from .adapters import ARTAPGD, ARTCWL0, ARTCWL2, ARTCWLinf, ARTHSJ, ARTJSMA, ARTPGD, ARTPixel, ARTSquare


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec("art-cw-l2", ARTCWL2, "Carlini & Wagner L2 (ART); minimal, gradients", norms=(Norm.L2,)),
        robench.AttackSpec("art-cw-linf", ARTCWLinf, "Carlini & Wagner Linf (ART); minimal, gradients", norms=(Norm.Linf,)),
        robench.AttackSpec("art-cw-l0", ARTCWL0, "Carlini & Wagner L0 (ART); minimal, gradients", norms=(Norm.L0,)),
        robench.AttackSpec("art-hsj", ARTHSJ, "HopSkipJump, norm L2 or Linf (ART); minimal, decisions only, query cap", norms=(Norm.L2, Norm.Linf)),
        robench.AttackSpec("art-jsma", ARTJSMA, "Jacobian saliency map attack over all targets and theta +-1, smallest kept (ART); L0, gradients", norms=(Norm.L0,)),
        robench.AttackSpec("art-pixel", ARTPixel, "One-pixel / pixel attack by differential evolution (ART); L0, scores only", norms=(Norm.L0,)),
        robench.AttackSpec("art-apgd", ARTAPGD, "Auto-PGD with CE or DLR loss (ART), AutoAttack piece; bounded, gradients", norms=(Norm.Linf, Norm.L2)),
        robench.AttackSpec("art-square", ARTSquare, "Square attack (ART), AutoAttack piece; bounded, scores only", norms=(Norm.Linf, Norm.L2)),
        robench.AttackSpec("art-pgd", ARTPGD, "Projected gradient descent (ART), twin of `pgd`; bounded, gradients", norms=(Norm.Linf, Norm.L2)),
    ]
