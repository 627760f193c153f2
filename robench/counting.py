"""The harness's view of a model: the counting wrapper, and the checks applied wherever tensors
cross a plugin boundary (images and labels from datasets, scores from models, candidates from attacks)."""

from __future__ import annotations

from typing import Any

import torch

from .api import Model
from .errors import RobenchError


def check_batch(x: torch.Tensor, who: str, shape: tuple[int, ...] | None = None) -> None:
    """Inputs crossing a plugin boundary must be finite, in [0, 1], and of the declared shape."""
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise RobenchError(f"{who}: images have shape {tuple(x.shape[1:])}, but the dataset declares {tuple(shape)}")
    if not torch.isfinite(x).all():
        raise RobenchError(f"{who}: images contain NaN or Inf")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise RobenchError(f"{who}: image values must lie in [0, 1], found [{float(x.min()):.3g}, {float(x.max()):.3g}]")


def check_labels(x: torch.Tensor, y: torch.Tensor, num_classes: int, who: str) -> None:
    """Labels from a dataset: one integer in 0..num_classes-1 per image."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise RobenchError(f"{who}: expected one label per image ({len(x)}), got labels of shape {shape}")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise RobenchError(f"{who}: labels must be integers, got {y.dtype}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise RobenchError(f"{who}: labels must lie in 0..{num_classes - 1}, found {int(y.min())}..{int(y.max())}")


def check_scores(s: Any, n: int, num_classes: int, who: str, *, nan: bool = True) -> None:
    """Scores from a model: (N, C) for N inputs, no NaN (argmax of a NaN row would fake a prediction)."""
    if not isinstance(s, torch.Tensor):
        raise RobenchError(f"{who}: scores() returned {type(s).__name__}, expected a tensor")
    if s.dim() != 2 or s.shape[0] != n or s.shape[1] != num_classes:
        raise RobenchError(f"{who}: scores() returned shape {tuple(s.shape)} for {n} inputs; expected ({n}, {num_classes})")
    if nan and torch.isnan(s.detach()).any():
        bad = int(torch.isnan(s.detach()).any(1).sum())
        raise RobenchError(f"{who}: scores() returned NaN for {bad} of {n} inputs")


def check_attack_output(adv: Any, x: torch.Tensor, who: str) -> None:
    """An attack's candidates: a float tensor shaped like its input (NaN rows mean 'no adversarial')."""
    if not isinstance(adv, torch.Tensor):
        raise RobenchError(f"{who}: run() returned {type(adv).__name__}, expected a tensor")
    if tuple(adv.shape) != tuple(x.shape):
        raise RobenchError(f"{who}: run() returned shape {tuple(adv.shape)} for inputs of shape {tuple(x.shape)}")
    if not adv.dtype.is_floating_point:
        raise RobenchError(f"{who}: run() returned dtype {adv.dtype}, expected a floating-point tensor")


class CountingModel(Model):
    """Wraps a model so the harness, not the attack, counts forward and backward passes (rows).

    An attack reaches the model only through this wrapper: :meth:`scores`, :meth:`predict`,
    :meth:`surrogate` and the methods the model declares in ``Model.exposes`` (counted; those of
    kind ``"weights"`` only for attacks that declare the need ``"weights"``, and returned as
    copies). The wrapped model is not an attribute an attack is meant to read.
    """

    def __init__(self, inner: Model, who: str | None = None, *, check_nan: bool = True,
                 needs: tuple[str, ...] | frozenset[str] = (), model_key: str = ""):
        self.__model = inner
        self.who = who or f"model {type(inner).__name__}"
        # The NaN scan forces a host sync per call (costly in an attack's inner loop on CUDA); the
        # harness's own predictions (clean, verification) always scan, so a NaN cannot fake a result.
        self.check_nan = check_nan
        self.needs = frozenset(needs)
        #: a stable identity of the model (its key), for attacks that cache per target (e.g. a substitute)
        self.model_key = model_key
        self.params = inner.params
        self.info = inner.info
        self.device = inner.device
        self.differentiable = inner.differentiable
        self.randomized = inner.randomized
        self.framework = inner.framework
        self.exposes = dict(getattr(inner, "exposes", {}) or {})
        self.forward_rows = 0
        self.backward_rows = 0
        self.weight_reads = 0
        #: the current batch's budget and best-so-far tracker (robench.budget), set by the harness per batch
        self.tracker = None

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        out = self.__model.scores(x)
        check_scores(out, x.shape[0], self.info.num_classes, self.who, nan=self.check_nan)
        n = out.shape[0]
        self.forward_rows += n
        tracker = self.tracker
        if tracker is not None:
            out = tracker.forward_call(x, out)  # charged per sample; rows past the budget come back constant
        if out.requires_grad:
            state = tracker.focus_state() if tracker is not None else None  # whose rows these are, as at this call

            def count(grad, n=n):
                self.backward_rows += n
                if tracker is not None:
                    live = tracker.backward_mask(n, state)
                    if live is not None:  # past the backward budget: no gradient for those rows
                        grad = grad * live.to(grad.device, grad.dtype)[:, None]
                return grad
            out.register_hook(count)
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.scores(x).argmax(dim=1)

    def surrogate(self) -> Model | None:
        # The surrogate's passes bypass this wrapper: under a budget that would be unbudgeted queries, so refuse.
        # (The harness's own via-surrogate path wraps the surrogate itself, so its passes are charged.)
        tracker = self.tracker
        if tracker is not None and tracker.budget is not None:
            raise RobenchError(f"{self.who}: surrogate() cannot be used under a query budget (its passes would not be "
                               "counted against the budget); run the attack without a budget")
        return self.__model.surrogate()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the wrapper does not define: the model's declared capabilities.
        exposes = self.__dict__.get("exposes") or {}
        kind = exposes.get(name)
        if kind is None or name.startswith("_"):
            raise AttributeError(f"{self.__dict__.get('who', 'the model')} does not expose {name!r} to attacks "
                                 "(a model declares what attacks may call in Model.exposes)")
        method = getattr(self.__dict__["_CountingModel__model"], name)
        if kind == "weights":
            def read(*args, **kwargs):
                if "weights" not in self.needs:
                    raise RobenchError(f"{self.who}: {name}() returns the model's weights; an attack that reads them must "
                                       "declare needs 'weights' (white-box access, shown in the leaderboard)")
                self.weight_reads += 1
                return _copy(method(*args, **kwargs))
            return read
        if kind == "forward":
            def forward(x, *args, **kwargs):
                tracker = self.tracker
                if tracker is not None and tracker.budget is not None:
                    raise RobenchError(f"{self.who}: {name}() cannot be used under a query budget (the harness cannot make "
                                       "its output uninformative past the budget); use scores()")
                out = method(x, *args, **kwargs)
                self.forward_rows += int(x.shape[0])
                return out
            return forward
        raise RobenchError(f"{self.who}: Model.exposes[{name!r}] is {kind!r}; expected 'weights' or 'forward'")

    def reset(self) -> None:
        self.forward_rows = self.backward_rows = self.weight_reads = 0


def _copy(value: Any) -> Any:
    """Weights handed to an attack: detached copies, so writing into them changes nothing."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value
