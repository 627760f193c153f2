"""The model zoo: add a suite's trained model, seed a fresh cache from it (no training), refuse a
file whose hash does not match with the command that retrains it."""

from __future__ import annotations

import json
import sqlite3
import textwrap

import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.plugins import get_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite
from robench.zoo import read_manifest
from robench.zoo_commands import add_models


@pytest.fixture()
def suite(tmp_path):
    path = tmp_path / "z.yaml"
    path.write_text(textwrap.dedent("""
        name: zoo-test
        dataset: {name: digits, limit: 40}
        device: cpu
        models: [{name: mlp, plugin: mlp, params: {hidden: 32, epochs: 15, lr: 0.01}}]
        attacks: [{name: fgsm, plugin: fgsm, params: {norm: Linf}}]
        epsilons: {Linf: [0.1]}
    """))
    return path


def _run(tmp_path, suite, cache, out):
    reg = get_registry()
    return run_suite(load_suite(suite, reg), reg, RunOptions(out_dir=tmp_path / out, data_dir=tmp_path, cache_dir=tmp_path / cache))


def test_zoo_seeds_a_fresh_cache_and_refuses_a_changed_file(tmp_path, suite, monkeypatch):
    zoo = tmp_path / "zoo"
    monkeypatch.setenv("ROBENCH_ZOO", str(zoo))
    [entry] = add_models(suite, None, tmp_path, tmp_path / "cache1", zoo=zoo, log=lambda t: None)
    manifest = read_manifest(zoo)
    assert list(manifest) == [entry.key]
    assert entry.sha256 and (zoo / entry.file).is_file() and 0.5 < entry.clean_accuracy <= 1 and entry.clean_n == 40
    assert entry.command.startswith("robench zoo add ") and entry.command.endswith("--model mlp --retrain")
    assert entry.config["plugin"] == "mlp" and entry.config["params"]["hidden"] == 32
    first = _run(tmp_path, suite, "cache1", "out1")
    assert first.ok

    # A fresh cache: the weights come from the zoo, the model is not trained.
    from robench_plugins.basic.mlp import MLP

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the zoo has the weights")

    monkeypatch.setattr(MLP, "fit", no_training)
    second = _run(tmp_path, suite, "cache2", "out2")
    assert second.ok, second.models_failed
    assert json.loads((tmp_path / "cache2" / entry.key / "config.json").read_text())["from_zoo"] == entry.file
    preds = [sorted(sqlite3.connect(tmp_path / o / "results.sqlite").execute("SELECT idx, pred FROM clean")) for o in ("out1", "out2")]
    assert preds[0] == preds[1]
    # the run's model card: the zoo file's hash, where it came from, the zoo's training time
    from robench.store import Store

    with Store(tmp_path / "out2" / "results.sqlite", create=False) as st:
        card = st.runs()[-1]["provenance"]["models"]["mlp"]
    assert card["weights_sha256"] == entry.sha256 and card["weights_origin"] == f"model zoo file {entry.file}"
    assert card["train_seconds"] == entry.config["train_seconds"] > 0  # the fit time the zoo's training recorded
    assert _run(tmp_path, suite, "cache2", "out2b").ok  # the same cache again: loaded from it, still named as the zoo's
    with Store(tmp_path / "out2b" / "results.sqlite", create=False) as st:
        assert st.runs()[-1]["provenance"]["models"]["mlp"]["weights_origin"] == f"cache (from model zoo file {entry.file})"

    res = CliRunner().invoke(app, ["zoo", "verify"])
    assert res.exit_code == 0 and "1 of 1 zoo files match" in res.output
    res = CliRunner().invoke(app, ["zoo", "list"])
    assert res.exit_code == 0 and entry.key in res.output and "zoo-test" in res.output

    # A zoo file that does not match its hash is refused, with how to retrain.
    data = bytearray((zoo / entry.file).read_bytes())
    data[-1] ^= 0xFF
    (zoo / entry.file).write_bytes(bytes(data))
    third = _run(tmp_path, suite, "cache3", "out3")
    assert not third.ok
    [(name, err)] = third.models_failed
    assert name == "mlp" and "does not match its manifest" in err and entry.command in err
    assert not (tmp_path / "cache3" / entry.key / "weights.safetensors").exists()
    res = CliRunner().invoke(app, ["zoo", "verify"])
    assert res.exit_code == 1 and "does not match its manifest" in " ".join(res.output.split())


