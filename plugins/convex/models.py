"""Convex baselines of the 01-loss papers: a linear SVM (hinge loss) and a 20-hidden sigmoid MLP.

Protocol (01loss-convex-transferability.md, II.D and III): scikit-learn's LinearSVC; the MLP is
trained by SGD with batch 200, momentum 0.9, learning rate 0.01 (logistic loss, here softmax
cross-entropy, the same thing for two classes; ``multiclass: ova`` trains one binary net per class as
the papers do). ``votes > 1`` makes a majority-vote ensemble of
models trained on bootstrap samples, as the papers do for their robustness runs.

A single model (``votes: 1``) is differentiable and its scores are its decision values. An
ensemble decides by majority vote, so its scores are vote shares (binary: the vote margin
``[-m, m]``), it declares itself not differentiable, and ``surrogate()`` returns the mean of the
members' decision values (differentiable) for gradient attacks.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field

import robench
from robench.training import TrainParams, train_classifier


class _Ensemble(robench.Model):
    framework = "torch"

    def __init__(self, params, info: robench.DatasetInfo):
        super().__init__(params, info)
        # an ensemble votes, so it has no gradients; the harness reads this instance attribute
        self.differentiable = params.votes == 1

    def decisions(self, x: torch.Tensor) -> torch.Tensor:
        """(votes, N, outputs) decision values of every member (differentiable)."""
        raise NotImplementedError

    def _bootstrap(self, n: int, ctx: robench.Context) -> list[torch.Tensor]:
        if self.params.votes == 1:
            return [torch.arange(n)]
        gen = ctx.generator(offset=11)
        return [torch.randint(0, n, (n,), generator=gen) for _ in range(self.params.votes)]

    def _to_scores(self, dec: torch.Tensor) -> torch.Tensor:
        """(N, outputs) decision values -> (N, C) scores (a binary SVM has one output)."""
        return torch.cat([-dec, dec], dim=1) if dec.shape[1] == 1 else dec

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        dec = self.decisions(x.to(self.device))
        if dec.shape[0] == 1:
            return self._to_scores(dec[0])
        with torch.no_grad():
            pred = self._to_scores(dec.flatten(0, 1)).argmax(1).view(dec.shape[0], -1)  # (votes, N)
            share = torch.nn.functional.one_hot(pred, self.info.num_classes).float().mean(0)
        if self.info.num_classes == 2:
            m = share[:, 1] - share[:, 0]
            return torch.stack([-m, m], dim=1)
        return share

    def surrogate(self) -> robench.Model | None:
        return _MeanDecision(self)


class _MeanDecision(robench.Model):
    """Mean of the members' decision values: the differentiable stand-in of a voting ensemble."""

    differentiable = True
    trainable = False

    def __init__(self, ens: _Ensemble):
        super().__init__(ens.params, ens.info)
        self.ens = ens
        self.device = ens.device

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.ens._to_scores(self.ens.decisions(x.to(self.ens.device)).mean(0))

    def state_dict(self):
        return self.ens.state_dict()

    def load_state_dict(self, state):
        self.ens.load_state_dict(state)

    def to(self, device):
        super().to(device)
        self.ens.to(device)
        return self


# -- linear SVM --------------------------------------------------------------------------------


class SVMParams(robench.Params):
    C: float = Field(0.01, gt=0, description="inverse regularisation strength of LinearSVC")
    c_grid: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, min_length=2, description="if set, choose C from these values by 3-fold cross-validation on the training set (the "
                                        "papers cross-validate C); the chosen C is logged and kept with the weights"
    )
    votes: int = Field(1, ge=1, description="1: a single SVM; > 1: majority vote of SVMs trained on bootstrap samples")
    max_iter: int = Field(2000, ge=1, description="LinearSVC iteration limit")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training examples")


