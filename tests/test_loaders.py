"""The loaders plugin: one small trained net saved as a state dict (.pt, wrapped and prefixed),
safetensors, TorchScript and ONNX gives the same clean predictions and the same attack results as
the same net held by a hand-written plugin; errors name what is wrong and where."""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robench.cli import app
from robench.errors import RobenchError
from robench.plugins import load_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite

from loader_formats import NETS, save_formats

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The net in every format, in one folder with a suite that loads each."""
    folder = tmp_path_factory.mktemp("loaders")
    net = save_formats(folder)
    (folder / "suite.yaml").write_text(textwrap.dedent("""
        name: loaders
        dataset: {name: digits, limit: 60}
        device: cpu
        batch_size: 30
        models:
          - {name: ref, plugin: loader-reference}
          - {name: pt, plugin: torch-file, params: {architecture: "loader_nets.py:make", weights: net.pt}}
          - {name: st, plugin: torch-file, params: {architecture: "loader_nets.py:make", weights: net.safetensors}}
          - {name: ts, plugin: torchscript, params: {file: net.ts}}
          - {name: ox, plugin: onnx, params: {file: net.onnx}}
        attacks:
          - {name: fgsm, plugin: fgsm, params: {norm: Linf}}
          - {name: pgd, plugin: pgd, params: {norm: Linf, steps: 10, random_start: false}}  # deterministic: comparable
        epsilons: {Linf: [0.05, 0.1]}
    """))
    yield folder, net
    sys.path.remove(str(folder))


def _registry():
    return load_registry(("loader_ref_plugin",))


def _run(folder: Path, tmp: Path, suite: str = "suite.yaml"):
    reg = _registry()
    resolved = load_suite(folder / suite, reg)
    opts = RunOptions(out_dir=tmp / "out", data_dir=tmp, cache_dir=tmp / "cache")
    summary = run_suite(resolved, reg, opts)
    assert summary.ok, (summary.cells_failed, summary.models_failed)
    return tmp / "out" / "results.sqlite"


def test_every_format_gives_the_reference_results(saved, tmp_path):
    folder, _ = saved
    db = sqlite3.connect(_run(folder, tmp_path))
    clean = {}
    for model, idx, pred in db.execute("SELECT model, idx, pred FROM clean"):
        clean.setdefault(model, {})[idx] = pred
    assert set(clean) == {"ref", "pt", "st", "ts", "ox"}
    acc = sum(clean["ref"][i] == lbl for i, lbl in db.execute("SELECT idx, label FROM clean WHERE model='ref'")) / 60
    assert acc > 0.8, acc  # a trained net, so the attack results below mean something
    for m in ("pt", "st", "ts", "ox"):
        assert clean[m] == clean["ref"], m
    rows = {}
    for model, attack, eps, idx, success, linf in db.execute(
            "SELECT c.model, c.attack, c.eps, s.idx, s.success, s.linf FROM samples s JOIN cells c ON s.cell=c.key"):
        rows.setdefault(model, {})[(attack, eps, idx)] = (success, linf)
    assert len(rows["ref"]) == 2 * 2 * 60
    broken = sum(s for s, _ in rows["ref"].values())
    assert 0 < broken < len(rows["ref"])
    for m in ("pt", "st", "ts"):
        assert rows[m] == rows["ref"], m  # bit-identical nets: identical adversarials
    # onnx2torch rebuilds the graph from ONNX ops: same math, float rounding may differ at most
    # on a sample that sits exactly at a decision boundary.
    diff = [k for k in rows["ref"] if rows["ox"][k][0] != rows["ref"][k][0]]
    assert len(diff) <= 2, diff


def test_loaded_models_are_frozen_in_eval_mode_and_never_trained(saved):
    folder, _ = saved
    reg = _registry()
    resolved = load_suite(folder / "suite.yaml", reg)
    from robench_plugins.datasets.digits import Digits, DigitsParams

    info = Digits(DigitsParams()).info()
    for name in ("pt", "ts", "ox"):
        entry = next(m for m in resolved.suite.models if m.name == name)
        spec = reg.get("model", entry.plugin)
        assert spec.factory.trainable is False
        model = spec.factory(resolved.model_params[name], info)
        assert not model.net.training
        assert all(not p.requires_grad for p in model.net.parameters())
        x = torch.rand(3, 1, 8, 8, requires_grad=True)
        model.scores(x).sum().backward()  # gradients reach the input: white-box attacks work
        assert x.grad is not None and x.grad.abs().sum() > 0
        with pytest.raises(RobenchError, match="never trained"):
            model.fit(x, torch.zeros(3, dtype=torch.long), None)


def test_normalize_goes_in_front(saved, tmp_path):
    folder, net = saved
    reg = _registry()
    spec = reg.get("model", "torch-file")
    from robench_plugins.datasets.digits import Digits, DigitsParams

    params = spec.params.model_validate({"architecture": "loader_nets:make", "weights": folder / "net.safetensors",
                                         "normalize": {"mean": [0.5], "std": [0.25]}})
    model = spec.factory(params, Digits(DigitsParams()).info())
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(model.scores(x), net((x - 0.5) / 0.25), atol=1e-6)
    with pytest.raises(ValueError, match="one of each per channel"):
        spec.params.model_validate({"architecture": "a:b", "weights": "w.pt", "normalize": {"mean": [0.5, 0.5], "std": [1]}})


def test_mismatched_weights_list_missing_and_unexpected_keys(saved, tmp_path):
    folder, _ = saved
    state = {"1.weight": torch.zeros(24, 64), "extra.bias": torch.zeros(3)}
    torch.save(state, tmp_path / "bad.pt")
    (tmp_path / "loader_nets.py").write_text(NETS)
    reg = _registry()
    spec = reg.get("model", "torch-file")
    from robench_plugins.datasets.digits import Digits, DigitsParams

    params = spec.params.model_validate({"architecture": "loader_nets:make", "weights": tmp_path / "bad.pt"})
    with pytest.raises(RobenchError) as err:
        spec.factory(params, Digits(DigitsParams()).info())
    msg = str(err.value)
    assert "missing keys (in the architecture, not in the file): 1.bias, 3.bias, 3.weight" in msg
    assert "unexpected keys (in the file, not in the architecture): extra.bias" in msg


def test_a_pickled_module_is_refused_with_what_to_do(saved, tmp_path):
    folder, net = saved
    torch.save(net, tmp_path / "whole.pt")  # a whole module: needs pickle to load
    reg = _registry()
    spec = reg.get("model", "torch-file")
    from robench_plugins.datasets.digits import Digits, DigitsParams

    params = spec.params.model_validate({"architecture": "loader_nets:make", "weights": tmp_path / "whole.pt"})
    with pytest.raises(RobenchError, match=r"save net.state_dict\(\) instead"):
        spec.factory(params, Digits(DigitsParams()).info())


def test_wrong_class_count_is_reported(saved, tmp_path):
    folder, _ = saved
    reg = _registry()
    spec = reg.get("model", "torchscript")
    from robench.api import DatasetInfo

    model_info = DatasetInfo("x", (1, 8, 8), ("a", "b", "c"))
    with pytest.raises(RobenchError, match=r"returns \(2, 10\).*3 classes"):
        spec.factory(spec.params.model_validate({"file": folder / "net.ts"}), model_info)


def test_missing_files_are_reported_at_validate_with_their_line(saved, tmp_path):
    folder, _ = saved
    text = (folder / "suite.yaml").read_text().replace("weights: net.pt", "weights: nowhere.pt").replace("file: net.onnx", "file: gone.onnx")
    (folder / "broken.yaml").write_text(text)
    res = CliRunner().invoke(app, ["validate", str(folder / "broken.yaml"), "--plugin", "loader_ref_plugin"])
    out = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "models[1].params.weights (line 8): file not found:" in out and "nowhere.pt" in out
    assert "models[4].params.file (line 11): file not found:" in out and "gone.onnx" in out


@pytest.mark.parametrize("where", ["../outside.pt", "link/outside.pt"])
def test_suite_paths_stay_inside_the_suite_folder_or_data_dir(tmp_path, where):
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    (suite_dir / "link").symlink_to(tmp_path)  # leads out of the suite's folder
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))), str(tmp_path / "outside.pt"))
    (suite_dir / "s.yaml").write_text(f"""