def test_an_empty_zoo_changes_nothing(tmp_path, suite, monkeypatch):
    monkeypatch.setenv("ROBENCH_ZOO", str(tmp_path / "nozoo"))
    assert _run(tmp_path, suite, "cache", "out").ok
    res = CliRunner().invoke(app, ["zoo", "list"])
    assert res.exit_code == 0 and "is empty" in res.output


def test_a_cuda_run_uses_the_zoos_cpu_weights_under_their_own_key(tmp_path, suite, monkeypatch):
    """A zoo file is plain weights: a run on another device type (a fake 'cuda': keys and loading
    need no GPU) takes them under the CPU key, says so in the card, and keys its cells by the
    device; a run that retrains keeps its own key."""
    import torch

    from robench.models import ModelPool, model_key
    from robench.plan import cell_key, plan_cells
    from robench.run import Reporter
    from robench_plugins.basic.mlp import MLP

    zoo = tmp_path / "zoo"
    monkeypatch.setenv("ROBENCH_ZOO", str(zoo))
    [entry] = add_models(suite, None, tmp_path, tmp_path / "cache0", zoo=zoo, log=lambda t: None)
    reg = get_registry()
    resolved = load_suite(suite, reg)
    cuda = torch.device("cuda")
    assert model_key(resolved, reg, "mlp", cuda) != entry.key  # the CUDA key has no zoo entry of its own

    def pool(device, cache="cache", retrain=False):
        p = ModelPool(resolved, reg, device, tmp_path / cache, tmp_path, retrain=retrain, reporter=Reporter())
        p.compute_keys()
        return p

    gpu, cpu = pool(cuda), pool(torch.device("cpu"))
    assert gpu.keys["mlp"] == cpu.keys["mlp"] == entry.key and gpu.keys.run_devices == {"mlp": "cuda"}
    assert cpu.keys.run_devices == {}
    (c,) = plan_cells(resolved, reg)
    assert cell_key(resolved, c, gpu.keys) != cell_key(resolved, c, cpu.keys)  # results of one device never shown as another's

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the zoo has the weights")

    monkeypatch.setattr(MLP, "fit", no_training)
    monkeypatch.setattr(MLP, "to", lambda self, device: self)  # no GPU here: the weights stay where they are
    info = reg.get("dataset", "digits").factory(resolved.dataset_params).info()
    gpu.load("mlp", info)
    card = gpu.cards["mlp"]
    assert card["key"] == entry.key and card["weights_sha256"] == entry.sha256
    assert card["weights_origin"] == f"model zoo file {entry.file} (trained on cpu; run on cuda)"

    # Retraining on CUDA, or CUDA weights already cached: the CUDA key, nothing borrowed.
    retrained = pool(cuda, "cache_r", retrain=True)
    assert retrained.keys["mlp"] == model_key(resolved, reg, "mlp", cuda) and retrained.keys.run_devices == {}
    own = tmp_path / "cache_own" / model_key(resolved, reg, "mlp", cuda)
    own.mkdir(parents=True)
    (own / "weights.safetensors").write_bytes(b"")
    assert pool(cuda, "cache_own").keys.run_devices == {}


def test_zoo_adds_side_by_side_keep_each_others_entries(tmp_path):
    """Two `robench zoo add` (one per model) each read the manifest at their start; the second to finish
    must not write back the manifest it read, which lacks the first one's model (it did: 2026-12-02)."""
    from robench.zoo import Entry, read_manifest, update_manifest, write_manifest

    def entry(key):
        return Entry(key=key, file=f"{key}.safetensors", sha256="0" * 64, config={}, command=f"robench zoo add s.yaml --model {key}")

    write_manifest({"old": entry("old")}, tmp_path)
    stale = read_manifest(tmp_path)  # what both runs read when they started
    update_manifest([entry("a")], tmp_path)  # the first run finishes
    assert "a" not in stale
    update_manifest([entry("b")], tmp_path)  # the second, which started from `stale`
    assert sorted(read_manifest(tmp_path)) == ["a", "b", "old"]
