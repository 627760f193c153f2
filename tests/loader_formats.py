"""One small trained net saved in every format the loaders plugin reads, next to a hand-written
plugin holding the same net: the fixture of tests/test_loaders.py and of benchmarks/bench_loaders.py."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

NETS = '''
import torch
from torch import nn


def make(hidden=24):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
'''

# A hand-written plugin holding the same net (the reference the loaders must agree with).
REFERENCE = '''
from pathlib import Path

import robench
from safetensors.torch import load_file

import loader_nets


class Ref(robench.TorchModel):
    trainable = False

    def build(self):
        net = loader_nets.make()
        net.load_state_dict(load_file(str(Path(__file__).with_name("net.safetensors"))))
        return net.eval()


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("loader-reference", Ref, "the test net, hand-loaded")]
'''


def _train(net: torch.nn.Module) -> None:
    from robench_plugins.datasets.digits import Digits, DigitsParams

    x, y = Digits(DigitsParams()).load("train", Path("."))
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()


def save_formats(folder: Path) -> torch.nn.Module:
    """Write ``loader_nets.py`` and ``loader_ref_plugin.py`` into ``folder`` (put on ``sys.path``, where
    the reference plugin imports ``loader_nets`` from), train the net and save it as ``net.safetensors``,
    ``net.pt`` (a training script's checkpoint), ``net.ts`` (TorchScript) and ``net.onnx``."""
    from safetensors.torch import save_file

    (folder / "loader_nets.py").write_text(NETS)
    (folder / "loader_ref_plugin.py").write_text(REFERENCE)
    sys.path.insert(0, str(folder))
    import loader_nets

    torch.manual_seed(0)
    net = loader_nets.make()
    _train(net)
    net.eval()
    state = net.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "net.safetensors"))
    # A training script's checkpoint: wrapped in {"state_dict": ...}, keys prefixed by DataParallel.
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, folder / "net.pt")
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 1, 8, 8)), str(folder / "net.ts"))
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(folder / "net.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return net
