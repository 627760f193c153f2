"""Suite texts that several tests share: the general shape (:func:`suite_text`), and suites over the
reliability plugins (``--plugin reliability_plugins``)."""

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


def suite_text(name: str, dataset: str, models: list[str], attacks: list[str], epsilons: str, *,
               settings: tuple[str, ...] = (), tail: str = "") -> str:
    """A suite as YAML, one line a field: ``name``, ``dataset: {dataset}``, the ``settings`` lines as
    written (``seed: 1`` …), ``models:`` and ``attacks:`` with one ``- {entry}`` line each,
    ``epsilons: {epsilons}``, then ``tail`` as written (``paper:``, ``claims:`` …)."""
    def entries(items: list[str]) -> str:
        return "".join(f"  - {{{item}}}\n" for item in items)

    head = "".join(f"{line}\n" for line in settings)
    return (f"name: {name}\ndataset: {{{dataset}}}\n{head}models:\n{entries(models)}attacks:\n{entries(attacks)}"
            f"epsilons: {{{epsilons}}}\n{tail}")
