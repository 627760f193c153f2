"""Determinism: seeding before plugin code runs, and the stable hashes that name models and cells."""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any

import numpy as np
import torch


def stable_hash(obj: Any) -> str:
    """20 hex digits of SHA-256 over the canonical JSON of ``obj`` (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def batch_seed(seed: int, cell_key: str, start: int) -> int:
    """The seed of one batch of a cell: (run seed, cell key, index of its first sample)."""
    return int(hashlib.sha256(f"{seed}:{cell_key}:{start}".encode()).hexdigest()[:8], 16)
