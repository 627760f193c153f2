"""Suite texts over the reliability plugins (``--plugin reliability_plugins``) that several tests share."""

from __future__ import annotations


def two_ridge_models(name: str, *, limit: int, seed: int, norms: tuple[str, ...] = ("Linf", "L2")) -> str:
    """Two least-squares models (``a``: ridge 1, ``b``: ridge 20) on the digits test split in batches of
    10, one ``fault-noise`` attack per norm of ``norms`` (named after it in lower case), eps Linf
    0.05 and 0.2, L2 0.5."""
    attacks = "".join(f"  - {{name: {n.lower()}, plugin: fault-noise, params: {{norm: {n}}}}}\n" for n in norms)
    return f"""
name: {name}
dataset: {{name: digits, split: test, limit: {limit}}}
seed: {seed}
batch_size: 10
device: cpu
models:
  - {{name: a, plugin: fault-linear, params: {{ridge: 1.0}}}}
  - {{name: b, plugin: fault-linear, params: {{ridge: 20.0}}}}
attacks:
{attacks}epsilons: {{Linf: [0.05, 0.2], L2: [0.5]}}
"""
