"""Built-in robench plugins: the convex baselines of the 01-loss papers (linear SVM, sigmoid MLP)."""

from __future__ import annotations

import robench

from .models import SVM, MLPSigmoid


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec("svm", SVM, "linear SVM (hinge loss, scikit-learn LinearSVC), optionally a bootstrapped majority-vote ensemble"),
        robench.ModelSpec("mlp_sigmoid", MLPSigmoid, "one layer of sigmoid hidden units (20 by default), logistic loss, SGD (batch 200, momentum 0.9, lr 0.01); optional bootstrapped votes"),
    ]
