"""A reproduction suite's ``paper:`` reference values and ``claims:`` (the rules its verdicts come from).

``paper:`` gives the paper's number for a cell of the suite (model, attack, metric, eps) and where the
paper prints it. A claim is one rule over the stored results (robench.claims evaluates it)::

    claims:
      - claim: MLP01 keeps more accuracy than MLP under the substitute at every eps from 4/255
        by: network paper, Fig. 3
        left: {model: mlp01, attack: substitute}
        op: ">"
        right: {model: mlp, attack: substitute}
        eps: {from: 4/255}

Operators: ``>`` / ``<`` (left against a cell or a number), ``between`` (left, or left / right
as a ratio, inside ``range``), ``within`` (left within ``points`` of a cell, or of the paper's value
when ``right`` is omitted). A reference without ``model`` stands for each of ``models`` (default:
every model of the suite); with ``left`` omitted too, a ``within`` claim runs over every ``paper:``
value (of ``where`` when given). ``at_least: k``: k of the instances suffice (default: all).
Every name and eps must be the suite's: anything else is a located validation error.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .eps import Eps
from .suite_text import line_note

#: What a cell's number is: accuracies in % (as the papers print them), norms as they are.
Metric = Literal["robust", "clean", "mean_norm", "median_norm"]
ACCURACIES = ("robust", "clean")
BEST = "best"  # the per-sample best of every attack of a norm (robench.metrics.BEST)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CellRef(_Strict):
    """A cell of the suite: a model against an attack (none: its clean accuracy)."""

    model: str | None = Field(None, description="a model of the suite (omitted: each of the claim's models)")
    attack: str | None = Field(None, description="an attack of the suite, or 'best' (omitted: clean accuracy)")
    norm: str | None = Field(None, description="for attack 'best': the norm (default: the suite's only one)")


class PaperValue(CellRef):
    """The paper's number for one cell of the suite."""

    model: str = Field(description="a model of the suite")
    metric: Metric | None = Field(None, description="robust (default with an attack), clean (default without), mean_norm, median_norm")
    eps: Eps | None = Field(None, description="for robust: the eps (default: the suite's headline eps of the attack's norm)")
    value: float = Field(description="the paper's number: accuracies in %, norms as printed")
    where: str = Field(min_length=1, max_length=200, description="the table or figure, e.g. 'Table III'")
    page: int | str | None = Field(None, description="the page of the paper")
    note: str | None = Field(None, max_length=300, description="how the number was read, e.g. 'read from the figure'")


class EpsRange(_Strict):
    """The eps values of a range of the suite's epsilons: ``{from: 4/255}``, ``{to: 0.1}`` or both."""

    start: Eps | None = Field(None, alias="from", description="the smallest eps (inclusive); written `from:`")
    to: Eps | None = Field(None, description="the largest eps (inclusive)")


class Claim(_Strict):
    """One statement about the results, as a rule the verdict is computed from."""

    claim: str = Field(min_length=1, max_length=500, description="the sentence, as the paper or the page states it")
    by: str | None = Field(None, max_length=200, description="who states it and where, e.g. 'substitute paper, abstract'")
    metric: Metric = Field("robust", description="what both sides compare (accuracies in %)")
    left: CellRef | None = Field(None, description="the cell the claim is about (omitted with op within: every paper value)")
    op: Literal[">", "<", "between", "within"] = Field(
        description="> / <: left above / below right (or value); between: left (or left / right) inside range; "
                    "within: left within points of right (or of the paper's value)")
    right: CellRef | None = Field(None, description="the cell compared with")
    value: float | None = Field(None, description="for > / <: a number to compare with instead of a cell (% for accuracies)")
    by_more_than: float = Field(0, ge=0, description="for > / <: the margin the difference must exceed (points for accuracies)")
    range: tuple[float, float] | None = Field(None, description="for between: [low, high] (with right: of the ratio left / right)")
    points: float | None = Field(None, gt=0, description="for within: the distance allowed (points for accuracies)")
    where: str | None = Field(None, description="for within the paper: only the paper values of this table or figure")
    eps: Eps | list[Eps] | EpsRange | None = Field(None, description="an eps, a list, or {from:, to:} (default: the headline eps)")
    models: list[str] | None = Field(None, min_length=1, description="the models a reference without model stands for")
    at_least: int | None = Field(None, ge=1, description="how many instances must hold (default: all)")

    @model_validator(mode="after")
    def _shape(self):
        if self.op in (">", "<"):
            if (self.right is None) == (self.value is None):
                raise ValueError(f"op {self.op} compares left with right: (a cell) or value: (a number); give one")
        if self.op == "between" and self.range is None:
            raise ValueError("op between needs range: [low, high]")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range {list(self.range)}: low is above high")
        if self.op == "within" and self.points is None:
            raise ValueError("op within needs points: N")
        if self.left is None and not (self.op == "within" and self.right is None):
            raise ValueError("only a within claim against the paper may leave out left (it then runs over the paper values)")
        # a field that the operator ignores would look like part of the claim: refuse it
        for name, ops in (("value", (">", "<")), ("by_more_than", (">", "<")), ("range", ("between",)), ("points", ("within",))):
            if name in self.model_fields_set and self.op not in ops:
                raise ValueError(f"{name} is for op {' / '.join(ops)}, not {self.op}")
        if self.where is not None and not (self.op == "within" and self.left is None):
            raise ValueError("where picks the paper values of a within claim without left; this claim would ignore it")
        return self


