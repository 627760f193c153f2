"""Dishonest attack plugins, loaded with --plugin dishonest_plugins (never installed).

Each tries one way of making the harness store successes that are not real, or of poisoning the
cells that run after it: writing into its inputs or labels, changing the model it attacks (its
weights, an instance method, a class method), ending the process (``sys.exit``, ``os._exit``,
a segfault). Every one of them returns a tiny perturbation of the input, so any "success" the
harness stored for them would be fake.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

import torch

import robench
from robench import Norm


class _Bounded(robench.Attack):
    kind = "bounded"
    needs = frozenset({"decisions"})
    fixed_norm = Norm.Linf


def _tiny(x: torch.Tensor) -> torch.Tensor:
    return (x + 1e-3).clamp(0, 1)


def _real_models() -> list[robench.Model]:
    """The harness's model objects, found the way a hostile plugin would: through the garbage collector."""
    from robench.counting import CountingModel

    return [o for o in gc.get_objects()
            if isinstance(o, robench.TorchModel) and not isinstance(o, CountingModel)]


class EditInputs(_Bounded):
    """Returns a real adversarial far away (an image the model puts in another class), then writes a
    copy of it, shifted by 0.001, into its input: verified against its own x it would look like a
    success at Linf 0.001."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        if not hasattr(self, "pool"):  # its own copy, before poisoning the one it was given
            self.pool = ctx.pool.clone().to(x.device)
        pool = self.pool
        pred = model.predict(pool)
        adv = x.clone()
        for i in range(len(x)):
            other = torch.nonzero(pred != y[i]).flatten()
            if len(other):
                adv[i] = pool[other[0]]
        x.copy_((adv - 1e-3).clamp(0, 1))
        ctx.pool.zero_()  # and poison the pool it was given, in case the harness shares it with its data
        return adv


class EditLabels(_Bounded):
    """Writes wrong labels into its y: verified against its own y, the input itself would 'succeed'."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        y.copy_((y + 1) % model.info.num_classes)
        return _tiny(x)


class ChangeWeights(_Bounded):
    """Zeroes the real model's weights and biases all logits towards class 0: everything else is then
    'misclassified', in this cell and, unless restored, in every later one."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        for m in _real_models():
            with torch.no_grad():
                for p in m.net.parameters():
                    p.zero_()
                last = [mod for mod in m.net.modules() if isinstance(mod, torch.nn.Linear)][-1]
                last.bias[0] = 10.0
        return _tiny(x)


class PatchMethod(_Bounded):
    """Replaces the real model's scores() on the instance with one that always prefers class 0."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        for m in _real_models():
            num_classes = m.info.num_classes

            def scores(x, num_classes=num_classes):
                s = torch.zeros(len(x), num_classes)
                s[:, 0] = 1.0
                return s

            m.scores = scores
        return _tiny(x)


class PatchClass(_Bounded):
    """Replaces scores() on the real model's class (every instance, later ones too)."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        for m in _real_models():
            def scores(self, x):
                s = torch.zeros(len(x), self.info.num_classes)
                s[:, 0] = 1.0
                return s

            type(m).scores = scores
        return _tiny(x)


class Exit(_Bounded):
    def run(self, model, x, y, *, eps, ctx, source=None):
        sys.exit(3)


class HardExit(_Bounded):
    """Ends the process without cleanup: only process isolation survives it."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        os._exit(7)


class Segfault(_Bounded):
    def run(self, model, x, y, *, eps, ctx, source=None):
        ctypes.string_at(0)
        return _tiny(x)


class PatchVerifier(_Bounded):
    """Patches the harness's own verification code in its process so that every candidate counts as
    a success at norm 0. In-process nothing stops global patches (docs/reliability.md); under
    --isolate process the candidates are verified in the parent, which this code never reaches."""

    def run(self, model, x, y, *, eps, ctx, source=None):
        import robench.cell
        from robench.verify import Verdict

        def fake_verify(model, x, y, adv, clean_pred, norm, eps):
            n = len(x)
            zeros = torch.zeros(n)
            return Verdict(success=torch.ones(n, dtype=torch.bool), rejected=torch.zeros(n, dtype=torch.bool),
                           reasons=[None] * n, norms={k: zeros for k in Norm}, adversarial=adv)

        robench.cell.verify = fake_verify
        return _tiny(x)


@robench.hookimpl
def robench_attacks():
    specs = [
        ("dishonest-edit-x", EditInputs), ("dishonest-edit-y", EditLabels), ("dishonest-weights", ChangeWeights),
        ("dishonest-patch-method", PatchMethod), ("dishonest-patch-class", PatchClass), ("dishonest-exit", Exit),
        ("dishonest-os-exit", HardExit), ("dishonest-segfault", Segfault), ("dishonest-patch-verifier", PatchVerifier),
    ]
    return [robench.AttackSpec(name, cls, cls.__doc__ or name, norms=(Norm.Linf,)) for name, cls in specs]
