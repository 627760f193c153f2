"""Transfer attack: a white-box attack plugin run on a *source* model; the harness then checks the
adversarials on the target. One suite attack entry per source gives one row of the papers'
source x target transfer tables.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

import robench
from robench.errors import PluginError, UserInputError


class TransferParams(robench.Params):
    attack: str = Field(description="name of the white-box attack plugin run on the source model (e.g. fgsm, pgd)")
    params: dict[str, Any] = Field(default_factory=dict, description="that plugin's parameters")
    evaluate: Literal["fooled", "all"] = Field(
        "fooled", description="fooled: the target sees only the adversarials that fooled the source; all: every perturbed image "
                              "(the 01-loss papers' protocol; the inner attack must offer keep_failed)"
    )


class Transfer(robench.Attack):
    """Adversarials crafted on ``source`` and returned unchanged for the harness to verify on the target.

    ``kind`` and ``norm`` are those of the inner attack (instance attributes, set on construction).
    The inner attack is built through the run's ``Context`` (so it may come from a ``--plugin``
    module); constructed without one, from the installed plugins. The target is never queried.
    """

    Params = TransferParams
    kind = "bounded"  # class default; each instance takes the inner attack's kind
    needs = frozenset({"transfer"})

    def __init__(self, params: TransferParams, ctx: robench.Context | None = None):
        super().__init__(params)
        if params.attack == "transfer":
            raise PluginError("transfer: the inner attack cannot itself be 'transfer'")
        ctx = ctx if ctx is not None else robench.Context()
        # evaluate: all asks the inner attack for every perturbed image, also those that do not fool the source
        inner_params = {**params.params, "keep_failed": True} if params.evaluate == "all" else params.params
        try:
            inner: robench.Attack = ctx.attack(params.attack, inner_params)
        except ValidationError as exc:
            if params.evaluate == "all" and any(tuple(e["loc"]) == ("keep_failed",) for e in exc.errors()):
                raise UserInputError(f"transfer: evaluate: all needs an inner attack that can return every perturbed image "
                                     f"(a keep_failed parameter: fgsm, linear_sign, mlp01_hidden); {params.attack!r} has none") from None
            problems = "; ".join(
                f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise UserInputError(f"transfer: invalid parameters for inner attack {params.attack!r}: {problems}") from None
        if "transfer" in inner.needs:
            raise PluginError(f"transfer: inner attack {params.attack!r} is itself a transfer attack")
        self.inner = inner
        self.kind = self.inner.kind
        self.norm = self.inner.norm
        self.randomized = type(inner).randomized

    def run(self, model, x, y, *, eps, ctx, source=None):
        if source is None:
            raise UserInputError(
                "transfer: no source model given; name it with `source: <model name>` on the suite's attack entry"
            )
        crafted_on = source
        if "gradients" in self.inner.needs and not getattr(source, "differentiable", True):
            crafted_on = source.surrogate()
            if crafted_on is None:
                raise UserInputError(
                    f"transfer: inner attack {self.params.attack!r} needs gradients, but the source model "
                    f"{type(source).__name__} is not differentiable and offers no surrogate()"
                )
        x_adv = self.inner.run(crafted_on, x, y, eps=eps, ctx=ctx)
        if x_adv.shape != x.shape:
            raise RuntimeError(f"transfer: inner attack {self.params.attack!r} returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}")
        return x_adv.detach().to(torch.float32)
