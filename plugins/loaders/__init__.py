"""Built-in robench plugin ``loaders``: pretrained networks read from files, never trained.

* ``torch-file``: an architecture (``package.module:factory`` or ``file.py:factory``, called with
  ``kwargs``) plus a weights file (safetensors, or a ``.pt``/``.pth`` state dict);
* ``torchscript``: a ``torch.jit`` archive;
* ``onnx``: an ONNX graph, converted to torch by onnx2torch (gradients flow, white-box attacks work).

Files are named relative to the suite's folder and checked when the suite is validated; their
SHA-256 (and the architecture's source file) is part of the model key, so new weights never reuse
old results. Every network is put in eval mode with its parameters frozen, optionally behind a
``normalize`` layer so that inputs stay in [0, 1]. These models are never trained and never cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

import robench
from robench.errors import RobenchError

from .loading import (
    Normalized,
    architecture_factory,
    architecture_source,
    check_outputs,
    freeze,
    load_onnx,
    load_torchscript,
    load_weights,
    split_architecture,
)

SUITE_PATH = {"robench_path": "suite"}


class Normalize(robench.Params):
    """Per-channel ``(x - mean) / std`` applied in front of the network."""

    mean: list[float] = Field(min_length=1, description="per-channel mean (one value per input channel)")
    std: list[float] = Field(min_length=1, description="per-channel standard deviation, > 0")

    @model_validator(mode="after")
    def _same_length(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values and std {len(self.std)}; give one of each per channel")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        return self


class LoadedParams(robench.Params):
    normalize: Normalize | None = Field(None, description="optional {mean: [...], std: [...]} put in front of the network")


class TorchFileParams(LoadedParams):
    architecture: str = Field(
        description="'package.module:factory' (importable) or 'file.py:factory' (relative to the suite's folder): "
                    "a callable returning the nn.Module")
    code: Path | None = Field(None, json_schema_extra=SUITE_PATH,
                              description="the .py file of the architecture (set from 'file.py:factory'; relative to the suite's folder)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the factory")
    weights: Path = Field(json_schema_extra=SUITE_PATH,
                          description="state dict: .safetensors, or .pt/.pth read with torch.load(weights_only=True); "
                                      "a state_dict/model wrapper key and a module. prefix are handled")

    @model_validator(mode="before")
    @classmethod
    def _file_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("architecture"), str):
            module, sep, attr = data["architecture"].partition(":")
            if sep and module.endswith(".py"):
                if data.get("code") not in (None, module):
                    raise ValueError(f"architecture names the file {module!r} and code names {data['code']!r}; give one")
                data = {**data, "code": module, "architecture": f"{Path(module).stem}:{attr}"}
        return data

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, v: str) -> str:
        split_architecture(v)
        return v

    @model_validator(mode="after")
    def _importable(self):
        # Only the top-level package is looked up (finding it runs no code); the rest is imported at run time.
        if self.code is None:
            import importlib.util

            top = split_architecture(self.architecture)[0].split(".")[0]
            if importlib.util.find_spec(top) is None:
                raise ValueError(f"architecture {self.architecture!r}: no module {top!r} on the Python path; install its package, "
                                 "or name a file next to the suite: architecture: file.py:factory")
        return self


class FileParams(LoadedParams):
    file: Path = Field(json_schema_extra=SUITE_PATH, description="the model file, relative to the suite's folder")


class _Loaded(robench.TorchModel):
    """A network read from a file: never trained, never cached, eval mode, parameters frozen."""

    trainable = False
    what_format = "model file"  # how messages name the model; {field} is one of its parameters

    @property
    def what(self) -> str:
        return self.what_format.format(**dict(self.params))

    def load(self) -> torch.nn.Module:
        raise NotImplementedError

    def build(self) -> torch.nn.Module:
        net = self.load()
        norm = self.params.normalize
        if norm is not None:
            channels = self.info.input_shape[0]
            if len(norm.mean) != channels:
                raise RobenchError(f"normalize: {len(norm.mean)} mean/std values for inputs with {channels} channels")
            net = Normalized(net, norm.mean, norm.std)
        freeze(net)
        check_outputs(net, self.info.input_shape, self.info.num_classes, self.what)
        return net

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device)).float()

    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: robench.Context) -> None:
        raise RobenchError(f"{type(self).__name__} loads fixed weights and is never trained")

    def eval(self) -> robench.Model:
        freeze(self.net)
        return self


class TorchFile(_Loaded):
    """An architecture from Python code plus a weights file (safetensors or a torch state dict)."""

    Params = TorchFileParams
    what_format = "torch-file {weights} with {architecture}"

    @classmethod
    def content_files(cls, params: TorchFileParams) -> list[Path]:
        src = architecture_source(params.architecture, params.code)
        return [src] if src is not None else []

    def load(self) -> torch.nn.Module:
        p: TorchFileParams = self.params
        factory = architecture_factory(p.architecture, p.code)
        try:
            net = factory(**p.kwargs)
        except Exception as exc:
            raise RobenchError(f"architecture {p.architecture}({', '.join(f'{k}={v!r}' for k, v in p.kwargs.items())}) "
                                f"raised {type(exc).__name__}: {exc}") from None
        if not isinstance(net, torch.nn.Module):
            raise RobenchError(f"architecture {p.architecture} returned {type(net).__name__}, not a torch.nn.Module")
        load_weights(net, p.weights)
        return net


class TorchScript(_Loaded):
    """A TorchScript archive (torch.jit.save of a scripted or traced network)."""

    Params = FileParams
    what_format = "torchscript {file}"

    def load(self) -> torch.nn.Module:
        return load_torchscript(self.params.file)


class Onnx(_Loaded):
    """An ONNX graph converted to torch by onnx2torch, so gradients flow."""

    Params = FileParams
    what_format = "onnx {file}"

    def load(self) -> torch.nn.Module:
        return load_onnx(self.params.file)


@robench.hookimpl
def robench_models():
    return [
        robench.ModelSpec("torch-file", TorchFile,
                          "Pretrained net: architecture factory + weights (safetensors / .pt state dict); never trained"),
        robench.ModelSpec("torchscript", TorchScript, "Pretrained net from a TorchScript file; never trained"),
        robench.ModelSpec("onnx", Onnx, "Pretrained net from an ONNX file (converted by onnx2torch, differentiable); never trained"),
    ]
