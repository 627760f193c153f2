"""`robench evaluate` (no YAML) and robench.evaluate(nn.Module), end to end on the embedded digits."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import robench
from robench.cli import app


def _net() -> torch.nn.Module:
    from robench_plugins.datasets.digits import Digits, DigitsParams

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x, y = Digits(DigitsParams()).load("train", Path("."))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def net():
    return _net()


def test_cli_evaluate_writes_a_suite_runs_it_and_prints_the_leaderboard(net, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "cache"))
    models = tmp_path / "models"
    models.mkdir()
    torch.jit.save(torch.jit.script(net), str(models / "my net.pt"))
    out = tmp_path / "out"
    args = ["evaluate", "--model", f"torchscript:{models / 'my net.pt'}", "--dataset", "digits", "--limit", "30",
            "--attack", "fgsm", "--attack", "pgd", "--eps", "Linf=8/255,0.1", "--eps", "L2=0.5", "--out", str(out), "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "# Leaderboard: evaluate-my-net" in text
    assert f"suite written to {out / 'suite.yaml'}" in text
    doc = yaml.safe_load((out / "suite.yaml").read_text())
    assert doc["models"] == [{"name": "my-net", "plugin": "torchscript", "params": {"file": str((models / "my net.pt").resolve())}}]
    assert doc["epsilons"] == {"Linf": ["8/255", 0.1], "L2": [0.5]}
    assert [a["name"] for a in doc["attacks"]] == ["fgsm-Linf", "fgsm-L2", "pgd-Linf", "pgd-L2"]
    db = sqlite3.connect(out / "results.sqlite")
    assert db.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 2 * 2 + 2  # Linf: 2 eps per attack, L2: 1
    assert db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 6 * 30
    # The printed repeat command works and finds everything stored.
    again = (out / "suite.yaml").read_text().splitlines()[1].split("#   robench ", 1)[1].split()
    allow = again[again.index("--allow-dir") + 1:]
    res2 = CliRunner().invoke(app, ["run", str(out / "suite.yaml"), "--out", str(out), "--quiet",
                                    "--allow-dir", " ".join(allow)])
    assert res2.exit_code == 0, res2.output
    assert "6 already stored" in " ".join(res2.output.split())


def test_cli_evaluate_torch_file_and_onnx(net, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "arch.py").write_text("import torch\n\ndef make(hidden=32):\n    return torch.nn.Sequential(torch.nn.Flatten(), "
                                      "torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))\n")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.onnx.export(net, (torch.zeros(1, 1, 8, 8),), str(tmp_path / "n.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    accs = {}
    for model, extra in (("torch-file:w.safetensors", ["--arch", "arch.py:make", "--arch-kwarg", "hidden=32"]), ("onnx:n.onnx", [])):
        res = CliRunner().invoke(app, ["evaluate", "--model", model, *extra, "--dataset", "digits", "--limit", "20",
                                       "--attack", "fgsm", "--eps", "Linf=0.1", "--out", "o", "--quiet"])
        assert res.exit_code == 0, res.output
        accs[model] = [line for line in res.output.splitlines() if "fgsm" in line and "|" in line]
        if model.startswith("torch-file"):  # the factory's argument is in the written suite, typed as YAML reads it
            assert yaml.safe_load((tmp_path / "o" / "suite.yaml").read_text())["models"][0]["params"]["kwargs"] == {"hidden": 32}
    assert len(accs) == 2 and all(accs.values())
    # Both rows show the same numbers (same net): compare the cells after the model name.
    a, b = (rows[0].split("|")[3:] for rows in accs.values())
    assert a == b


def test_cli_evaluate_errors_are_clear(tmp_path):
    r = CliRunner().invoke(app, ["evaluate", "--model", "torchscript:nowhere.pt", "--dataset", "digits", "--attack", "fgsm"])
    assert r.exit_code == 2 and "file not found: nowhere.pt" in r.output
    (tmp_path / "w.pt").write_bytes(b"")
    r = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "w.pt"), "--attack", "fgsm"])
    assert r.exit_code == 2 and "torchscript:" in r.output and "torch-file:" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--model", f"torchscript:{tmp_path / 'w.pt'}", "--dataset", "digits", "--attack", "fgsm",
                                 "--eps", "Linf=8/0"])
    assert r.exit_code == 2 and "--eps Linf=8/0" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--model", f"torch-file:{tmp_path / 'w.pt'}", "--dataset", "digits", "--attack", "fgsm"])
    assert r.exit_code == 2 and "needs --arch" in r.output
    for bad, says in ((["--arch", "a.py:make", "--arch-kwarg", "32"], "expected KEY=VALUE"),
                      (["--arch", "a.py:make", "--arch-kwarg", "hidden=[1"], "not a YAML scalar"),
                      (["--arch-kwarg", "hidden=32"], "needs --arch")):
        r = CliRunner().invoke(app, ["evaluate", "--model", f"torch-file:{tmp_path / 'w.pt'}", *bad, "--dataset", "digits", "--attack", "fgsm"])
        assert r.exit_code == 2 and says in " ".join(r.output.split()), (bad, r.output)
    r = CliRunner().invoke(app, ["evaluate", "--model", f"torchscript:{tmp_path / 'w.pt'}", "--arch-kwarg", "hidden=32",
                                 "--dataset", "digits", "--attack", "fgsm"])
    assert r.exit_code == 2 and "--arch-kwarg is for torch-file models" in " ".join(r.output.split()), r.output


def test_python_evaluate_returns_rows_and_reuses_by_content(net, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "cache"))
    before = [p.requires_grad for p in net.parameters()]
    rows = robench.evaluate(net, dataset="digits", attacks=["fgsm", "pgd"], eps="Linf=0.1", limit=25, out=tmp_path / "o", device="cpu")
    assert [p.requires_grad for p in net.parameters()] == before, "the caller's module is handed back as it came"
    by_attack = {r["attack"]: r for r in rows}
    assert {"fgsm", "pgd", "best"} <= set(by_attack)
    fgsm = by_attack["fgsm"]
    assert fgsm["model"] == "model" and fgsm["norm"] == "Linf" and fgsm["n"] == 25
    assert 0.8 <= fgsm["clean_accuracy"] <= 1
    assert by_attack["pgd"]["robust_accuracy"]["0.1"] <= fgsm["clean_accuracy"]
    # The same weights again: everything stored; other weights: a new model key, new cells.
    db = tmp_path / "o" / "results.sqlite"
    rows_again = robench.evaluate(net, dataset="digits", attacks=["fgsm", "pgd"], eps={"Linf": [0.1]}, limit=25, out=tmp_path / "o",
                                  device="cpu")
    assert rows_again == rows
    n_cells = sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert n_cells == 2
    other = _net()
    with torch.no_grad():
        other[3].bias += 5 * torch.arange(10.0)  # a different classifier
    rows_other = robench.evaluate(other, dataset="digits", attacks=["fgsm", "pgd"], eps=["Linf=0.1"], limit=25, out=tmp_path / "o",
                                  device="cpu")
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 4
    assert {r["attack"]: r for r in rows_other}["fgsm"]["clean_accuracy"] != fgsm["clean_accuracy"]


def test_python_evaluate_rejects_what_is_not_a_module():
    with pytest.raises(robench.UserInputError, match="torch.nn.Module"):
        robench.evaluate(lambda x: x, dataset="digits")
