"""The docs: generated references are current, nothing is undocumented, examples are valid, and
the site builds with ``mkdocs build --strict`` (skipped when mkdocs is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robench import docgen

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def test_generated_references_are_up_to_date():
    stale = docgen.stale()
    assert stale == [], f"out of date: {stale}; regenerate with `python -m robench.docgen` (or `make docs`) and commit"


def test_every_hook_is_documented():
    from robench import hookspecs

    page = (DOCS / "reference" / "hooks.md").read_text()
    names = [n for n in dir(hookspecs) if n.startswith("robench_") and callable(getattr(hookspecs, n))]
    assert names and {n for n, _ in docgen.hook_specs()} == set(names)
    for name in names:
        assert f"### `{name}(" in page, f"hook {name} is missing from docs/reference/hooks.md"


def test_a_hook_without_docstring_fails(monkeypatch):
    def robench_new_hook():
        pass

    robench_new_hook.robench_spec = {}
    monkeypatch.setattr(docgen, "hook_specs", lambda: [("robench_new_hook", robench_new_hook)])
    with pytest.raises(docgen.Undocumented, match="robench_new_hook"):
        docgen.hooks_reference()


def _section(page: str, title: str) -> str:
    start = page.index(f"## {title}")
    end = page.find("\n## ", start + 1)
    return page[start: end if end != -1 else None]


def test_every_suite_field_is_documented():
    page = (DOCS / "reference" / "suite.md").read_text()
    models = docgen.suite_models()
    assert {m.__name__ for m in models} >= {"Suite", "DatasetRef", "ModelEntry", "AttackEntry", "NoiseSpec"}
    for model in models:
        section = _section(page, "Suite (top level)" if model.__name__ == "Suite" else model.__name__)
        for name in model.model_fields:
            line = next((line for line in section.splitlines() if line.startswith(f"| `{name}` |")), None)
            assert line is not None, f"suite field {model.__name__}.{name} is missing from docs/reference/suite.md"
            assert line.rstrip(" |").split(" | ")[-1].strip(), f"{model.__name__}.{name} has an empty description"


def test_a_suite_field_without_description_fails():
    from pydantic import BaseModel

    class Extra(BaseModel):
        documented: int = 1
        bare: int = 2

    Extra.model_fields["documented"].description = "has one"
    assert docgen.field_description(Extra, "documented") == "has one"
    with pytest.raises(docgen.Undocumented, match="Extra.bare"):
        docgen.field_description(Extra, "bare")


def test_every_cli_command_and_option_is_documented():
    page = (DOCS / "reference" / "cli.md").read_text()
    commands = list(docgen.cli_commands())
    names = {n for n, _ in commands}
    assert {"robench run", "robench publish", "robench diff", "robench data import"} <= names
    for name, cmd in commands:
        section = page[page.index(f"## `{name}`"):]
        section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else None]
        for p in cmd.params:
            label = p.opts[0] if p.opts[0].startswith("-") else p.name.upper()
            assert f"`{label}`" in section, f"{name}: {label} is missing from docs/reference/cli.md"


def test_a_cli_option_without_help_fails(monkeypatch):
    import typer

    from robench import cli

    app = typer.Typer()

    @app.command()
    def one(flag: bool = typer.Option(False, "--flag")) -> None:
        """Documented command, undocumented option."""

    @app.command()
    def two() -> None:
        """Another."""

    monkeypatch.setattr(cli, "app", app)
    with pytest.raises(docgen.Undocumented, match="flag"):
        docgen.cli_reference()


def test_plugin_reference_lists_every_builtin(registry):
    page = (DOCS / "reference" / "plugins.md").read_text()
    for spec in registry.all():
        if spec.origin == "built-in":
            assert f"### `{spec.name}`" in page, f"{spec.kind} plugin {spec.name} missing from docs/reference/plugins.md"


def test_metrics_page_states_the_verifier_constants():
    from robench import verify

    def g(x: float) -> str:  # 1e-06 -> 1e-6, as the page writes it
        return re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{x:g}").replace("e+", "e")

    page = (DOCS / "metrics.md").read_text()
    assert f"`RESIDUE` = {g(verify.RESIDUE)}" in page
    assert f"`REL_TOL` = {g(verify.REL_TOL)}" in page and f"`ABS_TOL` = {g(verify.ABS_TOL)}" in page
    assert f"v <= eps * (1 + {g(verify.REL_TOL)}) + {g(verify.ABS_TOL)}" in page


def test_suite_example_in_the_docs_is_valid(registry):
    from robench.suite import load_suite

    page = (DOCS / "suites.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", page, re.S).group(1)
    resolved = load_suite("docs/suites.md", registry, text=block)
    assert resolved.suite.name == "mnist-linf" and yaml.safe_load(block)["headline"] == {"Linf": 0.3}


def test_include_hook_demotes_headings_and_rewrites_links(tmp_path):
    sys.path.insert(0, str(DOCS))
    try:
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "b.md").write_text("# Attacks\n\n![plot](speed.png) [up](../metrics.md#provenance) [web](https://x.y)\n"
                                                  "```\n# not a heading\n```\n")
    (tmp_path / "benchmarks" / "a.md").write_text("# Models\n")
    page = tmp_path / "benchmarks.md"
    out = hooks.include("# Benchmarks\n\n<!-- include: benchmarks/*.md -->\n", page, tmp_path)
    assert out.index("## Models") < out.index("## Attacks")  # name order
    assert "![plot](benchmarks/speed.png) [up](metrics.md#provenance) [web](https://x.y)" in out
    assert "\n# not a heading\n" in out
    assert "Nothing published" in hooks.include("<!-- include: none/*.md -->", page, tmp_path)


def test_mkdocs_builds_without_warnings(tmp_path):
    if shutil.which("mkdocs") is None and subprocess.run([sys.executable, "-c", "import mkdocs"]).returncode != 0:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    for page in ("index.html", "metrics.html", "reference/cli.html", "reference/suite.html", "benchmarks.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_pages_missing_from_nav_are_added_under_plugin_notes(tmp_path):
    sys.path.insert(0, str(DOCS))
    try:
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    for name, text in (("index.md", "# Home\n"), ("models-x.md", "intro\n# Model X\n"), ("reproductions-a.md", "# A\n")):
        (tmp_path / name).write_text(text)
    nav = [{"Home": "index.md"}, {"Reference": [{"CLI": "reference/cli.md"}]}]
    assert hooks.unlisted_pages(tmp_path, nav) == [{"Model X": "models-x.md"}]
    config = hooks.on_config({"docs_dir": str(tmp_path), "nav": nav})
    assert config["nav"][1] == {"Plugin notes": [{"Model X": "models-x.md"}]}
    assert list(config["nav"][2]) == ["Reference"]
