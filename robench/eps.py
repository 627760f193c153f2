"""How an eps is written and what it may be: a number or a fraction (``8/255``), ``NORM=EPS[,EPS...]``
lists, the suite's :data:`Eps` field type, and the largest eps per norm that the [0, 1] box allows.
Used by the suite schema (:mod:`robench.suite`), its ``paper:`` values (:mod:`robench.suite_paper`)
and the command-line options that take an eps."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

from .api import Norm

_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*$")


def parse_eps(value: Any) -> float:
    """An eps as written by a user: a number (``0.03``, ``1e-3``) or a fraction ``a/b`` (``8/255``).

    Returns a finite float >= 0; raises ValueError with a one-line reason otherwise. Used for the
    suite's ``epsilons`` and ``headline`` and by command-line options that take an eps.
    """
    if isinstance(value, bool):
        raise ValueError(f"an eps is a number or a fraction like 8/255, not {value!r}")
    if isinstance(value, (int, float)):
        eps = float(value)
    elif isinstance(value, str):
        m = _FRACTION.match(value)
        if m:
            num, den = float(m.group(1)), float(m.group(2))
            if den == 0:
                raise ValueError(f"eps {value!r} divides by zero")
            eps = num / den
        else:
            try:
                eps = float(value.strip())
            except ValueError:
                raise ValueError(f"an eps is a number or a fraction like 8/255, not {value!r}") from None
    else:
        raise ValueError(f"an eps is a number or a fraction like 8/255, not {type(value).__name__}")
    if not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number, got {value!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {value!r}")
    return eps


def parse_norm_eps(text: str) -> tuple[Norm, list[float]]:
    """``"Linf=8/255"`` or ``"L2=0.5,1.0"`` -> (Norm.Linf, [0.0313...]); ValueError when malformed."""
    norm_text, sep, values = text.partition("=")
    if not sep or not values.strip():
        raise ValueError(f"expected NORM=EPS[,EPS...] (e.g. Linf=8/255), got {text!r}")
    try:
        norm = Norm(norm_text.strip())
    except ValueError:
        raise ValueError(f"unknown norm {norm_text.strip()!r}; norms are {[str(n) for n in Norm]}") from None
    return norm, [parse_eps(v) for v in values.split(",")]


def distinct_eps(values: list[float]) -> list[float]:
    """A list of eps values sorted, each at most once (ValueError naming a repeated one)."""
    seen: set[float] = set()
    for e in values:
        if e in seen:
            raise ValueError(f"eps {e:g} is listed twice; each eps is one column of the leaderboard")
        seen.add(e)
    return sorted(values)


#: An eps field of a suite: written as a number or a fraction, held as a float.
Eps = Annotated[float, BeforeValidator(parse_eps)]


def eps_limits(input_shape: tuple[int, ...]) -> dict[Norm, float]:
    """The largest eps per norm that can still matter for inputs in the [0, 1] box of this shape:
    Linf 1, L2 sqrt(numel), L1 numel, L0 the number of pixels (L0 counts pixels, not channels)."""
    numel = math.prod(input_shape)
    pixels = math.prod(input_shape[1:]) if len(input_shape) >= 2 else numel
    return {Norm.Linf: 1.0, Norm.L2: math.sqrt(numel), Norm.L1: float(numel), Norm.L0: float(pixels)}
