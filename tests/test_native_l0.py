"""Native JSMA and pixel attack (plugins ``jsma`` / ``pixel``): known answers on linear models, the
harness's verification, determinism, and the comparison with ART's versions on a small CNN."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from robench.api import Context, DatasetInfo, NoParams, Norm, TorchModel
from robench.plugins import load_registry
from robench.testing import LinearModel
from robench.verify import verify
from robench_plugins.attacks_native import JSMA, Pixel

pytestmark = [pytest.mark.filterwarnings("ignore"), pytest.mark.usefixtures("one_thread")]

NATIVE = [(JSMA, {}), (Pixel, {})]


def _one_pixel_model(bias: float) -> LinearModel:
    """3 x 4 x 4 images; class 1 scores 5 (R + G) at pixel 5 plus ``bias``, class 0 scores 0.

    At the grey input (0.2 everywhere) class 0 wins for bias < -2. With bias -3 raising R and G of
    pixel 5 (the two features of largest gradient, one pixel) flips the class: the minimal L0 is 1.
    With bias -11 even R = G = 1 gives -1 < 0, and nothing else moves the score: no adversarial.
    """
    w = torch.zeros(2, 48)
    w[1, 0 * 16 + 5] = 5.0
    w[1, 1 * 16 + 5] = 5.0
    return LinearModel(w, torch.tensor([0.0, bias]), (3, 4, 4))


def _run(model, x, y, cls, params, seed=0):
    attack = cls(cls.Params(**params))
    assert attack.norm == Norm.L0 and attack.kind == "minimal"
    adv = attack.run(model, x, y, eps=None, ctx=Context(seed=seed))
    assert adv.shape == x.shape and adv.dtype == torch.float32
    v = verify(model, x, y, adv, model.predict(x), Norm.L0)
    assert not v.rejected.any(), [r for r in v.reasons if r]
    return adv, v


@pytest.mark.parametrize("cls,params", NATIVE, ids=["jsma", "pixel"])
def test_single_pixel_flip_is_found_with_l0_one(cls, params):
    model = _one_pixel_model(-3.0)
    x = torch.full((4, 3, 4, 4), 0.2)
    x[1:, 2] = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))  # blue channel varies
    y = model.predict(x)
    assert (y == 0).all()
    _, v = _run(model, x, y, cls, params)
    assert v.success.all()
    assert (v.norms[Norm.L0] == 1).all()


@pytest.mark.parametrize("cls,params", NATIVE, ids=["jsma", "pixel"])
def test_no_success_where_no_pixel_change_in_the_box_flips_the_class(cls, params):
    model = _one_pixel_model(-11.0)
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model.predict(x)
    assert (y == 0).all()
    adv, v = _run(model, x, y, cls, params)
    assert not v.success.any()
    assert torch.isnan(adv).all()  # "no adversarial" rows, never a claimed success


class _ViewModel(LinearModel):
    """A model that ``view``s its input, which a channels-last tensor does not allow."""

    def scores(self, x):
        return x.view(len(x), -1) @ self.weight.T + self.bias


def test_pixel_falls_back_to_contiguous_inputs_for_models_that_need_them():
    base = _one_pixel_model(-3.0)
    model = _ViewModel(base.weight, base.bias, (3, 4, 4))
    x = torch.full((2, 3, 4, 4), 0.2)
    with pytest.raises(RuntimeError):
        model.scores(x.contiguous(memory_format=torch.channels_last))
    _, v = _run(model, x, model.predict(x), Pixel, {})
    assert v.success.all() and (v.norms[Norm.L0] == 1).all()


def test_misclassified_inputs_come_back_unchanged():
    model = _one_pixel_model(-3.0)
    x = torch.full((2, 3, 4, 4), 0.2)
    y = torch.tensor([1, 0])  # the model says 0 for both: sample 0 is already wrong
    for cls in (JSMA, Pixel):
        adv = cls(cls.Params()).run(model, x, y, eps=None, ctx=Context())
        assert torch.equal(adv[0], x[0])


class _TinyCNN(TorchModel):
    """A randomly initialised conv net on 3 x 8 x 8 inputs (no training needed)."""

    trainable = False

    def build(self) -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 4),
        )


@pytest.fixture(scope="module")
def cnn_batch():
    model = _TinyCNN(NoParams(), DatasetInfo("tiny", (3, 8, 8), tuple("abcd"))).eval()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return model, x, model.predict(x)


def _stats(model, x, y, plugin, params):
    spec = load_registry().get("attack", plugin)
    attack = spec.factory(spec.factory.Params(**params))
    adv = attack.run(model, x, y, eps=None, ctx=Context(seed=0))
    v = verify(model, x, y, adv, model.predict(x), Norm.L0)
    assert not v.rejected.any()
    l0 = v.norms[Norm.L0][v.success]
    return float(v.success.float().mean()), float(l0.mean()) if len(l0) else float("inf"), adv


def test_jsma_matches_or_beats_art_on_a_small_cnn(cnn_batch):
    model, x, y = cnn_batch
    ours, ours_l0, _ = _stats(model, x, y, "jsma", {})
    art, art_l0, _ = _stats(model, x, y, "art-jsma", {})
    assert art > 0.5  # the comparison means something
    assert ours >= art
    assert ours_l0 <= art_l0 + 1e-9


def test_pixel_success_no_lower_than_art_on_a_small_cnn(cnn_batch):
    model, x, y = cnn_batch
    params = {"max_iter": 5}
    ours, ours_l0, _ = _stats(model, x, y, "pixel", params)
    art, art_l0, _ = _stats(model, x, y, "art-pixel", params)
    assert 0 < art < 1  # neither trivial nor hopeless
    assert ours >= art - 1 / 16  # one image of slack for the stochastic search
    assert ours_l0 <= art_l0 + 1e-9  # both change exactly one pixel where they succeed


@pytest.mark.parametrize("cls,params", [(JSMA, {"batch_size": 7}), (Pixel, {"max_iter": 3, "batch_size": 97})], ids=["jsma", "pixel"])
def test_deterministic_and_independent_of_the_chunk_size(cnn_batch, cls, params):
    model, x, y = cnn_batch
    a, _ = _run(model, x, y, cls, params)
    b, _ = _run(model, x, y, cls, params)
    c, _ = _run(model, x, y, cls, {k: v for k, v in params.items() if k != "batch_size"})
    assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1))
    assert torch.equal(a.nan_to_num(-1), c.nan_to_num(-1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("cls,params", [(JSMA, {}), (Pixel, {"max_iter": 3})], ids=["jsma", "pixel"])
def test_cuda_gives_the_cpu_result(cnn_batch, cls, params):
    model, x, y = cnn_batch
    cpu, _ = _run(model, x, y, cls, params)
    attack = cls(cls.Params(**params))
    model.to(torch.device("cuda"))
    try:
        gpu = attack.run(model, x.cuda(), y.cuda(), eps=None, ctx=Context(device=torch.device("cuda"))).cpu()
    finally:
        model.to(torch.device("cpu"))
    same = (cpu.nan_to_num(-1) == gpu.nan_to_num(-1)).flatten(1).all(1)
    assert same.float().mean() >= 0.9  # float differences may flip a near-tie on a few images


def test_parameters_validate():
    with pytest.raises(ValidationError):
        JSMA.Params(thetas=(1.0, 0.0))
    with pytest.raises(ValidationError):
        JSMA.Params(gamma=0)
    with pytest.raises(ValidationError):
        Pixel.Params(pixels=0)
    with pytest.raises(ValidationError):
        Pixel.Params(loss="hinge")
