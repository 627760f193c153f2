"""scikit-learn's digits: the embedded dataset that lets robench run with no files at all."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

import robench


class DigitsParams(robench.Params):
    test_fraction: float = Field(0.3, gt=0, lt=1, description="share of the 1797 images held out as the test split")


class Digits(robench.Dataset):
    """1797 8x8 grey images (values 0..16, scaled to [0, 1]); a fixed stratified split."""

    Params = DigitsParams

    def info(self) -> robench.DatasetInfo:
        return robench.DatasetInfo("digits", (1, 8, 8), tuple(str(i) for i in range(10)))

    def load(self, split: str, data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        x = bunch.images.astype(np.float32) / 16.0
        y = bunch.target.astype(np.int64)
        # The split is fixed (seed 0), not the run seed: every suite sees the same test images.
        x_tr, x_te, y_tr, y_te = train_test_split(
            x, y, test_size=self.params.test_fraction, random_state=0, stratify=y
        )
        xs, ys = (x_tr, y_tr) if split == "train" else (x_te, y_te)
        return torch.from_numpy(xs).unsqueeze(1).contiguous(), torch.from_numpy(ys)

    def size(self, split: str, data_dir: Path) -> int | None:
        n_test = math.ceil(self.params.test_fraction * 1797)  # scikit-learn's rule for a float test_size
        return {"train": 1797 - n_test, "test": n_test}.get(split)
