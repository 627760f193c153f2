"""bit-depth-mlp: an example third-party defense for robench.

The defense rounds every input to ``bits`` bits before a small MLP ("feature squeezing"). Rounding
has a zero gradient almost everywhere, so the model declares ``differentiable = False`` and offers
a *surrogate*: the same network with a straight-through rounding (identity gradient, BPDA), which
robench hands to gradient attacks. Every adversarial is still verified on the real model.
"""

from __future__ import annotations

import torch
from pydantic import Field

import robench
from robench.training import TrainParams, train_classifier


class BitDepthParams(TrainParams):
    bits: int = Field(3, ge=1, le=8, description="bits kept per input value")
    hidden: int = Field(128, ge=1, description="hidden units of the MLP")


def _quantise(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return torch.round(x * levels) / levels


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bits):
        return _quantise(x, bits)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class BitDepthMLP(robench.TorchModel):
    Params = BitDepthParams
    differentiable = False  # rounding: gradients are zero almost everywhere

    def build(self) -> torch.nn.Module:
        d = 1
        for s in self.info.input_shape:
            d *= s
        return torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(d, self.params.hidden), torch.nn.ReLU(),
            torch.nn.Linear(self.params.hidden, self.info.num_classes),
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(_quantise(x.to(self.device), self.params.bits))

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        train_classifier(self.net, _quantise(x, self.params.bits), y, self.params, ctx)

    def surrogate(self) -> robench.Model:
        return _Surrogate(self)


class _Surrogate(robench.Model):
    """The same network, with a straight-through estimator in place of rounding."""

    def __init__(self, model: BitDepthMLP):
        super().__init__(model.params, model.info)
        self.model = model
        self.device = model.device

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.net(_StraightThrough.apply(x.to(self.device), self.params.bits))


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("bit-depth-mlp", BitDepthMLP, "MLP behind bit-depth reduction (feature squeezing); BPDA surrogate")]
