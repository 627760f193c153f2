"""The substitute-model black-box attack (Papernot et al. 2017) as the 01-loss papers run it.

The attacker sees only the target's decisions. It draws a small seed set from unlabelled inputs
(``ctx.pool``, class-balanced by the target's own labels), has the target label it, trains a
substitute network, and grows the set by Jacobian-based augmentation: each point moves by
``lambda * sign(grad_x substitute_logit[label])``; the target labels the new points and the
substitute is retrained. Adversarials are then crafted white-box on the substitute (FGSM, or PGD)
and kept where the target misclassifies them.

The target is only ever called through ``model.predict`` (argmax of scores, without autograd), so
the attack works on any model plugin, differentiable or not.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

import robench
from robench.errors import UserInputError

from .nets import predict_in_chunks, substitute_cnn, substitute_mlp


class SubstituteParams(robench.Params):
    norm: Literal["Linf"] = Field("Linf", description="threat model (FGSM/PGD on the substitute are Linf attacks)")
    seed_size: int = Field(200, ge=2, description="initial points drawn from the evaluation inputs, class-balanced by the target's labels")
    rounds: int = Field(20, ge=1, description="substitute training rounds; Jacobian augmentation runs between rounds")
    jacobian_lambda: float = Field(0.1, gt=0, description="step of the Jacobian-based augmentation (Papernot's lambda)")
    lambda_sign: Literal["random", "fixed"] = Field(
        "random", description="random: the sign of lambda is drawn each round (the authors' runs); fixed: always +lambda"
    )
    max_samples: int = Field(
        6400, ge=2, description="cap on the substitute's training set: once doubling would pass it, the new points replace the old ones"
    )
    substitute: Literal["mlp", "cnn"] = Field("mlp", description="mlp: two hidden layers; cnn: 4 conv blocks (32/64/128/256)")
    hidden: int = Field(200, ge=1, description="units per hidden layer of the mlp substitute")
    activation: Literal["sigmoid", "relu"] = Field("sigmoid", description="activation of the mlp substitute (papers' text: sigmoid)")
    epochs: int = Field(20, ge=1, le=10_000, description="training epochs over the substitute's data in each round")
    batch_size: int = Field(128, ge=1, description="minibatch size of substitute training")
    lr: float = Field(1e-4, gt=0, description="Adam learning rate of substitute training")
    craft: Literal["fgsm", "pgd"] = Field("fgsm", description="white-box attack run on the substitute")
    pgd_steps: int = Field(10, ge=1, description="PGD iterations (craft: pgd)")
    pgd_step: float = Field(0.25, gt=0, description="PGD step size as a fraction of eps (craft: pgd)")
    record_rounds: bool = Field(
        True, description="record the target's accuracy on the first batch's adversarials after every round (costs one batch of queries per round)"
    )
    query_chunk: int = Field(1024, ge=1, description="inputs per call when querying the target or the substitute")


# Trained substitutes, per target. With record_rounds off, training does not depend on eps (only on
# the target's decisions, the parameters, the seed and the pool), so the cells of an eps sweep share
# one substitute, exactly the one each would have trained, instead of training one each. The target
# is named by the harness's model key (its wrapper, built anew per cell, carries it as `model_key`);
# a model called directly, outside the harness, is its own key (weakly: a target that is gone frees
# its substitutes).
_TRAINED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TRAINED_BY_KEY: OrderedDict[str, dict] = OrderedDict()  # the last few targets of this process
_KEEP_TARGETS = 4


def _shared_for(model) -> dict:
    key = getattr(model, "model_key", "")
    if isinstance(key, str) and key:
        shared = _TRAINED_BY_KEY.setdefault(key, {})
        _TRAINED_BY_KEY.move_to_end(key)
        while len(_TRAINED_BY_KEY) > _KEEP_TARGETS:
            _TRAINED_BY_KEY.popitem(last=False)
        return shared
    return _TRAINED.setdefault(model, {})  # TypeError: not weakly referenceable


class Substitute(robench.Attack):
    """Label-only substitute attack; the substitute is trained once per cell and reused for every batch."""

    Params = SubstituteParams
    kind = "bounded"
    needs = frozenset({"decisions"})
    randomized = True

    def __init__(self, params: SubstituteParams):
        super().__init__(params)
        # Trained on the first batch and kept for the cell's later batches: one instance, one target
        # (the harness builds one attack instance per cell and may wrap the model anew per batch).
        self.net: torch.nn.Module | None = None

    # -- the attack -----------------------------------------------------------------------------
    def run(self, model, x, y, *, eps, ctx, source=None):
        if eps is None:
            raise UserInputError("substitute is a bounded attack: it needs an eps")
        x, y = x.to(ctx.device), y.to(ctx.device)
        if self.net is None:
            self._train_or_reuse(model, x, y, eps, ctx)
        x_adv = self._craft(x, y, eps)
        # Keep only what fools the target (one decision query per sample): rows equal to the input
        # mean "no adversarial", so the harness never counts a failed transfer as a rejection.
        fooled = self._target_labels(model, x_adv, ctx) != y
        return torch.where(fooled[:, None, None, None], x_adv, x)

    # -- substitute training --------------------------------------------------------------------
    def _target_labels(self, model, x: torch.Tensor, ctx) -> torch.Tensor:
        return predict_in_chunks(lambda xb: model.predict(xb), x, self.params.query_chunk).to(ctx.device)

    def _sub_labels(self, x: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return predict_in_chunks(lambda xb: self.net(xb).argmax(1), x, self.params.query_chunk)

    def _build(self, info_shape, num_classes, device) -> torch.nn.Module:
        p = self.params
        if p.substitute == "mlp":
            net = substitute_mlp(info_shape, num_classes, p.hidden, p.activation)
        else:
            if len(info_shape) != 3:
                raise UserInputError(f"substitute: cnn needs image inputs (C, H, W), got shape {info_shape}")
            net = substitute_cnn(info_shape, num_classes)
        return net.to(device)

    def _train_or_reuse(self, model, x: torch.Tensor, y: torch.Tensor, eps: float, ctx) -> None:
        p = self.params
        pool = ctx.pool if ctx.pool is not None else x
        key = (
            p.model_dump_json(), ctx.seed, str(ctx.device), tuple(pool.shape),
            hashlib.sha256(pool.detach().cpu().contiguous().numpy().tobytes()).hexdigest(),
            eps if p.record_rounds else None,  # the per-round records are taken at the cell's eps
        )
        try:
            shared = _shared_for(model)
        except TypeError:  # a target that cannot be weakly referenced: train for this cell only
            shared = {}
        if key in shared:
            num_classes, state, records = shared[key]
            with torch.random.fork_rng(devices=[]):
                self.net = self._build(tuple(x.shape[1:]), num_classes, ctx.device)
            self.net.load_state_dict(state)
            self.net.eval()
            for name, value in records.items():
                ctx.record(name, value)
            ctx.record("substitute_reused", 1)
            return
        before = set(ctx.records)
        self._train(model, x, y if p.record_rounds else None, eps, ctx)
        records = {k: v for k, v in ctx.records.items() if k not in before}
        state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        shared.clear()  # one substitute per target is enough for a suite's cells, and bounds memory
        shared[key] = (self._num_classes, state, records)

    def _train(self, model, x: torch.Tensor, y: torch.Tensor | None, eps: float, ctx) -> None:
        p = self.params
        gen = ctx.generator(offset=7)
        pool = ctx.pool if ctx.pool is not None else x
        if ctx.pool is None:
            ctx.log("substitute: ctx.pool not set; drawing the seed set from the current batch")
        pool = pool.to(ctx.device)
        num_classes = getattr(getattr(model, "info", None), "num_classes", None)

        pool_labels = self._target_labels(model, pool, ctx)
        if num_classes is None:
            num_classes = max(int(pool_labels.max()) + 1, 2)
        x_sub = pool[_balanced_indices(pool_labels.cpu(), p.seed_size, gen).to(pool.device)]
        y_sub = self._target_labels(model, x_sub, ctx)
        queries = len(pool) + len(x_sub)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(ctx.seed + 7)
            self.net = self._build(tuple(x.shape[1:]), num_classes, ctx.device)
        self._num_classes = num_classes

        if y is not None:
            ctx.record("round_00_target_acc", float((self._target_labels(model, x, ctx) == y).float().mean()))
        for r in range(p.rounds):
            self._fit(x_sub, y_sub, gen)
            if y is not None:
                acc = (self._target_labels(model, self._craft(x, y, eps), ctx) == y).float().mean()
                ctx.record(f"round_{r + 1:02d}_target_acc", float(acc))
            if r < p.rounds - 1:
                x_new = self._jacobian_step(x_sub, y_sub, gen)
                y_new = self._target_labels(model, x_new, ctx)
                queries += len(x_new)
                if 2 * len(x_sub) <= p.max_samples:
                    x_sub, y_sub = torch.cat([x_sub, x_new]), torch.cat([y_sub, y_new])
                else:  # the authors' cap: the set stops growing, the newest points replace it
                    x_sub, y_sub = x_new, y_new
            ctx.report(r + 1, p.rounds)

        match = (self._sub_labels(pool) == pool_labels).float().mean()
        ctx.record("label_match_rate", float(match))
        ctx.record("substitute_train_size", len(x_sub))
        ctx.record("substitute_target_queries", queries)

    def _fit(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> None:
        p = self.params
        net = self.net
        net.train()
        opt = torch.optim.Adam(net.parameters(), lr=p.lr)  # a fresh optimiser each round, as the authors do
        for _ in range(p.epochs):
            order = torch.randperm(len(x), generator=gen).to(x.device)
            for start in range(0, len(x), p.batch_size):
                idx = order[start : start + p.batch_size]
                if len(idx) < 2 and any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()):
                    continue  # batch norm cannot train on a single sample
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()

    def _jacobian_step(self, x: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """x + lambda * sign(d substitute_logit[label] / dx), clipped to the image box."""
        p = self.params
        lam = p.jacobian_lambda
        if p.lambda_sign == "random" and torch.rand(1, generator=gen).item() < 0.5:
            lam = -lam
        out = []
        for start in range(0, len(x), p.query_chunk):
            xb = x[start : start + p.query_chunk].clone().requires_grad_(True)
            logits = self.net(xb)
            # rows are independent (eval mode), so one backward of the sum gives every row's gradient
            (grad,) = torch.autograd.grad(logits.gather(1, labels[start : start + p.query_chunk, None]).sum(), xb)
            out.append((xb.detach() + lam * grad.sign()).clamp_(0, 1))
        return torch.cat(out)

    # -- crafting on the substitute -------------------------------------------------------------
    def _craft(self, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        p = self.params
        self.net.eval()
        if p.craft == "fgsm":
            return (x + eps * self._loss_grad(x, y).sign()).clamp(0, 1)
        step = p.pgd_step * eps
        x_adv = x.clone()
        for _ in range(p.pgd_steps):
            x_adv = x_adv + step * self._loss_grad(x_adv, y).sign()
            x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1)
        return x_adv

    def _loss_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        xg = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(self.net(xg), y, reduction="sum"), xg)
        return grad


def _balanced_indices(labels: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` indices (all of them if fewer), as equal per label as the data allow; the rest random."""
    if n >= len(labels):
        return torch.randperm(len(labels), generator=gen)
    classes = labels.unique()
    per_class = n // len(classes)
    chosen = []
    for c in classes.tolist():
        idx = (labels == c).nonzero().flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    chosen = torch.cat(chosen)
    if len(chosen) < n:  # small classes, or n not divisible: fill up from the remaining points
        mask = torch.ones(len(labels), dtype=torch.bool)
        mask[chosen] = False
        rest = mask.nonzero().flatten()
        chosen = torch.cat([chosen, rest[torch.randperm(len(rest), generator=gen)[: n - len(chosen)]]])
    return chosen
