"""Bad tensors at the plugin boundary: NaN/Inf images, wrong shapes, bad labels from a dataset; NaN or
misshapen scores from a model; wrong outputs from an attack. Each is caught where it crosses into
the harness, with the plugin's name in the message, and fails only what depends on it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from robench.errors import RobenchError
from robench.plugins import get_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite

PLUGINS = ("reliability_plugins",)


def run(tmp: Path, *, dataset="{name: digits, split: test, limit: 20}", model_params="{}", attack_params="{}"):
    text = f"""
name: boundary
dataset: {dataset}
seed: 0
batch_size: 10
device: cpu
models:
  - {{name: lsq, plugin: fault-linear, params: {model_params}}}
  - {{name: ok, plugin: fault-linear, params: {{ridge: 2.0}}}}
attacks:
  - {{name: noise, plugin: fault-noise, params: {attack_params}}}
epsilons: {{Linf: [0.1]}}
"""
    (tmp / "suite.yaml").write_text(text)
    reg = get_registry(PLUGINS)
    opts = RunOptions(out_dir=tmp / "out", data_dir=tmp, cache_dir=tmp / "cache", plugins=PLUGINS)
    return run_suite(load_suite(tmp / "suite.yaml", reg), reg, opts)


@pytest.mark.parametrize("fault, message", [
    ("nan", "dataset fault-digits: images contain NaN or Inf"),
    ("inf", "dataset fault-digits: images contain NaN or Inf"),
    ("shape", "dataset fault-digits: images have shape (1, 7, 8), but the dataset declares (1, 8, 8)"),
    ("range", "dataset fault-digits: image values must lie in [0, 1], found [0, 16]"),
    ("labels", "dataset fault-digits: labels must lie in 0..9, found 0..10"),
    ("label_count", "dataset fault-digits: expected one label per image"),
])
def test_bad_dataset_stops_the_run_naming_the_plugin(tmp_path, fault, message):
    with pytest.raises(RobenchError) as err:
        run(tmp_path, dataset=f"{{name: fault-digits, split: test, limit: 20, params: {{fault: {fault}}}}}")
    assert message in str(err.value)
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0
    assert not (tmp_path / "cache").exists(), "no model is trained on bad data"


#: the expected message per (plugin kind, fault), for the faults a model's scores or an attack's output can have
PLUGIN_FAULTS = {
    ("model", "nan"): "model plugin fault-linear: scores() returned NaN for 1 of",
    ("model", "shape"): "model plugin fault-linear: scores() returned shape (19, 10) for 20 inputs; expected (20, 10)",
    ("model", "classes"): "model plugin fault-linear: scores() returned shape (20, 9) for 20 inputs; expected (20, 10)",
    ("attack", "shape"): "attack plugin fault-noise: run() returned shape (10, 1, 7, 8) for inputs of shape (10, 1, 8, 8)",
    ("attack", "int"): "attack plugin fault-noise: run() returned dtype torch.uint8, expected a floating-point tensor",
    ("attack", "list"): "attack plugin fault-noise: run() returned list, expected a tensor",
}


def faults_of(kind: str) -> list[tuple[str, str]]:
    return [(fault, message) for (k, fault), message in PLUGIN_FAULTS.items() if k == kind]


@pytest.mark.parametrize("fault, message", faults_of("model"))
def test_bad_scores_fail_that_model_only(tmp_path, fault, message):
    summary = run(tmp_path, model_params=f"{{fault: {fault}}}")
    assert [name for name, _ in summary.models_failed] == ["lsq"]
    assert message in summary.models_failed[0][1]
    assert [label for label, _ in summary.cells_failed] == ["lsq / noise @ Linf 0.1"]
    assert "model lsq is unavailable" in summary.cells_failed[0][1]
    assert summary.cells_done == 1  # the healthy model's cell


@pytest.mark.parametrize("fault, message", faults_of("attack"))
def test_bad_attack_output_fails_its_cells(tmp_path, fault, message):
    summary = run(tmp_path, attack_params=f"{{fault: {fault}}}")
    assert len(summary.cells_failed) == 2 and all(message in err for _, err in summary.cells_failed)
    assert not summary.models_failed


def test_inf_in_attack_output_is_rejected_not_fatal(tmp_path):
    summary = run(tmp_path, attack_params="{fault: inf}")
    assert summary.ok
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    reasons = [r[0] for r in db.execute("SELECT reject_reason FROM samples WHERE idx IN (0, 10) ORDER BY cell, idx")]
    # row 0 of each batch was set to +Inf: rejected as out of the box unless the model already erred on it
    assert all(r is None or r.startswith("outside [0, 1]") for r in reasons)
    assert any(r and r.startswith("outside [0, 1]") for r in reasons)
