"""The pixel attack (Su et al.'s one-pixel attack; Vargas et al.'s pixel attack) in batched torch.

ART's ``PixelAttack`` with ``es=1`` (what robench's ``art-pixel`` adapter runs) searches, per image,
for ``pixels`` tuples (row, column, one value per channel in 0..255) by differential evolution:
SciPy-style ``best1bin`` with recombination 1 (every trial is ``best + F (a - b)``), the mutation
constant F dithered in U[0.5, 1) once per generation, a Latin-hypercube initial population of
``max(5, (400 // D) * D)`` members for D = pixels * (2 + channels) parameters, components that leave
the bounds redrawn uniformly, greedy replacement, at most ``max_iter`` generations, and an early stop
once the best member fools the model. Parameters are truncated to integers (positions taken modulo
the image size, values divided by 255).

This module runs the same evolution for all images of a batch at once, each generation's trials of
every image in one forward pass (in chunks of ``batch_size`` rows). Differences from ART, each
documented where it is implemented:

* every evaluated candidate is checked for success (ART only checks the best member after each
  generation), so an image stops at the first generation that produced any adversarial;
* the energy DE minimises is selectable: ``score`` is ART's (the true class's raw score), ``margin``
  (default) is the true class's score minus the best other score, which is negative exactly when the
  candidate is adversarial; ``prob`` is the softmax probability of the true class (Su et al.);
* the best member is tracked as the population's argmin (ART overwrites slot 0 with a new best and
  so drops the previous best from the population);
* ART's convergence test (``std <= -1 + 0.01 |mean|`` with its ``atol=-1``) is not applied: it can
  only fire when the mean energy exceeds 100 in magnitude;
* candidates that decode to the same integer tuples as another candidate of the same image, in the
  same generation or (where the tuple packs into one int64, e.g. one pixel of an image up to
  64 x 64 x 3) in an earlier one, are evaluated once: the model is deterministic, so their energy
  is reused (measured: about 40% fewer forward passes than ART at the same generations when the
  attack fails on LeNet / CIFAR-10).

Randomness comes from one CPU ``torch.Generator``, so results are the same on CPU and CUDA up to the
model's own floating-point differences.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Callable, ClassVar, Literal

import torch
from pydantic import Field

import robench
from robench import Norm
from robench.adapters import focus, unfocused
from robench.norms import changed_pixels

Scores = Callable[[torch.Tensor], torch.Tensor]
Loss = Literal["margin", "score", "prob"]


def energy(s: torch.Tensor, label: torch.Tensor, loss: Loss) -> torch.Tensor:
    """What DE minimises for scores ``s`` (R, K) of candidates whose true class is ``label`` (R,)."""
    true = s.gather(1, label[:, None]).squeeze(1)
    if loss == "score":
        return true
    if loss == "prob":
        return s.softmax(1).gather(1, label[:, None]).squeeze(1)
    other = s.scatter(1, label[:, None], -math.inf).amax(1)
    return true - other


def _pick_two_others(p: int, size: tuple[int, ...], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For every candidate c in 0..p-1 (last dim of ``size``): two distinct indices, both != c."""
    c = torch.arange(p).expand(size)
    a = torch.randint(0, p - 1, size, generator=g)
    r0 = a + (a >= c).long()
    lo, hi = torch.minimum(c, r0), torch.maximum(c, r0)
    b = torch.randint(0, p - 2, size, generator=g)
    b = b + (b >= lo).long()
    r1 = b + (b >= hi).long()
    return r0, r1


