"""The static site in a real headless Chromium (Debian's, driven by playwright): pages load without
console errors, images render, tables sort on click, and every number equals the JSON.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no browser download: the system
chromium is used); skipped otherwise.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robench.report import load_results
from robench.report import build_site
from test_publish_leaderboard import build_store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if CHROMIUM is None:
        pytest.skip("no chromium executable on PATH (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("site")
    store = build_store(tmp / "results.sqlite")
    build_site(load_results(store), tmp / "site")
    return tmp / "site"


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed request: {r.url}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, problems


def test_index_links_to_suite_pages(browser, site):
    page, problems = open_page(browser, site / "index.html")
    assert page.title() == "robench leaderboards"
    row = page.locator("#suites tbody tr").first
    assert row.locator("td").nth(0).inner_text() == "toy"
    assert row.locator("td").nth(3).inner_text() == "L2: B (100.0 @ 1)"
    page.click("text=toy")
    page.wait_for_load_state("load")
    assert page.url.endswith("/toy.html")
    assert page.locator("h1").inner_text() == "Leaderboard: toy"
    assert problems == []
    page.close()


def test_suite_page_loads_cleanly_with_its_plots(browser, site):
    page, problems = open_page(browser, site / "toy.html")
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    assert {s for s, _, _ in sizes} == {"toy.svg", "toy-cdf.svg"}
    assert all(done and width > 100 for _, done, width in sizes), sizes
    assert page.locator("#warnings + ul li").count() >= 1
    assert "suite hash feedfacecafe0001" in page.locator("#provenance ~ p").first.inner_text()
    assert problems == []
    page.close()


def test_every_number_equals_the_json(browser, site):
    rows = {(r["model"], r["attack"], r["norm"]): r for r in json.loads((site / "toy.json").read_text())}
    page, problems = open_page(browser, site / "toy.html")
    cells = page.eval_on_selector_all(
        "td[data-field]",
        "tds => tds.map(td => [td.closest('tr').dataset.model, td.closest('tr').dataset.norm, td.dataset.attack,"
        " td.dataset.field, td.dataset.value, td.innerText])",
    )
    assert len(cells) >= 40
    for model, norm, attack, field, value, text in cells:
        expected = rows[(model, attack, norm)]
        for part in field.split("/"):
            expected = expected[part]
        if expected is None:
            assert value == "" and text.startswith("–")
        elif isinstance(expected, str):
            assert value == expected == text
        elif field == "rejected":
            assert int(value) == expected and text == str(expected)
        else:
            assert float(value) == expected, (model, attack, field)  # the exact double, not a rounding
            shown = f"{100 * expected:.1f}" if field.startswith(("robust_accuracy", "clean_accuracy", "success_rate")) else f"{expected:.4g}"
            # the number leads the cell ("92.5 [88.0, 95.4]"), or follows the attack name ("pgd (92.5)")
            assert text.startswith(shown) or text == f"{attack} ({shown})", (model, attack, field, text, shown)
    assert problems == []
    page.close()


def column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(f"#{table} tbody tr", f"trs => trs.map(tr => tr.cells[{index}].innerText)")


def test_tables_sort_on_click(browser, site):
    page, problems = open_page(browser, site / "toy.html")
    # per-attack table: Mean L2 is column 6 (Model, Attack, Kind, 3 eps); pgd has no mean norm
    header = page.locator("#attacks-L2 thead th").nth(6)
    assert header.inner_text().startswith("Mean L2")
    assert column(page, "attacks-L2", 1) == ["cw", "pgd", "cw"]  # as written: by model, then attack
    header.click()
    assert header.get_attribute("aria-sort") == "descending"
    assert column(page, "attacks-L2", 6) == ["1.5", "1.35", "–"]  # missing values last
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    assert column(page, "attacks-L2", 6) == ["1.35", "1.5", "–"]
    # text column, and the ranking table sorted by its ε=0.5 column (B 100%, A 70%)
    page.locator("#attacks-L2 thead th").nth(1).click()
    assert column(page, "attacks-L2", 1) == ["pgd", "cw", "cw"]
    eps = page.locator("#ranking-L2 thead th").nth(3)
    assert eps.inner_text().startswith("ε=0.5")
    eps.click()
    eps.click()
    assert [m.split()[0] for m in column(page, "ranking-L2", 1)] == ["A", "B"]
    # sorting one table leaves the other's sort state alone
    assert page.locator("#attacks-L2 thead th[aria-sort]").count() == 1
    assert page.locator("#ranking-L2 thead th[aria-sort]").count() == 1
    assert problems == []
    page.close()