name: esc
dataset: {{name: digits, limit: 5}}
device: cpu
models: [{{name: m, plugin: torchscript, params: {{file: {where!r}}}}}]
attacks: [{{name: f, plugin: fgsm, params: {{norm: Linf}}}}]
epsilons: {{Linf: [0.1]}}
""")
    from robench.errors import UserInputError
    from robench.plugins import get_registry

    reg = get_registry()
    resolved = load_suite(suite_dir / "s.yaml", reg)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(UserInputError, match=r"models\[0\].params.file: .* outside the suite's folder and the data dir"):
        run_suite(resolved, reg, RunOptions(out_dir=tmp_path / "out", data_dir=data, cache_dir=tmp_path / "cache"))
    assert not (tmp_path / "out" / "results.sqlite").exists()
    # The user can name the folder explicitly.
    summary = run_suite(resolved, reg, RunOptions(out_dir=tmp_path / "out", data_dir=data, cache_dir=tmp_path / "cache",
                                                  allow_dirs=(tmp_path,)))
    assert summary.ok


def test_bad_architecture_strings_are_rejected(tmp_path):
    from robench.plugins import get_registry

    spec = get_registry().get("model", "torch-file")
    with pytest.raises(ValueError, match="package.module:factory"):
        spec.params.model_validate({"architecture": "just_a_name", "weights": "w.pt"})
    p = spec.params.model_validate({"architecture": "nets.py:make", "weights": "w.pt"})
    assert p.architecture == "nets:make" and p.code == Path("nets.py")
    with pytest.raises(ValueError, match="no module 'not_installed_anywhere' on the Python path"):
        spec.params.model_validate({"architecture": "not_installed_anywhere.nets:make", "weights": "w.pt"})


def test_overwritten_weights_give_new_cells_and_no_stale_rows(saved, tmp_path):
    """The issue's reproduction: overwrite the weights with an untrained net, rerun the same suite."""
    from robench.metrics import compute
    from robench.report import to_markdown
    from robench.store import Store

    folder, net = saved
    (tmp_path / "net.ts").write_bytes((folder / "net.ts").read_bytes())
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        name: overwrite
        dataset: {name: digits, limit: 40}
        device: cpu
        models: [{name: mine, plugin: torchscript, params: {file: net.ts}}]
        attacks: [{name: fgsm, plugin: fgsm, params: {norm: Linf}}]
        epsilons: {Linf: [0.1]}
    """))

    def run_and_read():
        db = _run(tmp_path, tmp_path, "s.yaml")
        store = Store(db)
        try:
            res = compute(store, "overwrite")
            cells = store.cells("overwrite")
        finally:
            store.close()
        return res, cells

    first, cells1 = run_and_read()
    assert first.clean["mine"][0] / first.clean["mine"][1] > 0.8
    torch.manual_seed(123)
    untrained = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.jit.save(torch.jit.script(untrained), str(tmp_path / "net.ts"))  # same name, new bytes
    second, cells2 = run_and_read()
    assert len(cells2) == 2 and len(cells1) == 1, "new weights: a new cell, not '1 already stored'"
    assert second.clean["mine"][0] / second.clean["mine"][1] < 0.5  # the numbers are the new net's
    [row1] = [r for r in first.rows if r.attack == "fgsm"]
    [row2] = [r for r in second.rows if r.attack == "fgsm"]
    assert row2.robust_accuracy != row1.robust_accuracy
    text = to_markdown(second)
    assert "1 stored cell of model mine belong to an earlier version of it" in " ".join(text.split())
    # Putting the old bytes back finds the old cell again: content decides, not the name.
    (tmp_path / "net.ts").write_bytes((folder / "net.ts").read_bytes())
    third, cells3 = run_and_read()
    assert len(cells3) == 2 and third.clean == first.clean


def test_model_key_follows_file_contents_not_names(saved, tmp_path):
    """Weights and the architecture's source file enter the key; the suite's location does not."""
    import shutil

    from robench.models import model_key

    folder, _ = saved
    reg = _registry()

    def keys(where):
        resolved = load_suite(where / "suite.yaml", reg)
        return {m.name: model_key(resolved, reg, m.name, torch.device("cpu")) for m in resolved.suite.models}

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    base = keys(copy)
    assert keys(folder) == base, "the same files elsewhere on the machine: the same keys"
    (copy / "loader_nets.py").write_text((copy / "loader_nets.py").read_text() + "\n# a changed architecture file\n")
    changed = keys(copy)
    assert changed["pt"] != base["pt"] and changed["st"] != base["st"]  # the torch-file models read it
    assert changed["ts"] == base["ts"] and changed["ox"] == base["ox"]
    (copy / "net.onnx").write_bytes((copy / "net.onnx").read_bytes() + b"\0")
    assert keys(copy)["ox"] != base["ox"]
