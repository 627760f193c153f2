"""The contract plugins code against: Model, Attack and Dataset, and the specs that register them.

Canonical tensors everywhere a plugin boundary is crossed: ``torch.float32``, NCHW, values in
[0, 1]; labels ``int64``. A plugin that works in TF or numpy converts at its own edge.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from .context import Context, construct  # noqa: F401  (robench.api.Context, as before the move)


class Norm(str, enum.Enum):
    """Threat models. L0 counts *pixels*: a pixel is changed if any of its channels changes."""

    L0 = "L0"
    L1 = "L1"
    L2 = "L2"
    Linf = "Linf"

    def __str__(self) -> str:  # "Linf", not "Norm.Linf", in messages and tables
        return self.value


AttackKind = Literal["bounded", "minimal"]
#: "weights": white-box access to the model's learned parameters, through what it declares in
#: :attr:`Model.exposes` (shown in the leaderboard's needs column).
Need = Literal["gradients", "scores", "decisions", "transfer", "weights"]


#: Largest whole number a parameter accepts unless its field declares its own ``le``/``lt``: no
#: loop count, width, size or budget of a built-in plugin needs more, and a larger value is a typo
#: (``steps: 1e18``) that would otherwise pass validation and run for ever.
PARAM_INT_MAX = 10**7


def _numbers_ok(value: Any, allow_inf: bool, int_max: int | None, path: str = "") -> None:
    """Raise ValueError for a NaN/infinite float or an out-of-range int anywhere inside ``value``."""
    if isinstance(value, bool):
        return
    if isinstance(value, float):
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise ValueError(f"must be a finite number{path}, got {value}")
    elif isinstance(value, int):
        if int_max is not None and abs(value) > int_max:
            raise ValueError(f"must be at most {int_max} in size{path} (a larger value is a typo, not a setting), got {value}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _numbers_ok(v, allow_inf, int_max, f" (item {i})")
    elif isinstance(value, dict):
        for k, v in value.items():
            _numbers_ok(v, allow_inf, int_max, f" (key {k!r})")


class Params(BaseModel):
    """Base class of every plugin's parameter model: unknown keys are an error, not a silent no-op.

    Numbers are checked generically: a float must be finite (NaN never; an infinity only where the
    field says ``json_schema_extra={"allow_inf": True}``), and an int without a declared upper bound
    may not exceed :data:`PARAM_INT_MAX` in size (items of lists and tuples included).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    @field_validator("*", mode="after")
    @classmethod
    def _finite_and_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name) if info.field_name else None
        extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
        declared_max = field is not None and any(getattr(m, k, None) is not None for m in field.metadata for k in ("le", "lt"))
        _numbers_ok(value, bool(extra.get("allow_inf")), None if declared_max else PARAM_INT_MAX)
        return value

    def inert(self) -> dict[str, str]:
        """Parameters that cannot affect the run given the other values, as ``{field: reason}`` (e.g.
        a random-start range when there is no random start). ``robench validate`` warns, with the
        YAML line, about those a suite sets explicitly. Override with ``out = super().inert()``."""
        return {}


class NoParams(Params):
    """For plugins without parameters."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about the data it is built for."""

    name: str
    input_shape: tuple[int, ...]  # (C, H, W)
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Model:
    """A classifier (a defense is a model plugin).

    Subclasses set the class attributes below and implement :meth:`scores`; trainable models
    implement :meth:`fit`, and the harness caches what :meth:`state_dict` returns (tensors only:
    checkpoints never carry code).
    """

    Params: ClassVar[type[Params]] = NoParams
    #: torch autograd flows through :meth:`scores`.
    differentiable: ClassVar[bool] = True
    framework: ClassVar[str] = "torch"
    #: predictions of the same input may differ between calls (e.g. noise, dropout at test time).
    randomized: ClassVar[bool] = False
    #: fit() must be called before use (False: model is complete at construction, e.g. analytic).
    trainable: ClassVar[bool] = True
    #: Methods beyond :meth:`scores` that attacks may call, by name, with what each reveals:
    #: ``"weights"`` (returns learned parameters; only attacks that declare the need ``"weights"``
    #: may call it) or ``"forward"`` (takes a batch ``x``; counted as one forward pass per row).
    #: The harness's counting wrapper forwards exactly these; nothing else of the model is reachable.
    exposes: ClassVar[dict[str, str]] = {}

    def __init__(self, params: Params, info: DatasetInfo):
        self.params = params
        self.info = info
        self.device = torch.device("cpu")

    @classmethod
    def content_files(cls, params: Params) -> list[Path]:
        """Files whose bytes determine this model beyond its path parameters (e.g. the source file
        of an architecture it imports). The harness puts the SHA-256 of each into the model key;
        the files named by ``Path`` parameters are hashed without being listed here."""
        return []

    # -- inference -------------------------------------------------------------------------
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Return (N, C) scores, C >= 2 (a binary model with one score s returns [-s, s])."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.scores(x).argmax(dim=1)

    def surrogate(self) -> Model | None:
        """A differentiable stand-in for gradient attacks on a non-differentiable model, or None."""
        return None

    # -- training and checkpoints ----------------------------------------------------------
    def fit(self, x: torch.Tensor, y: torch.Tensor, ctx: Context) -> None:
        """Train on canonical tensors. Must be deterministic for a given ctx.seed and device."""
        raise NotImplementedError(f"{type(self).__name__} does not implement fit()")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All learned state as named tensors."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def to(self, device: torch.device) -> Model:
        self.device = torch.device(device)
        return self

    def eval(self) -> Model:
        """Put the model in inference mode (no-op unless the model wraps an nn.Module)."""
        return self


