"""Built-in robench plugin ``bnn``: a binarized network (larq on TensorFlow) behind the Model interface.

TensorFlow is imported lazily, on first use of the model, never at plugin registration: robench
works without the ``tf`` extra, and only using ``bnn`` asks for it.
"""

from __future__ import annotations

import robench

from .model import BNN


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec(
            "bnn",
            BNN,
            "Binarized MLP (larq/TensorFlow: binary weights, sign activations with approx-sign gradients); needs robench[tf]",
        )
    ]
