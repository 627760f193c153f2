"""`mlp`: a fully connected ReLU classifier, the simplest trainable torch model."""

from __future__ import annotations

import math

import torch
from pydantic import Field

import robench
from robench.training import TrainParams, train_classifier


class MLPParams(TrainParams):
    hidden: int = Field(256, ge=1, description="units per hidden layer")
    layers: int = Field(2, ge=1, description="number of hidden layers")


class MLP(robench.TorchModel):
    Params = MLPParams

    def build(self) -> torch.nn.Module:
        p = self.params
        dims = [math.prod(self.info.input_shape)] + [p.hidden] * p.layers
        layers: list[torch.nn.Module] = [torch.nn.Flatten()]
        for a, b in zip(dims, dims[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        layers.append(torch.nn.Linear(dims[-1], self.info.num_classes))
        return torch.nn.Sequential(*layers)

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        train_classifier(self.net, x, y, self.params, ctx)