class TorchModel(Model):
    """A Model backed by an ``nn.Module`` built by :meth:`build`; state is the module's state dict."""

    #: White box: :meth:`layers` hands a copy of the network to attacks that declare the need
    #: ``"weights"`` (the ``exact`` solver reads its layers). A subclass that sets its own
    #: ``exposes`` and still offers its layers includes ``"layers": "weights"``.
    exposes: ClassVar[dict[str, str]] = {"layers": "weights"}

    def __init__(self, params: Params, info: DatasetInfo):
        super().__init__(params, info)
        self.net = self.build()

    def layers(self) -> torch.nn.Module:
        """A copy of the network (in eval mode), for white-box attacks that read its layers."""
        import copy

        return copy.deepcopy(self.net).eval()

    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load trained weights; the net is left in inference mode (loaded weights are for attacking)."""
        self.net.load_state_dict(state)
        self.net.eval()

    def to(self, device: torch.device) -> Model:
        super().to(device)
        self.net.to(self.device)
        return self

    def eval(self) -> Model:
        self.net.eval()
        return self


class Attack:
    """An attack. ``run`` returns candidate adversarials; the harness (never the attack) decides
    which are real: it re-classifies them, checks the [0, 1] box and recomputes every norm.

    Subclasses set :attr:`Params`, :attr:`kind` and :attr:`needs`. ``self.norm`` is :attr:`fixed_norm`
    for attacks of one norm, else the parameters' ``norm`` (e.g. PGD's; L2 where there is none). One
    instance lives for one cell (one model, one eps): it may keep state across the cell's batches,
    e.g. a trained substitute.
    """

    Params: ClassVar[type[Params]] = NoParams
    kind: ClassVar[AttackKind] = "minimal"
    needs: ClassVar[frozenset[str]] = frozenset({"gradients"})
    #: the attack draws random numbers: the harness seeds torch/numpy before every batch.
    randomized: ClassVar[bool] = False
    #: the norm of attacks that have only one (None: taken from ``params.norm``).
    fixed_norm: ClassVar[Norm | None] = None

    def __init__(self, params: Params):
        self.params = params
        self.norm: Norm = self.fixed_norm if self.fixed_norm is not None else Norm(getattr(params, "norm", "L2"))

    def run(
        self,
        model: Model,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        eps: float | None,
        ctx: Context,
        source: Model | None = None,
    ) -> torch.Tensor:
        """Attack a batch.

        ``eps`` is the bound for ``bounded`` attacks and None for ``minimal`` ones. ``source`` is
        the model to craft on for attacks that need ``transfer``. Return a tensor shaped like
        ``x``; a row that is NaN, or equal to the input, means "no adversarial found".
        """
        raise NotImplementedError


class Dataset:
    """A source of labelled images. ``load`` returns canonical tensors of one split."""

    Params: ClassVar[type[Params]] = NoParams
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(self, params: Params):
        self.params = params

    def info(self) -> DatasetInfo:
        raise NotImplementedError

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x float32 NCHW in [0, 1], y int64). Read local files only: never download."""
        raise NotImplementedError

    def size(self, split: str, data_dir: Path) -> int | None:
        """Samples in ``split`` if known cheaply (without loading the images), else None.

        Optional: ``robench validate`` uses it to check a suite's ``offset`` before a run. Return
        None when the files are absent; raise UserInputError naming a file that is damaged.
        """
        return None


# -- registration specs ------------------------------------------------------------------------

PluginKind = Literal["model", "attack", "dataset"]


@dataclass(frozen=True)
class PluginSpec:
    """What a hook implementation returns for each plugin it provides."""

    name: str
    factory: type  # a Model, Attack or Dataset subclass
    description: str
    #: Filled in by the plugin manager: "built-in" or "<distribution> <version>" or "--plugin <module>".
    origin: str = ""

    @property
    def params(self) -> type[Params]:
        return self.factory.Params

    def with_origin(self, origin: str) -> PluginSpec:
        return dataclasses.replace(self, origin=origin)


@dataclass(frozen=True)
class ModelSpec(PluginSpec):
    kind: ClassVar[PluginKind] = "model"

    def capabilities(self) -> dict[str, Any]:
        f = self.factory
        return {
            "differentiable": f.differentiable,
            "framework": f.framework,
            "randomized": f.randomized,
            "surrogate": f.surrogate is not Model.surrogate,
        }


@dataclass(frozen=True)
class AttackSpec(PluginSpec):
    kind: ClassVar[PluginKind] = "attack"
    norms: tuple[Norm, ...] = (Norm.L2,)

    def capabilities(self) -> dict[str, Any]:
        return {
            "norms": [str(n) for n in self.norms],
            "kind": self.factory.kind,
            "needs": sorted(self.factory.needs),
        }


@dataclass(frozen=True)
class DatasetSpec(PluginSpec):
    kind: ClassVar[PluginKind] = "dataset"

    def capabilities(self) -> dict[str, Any]:
        splits = self.factory.splits
        # A wrapper dataset may derive its splits from its parameters (a property on instances).
        return {"splits": list(splits) if isinstance(splits, (tuple, list)) else ["(from parameters)"]}


def params_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """JSON schema of a parameter model (used by docs and `robench plugins --verbose`)."""
    return cls.model_json_schema()


class ScoresModule(torch.nn.Module):
    """An ``nn.Module`` view of any Model (for libraries such as foolbox that want a module).

    Gradients flow only if the model is ``differentiable``. The Model is held, not registered as a
    submodule, so ``.to()``/``.eval()`` on this wrapper do not touch it.
    """

    def __init__(self, model: Model):
        super().__init__()
        object.__setattr__(self, "model", model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.scores(x)
