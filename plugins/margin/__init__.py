"""Built-in robench plugin ``margin``: deep margin maximization (Matyasko, thesis chapter 3).

Exposes :func:`rho_adv` / :func:`rho_adv_from_norms`, the chapter's attack-independent summary
of minimal-attack results (mean relative L2 perturbation, usually under DeepFool).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

import robench
from robench.nets import lenet
from robench.training import TrainParams, train_classifier

from .losses import margin_loss, rho_adv, rho_adv_from_norms

__all__ = ["Margin", "MarginParams", "rho_adv", "rho_adv_from_norms", "margin_loss"]

# The thesis' MNIST setting (section 3.5.1): Adam at its default rate with exponential decay 0.95
# per epoch, batches of 100, 100 epochs.
THESIS_TRAINING: dict[str, Any] = {"epochs": 100, "batch_size": 100, "lr": 1e-3, "optimizer": "adam", "schedule": "exp", "lr_decay": 0.95}
THESIS_C = {"l2": 0.1, "l1": 0.01, "none": 0.0}


class MarginParams(TrainParams):
    """Network, regulariser and training (unset training fields follow the thesis' MNIST setting)."""

    arch: Literal["mlp", "lenet"] = Field("mlp", description="mlp: fully connected ReLU net; lenet: LeNet-5 (ReLU)")
    hidden: tuple[int, ...] = Field((1000, 1000, 1000), min_length=1, description="mlp only: hidden layer widths (thesis: 3 x 1000)")
    reg: Literal["l2", "l1", "none"] = Field(
        "l2", description="margin sensitivity norm: l2 (L2 margin), l1 (Linf margin), none (plain hinge loss)"
    )
    C: float | None = Field(None, ge=0, description="regularisation weight; default: the thesis' 0.1 for l2, 0.01 for l1")

    @model_validator(mode="before")
    @classmethod
    def _thesis_defaults(cls, data: Any) -> Any:
        return {**THESIS_TRAINING, **data} if isinstance(data, dict) else data

    @property
    def weight(self) -> float:
        return THESIS_C[self.reg] if self.C is None or self.reg == "none" else self.C


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: tuple[int, ...]) -> torch.nn.Module:
    dims = [math.prod(input_shape), *hidden]
    layers: list[torch.nn.Module] = [torch.nn.Flatten()]
    for a, b in zip(dims, dims[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    layers.append(torch.nn.Linear(dims[-1], num_classes))
    return torch.nn.Sequential(*layers)


class Margin(robench.TorchModel):
    """A classifier trained with the multiclass hinge loss plus C times its margin sensitivity."""

    Params = MarginParams

    def build(self) -> torch.nn.Module:
        p: MarginParams = self.params
        if p.arch == "lenet":
            return lenet(self.info.input_shape, self.info.num_classes).eval()
        return mlp(self.info.input_shape, self.info.num_classes, p.hidden).eval()

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        p: MarginParams = self.params
        q = 1.0 if p.reg == "l1" else 2.0
        k = self.info.num_classes
        torch.manual_seed(ctx.seed)  # initial weights depend on the run seed only
        self.net = self.build()
        train_classifier(
            self.net, x, y, p, ctx, loss_fn=lambda net, xb, yb: margin_loss(net, xb, yb, C=p.weight, q=q, num_classes=k)
        )
        self.to(ctx.device)


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec(
            "margin",
            Margin,
            "Deep margin maximization (thesis ch. 3): hinge loss + C * max_j ||grad f_y - grad f_j|| (L2 or L1), MLP or LeNet",
        )
    ]
