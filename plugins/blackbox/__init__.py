"""Built-in robench plugins: black-box and transfer attacks (the 01-loss papers' threat models).

- ``substitute``: Papernot et al.'s substitute-model attack from the target's labels only.
- ``transfer``: any white-box attack plugin run on a source model, verified on the target.
"""

from __future__ import annotations

import robench

from .substitute import Substitute
from .transfer import Transfer


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec(
            "substitute",
            Substitute,
            "Substitute-model black-box attack (Papernot et al.): labels only, Jacobian augmentation, FGSM/PGD on the substitute",
            norms=(robench.Norm.Linf,),
        ),
        robench.AttackSpec(
            "transfer",
            Transfer,
            "White-box attack crafted on a source model (suite key `source:`), verified on the target",
            norms=(robench.Norm.L0, robench.Norm.L1, robench.Norm.L2, robench.Norm.Linf),
        ),
    ]
