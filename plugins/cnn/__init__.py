"""Built-in robench plugin ``cnn``: convolutional classifiers (LeNet, SimpleNet, the 01-loss papers'
4-block substitute, a VGG-style CIFAR net), optionally adversarially trained."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, model_validator

import robench
from robench.training import TrainParams, train_classifier

from robench.nets import ARCHS

# Training recipes per architecture: keys the suite does not set take these values (then the
# TrainParams defaults). ``vgg``: SGD + one-cycle + crop/flip + label smoothing, the usual fast
# CIFAR recipe; the others: Adam as in the papers.
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "small": {"epochs": 30, "batch_size": 64, "lr": 3e-3},
    "lenet": {"epochs": 20},
    "simplenet80": {"epochs": 20},
    "simplenet500": {"epochs": 20},
    "conv4": {"epochs": 20},
    "vgg": {
        "epochs": 30,
        "batch_size": 256,
        "lr": 0.2,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "schedule": "onecycle",
        "augment": "crop-flip",
        "label_smoothing": 0.1,
        "channels_last": True,
        "bf16": True,
    },
}


class CNNParams(TrainParams):
    """Architecture plus training settings (the fields of TrainParams; unset ones follow the arch's recipe)."""

    arch: Literal["small", "lenet", "simplenet80", "simplenet500", "conv4", "vgg"] = Field(
        "small",
        description=(
            "small: 2 conv layers (tests, quickstart); lenet: LeNet-5; simplenet80/simplenet500: LeNet convs + one "
            "hidden layer of 80/500 (01-loss papers); conv4: 4 conv blocks 32/64/128/256 (the papers' substitute); "
            "vgg: VGG-style CIFAR net (6 conv-BN-ReLU layers)"
        ),
    )
    width: int = Field(64, ge=4, description="vgg only: channels of the first stage (then 2x, 4x)")
    channels_last: bool = Field(False, description="use channels-last memory format (often faster for conv nets on CPU)")

    @model_validator(mode="wrap")
    @classmethod
    def _arch_recipe(cls, data: Any, handler: Any) -> Any:
        given = set(data) if isinstance(data, dict) else None
        if isinstance(data, dict):
            arch = data.get("arch", "small")
            if isinstance(arch, str) and arch in ARCH_DEFAULTS:
                data = {**ARCH_DEFAULTS[arch], **data}
        out = handler(data)
        if given is not None and isinstance(out, BaseModel):
            # the recipe's values are defaults, not settings the suite chose: validate's "has no effect"
            # warnings are about what the suite sets (the values, and so the model key, are unchanged)
            object.__setattr__(out, "__pydantic_fields_set__", out.model_fields_set & given)
        return out


class CNN(robench.TorchModel):
    """A convolutional classifier trained with cross-entropy (and optional adversarial training)."""

    Params = CNNParams

    def build(self) -> torch.nn.Module:
        p: CNNParams = self.params
        if p.arch == "vgg":
            net = ARCHS["vgg"](self.info.input_shape, self.info.num_classes, width=p.width)
        else:
            net = ARCHS[p.arch](self.info.input_shape, self.info.num_classes)
        if p.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net.eval()

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.params.channels_last else x

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._format(x)).float()

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        torch.manual_seed(ctx.seed)  # initial weights depend on the run seed only
        self.net = self.build()
        if self.params.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_classifier(self.net, x, y, self.params, ctx)
        self.to(ctx.device)


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec(
            "cnn",
            CNN,
            "Convolutional nets (small, LeNet-5, SimpleNet80/500, 4-block conv, VGG-style); plain or adversarially trained",
        )
    ]