def pixel_attack(
    scores: Scores,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    pixels: int = 1,
    max_iter: int = 100,
    population: int = 400,
    loss: Loss = "margin",
    batch_size: int = 128,
    channels_last: bool = True,
    generator: torch.Generator,
    report: Callable[[int, int], None] | None = None,
    focus: Callable[[torch.Tensor], contextlib.AbstractContextManager] = unfocused,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differential evolution over ``pixels`` (row, column, value per channel) tuples per image.

    ``population`` is ART's 400 (the population is ``max(5, (population // D) * D)``). Returns
    ``(adv, queries)``: ``adv`` is NaN where no adversarial was found (the input where the model
    already misclassifies it) and ``queries`` the model evaluations per image. ``focus(samples)``
    (robench.adapters.focus) names the batch sample of each candidate row of a call, so the harness
    charges and tracks every candidate as a pass of its own sample.
    """
    n = len(x)
    if x.dim() != 4:
        raise ValueError(f"pixel attack: images must be (N, C, H, W), got shape {tuple(x.shape)}")
    _, ch, h, w = x.shape
    dev = x.device
    dp = pixels * (2 + ch)
    p = max(5, (population // dp) * dp)
    lo = torch.zeros(dp, dtype=torch.float64)
    hi = torch.tensor([h, w] + [255] * ch, dtype=torch.float64).repeat(pixels)
    y = y.to(dev)
    queries = torch.zeros(n, dtype=torch.long)
    out = torch.full_like(x, math.nan)

    with torch.no_grad():
        clean = scores(x).argmax(1) != y
    queries += 1
    out[clean] = x[clean]
    todo = (~clean).cpu()

    def decode(u: torch.Tensor) -> torch.Tensor:
        """Population values in [0, 1] (..., dp) -> integer parameters (..., dp) as ART truncates them,
        positions taken modulo the image size (ART's ``% img_rows``) so equal images get equal tuples."""
        v = (lo + u * (hi - lo)).long().view(*u.shape[:-1], pixels, 2 + ch)
        v[..., 0] %= h
        v[..., 1] %= w
        return v.view(u.shape)

    # Candidates are keyed by one int64 (sample, then every pixel's position and values) where that
    # fits in 62 bits (one pixel: up to 2**18 images of 64 x 64 RGB): a sorted cache of the keys
    # already evaluated, with their energies, lets DE skip candidates it re-proposes in a later
    # generation. Only non-adversarial candidates are ever cached (an adversarial ends its image).
    radix = torch.tensor([h, w] + [256] * ch, dtype=torch.long).repeat(pixels)
    bits = math.ceil(math.log2(max(n, 2))) + sum(math.ceil(math.log2(int(r))) for r in radix.tolist())
    packable = bits <= 62
    cache_keys = torch.empty(0, dtype=torch.long)
    cache_e = torch.empty(0, dtype=torch.float64)

    layout = {"channels_last": channels_last}

    def forward(imgs: torch.Tensor) -> torch.Tensor:
        """The model's scores; channels-last memory (same values and shape) where the model accepts it:
        CPU convolutions ran 1.4-2.4x faster on it. A model that cannot take it (e.g. ``view`` on its
        input) gets contiguous tensors from the first failure on."""
        with torch.no_grad():
            if layout["channels_last"]:
                try:
                    return scores(imgs.contiguous(memory_format=torch.channels_last))
                except RuntimeError:
                    layout["channels_last"] = False
            return scores(imgs)

    def pack(samples: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        code = samples.clone()
        for j in range(dp):
            code = code * radix[j] + params[:, j]
        return code

    def evaluate(samples: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Energies, adversarial flags and changed-pixel counts of candidates ``params`` (R, dp) of ``samples``.

        Duplicates within the call, and (where keys pack) candidates evaluated by an earlier call,
        cost no model evaluation: the model is deterministic, so their energies are reused."""
        nonlocal cache_keys, cache_e
        if packable:
            codes = pack(samples, params)
            uniq_codes, first, inverse = _unique_first(codes)
            uniq = torch.cat([samples[first, None], params[first]], 1)
            pos = torch.searchsorted(cache_keys, uniq_codes).clamp_max(max(len(cache_keys) - 1, 0))
            hit = (cache_keys[pos] == uniq_codes) if len(cache_keys) else torch.zeros(len(uniq), dtype=torch.bool)
        else:
            key = torch.cat([samples[:, None], params], 1)
            uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
            hit = torch.zeros(len(uniq), dtype=torch.bool)
        e = torch.empty(len(uniq), dtype=torch.float64)
        adv = torch.zeros(len(uniq), dtype=torch.bool)
        l0 = torch.zeros(len(uniq), dtype=torch.long)
        if packable and hit.any():
            e[hit] = cache_e[pos[hit]]
        miss = (~hit).nonzero().flatten()
        for start in range(0, len(miss), batch_size):
            rows = miss[start : start + batch_size]
            part = uniq[rows]
            imgs, changed = _perturb(x, part[:, 0].to(dev), part[:, 1:].to(dev), pixels, ch, h, w)
            with focus(part[:, 0]):
                s = forward(imgs)
            lab = y[part[:, 0].to(dev)]
            e[rows] = energy(s.double(), lab, loss).cpu()
            adv[rows] = (s.argmax(1) != lab).cpu()
            l0[rows] = changed.cpu()
            queries.index_add_(0, part[:, 0], torch.ones(len(part), dtype=torch.long))
        if packable and len(miss):
            new = miss[~adv[miss]]
            cache_keys = torch.cat([cache_keys, uniq_codes[new]])
            cache_e = torch.cat([cache_e, e[new]])
            order = cache_keys.argsort()
            cache_keys, cache_e = cache_keys[order], cache_e[order]
        return e[inverse], adv[inverse], l0[inverse]

    def finish(samples: torch.Tensor, params: torch.Tensor, e, adv, l0) -> torch.Tensor:
        """Store the fewest-pixel adversarial of each sample that has one; return the finished samples."""
        m = params.shape[0] // len(samples)
        adv, l0, e = adv.view(-1, m), l0.view(-1, m), e.view(-1, m)
        won = adv.any(1) & (l0.masked_fill(~adv, 1 << 30).amin(1) > 0)
        if not won.any():
            return torch.zeros(len(samples), dtype=torch.bool)
        rank = torch.where(adv & (l0 > 0), l0.double() * 1e6 + e.clamp(-1e5, 1e5), math.inf)
        j = rank.argmin(1)
        rows = torch.arange(len(samples))[won]
        chosen = params.view(len(samples), m, dp)[rows, j[rows]]
        imgs, _ = _perturb(x, samples[rows].to(dev), chosen.to(dev), pixels, ch, h, w)
        out[samples[rows].to(dev)] = imgs
        return won

    active = todo.nonzero().flatten()
    if len(active) == 0:
        return out, queries
    s_n = len(active)
    # Latin-hypercube initial population, per image and parameter (SciPy's init_population_lhs)
    seg = (torch.rand(s_n, p, dp, generator=generator, dtype=torch.float64) + torch.arange(p, dtype=torch.float64)[:, None]) / p
    perm = torch.rand(s_n, dp, p, generator=generator).argsort(-1).transpose(1, 2)
    pop = seg.gather(1, perm)
    params = decode(pop)
    flat_s = active.repeat_interleave(p)
    e, adv, l0 = evaluate(flat_s, params.view(-1, dp))
    won = finish(active, params.view(-1, dp), e, adv, l0)
    energies = e.view(s_n, p)
    keep = ~won
    active, pop, energies = active[keep], pop[keep], energies[keep]
    if report is not None:  # generations done (a failing image runs all of them)
        report(0, max_iter)

    for gen in range(max_iter):
        if len(active) == 0:
            break
        s_n = len(active)
        best = pop.gather(1, energies.argmin(1)[:, None, None].expand(s_n, 1, dp))
        f = 0.5 + 0.5 * torch.rand(s_n, 1, 1, generator=generator, dtype=torch.float64)
        r0, r1 = _pick_two_others(p, (s_n, p), generator)
        idx = lambda r: pop.gather(1, r[:, :, None].expand(s_n, p, dp))  # noqa: E731
        trial = best + f * (idx(r0) - idx(r1))
        outside = (trial < 0) | (trial > 1)
        trial = torch.where(outside, torch.rand(trial.shape, generator=generator, dtype=torch.float64), trial)
        params = decode(trial)
        flat_s = active.repeat_interleave(p)
        e, adv, l0 = evaluate(flat_s, params.view(-1, dp))
        won = finish(active, params.view(-1, dp), e, adv, l0)
        e = e.view(s_n, p)
        better = e < energies
        pop = torch.where(better[:, :, None], trial, pop)
        energies = torch.where(better, e, energies)
        keep = ~won
        active, pop, energies = active[keep], pop[keep], energies[keep]
        if report is not None:
            report(gen + 1, max_iter)
    if report is not None:
        report(max_iter, max_iter)
    return out, queries


def _unique_first(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sorted unique values of 1-D ``codes``, the index of one occurrence of each, and the inverse map."""
    uniq, inverse = torch.unique(codes, return_inverse=True)
    first = torch.empty(len(uniq), dtype=torch.long)
    first[inverse] = torch.arange(len(codes))
    return uniq, first, inverse


def _perturb(
    x: torch.Tensor, samples: torch.Tensor, params: torch.Tensor, pixels: int, ch: int, h: int, w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``x[samples]`` with each row's ``pixels`` tuples written in, and their changed-pixel counts."""
    imgs = x[samples].clone()
    flat = imgs.view(len(samples), ch, h * w)
    rows = torch.arange(len(samples), device=x.device)
    for q in range(pixels):
        t = params[:, q * (2 + ch) : (q + 1) * (2 + ch)]
        where = (t[:, 0] % h) * w + (t[:, 1] % w)
        flat[rows, :, where] = t[:, 2:].to(x.dtype) / 255.0
    changed = changed_pixels(imgs - x[samples]).sum(1)
    return imgs, changed


# -- the robench plugin -------------------------------------------------------------------------


class PixelParams(robench.Params):
    pixels: int = Field(1, ge=1, description="pixels changed (1: Su et al.'s one-pixel attack)")
    max_iter: int = Field(
        100, ge=1,
        description="differential-evolution generations (ART's default and the thesis: 100; 20 broke the same "
        "images as art-pixel's 100 on 20 CIFAR-10 LeNet images, 12x faster: docs/benchmarks/l0_native.md)",
    )
    population: int = Field(
        400, ge=5, description="population budget: max(5, (population // D) * D) members for D = pixels * (2 + channels) (ART: 400)"
    )
    loss: Loss = Field(
        "margin",
        description="energy DE minimises: margin (true score minus best other score), score (ART: the true "
        "class's raw score) or prob (softmax probability of the true class, Su et al.)",
    )
    batch_size: int = Field(
        128, ge=1, description="candidate images per forward call (128 ran faster per image than 512 or 1024 on 1 CPU thread)"
    )
    channels_last: bool = Field(
        True,
        description="hand the model candidate images in channels-last memory (same values; CPU convolutions "
        "ran 1.4x (LeNet) to 2.4x (VGG) faster per image, 1 thread); falls back to contiguous tensors if the model raises on them",
    )


class Pixel(robench.Attack):
    """Pixel attack by differential evolution (ART PixelAttack's DE, batched over images and candidates); minimal L0."""

    Params = PixelParams
    kind: ClassVar[str] = "minimal"
    needs: ClassVar[frozenset[str]] = frozenset({"scores"})
    randomized: ClassVar[bool] = True
    fixed_norm = Norm.L0

    def run(self, model, x, y, *, eps, ctx, source=None):
        p = self.params
        adv, queries = pixel_attack(
            model.scores, x.to(ctx.device), y.to(ctx.device),
            pixels=p.pixels, max_iter=p.max_iter, population=p.population, loss=p.loss,
            batch_size=p.batch_size, channels_last=p.channels_last, generator=ctx.generator(offset=4099), report=ctx.report,
            focus=functools.partial(focus, model),
        )
        q = queries.double()
        ctx.record("queries_mean", float(q.mean()) if len(q) else 0.0)
        ctx.record("queries_max", float(q.max()) if len(q) else 0.0)
        return adv
