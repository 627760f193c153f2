"""Built-in datasets: scikit-learn's 8x8 digits (embedded) and MNIST, Fashion-MNIST, CIFAR-10 from files."""

from __future__ import annotations

import robench

from .files import Cifar10, FashionMnist, Mnist
from .digits import Digits
from .extra import Celeba, Gtsrb, ImageFolder, Saturated, Stl10


@robench.hookimpl
def robench_datasets():
    return [
        robench.DatasetSpec("digits", Digits, "scikit-learn's 8x8 handwritten digits (1797 images, ships with the package)"),
        robench.DatasetSpec("mnist", Mnist, "MNIST 28x28 digits from mnist.npz or the official idx .gz files"),
        robench.DatasetSpec("fashion_mnist", FashionMnist, "Fashion-MNIST 28x28 from fashion_mnist.npz or the official idx .gz files"),
        robench.DatasetSpec("cifar10", Cifar10, "CIFAR-10 32x32 RGB from cifar10.npz or cifar-10-python.tar.gz"),
        robench.DatasetSpec("stl10", Stl10, "STL-10 96x96 RGB (10 classes) from the official binary release stl10_binary/"),
        robench.DatasetSpec("gtsrb", Gtsrb, "GTSRB traffic signs (43 classes) from the official image folders, cropped and resized"),
        robench.DatasetSpec("celeba", Celeba, "CelebA aligned faces as a binary attribute task (default black vs brown hair)"),
        robench.DatasetSpec("imagefolder", ImageFolder, "Any ImageNet-style folder tree <root>/<split>/<class>/<image>"),
        robench.DatasetSpec("saturated", Saturated, "Another dataset with saturated pixels (p = inf: binarized), as in Ding et al. 2019"),
    ]
