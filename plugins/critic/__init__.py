"""Built-in robench plugin ``critic``: robust learning with an adversary critic (Matyasko, thesis
chapter 4), plus the chapter's high-confidence L2 attack as the attack ``high-confidence``."""

from __future__ import annotations

import robench

from .model import Critic, HighConfidenceAttack


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec(
            "critic",
            Critic,
            "Adversary critic (thesis ch. 4): classifier trained so its high-confidence adversarials fool a critic; MLP or LeNet",
        )
    ]


@robench.hookimpl
def robench_attacks():
    return [
        robench.AttackSpec(
            "high-confidence",
            HighConfidenceAttack,
            "Thesis ch. 4 attack: L2 steps towards the closest boundary's class until it has the clean confidence; minimal",
            norms=(robench.Norm.L2,),
        )
    ]
