"""Model cards: a run records, per model, its key, the SHA-256 of the weights it used, where they came
from, the training time and the plugin's description (in the run's provenance, under "models"), and
the published Models table (markdown and HTML) shows them."""

from __future__ import annotations

import hashlib
import re
import sys
import textwrap
from pathlib import Path

from robench.plugins import load_registry
from robench.report import load_results, to_markdown
from robench.report.html import suite_page
from robench.run import RunOptions, run_suite
from robench.store import Store
from robench.suite import load_suite

from loader_formats import save_formats

SUITE = """
name: cards
dataset: {name: digits, split: test, limit: 12}
device: cpu
seed: 5
models:
  - {name: a, plugin: mlp, params: {hidden: 8, layers: 1, epochs: 1}}
attacks:
  - {name: fgsm, plugin: fgsm, params: {norm: Linf}}
epsilons: {Linf: [0.1]}
"""


def _run(tmp: Path, out: str, suite: str = SUITE, name: str = "cards.yaml", registry=None):
    path = tmp / name
    path.write_text(textwrap.dedent(suite))
    reg = registry or load_registry()
    summary = run_suite(load_suite(path, reg), reg, RunOptions(out_dir=tmp / out, data_dir=tmp / "data", cache_dir=tmp / "cache"))
    assert summary.ok
    return tmp / out / "results.sqlite"


def _models_rows(md: str) -> dict[str, dict[str, str]]:
    lines = md.split("## Models", 1)[1].splitlines()
    table = [ln for ln in lines if ln.startswith("|")]
    split = lambda ln: [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip())[1:-1]]  # noqa: E731
    header = split(table[0])
    return {r[0]: dict(zip(header, r)) for r in map(split, table[2:])}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_table_shows_the_cached_weights_hash_and_origin(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_ZOO", str(tmp_path / "nozoo"))  # trained here, whatever the repository's zoo holds
    store = _run(tmp_path, "run1")
    folders = [p for p in (tmp_path / "cache").iterdir() if (p / "weights.safetensors").is_file()]
    assert len(folders) == 1
    sha = _sha256(folders[0] / "weights.safetensors")
    with Store(store, create=False) as s:
        card = s.runs("cards")[-1]["provenance"]["models"]["a"]
    assert card["key"] == folders[0].name and card["weights_sha256"] == sha and card["weights_origin"] == "trained now"
    assert card["train_seconds"] > 0 and card["description"] == load_registry().get("model", "mlp").description

    row = _models_rows(to_markdown(load_results(store)[0]))["a"]
    assert row["Weights SHA-256"] == sha[:12] and row["Weights from"] == "trained now"
    assert re.fullmatch(r"\d+(\.\d)? (s|min|h)", row["Training"]) and row["Description"] != "–"

    # a second run (fresh results folder, same cache) loads the same file from the cache
    row2 = _models_rows(to_markdown(load_results(_run(tmp_path, "run2"))[0]))["a"]
    assert row2["Weights SHA-256"] == sha[:12] and row2["Weights from"] == "cache" and row2["Training"] == row["Training"]

    # the published HTML page: the short hash shown, the full one as its tooltip, and the origin
    page = suite_page(load_results(store)[0], {})
    models = page.split('<h2 id="models">Models</h2>', 1)[1]
    assert f'title="{sha}"' in models and f">{sha[:12]}<" in models and "trained now" in models


def test_loaded_model_card_names_its_file_and_its_hash(tmp_path):
    before = set(sys.modules)
    try:
        save_formats(tmp_path)  # puts tmp_path on sys.path and imports loader_nets from it
    finally:
        sys.path.remove(str(tmp_path))
        for name in {"loader_nets", "loader_ref_plugin"} - before:
            sys.modules.pop(name, None)
    suite = """
    name: loaded
    dataset: {name: digits, limit: 12}
    device: cpu
    models:
      - {name: st, plugin: torch-file, params: {architecture: "loader_nets.py:make", weights: net.safetensors}}
    attacks:
      - {name: fgsm, plugin: fgsm, params: {norm: Linf}}
    epsilons: {Linf: [0.1]}
    """
    store = _run(tmp_path, "run", suite, "loaded.yaml")
    row = _models_rows(to_markdown(load_results(store)[0]))["st"]
    assert row["Weights SHA-256"] == _sha256(tmp_path / "net.safetensors")[:12]
    assert row["Weights from"] == "loaded from file net.safetensors" and row["Training"] == "–"
