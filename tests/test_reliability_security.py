"""Security: suites cannot import modules or run code, plugin paths stay inside the data dir,
and nothing in robench or its plugins deserialises with pickle-capable loaders."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.errors import UserInputError
from robench.plugins import get_registry
from robench.run import RunOptions, run_suite
from robench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
PLUGINS = ("reliability_plugins",)


@pytest.fixture()
def sentinel(tmp_path, monkeypatch):
    """A module on the import path that leaves a file behind when imported."""
    mods = tmp_path / "mods"
    mods.mkdir()
    marker = tmp_path / "imported"
    (mods / "robench_sentinel.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(mods), os.environ.get("PYTHONPATH", "")]))
    return marker


def suite_with(model_plugin: str, attack_plugin: str = "fgsm") -> str:
    return f"""
name: sec
dataset: {{name: digits, split: test, limit: 10}}
models:
  - {{name: m, plugin: {model_plugin!r}}}
attacks:
  - {{name: a, plugin: {attack_plugin!r}, params: {{norm: Linf}}}}
epsilons: {{Linf: [0.1]}}
"""


@pytest.mark.parametrize("name", ["robench_sentinel", "robench_sentinel:Model", "os.system", "subprocess",
                                  "robench_sentinel.Anything", "../robench_sentinel", "builtins.eval"])
def test_plugin_names_in_suites_never_import_modules(tmp_path, sentinel, name):
    path = tmp_path / "suite.yaml"
    path.write_text(suite_with(name, attack_plugin=name))
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "out"), "-q"]):
        res = CliRunner().invoke(app, command)
        out = " ".join(res.output.split())
        assert res.exit_code == 2, res.output
        assert f"models[0].plugin (line 5): unknown model plugin {name!r}" in out
        assert "attacks[0].plugin (line 7): unknown attack plugin" in out
        assert "Traceback" not in out
    assert not sentinel.exists() and "robench_sentinel" not in sys.modules


def test_the_sentinel_does_fire_when_the_user_asks_with_plugin(tmp_path, sentinel):
    """Makes the test above meaningful: the same module *is* imported through --plugin."""
    path = tmp_path / "suite.yaml"
    path.write_text(suite_with("mlp"))
    proc = subprocess.run([sys.executable, "-m", "robench.cli", "validate", str(path), "--plugin", "robench_sentinel"],
                          capture_output=True, text=True, env=dict(os.environ), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert sentinel.exists()


@pytest.mark.parametrize("payload", [
    "name: !!python/object/apply:os.system ['touch {marker}']",
    "name: !!python/object/new:robench_sentinel.X []",
    "name: !!python/name:robench_sentinel.X",
    "name: !!python/module:robench_sentinel",
])
def test_yaml_tags_cannot_run_code(tmp_path, sentinel, payload):
    path = tmp_path / "suite.yaml"
    path.write_text(payload.format(marker=sentinel) + "\n" + suite_with("mlp").split("\n", 2)[2])
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 2
    assert "YAML syntax (line 1, column 7)" in " ".join(res.output.split())
    assert not sentinel.exists()


def confined_run(tmp_path: Path, flag: str):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (tmp_path / "suite.yaml").write_text(f"""
name: paths
dataset: {{name: digits, split: test, limit: 10}}
device: cpu
models: [{{name: lsq, plugin: fault-linear}}]
attacks: [{{name: noise, plugin: fault-noise, params: {{flag: {flag!r}}}}}]
epsilons: {{Linf: [0.1]}}
""")
    reg = get_registry(PLUGINS)
    opts = RunOptions(out_dir=tmp_path / "out", data_dir=data, cache_dir=tmp_path / "cache", plugins=PLUGINS)
    return run_suite(load_suite(tmp_path / "suite.yaml", reg), reg, opts)


@pytest.mark.parametrize("flag", ["../outside.txt", "/etc/passwd", "sub/../../outside.txt", "link/escape.txt", "~/x.txt"])
def test_paths_in_suites_are_confined_to_the_data_dir(tmp_path, flag):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path)  # a symlink inside the data dir that leads out of it
    with pytest.raises(UserInputError) as err:
        confined_run(tmp_path, flag)
    msg = str(err.value)
    assert msg.startswith("attacks[0].params.flag: ") and "outside the data dir" in msg
    assert not (tmp_path / "out" / "results.sqlite").exists(), "refused before the store was opened"
    assert not (tmp_path / "outside.txt").exists()


def test_paths_inside_the_data_dir_are_accepted(tmp_path):
    summary = confined_run(tmp_path, "batches.txt")
    assert summary.ok
    assert (tmp_path / "data" / "batches.txt").exists()


# -- no pickle-capable loading anywhere in the code robench runs ---------------------------------

def _unsafe_calls(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        const = lambda k: isinstance(kw.get(k), ast.Constant) and kw[k].value  # noqa: E731
        if owner == "torch" and name == "load" and const("weights_only") is not True:
            found.append((node.lineno, "torch.load without weights_only=True"))
        elif owner in ("pickle", "cPickle", "dill", "joblib", "cloudpickle") and name in ("load", "loads"):
            found.append((node.lineno, f"{owner}.{name}"))
        elif owner in ("np", "numpy") and name == "load" and const("allow_pickle") is True:
            found.append((node.lineno, "np.load(allow_pickle=True)"))
        elif owner == "yaml" and (name in ("unsafe_load", "full_load") or (name == "load" and "Loader" not in kw)):
            found.append((node.lineno, f"yaml.{name}"))
        elif isinstance(f, ast.Name) and f.id in ("eval", "exec"):
            found.append((node.lineno, f.id))
    return found


def test_no_pickle_capable_loaders_in_robench_or_its_plugins():
    problems = []
    files = sorted((REPO / "robench").rglob("*.py")) + sorted((REPO / "plugins").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        for line, what in _unsafe_calls(ast.parse(path.read_text(), str(path))):
            problems.append(f"{path.relative_to(REPO)}:{line}: {what}")
    assert not problems, "unsafe deserialisation:\n" + "\n".join(problems)


def test_the_scanner_finds_what_it_looks_for():
    code = "import torch, pickle, yaml, numpy as np\ntorch.load(p)\npickle.loads(b)\nyaml.load(t)\nnp.load(f, allow_pickle=True)\neval(s)\ntorch.load(p, weights_only=True)\nyaml.load(t, Loader=yaml.SafeLoader)\n"
    assert [line for line, _ in _unsafe_calls(ast.parse(code))] == [2, 3, 4, 5, 6]
