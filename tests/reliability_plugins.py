"""Fault-injecting plugins for the reliability tests, loaded with --plugin reliability_plugins.

Each does real work (a random-sign attack, a least-squares linear model, the digits data) and then
misbehaves in one chosen way: sleep, die by SIGKILL, run out of memory, raise a CUDA error, return
NaN or wrongly shaped tensors. Paths are parameters of type Path, so the harness confines them to
the data dir.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

import robench
from robench import Norm


class NoiseParams(robench.Params):
    norm: Norm = Field(Norm.Linf, description="Linf or L2")
    sleep: float = Field(0.0, ge=0, description="seconds to sleep per batch (to be killed mid-batch)")
    fault: Literal["none", "sigkill_once", "sigkill", "oom_over", "oom_always", "cuda_error", "shape", "int", "list", "inf"] = Field(
        "none", description="how to misbehave")
    max_batch: int = Field(10, ge=1, description="oom_over: batches larger than this raise a CUDA out-of-memory error")
    flag: Path | None = Field(None, description="sigkill_once: killed only while this file (in the data dir) is absent; "
                                                "also touched at each batch start for the other faults")


class SignNoise(robench.Attack):
    """eps times a random sign per value, then clipped to [0, 1]: deterministic under the harness's batch seed."""

    Params = NoiseParams
    kind = "bounded"
    needs = frozenset({"scores"})
    randomized = True

    def __init__(self, params):
        super().__init__(params)
        self.norm = params.norm

    def _flag(self, ctx) -> Path | None:
        if self.params.flag is None:
            return None
        return self.params.flag if self.params.flag.is_absolute() else Path(ctx.data_dir) / self.params.flag

    def run(self, model, x, y, *, eps, ctx, source=None):
        p = self.params
        flag = self._flag(ctx)
        if p.fault == "sigkill" or (p.fault == "sigkill_once" and flag is not None and not flag.exists()):
            if flag is not None:
                flag.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        if flag is not None and p.fault not in ("sigkill_once", "sigkill"):
            with open(flag, "a") as f:  # one line per batch started: tests see a batch in flight
                f.write(f"{len(x)}\n")
        if p.fault == "oom_always" or (p.fault == "oom_over" and len(x) > p.max_batch):
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(x)} GiB (injected)")
        if p.fault == "cuda_error":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        if p.sleep:
            time.sleep(p.sleep)
        noise = torch.randn(x.shape, device=x.device).sign()
        if self.norm == Norm.L2:
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
        adv = (x + eps * noise).clamp(0, 1)
        model.scores(adv)  # one query, counted by the harness
        if p.fault == "shape":
            return adv[:, :, :-1]
        if p.fault == "int":
            return (adv * 255).to(torch.uint8)
        if p.fault == "list":
            return adv.tolist()
        if p.fault == "inf":
            adv[0] = float("inf")  # out of the box: must be rejected, not crash
        return adv


class LinearParams(robench.Params):
    ridge: float = Field(1.0, gt=0, description="ridge penalty of the least-squares fit")
    fault: Literal["none", "nan", "shape", "classes"] = Field("none", description="how scores() misbehaves")


class LeastSquares(robench.Model):
    """One-vs-all ridge regression on the pixels: trains in milliseconds, deterministic."""

    Params = LinearParams

    def __init__(self, params, info):
        super().__init__(params, info)
        d = 1
        for s in info.input_shape:
            d *= s
        self.weight = torch.zeros(info.num_classes, d)
        self.bias = torch.zeros(info.num_classes)

    def fit(self, x, y, ctx):
        a = torch.cat([x.flatten(1).double().cpu(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
        t = torch.nn.functional.one_hot(y.cpu(), self.info.num_classes).double() * 2 - 1
        w = torch.linalg.solve(a.T @ a + self.params.ridge * torch.eye(a.shape[1], dtype=torch.float64), a.T @ t)
        self.weight, self.bias = w[:-1].T.float().contiguous(), w[-1].float().contiguous()

    def scores(self, x):
        s = x.flatten(1) @ self.weight.to(x.device).T + self.bias.to(x.device)
        f = self.params.fault
        if f == "nan":
            s = s.clone()
            s[0, 0] = float("nan")
        elif f == "shape":
            s = s[:-1]
        elif f == "classes":
            s = s[:, :-1]
        return s

    def state_dict(self):
        return {"weight": self.weight, "bias": self.bias}

    def load_state_dict(self, state):
        self.weight, self.bias = state["weight"], state["bias"]


class BadDigitsParams(robench.Params):
    fault: Literal["nan", "inf", "shape", "range", "labels", "label_count"] = Field("nan", description="what is wrong with the data")


class BadDigits(robench.Dataset):
    """The digits, broken in one chosen way."""

    Params = BadDigitsParams

    def info(self):
        return robench.DatasetInfo("bad-digits", (1, 8, 8), tuple(str(i) for i in range(10)))

    def load(self, split, data_dir):
        from robench_plugins.datasets.digits import Digits, DigitsParams

        x, y = Digits(DigitsParams()).load(split, data_dir)
        x, y = x.clone(), y.clone()
        f = self.params.fault
        if f == "nan":
            x[3, 0, 2, 2] = float("nan")
        elif f == "inf":
            x[5, 0, 1, 1] = float("inf")
        elif f == "shape":
            x = x[:, :, :7, :]
        elif f == "range":
            x = x * 16
        elif f == "labels":
            y[0] = 10
        elif f == "label_count":
            y = y[:-1]
        return x, y


@robench.hookimpl
def robench_attacks():
    return [robench.AttackSpec("fault-noise", SignNoise, "random-sign noise that misbehaves on request", norms=(Norm.Linf, Norm.L2))]


@robench.hookimpl
def robench_models():
    return [robench.ModelSpec("fault-linear", LeastSquares, "ridge regression whose scores misbehave on request")]


@robench.hookimpl
def robench_datasets():
    return [robench.DatasetSpec("fault-digits", BadDigits, "digits with NaN, Inf, wrong shape or bad labels")]