class SVM(_Ensemble):
    """Linear SVM (hinge loss, scikit-learn LinearSVC; one-vs-rest for more classes)."""

    Params = SVMParams
    exposes = {"linear_weights": "weights"}

    def __init__(self, params: SVMParams, info: robench.DatasetInfo):
        super().__init__(params, info)
        self.weight = torch.empty(0)  # (votes, outputs, d)
        self.bias = torch.empty(0)  # (votes, outputs)
        self.chosen_C = params.C

    def fit(self, x, y, ctx):
        from sklearn.model_selection import GridSearchCV
        from sklearn.svm import LinearSVC

        p = self.params
        if p.train_limit is not None:
            x, y = x[: p.train_limit], y[: p.train_limit]
        xn, yn = x.flatten(1).cpu().numpy(), y.cpu().numpy()
        C = p.C
        if p.c_grid:
            search = GridSearchCV(LinearSVC(max_iter=p.max_iter, random_state=ctx.seed), {"C": list(p.c_grid)}, cv=3)
            search.fit(xn, yn)
            C = float(search.best_params_["C"])
            scores = ", ".join(f"{c:g}: {m:.4f}" for c, m in zip(search.cv_results_["param_C"], search.cv_results_["mean_test_score"]))
            ctx.log(f"svm: 3-fold cross-validated C = {C:g} (mean accuracy per C: {scores})")
        self.chosen_C = C
        ws, bs = [], []
        for i, idx in enumerate(self._bootstrap(len(xn), ctx)):
            idx = idx.numpy()
            if len(np.unique(yn[idx])) < self.info.num_classes:
                raise ValueError(f"svm: bootstrap sample {i} misses a class; use more training data or fewer classes")
            svc = LinearSVC(C=C, max_iter=p.max_iter, random_state=ctx.seed + i).fit(xn[idx], yn[idx])
            ws.append(torch.from_numpy(svc.coef_).float())
            bs.append(torch.from_numpy(np.atleast_1d(svc.intercept_)).float())
            ctx.report(i + 1, p.votes)
        self.weight, self.bias = torch.stack(ws).to(ctx.device), torch.stack(bs).to(ctx.device)
        self.device = ctx.device

    def decisions(self, x):
        return torch.einsum("nd,vod->vno", x.flatten(1), self.weight) + self.bias[:, None, :]

    def linear_weights(self) -> torch.Tensor:
        """(outputs, d): members' weights summed (binary: one row, positive = class 1)."""
        return self.weight.sum(0)

    def state_dict(self):
        # the C it was trained with (the cross-validated one with c_grid) is kept with the weights
        return {"weight": self.weight.detach().cpu(), "bias": self.bias.detach().cpu(), "C": torch.tensor([self.chosen_C], dtype=torch.float64)}

    def load_state_dict(self, state):
        self.weight, self.bias = state["weight"].to(self.device), state["bias"].to(self.device)
        self.chosen_C = float(state["C"][0]) if "C" in state else self.params.C

    def to(self, device):
        super().to(device)
        self.weight, self.bias = self.weight.to(self.device), self.bias.to(self.device)
        return self


# -- sigmoid MLP -------------------------------------------------------------------------------


class MLPSigmoidParams(TrainParams):
    hidden: int = Field(20, ge=1, description="sigmoid hidden units")
    votes: int = Field(1, ge=1, description="1: a single net; > 1: majority vote of nets trained on bootstrap samples")
    # the papers' protocol as defaults
    epochs: int = Field(100, ge=1, le=10_000, description="passes over the training data")
    batch_size: int = Field(200, ge=1, description="examples per SGD step")
    lr: float = Field(0.01, gt=0, description="SGD learning rate")
    optimizer: Literal["adam", "sgd"] = Field("sgd", description="sgd (with momentum) as in the papers, or adam")
    multiclass: Literal["softmax", "ova"] = Field(
        "softmax", description="more than two classes: one softmax net, or one-vs-all (a binary net per class, the largest "
                               "margin wins; the papers' protocol)"
    )


class MLPSigmoid(_Ensemble):
    """Dual-layer network with sigmoid hidden units and logistic (cross-entropy) loss."""

    Params = MLPSigmoidParams

    def __init__(self, params: MLPSigmoidParams, info: robench.DatasetInfo):
        super().__init__(params, info)
        d = math.prod(info.input_shape)
        # one-vs-all: per vote one binary net per class (vote v, class c at v * classes + c)
        self.ova = params.multiclass == "ova" and info.num_classes > 2
        per_vote, outputs = (info.num_classes, 2) if self.ova else (1, info.num_classes)
        self.nets = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Flatten(), torch.nn.Linear(d, params.hidden), torch.nn.Sigmoid(), torch.nn.Linear(params.hidden, outputs),
            )
            for _ in range(params.votes * per_vote)
        )

    def fit(self, x, y, ctx):
        p = self.params
        if p.train_limit is not None:
            x, y = x[: p.train_limit], y[: p.train_limit]
        per_vote = len(self.nets) // p.votes
        for i, idx in enumerate(self._bootstrap(len(x), ctx)):
            for c in range(per_vote):
                net = self.nets[i * per_vote + c]
                # each member gets its own seed (initialisation and batch order); class 0's is the softmax net's
                sub = robench.Context(device=ctx.device, seed=ctx.seed + 1000 * i + c, data_dir=ctx.data_dir, log=ctx.log)
                torch.manual_seed(sub.seed)  # initialisation from the run seed, not from construction time
                for layer in net:
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
                train_classifier(net, x[idx], (y[idx] == c).long() if self.ova else y[idx], p, sub)
                ctx.report(i * per_vote + c + 1, len(self.nets))
        self.to(ctx.device)
        self.nets.eval()

    def decisions(self, x):
        out = torch.stack([net(x) for net in self.nets])  # (members, N, outputs)
        if not self.ova:
            return out
        margin = out[..., 1] - out[..., 0]  # each class's net: log-odds of "this class"
        return margin.view(self.params.votes, self.info.num_classes, -1).transpose(1, 2)  # (votes, N, classes)

    def state_dict(self):
        return {k: v.detach().cpu() for k, v in self.nets.state_dict().items()}

    def load_state_dict(self, state):
        self.nets.load_state_dict(state)

    def to(self, device):
        super().to(device)
        self.nets.to(self.device)
        return self

    def eval(self):
        self.nets.eval()
        return self
