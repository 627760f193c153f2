"""The architecture of the cifar_l0 suites' VGGs (cnn plugin, arch vgg, width 32) as a factory with
no arguments, so that a zoo file loads with the torch-file plugin or with

    robench evaluate --model torch-file:zoo/<file>.safetensors --arch benchmarks/zoo_vgg.py:vgg32
"""
from robench.nets import vgg


def vgg32():
    return vgg((3, 32, 32), 10, width=32)