# -- references against the suite ---------------------------------------------------------------


def paper_problems(suite, attack_norms: dict[str, tuple[str, str]], lines: dict, problems: list[tuple[str, str]]) -> None:
    """A ``paper:`` value or claim naming a model, attack or eps the suite does not have: a located problem.
    ``attack_norms``: attack name -> (norm, kind), for the attacks whose parameters validated."""
    models = [m.name for m in suite.models]
    attacks = {a.name: a for a in suite.attacks}
    eps = {str(k): list(v) for k, v in suite.epsilons.items()}

    def where(loc: tuple) -> str:
        from .suite_text import format_loc

        return format_loc(loc) + line_note(lines, loc)

    def check_ref(ref: CellRef, loc: tuple, metric: str, eps_values: list[float] | None, model_list: list[str], eps_loc: tuple) -> None:
        for m in ([ref.model] if ref.model is not None else model_list):
            if m not in models:
                problems.append((where(loc + (("model",) if ref.model is not None else ())),
                                 f"refers to model {m!r}, which is not in this suite; models are {models}"))
        if ref.attack is None:  # the model's clean accuracy
            if metric not in ACCURACIES:
                problems.append((where(loc), f"metric {metric} needs an attack (a cell without one is the clean accuracy)"))
            return
        if ref.attack != BEST and ref.attack not in attacks:
            problems.append((where(loc + ("attack",)), f"refers to attack {ref.attack!r}, which is not in this suite; "
                                                       f"attacks are {list(attacks) + [BEST]}"))
            return
        if ref.attack != BEST:
            only = attacks[ref.attack].models
            for m in ([ref.model] if ref.model is not None else model_list):
                if only and m in models and m not in only:
                    problems.append((where(loc), f"attack {ref.attack!r} does not run against model {m!r} (its models: {only})"))
        norm = attack_norms.get(ref.attack, (None,))[0] if ref.attack != BEST else (ref.norm or (list(eps)[0] if len(eps) == 1 else None))
        if ref.attack == BEST and norm is None:
            problems.append((where(loc + ("norm",)), f"attack best needs norm: one of {list(eps)}"))
        if metric == "robust" and norm is not None and eps_values:
            for e in eps_values:
                if e not in eps.get(str(norm), []):
                    problems.append((where(eps_loc), f"eps {e:g} is not one of the suite's {norm} epsilons {[float(f'{x:g}') for x in eps.get(str(norm), [])]}"))

    for i, p in enumerate(suite.paper):
        metric = p.metric or ("robust" if p.attack else "clean")
        check_ref(p, ("paper", i), metric, [p.eps] if p.eps is not None else None, models, ("paper", i, "eps"))
    for i, c in enumerate(suite.claims):
        loc = ("claims", i)
        for j, m in enumerate(c.models or []):
            if m not in models:
                problems.append((where(loc + ("models", j)), f"refers to model {m!r}, which is not in this suite; models are {models}"))
        model_list = [m for m in (c.models or models) if m in models]
        ref_eps = explicit_eps(c)
        for side in ("left", "right"):
            ref = getattr(c, side)
            if ref is not None:
                check_ref(ref, loc + (side,), c.metric, ref_eps, model_list, loc + ("eps",))
        if isinstance(c.eps, EpsRange):
            norms = {attack_norms.get(r.attack, (None,))[0] for r in (c.left, c.right) if r is not None and r.attack}
            values = [e for n in norms if n is not None for e in eps.get(str(n), [])]
            if norms and not any(in_range(e, c.eps) for e in values):
                problems.append((where(loc + ("eps",)), "no eps of the suite falls in this range"))
        if c.left is None and c.where is not None and not any(p.where == c.where for p in suite.paper):
            problems.append((where(loc + ("where",)), f"no paper: value is from {c.where!r}; they are from {sorted({p.where for p in suite.paper})}"))
        if c.left is None and not suite.paper:
            problems.append((where(loc), "a within claim without left runs over the paper: values, and the suite has none"))


def explicit_eps(c: Claim) -> list[float] | None:
    """The eps a claim names one by one (None: a range or the headline)."""
    if isinstance(c.eps, list):
        return list(c.eps)
    if isinstance(c.eps, float):
        return [c.eps]
    return None


def in_range(e: float, r: EpsRange) -> bool:
    return (r.start is None or e >= r.start) and (r.to is None or e <= r.to)
