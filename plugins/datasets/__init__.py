"""Built-in datasets: scikit-learn's 8x8 digits (embedded) and MNIST, Fashion-MNIST, CIFAR-10 from files."""

from __future__ import annotations

import robench

from .files import Cifar10, FashionMnist, Mnist
from .digits import Digits


@robench.hookimpl
def robench_datasets():
    return [
        robench.DatasetSpec("digits", Digits, "scikit-learn's 8x8 handwritten digits (1797 images, ships with the package)"),
        robench.DatasetSpec("mnist", Mnist, "MNIST 28x28 digits from mnist.npz or the official idx .gz files"),
        robench.DatasetSpec("fashion_mnist", FashionMnist, "Fashion-MNIST 28x28 from fashion_mnist.npz or the official idx .gz files"),
        robench.DatasetSpec("cifar10", Cifar10, "CIFAR-10 32x32 RGB from cifar10.npz or cifar-10-python.tar.gz"),
    ]
