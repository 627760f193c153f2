"""Attack parameters that are suite paths: resolved against the suite's folder, a missing file is
a validate-time problem at its YAML line, and the file's bytes enter the cell key."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.plugins import load_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite

PLUGIN = '''
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

import robench
from robench import Norm


class FileDeltaParams(robench.Params):
    delta: Path = Field(json_schema_extra={"robench_path": "suite"}, description="a .npy perturbation, relative to the suite")


class FileDelta(robench.Attack):
    """A fixed (universal) perturbation read from a file, clipped to eps."""

    Params = FileDeltaParams
    kind = "bounded"
    fixed_norm = Norm.Linf

    def run(self, model, x, y, *, eps, ctx, source=None):
        d = torch.as_tensor(np.load(self.params.delta), dtype=x.dtype, device=x.device)
        return (x + d.clamp(-eps, eps)).clamp(0, 1)


@robench.hookimpl
def robench_attacks():
    return [robench.AttackSpec("file-delta", FileDelta, "adds a perturbation read from a file")]


class MaskedParams(robench.Params):
    mask: Path = Field(json_schema_extra={"robench_path": "suite"}, description="a .npy image multiplied into every input")


class MaskedDigits(robench.Dataset):
    Params = MaskedParams

    def info(self):
        return robench.DatasetInfo("masked-digits", (1, 8, 8), tuple(str(i) for i in range(10)))

    def load(self, split, data_dir):
        from sklearn.datasets import load_digits

        b = load_digits()
        x = torch.from_numpy(b.images.astype(np.float32) / 16.0).unsqueeze(1) * torch.from_numpy(np.load(self.params.mask))
        return x, torch.from_numpy(b.target.astype(np.int64))


@robench.hookimpl
def robench_datasets():
    return [robench.DatasetSpec("masked-digits", MaskedDigits, "digits times a mask read from a file")]
'''

SUITE = """
name: attack-paths
dataset: {name: digits, limit: 40}
device: cpu
models:
  - {name: lin, plugin: mlp, params: {epochs: 5}}
attacks:
  - name: uni
    plugin: file-delta
    params: {delta: deltas/d.npy}
epsilons: {Linf: [0.3]}
"""


@pytest.fixture
def suite(tmp_path):
    (tmp_path / "attack_path_plugin.py").write_text(PLUGIN)
    sys.path.insert(0, str(tmp_path))
    folder = tmp_path / "suite"
    (folder / "deltas").mkdir(parents=True)
    (folder / "suite.yaml").write_text(textwrap.dedent(SUITE))
    np.save(folder / "deltas" / "d.npy", np.full((1, 8, 8), 0.3, dtype=np.float32))
    yield folder
    sys.path.remove(str(tmp_path))
    sys.modules.pop("attack_path_plugin", None)


def _run(folder, tmp):
    reg = load_registry(("attack_path_plugin",))
    resolved = load_suite(folder / "suite.yaml", reg)
    summary = run_suite(resolved, reg, RunOptions(out_dir=tmp / "out", data_dir=tmp, cache_dir=tmp / "cache"))
    assert summary.ok, (summary.cells_failed, summary.models_failed)
    con = sqlite3.connect(tmp / "out" / "results.sqlite")
    return con.execute("SELECT cell, SUM(success) FROM samples GROUP BY cell ORDER BY cell").fetchall()


def test_missing_attack_file_is_reported_at_validate_with_its_line(suite):
    (suite / "deltas" / "d.npy").unlink()
    res = CliRunner().invoke(app, ["validate", str(suite / "suite.yaml"), "--plugin", "attack_path_plugin"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "attacks[0].params.delta (line 10): file not found:" in out and os.path.join("deltas", "d.npy") in out


def test_attack_path_is_taken_from_the_suite_folder_and_its_bytes_key_the_cell(suite, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the suite's folder: the relative path must still resolve
    reg = load_registry(("attack_path_plugin",))
    resolved = load_suite(suite / "suite.yaml", reg)
    assert resolved.attack_params["uni"].delta == (suite / "deltas" / "d.npy").resolve()
    first = _run(suite, tmp_path / "a")
    again = _run(suite, tmp_path / "a")  # same bytes: the stored cell is reused
    assert [r[0] for r in again] == [r[0] for r in first]
    np.save(suite / "deltas" / "d.npy", np.zeros((1, 8, 8), dtype=np.float32))  # new bytes, same name
    changed = _run(suite, tmp_path / "a")
    assert len(changed) == 2 and {r[0] for r in changed} > {r[0] for r in first}
    new = next(r for r in changed if r not in first)
    assert new[1] < first[0][1]  # the zero perturbation breaks fewer than the 0.3 one: the new bytes were read


def test_the_cell_key_does_not_depend_on_where_the_suite_folder_lies(suite, tmp_path):
    import shutil

    from robench.plan import cell_key, plan_cells

    reg = load_registry(("attack_path_plugin",))
    moved = tmp_path / "elsewhere" / "suite"
    shutil.copytree(suite, moved)
    keys = []
    for folder in (suite, moved):
        resolved = load_suite(folder / "suite.yaml", reg)
        (c,) = plan_cells(resolved, reg)
        keys.append(cell_key(resolved, c, {"lin": "k"}))
    assert keys[0] == keys[1]


def test_dataset_paths_are_suite_paths_too(suite, tmp_path):
    from robench.plan import cell_key, plan_cells

    np.save(suite / "mask.npy", np.ones((1, 8, 8), dtype=np.float32))
    text = (suite / "suite.yaml").read_text().replace("dataset: {name: digits, limit: 40}",
                                                      "dataset: {name: masked-digits, limit: 40, params: {mask: mask.npy}}")
    (suite / "masked.yaml").write_text(text)
    reg = load_registry(("attack_path_plugin",))
    resolved = load_suite(suite / "masked.yaml", reg)
    assert resolved.dataset_params.mask == (suite / "mask.npy").resolve()
    (c,) = plan_cells(resolved, reg)
    before = cell_key(resolved, c, {"lin": "k"})
    np.save(suite / "mask.npy", np.zeros((1, 8, 8), dtype=np.float32))
    assert cell_key(load_suite(suite / "masked.yaml", reg), c, {"lin": "k"}) != before  # the file's bytes key the cell
    (suite / "mask.npy").unlink()
    res = CliRunner().invoke(app, ["validate", str(suite / "masked.yaml"), "--plugin", "attack_path_plugin"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "dataset.params.mask (line 3): file not found:" in out, res.output
