"""The static site in a real headless Chromium (Debian's, driven by playwright): pages load without
console errors, images render, tables sort on click, and every number equals the JSON.

Needs ``apt-get install chromium`` and ``pip install playwright`` (no browser download: the system
chromium is used); skipped otherwise.
"""

from __future__ import annotations

import dataclasses
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
            # the number leads the cell ("92.5 [88.0, 95.4]"), or follows the attack names ("pgd (92.5)", "cw, pgd (60.0)")
            assert text.startswith(shown) or (text.endswith(f" ({shown})") and attack in text.split(" (")[0].split(", ")), \
                (model, attack, field, text, shown)
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
    eps = page.locator("#ranking-L2 thead th").nth(6)  # after the key columns (#, Model, Clean, ε=1, Strongest, Success)
    assert eps.inner_text().startswith("ε=0.5")
    eps.click()
    eps.click()
    assert [m.split()[0] for m in column(page, "ranking-L2", 1)] == ["A", "B"]
    # sorting one table leaves the other's sort state alone
    assert page.locator("#attacks-L2 thead th[aria-sort]").count() == 1
    assert page.locator("#ranking-L2 thead th[aria-sort]").count() == 1
    assert problems == []
    page.close()


@pytest.fixture(scope="module")
def wide_site(tmp_path_factory) -> Path:
    """An L0 suite as wide as the cifar_l0 board (issue 22: ~18 columns): the toy results with 5 eps and
    cw copied into six more attacks, two of them foolbox-style value-counting plugins."""
    tmp = tmp_path_factory.mktemp("wide")
    res = load_results(build_store(tmp / "results.sqlite"))[0]
    extra = ["pdpgd-l0", "pdpgd-l0-refined", "bb-l0", "jsma", "pixel", "fmn-l0"]
    rows = [dataclasses.replace(r, norm="L0") for r in res.rows]
    rows += [dataclasses.replace(r, attack=a) for a in extra for r in rows if r.attack == "cw"]
    plugins = {"cw": "pdpgd", "pgd": "pdpgd", "pdpgd-l0": "pdpgd", "pdpgd-l0-refined": "pdpgd", "bb-l0": "fb-bb",
               "jsma": "art-jsma", "pixel": "art-pixel", "fmn-l0": "fb-fmn"}
    wide = dataclasses.replace(res, suite="wide", rows=rows, config=dict(
        res.config, name="wide", epsilons={"L0": [0.5, 1.0, 2.0, 3.0, 4.0]}, headline={"L0": 1.0},
        attacks=[{"name": a, "plugin": p} for a, p in plugins.items()],
        models=[{"name": "A", "plugin": "mlp", "params": {"hidden": 8}}, {"name": "B", "plugin": "mlp"}]))
    build_site([wide], tmp / "site")
    return tmp / "site"


def test_ranking_table_shows_its_key_columns_at_1400_px(browser, wide_site, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((wide_site / "wide.html").as_uri())
    table = page.locator("#ranking-L0")
    headers = table.locator("thead th").all_inner_texts()
    assert len(headers) >= 16  # as wide as the board that hid its key columns
    assert headers[:6] == ["#", "Model", "Clean", "ε=1", "Strongest attack @1", "Success"]
    scroller = page.locator("#ranking-L0").locator("xpath=..")
    assert scroller.evaluate("d => d.scrollWidth > d.clientWidth")  # the rest still scrolls sideways
    for i in range(6):  # ... but the key columns are fully in the window before any scrolling
        box = table.locator("thead th").nth(i).bounding_box()
        assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= 1400, (headers[i], box)
    page.screenshot(path=str(tmp_path / "ranking-1400.png"))
    # scrolled to the far right, rank and model stay pinned at the left edge
    scroller.evaluate("d => { d.scrollLeft = d.scrollWidth; }")
    left = scroller.bounding_box()["x"]
    assert scroller.evaluate("d => d.scrollLeft") > 100
    rank, model = (table.locator("tbody tr").first.locator("td").nth(i) for i in (0, 1))
    assert abs(rank.bounding_box()["x"] - left) < 1.5
    assert abs(model.bounding_box()["x"] - (left + rank.bounding_box()["width"])) < 1.5
    assert model.inner_text().startswith("B")
    page.screenshot(path=str(tmp_path / "ranking-1400-scrolled.png"))
    # the value-counting L0 attacks are marked and explained
    assert "bb-l0 ‡ mean L0" in headers and "jsma ‡ mean L0" in headers and "pixel mean L0" in headers
    assert "bb-l0 (fb-bb), jsma (art-jsma), fmn-l0 (fb-fmn) minimise the number of changed channel values" in \
        page.locator("p.values").first.inner_text()
    # the models table (a compact card per model): plugin with its version, parameters, clean accuracy, rank
    assert column(page, "models", 0) == ["A", "B"] and column(page, "models", 2) == ['{"hidden": 8}', "{}"]
    assert column(page, "models", 5) == ["2", "1"]
    page.close()


def test_attack_ranking_view_and_filter_box(browser, site):
    page, problems = open_page(browser, site / "toy.html")
    assert page.locator("#attacks-ranked-L2").inner_text() == "L2: attacks ranked"
    assert column(page, "attack-ranking-L2", 1) == ["cw", "pgd"]
    assert len(column(page, "attacks-L2", 0)) == 3
    page.fill("#filter", "pgd")
    visible = page.eval_on_selector_all("#attacks-L2 tbody tr", "trs => trs.filter(t => t.offsetParent !== null).map(t => t.cells[1].innerText)")
    assert visible == ["pgd"]
    page.fill("#filter", "b cw")  # every word must match: model B's cw row
    visible = page.eval_on_selector_all("#attacks-L2 tbody tr", "trs => trs.filter(t => t.offsetParent !== null).map(t => t.cells[0].innerText)")
    assert visible == ["B"]
    page.fill("#filter", "")
    assert page.eval_on_selector_all("#attacks-L2 tbody tr", "trs => trs.filter(t => t.offsetParent !== null).length") == 3
    assert problems == []
    page.close()
