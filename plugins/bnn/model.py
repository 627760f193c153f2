"""The larq binarized network and its torch bridge.

Forward passes run in TensorFlow. Input gradients for white-box attacks come from
``tf.GradientTape`` inside a ``torch.autograd.Function``, so every torch attack works on the BNN
unchanged: sign activations use larq's ``approx_sign`` (forward: sign; backward: the ApproxSign
surrogate 2 - 2|x| on |x| <= 1, Liu et al. 2018), as in the 01-loss network paper, and those
surrogate gradients are what attacks see. The state dict holds every TF variable as a tensor.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np
import torch
from pydantic import Field

import robench

INSTALL_HINT = "pip install 'robench[tf]'"


def import_tf():
    """Import TensorFlow and larq with legacy Keras (tf_keras), or fail with how to install them."""
    legacy_before = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq 0.14 needs Keras 2 (tf_keras)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules and "larq" not in sys.modules and not legacy_before:
        raise RuntimeError(
            "the bnn model plugin needs TF_USE_LEGACY_KERAS=1, but TensorFlow was imported before with "
            "Keras 3; set TF_USE_LEGACY_KERAS=1 in the environment before anything imports TensorFlow"
        )
    try:
        import larq
        import tensorflow as tf
    except ImportError as exc:
        raise ImportError(
            f"the bnn model plugin needs TensorFlow and larq, which are not installed ({exc}); "
            f"install the tf extra: {INSTALL_HINT}"
        ) from exc
    return tf, larq


class BNNParams(robench.Params):
    """A binarized MLP and how it is trained (Adam on the latent real-valued weights, as in larq)."""

    hidden: tuple[int, ...] = Field(
        (256, 256), min_length=1, description="widths of the binarized hidden layers (the 01-loss paper: one layer of 20)"
    )
    batch_norm: bool = Field(True, description="batch normalisation after every binarized layer (standard for BNNs)")
    epochs: int = Field(20, ge=1, le=10_000, description="passes over the training data")
    batch_size: int = Field(128, ge=1, description="examples per optimisation step")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate (latent weights are clipped to [-1, 1])")
    lr_decay: float = Field(0.95, gt=0, le=1, description="learning rate factor per epoch")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples")


def build_keras_model(p: BNNParams, input_dim: int, num_classes: int):
    """The larq network: [binary dense - batch norm] per layer, sign activations in between."""
    tf, lq = import_tf()
    keras = tf.keras
    layers: list[Any] = [keras.layers.InputLayer(input_shape=(input_dim,))]
    widths = [*p.hidden, num_classes]
    for i, width in enumerate(widths):
        layers.append(
            lq.layers.QuantDense(
                width,
                use_bias=False,
                # the first layer sees the real-valued image; later ones the signs of activations
                input_quantizer=None if i == 0 else "approx_sign",
                kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip",
                name=f"dense_{i}",
            )
        )
        if p.batch_norm:
            last = i == len(widths) - 1
            layers.append(keras.layers.BatchNormalization(momentum=0.9, scale=not last, name=f"bn_{i}"))
    return keras.Sequential(layers)


class _TFScores(torch.autograd.Function):
    """Torch op whose forward is the TF model and whose backward is a TF vector-Jacobian product."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, owner: "BNN") -> torch.Tensor:  # type: ignore[override]
        ctx.owner = owner
        ctx.save_for_backward(x)
        out = owner._tf_forward(x.detach().cpu().numpy())
        return torch.from_numpy(out).to(x.device)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        g = ctx.owner._tf_vjp(x.detach().cpu().numpy(), grad_out.detach().cpu().numpy())
        return torch.from_numpy(g).to(x.device), None


class BNN(robench.Model):
    """Binarized MLP in larq/TensorFlow, differentiable from torch through a GradientTape bridge."""

    Params = BNNParams
    differentiable = True
    framework = "tensorflow"

    def __init__(self, params: BNNParams, info: robench.DatasetInfo):
        super().__init__(params, info)
        self.input_dim = int(np.prod(info.input_shape))
        self.tf, _ = import_tf()
        self.keras_model = build_keras_model(params, self.input_dim, info.num_classes)

    # -- TF side -----------------------------------------------------------------------------
    def _tf_forward(self, x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float32)
        return self.keras_model(flat, training=False).numpy().astype(np.float32)

    def _tf_vjp(self, x: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
        tf = self.tf
        flat = tf.constant(x.reshape(len(x), -1).astype(np.float32))
        with tf.GradientTape() as tape:
            tape.watch(flat)
            out = self.keras_model(flat, training=False)
        g = tape.gradient(out, flat, output_gradients=tf.constant(grad_out.astype(np.float32)))
        return g.numpy().reshape(x.shape).astype(np.float32)

    # -- robench Model -----------------------------------------------------------------------
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32:
            x = x.float()
        return _TFScores.apply(x, self)

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        tf = self.tf
        p: BNNParams = self.params
        if p.train_limit is not None:
            x, y = x[: p.train_limit], y[: p.train_limit]
        tf.keras.utils.set_random_seed(ctx.seed)  # python, numpy and TF seeds
        # a fresh model after seeding, so weights depend on ctx.seed only
        self.keras_model = build_keras_model(p, self.input_dim, self.info.num_classes)
        self.keras_model.compile(
            optimizer=tf.keras.optimizers.legacy.Adam(learning_rate=p.lr),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        xs = x.detach().cpu().reshape(len(x), -1).numpy().astype(np.float32)
        ys = y.detach().cpu().numpy().astype(np.int64)

        class _Progress(tf.keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                ctx.report(epoch + 1, p.epochs)

        schedule = tf.keras.callbacks.LearningRateScheduler(lambda epoch: p.lr * p.lr_decay**epoch)
        self.keras_model.fit(
            xs, ys, batch_size=p.batch_size, epochs=p.epochs, shuffle=True, verbose=0, callbacks=[_Progress(), schedule]
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        # index prefix: Keras variable names are not unique across models built in one process
        return {f"{i:03d}.{_clean(v.name)}": torch.from_numpy(np.array(v.numpy())) for i, v in enumerate(self.keras_model.weights)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        variables = self.keras_model.weights
        if len(state) != len(variables):
            raise ValueError(f"bnn: state has {len(state)} tensors, the model has {len(variables)} variables")
        for (name, tensor), var in zip(sorted(state.items()), variables):
            if tuple(tensor.shape) != tuple(var.shape):
                raise ValueError(f"bnn: tensor {name} has shape {tuple(tensor.shape)}, variable {var.name} wants {tuple(var.shape)}")
            var.assign(tensor.detach().cpu().numpy())

    def binarized_kernels(self) -> list[np.ndarray]:
        """The +-1 weights the forward pass uses (sign of the latent kernels, larq's sign(0) = 1)."""
        return [np.where(v.numpy() >= 0, 1.0, -1.0).astype(np.float32) for v in self.keras_model.weights if "kernel" in v.name]


def _clean(name: str) -> str:
    return name.split(":")[0].replace("/", ".")
