"""Claims (robench.claims) on hand-made stores with known verdicts, the located errors of ``paper:`` and
``claims:``, and the committed reproduction pages against what their suites and results give."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robench.claims import FAILS, HOLDS, OPEN, UNKNOWN, Results, evaluate
from robench.errors import SuiteError
from robench.metrics import compute
from robench.report.export import rows_json
from robench.report.reproduction import DEFAULT_COMMAND, DEFAULT_SOURCES, generate
from robench.store import SampleRow, Store
from robench.suite import load_suite
from robench.suite_paper import Claim, PaperValue

from fault_suites import suite_text

ROOT = Path(__file__).resolve().parent.parent
N = 400
CONFIG = {"name": "repro", "dataset": {"name": "digits"}, "epsilons": {"Linf": [0.1, 0.2]},
          "models": [{"name": m} for m in "ABC"], "attacks": [{"name": "sub"}, {"name": "min"}]}
#: robust accuracy per model at eps 0.1 / 0.2 (every sample correctly classified); the minimal L2 attack's norms
ROBUST = {"A": (0.80, 0.60), "B": (0.50, 0.30), "C": (0.78, 0.59)}
NORMS = {"A": 2.0, "B": 1.0, "C": 1.95}


def build_store(path: Path) -> Path:
    with Store(path) as store:
        run = store.start_run("repro", "0123456789abcdef", {"versions": {}})
        store.save_suite("repro", "0123456789abcdef", CONFIG)
        for m, (r1, r2) in ROBUST.items():
            store.write_clean("repro", m, f"key-{m}", [(i, f"sha{i}", 0, 0) for i in range(N)])
            for eps, r in ((0.1, r1), (0.2, r2)):
                broken = set(range(round(N * (1 - r))))
                _cell(store, run, m, "sub", "bounded", eps, [(i, i in broken, eps if i in broken else None) for i in range(N)])
            # minimal L2: norms spread around NORMS[m] (0.5x .. 1.5x), every attack succeeds
            _cell(store, run, m, "min", "minimal", None, [(i, True, NORMS[m] * (0.5 + i / N)) for i in range(N)], norm="L2")
        store.finish_run(run, "done")
    return path


def _cell(store, run, model, attack, kind, eps, rows, norm="Linf"):
    key = f"{model}|{attack}|{eps}"
    store.ensure_cell(key, run, suite="repro", model=model, model_plugin="mlp", attack=attack, attack_plugin=attack, norm=norm,
                      kind=kind, eps=eps, source=None, needs=["gradients"], via_surrogate=0, config={"model_key": f"key-{model}"},
                      n_total=N)
    col = "l2" if norm == "L2" else "linf"
    store.write_samples(key, [SampleRow(idx=i, sha256=f"sha{i}", label=0, clean_pred=0, success=s, rejected=False, reject_reason=None,
                                        l0=None, l1=None, **{"l2": None, "linf": None, col: v}, forward=1.0, backward=1.0, seconds=0.0)
                              for i, s, v in rows])
    store.set_cell_status(key, "done")


FACTS = {"models": list("ABC"), "attack_norms": {"sub": "Linf", "min": "L2"}, "epsilons": {"Linf": [0.1, 0.2], "L2": []}}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    with Store(build_store(tmp_path_factory.mktemp("claims") / "results.sqlite"), create=False) as store:
        return compute(store, "repro")


def _verdict(res, paper=(), **claim):
    return evaluate(Claim.model_validate(claim), Results.from_suite_results(res), FACTS, [PaperValue.model_validate(p) for p in paper])


def test_comparisons_of_accuracies_hold_fail_or_are_not_separable(results):
    a_vs = lambda other, op=">", **kw: _verdict(results, claim="c", left={"model": "A", "attack": "sub"}, op=op,
                                                right={"model": other, "attack": "sub"}, **kw).verdict
    assert a_vs("B") == HOLDS  # 80.0 vs 50.0 of 400: the difference's interval is far above 0
    assert a_vs("B", "<") == FAILS
    assert a_vs("C") == OPEN  # 80.0 vs 78.0: inside the interval
    assert a_vs("B", by_more_than=40) == FAILS  # a 30-point gap is not more than 40
    by = _verdict(results, claim="c", left={"model": "A", "attack": "sub"}, op=">", right={"model": "B", "attack": "sub"}, by_more_than=40)
    assert by.instances[0].text.endswith(" by more than 40.0 points")  # the line says what the verdict was judged against
    assert a_vs("C", eps={"from": 0.1}) == OPEN and a_vs("B", eps=[0.1, 0.2]) == HOLDS
    v = _verdict(results, claim="c", left={"attack": "sub"}, op=">", value=55, eps=0.1)  # every model above 55%
    assert [i.verdict for i in v.instances] == [HOLDS, FAILS, HOLDS] and v.verdict == FAILS
    assert _verdict(results, claim="c", left={"attack": "sub"}, op=">", value=55, eps=0.1, at_least=2).verdict == HOLDS
    # clean accuracy (100% of 400) against a number, and A against itself among "every model" is skipped
    assert _verdict(results, claim="c", metric="clean", left={"model": "B"}, op=">", value=95).verdict == HOLDS
    assert len(_verdict(results, claim="c", left={"model": "A", "attack": "sub"}, op=">", right={"attack": "sub"}).instances) == 2


def test_within_the_paper_and_between(results):
    paper = [{"model": "A", "attack": "sub", "eps": 0.1, "value": 80, "where": "T1"},
             {"model": "B", "attack": "sub", "eps": 0.1, "value": 62, "where": "T1"},
             {"model": "C", "attack": "sub", "eps": 0.1, "value": 82, "where": "T2"}]
    within = lambda pts, **kw: _verdict(results, paper, claim="c", op="within", points=pts, **kw)
    assert [i.verdict for i in within(5).instances] == [HOLDS, FAILS, OPEN]  # 80 vs 80; 50 vs 62; 78 [73.7, 81.7] vs 82 +-5
    assert within(5).verdict == FAILS and within(5, at_least=1).verdict == HOLDS and within(5, at_least=2).verdict == OPEN
    assert within(5, where="T2").verdict == OPEN
    assert _verdict(results, paper, claim="c", left={"model": "A", "attack": "sub"}, op="within", points=5, eps=0.1).verdict == HOLDS
    assert _verdict(results, claim="c", left={"model": "A", "attack": "sub"}, op="between", range=[70, 90], eps=0.1).verdict == HOLDS
    assert _verdict(results, claim="c", left={"model": "A", "attack": "sub"}, op="between", range=[85, 90], eps=0.1).verdict == FAILS


def test_norm_claims_bootstrap_from_the_store_and_are_not_computed_from_an_export(results):
    ratio = dict(claim="c", metric="mean_norm", left={"model": "A", "attack": "min"}, op="between", right={"model": "B", "attack": "min"})
    assert _verdict(results, **ratio, range=[1.8, 2.2]).verdict == HOLDS  # means 2.0 / 1.0 over 400 samples each
    assert _verdict(results, **ratio, range=[3, 4]).verdict == FAILS
    near = dict(claim="c", metric="mean_norm", left={"model": "A", "attack": "min"}, op=">", right={"model": "C", "attack": "min"})
    assert _verdict(results, **near).verdict == OPEN  # 2.0 vs 1.95 with spread +-50%
    export = Results.from_export(rows_json([results]))
    v = evaluate(Claim.model_validate(near), export, FACTS, [])
    assert v.verdict == UNKNOWN and "no interval" in v.instances[0].detail  # an export keeps means, not the norms
    # accuracies: the export's counts give the same verdicts as the store
    acc = Claim.model_validate(dict(claim="c", left={"model": "A", "attack": "sub"}, op=">", right={"model": "B", "attack": "sub"}))
    assert evaluate(acc, export, FACTS, []).verdict == HOLDS


def test_a_cell_missing_from_the_results_is_not_computed(results):
    v = _verdict(results, claim="c", left={"model": "A", "attack": "gone"}, op=">", value=1)
    assert v.verdict == UNKNOWN and v.instances[0].detail == "not in the results" and v.instances[0].text == "A / gone"


SUITE = suite_text("t", "name: digits, limit: 20", [f"name: {m}, plugin: mlp, params: {{hidden: 8, epochs: 1}}" for m in "mk"],
                   ["name: a, plugin: fgsm"], "Linf: [0.1, 0.2]", tail="""\
paper:
  - {model: m, attack: a, eps: 0.1, value: 50, where: Table 1}
claims:
  - claim: m above k
    left: {model: m, attack: a}
    op: ">"
    right: {model: k, attack: a}
""")


@pytest.mark.parametrize("edit, expected", [
    (("{model: m, attack: a, eps: 0.1", "{model: nope, attack: a, eps: 0.1"), "paper[0].model (line 10): refers to model 'nope'"),
    (("{model: m, attack: a, eps: 0.1", "{model: m, attack: zz, eps: 0.1"), "paper[0].attack (line 10): refers to attack 'zz'"),
    (("eps: 0.1, value", "eps: 0.3, value"), "paper[0].eps (line 10): eps 0.3 is not one of the suite's Linf epsilons"),
    (("right: {model: k,", "right: {model: q,"), "claims[0].right.model (line 15): refers to model 'q'"),
    (("    right: {model: k, attack: a}\n", "    right: {model: k, attack: a}\n    eps: {from: 0.5}\n"),
     "claims[0].eps (line 16): no eps of the suite falls in this range"),
    (("    op: \">\"\n", "    op: \">\"\n    where: Table 9\n"), "claims[0]"),  # where: only with a within claim
    (("    op: \">\"\n", "    op: within\n    points: 5\n"), None),  # a valid within claim between two cells
    (("  - claim: m above k\n    left: {model: m, attack: a}\n", "  - claim: all\n"), "claims[0]"),  # > without left
])
def test_paper_and_claims_name_only_what_the_suite_has(registry, edit, expected):
    text = SUITE.replace(*edit)
    assert text != SUITE
    if expected is None:
        assert load_suite("s.yaml", registry, text=text).suite.claims[0].op == "within"
        return
    with pytest.raises(SuiteError) as info:
        load_suite("s.yaml", registry, text=text)
    assert expected in str(info.value), str(info.value)


def test_paper_and_claims_leave_the_suite_hash_alone(registry):
    plain = SUITE[:SUITE.index("paper:")]
    assert load_suite("s.yaml", registry, text=plain).suite.content_hash() == load_suite("s.yaml", registry, text=SUITE).suite.content_hash()


# -- the committed pages ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def committed_pages():
    return generate(ROOT / "docs" / "reproductions.yaml", [ROOT / s for s in DEFAULT_SOURCES], DEFAULT_COMMAND)


def test_the_committed_reproduction_pages_are_what_their_suites_and_results_give(committed_pages):
    """Byte for byte: a verdict, number or paper value on a committed page that differs from what the suites and the
    published results give fails here (regenerate: the command in the page's first line)."""
    assert {p.name for p in committed_pages} == {"reproductions-01loss.md", "reproductions-thesis.md"}
    for path, text in committed_pages.items():
        assert path.read_text() == text, f"{path} is out of date: run {DEFAULT_COMMAND}"


def test_a_changed_result_changes_the_page(tmp_path, committed_pages):
    """The page test can fail: one number of an export moved across a claim's line changes its verdict on the page."""
    src = ROOT / "leaderboard" / "papers" / "01loss-substitute-eps-cifar10.json"
    rows = json.loads(src.read_text())
    for r in rows:  # MLP at 4/256: 75.0% -> 60.0%, so "MLP01 above MLP at every eps from 0.015625" holds there too
        if r["model"] == "mlp" and r["attack"] == "substitute":
            r["robust_accuracy"]["0.015625"] = 0.60
    (tmp_path / src.name).write_text(json.dumps(rows))
    pages = generate(ROOT / "docs" / "reproductions.yaml", [tmp_path, *(ROOT / s for s in DEFAULT_SOURCES)], DEFAULT_COMMAND)
    page = next(t for p, t in pages.items() if p.name == "reproductions-01loss.md")
    before = next(t for p, t in committed_pages.items() if p.name == "reproductions-01loss.md")
    line = "mlp01 / substitute @ 0.015625 > mlp / substitute @ 0.015625: "
    assert line + "not separable at this sample size" in before
    assert line + "holds" in page


def test_the_leaderboard_shows_the_paper_and_the_verdicts_of_a_suite_that_has_them(tmp_path):
    from robench.report import load_results, to_markdown

    path = build_store(tmp_path / "results.sqlite")
    assert "Paper vs ours" not in to_markdown(load_results(path)[0])  # a suite without paper: / claims: shows none
    with Store(path) as store:
        store.save_suite("repro", "0123456789abcdef", {**CONFIG, "paper": [{"model": "A", "attack": "sub", "eps": 0.1, "value": 80,
                                                                           "where": "Table 2", "page": 7}],
                                                       "claims": [{"claim": "A beats B", "by": "the paper", "left": {"model": "A", "attack": "sub"},
                                                                   "op": ">", "right": {"model": "B", "attack": "sub"}, "eps": 0.1}]})
    md = to_markdown(load_results(path)[0])
    assert "## Paper vs ours" in md
    assert "| A / sub: robust @ 0.1 | 80 | Table 2, p. 7 | 80.0 [75.8, 83.6] | 0.0 |" in md
    assert "- **holds**: A beats B — the paper" in md
    assert "  - A / sub @ 0.1 > B / sub @ 0.1: holds; 80.0 [75.8, 83.6] vs 50.0 [45.1, 54.9]; difference 30.0 [23.6, 36.1]" in md


PAGE_SUITE = """\
name: repro
dataset: {name: digits}
models:
  - {name: A, plugin: mlp}
  - {name: B, plugin: mlp}
  - {name: C, plugin: mlp}
attacks:
  - {name: sub, plugin: fgsm}
epsilons: {Linf: [0.1, 0.2]}
deviations:
  - {what: votes, paper: 32 (Table 1), ours: '1', why: time}
paper:
  - {model: A, attack: sub, eps: 0.1, value: 80, where: Table 1}
claims:
  - claim: A beats B at every eps
    left: {model: A, attack: sub}
    op: ">"
    right: {model: B, attack: sub}
    eps: {from: 0.1}
"""


def test_a_page_from_a_store_and_from_its_export_agree(tmp_path, results):
    (tmp_path / "repro.yaml").write_text(PAGE_SUITE)
    (tmp_path / "pages.yaml").write_text("pages:\n  - {file: out.md, title: '# Repro', sections: [{suite: repro.yaml, title: The suite}]}\n")
    store = build_store(tmp_path / "run" / "results.sqlite")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "repro.json").write_text(json.dumps(rows_json([results])))
    from_store = generate(tmp_path / "pages.yaml", [tmp_path / "run"], "cmd")[tmp_path / "out.md"]
    from_export = generate(tmp_path / "pages.yaml", [tmp_path / "export"], "cmd")[tmp_path / "out.md"]
    assert f"numbers from store `{tmp_path.name}/run/results.sqlite`" in from_store  # paths relative to the page list's parent
    assert f"numbers from published export `{tmp_path.name}/export/repro.json`" in from_export
    strip = lambda t: "\n".join(line for line in t.splitlines() if not line.startswith("Suite `"))
    assert strip(from_store) == strip(from_export)  # counts are all an accuracy verdict needs
    assert "- **holds**: A beats B at every eps\n" in from_store
    assert "| A / sub: robust @ 0.1 | 80 | Table 1 | 80.0 [75.8, 83.6] | 0.0 |" in from_store
    assert "#### Deviations from the paper" in from_store and "| votes | 32 (Table 1) | 1 | time |" in from_store
    nothing = generate(tmp_path / "pages.yaml", [tmp_path / "elsewhere"], "cmd")[tmp_path / "out.md"]
    assert "no results at hand (the suite has not run" in nothing and "| A / sub: robust @ 0.1 | 80 | Table 1 | not run | – |" in nothing
    assert "- **not computed**: A beats B at every eps" in nothing


def test_a_per_sample_export_gives_the_norm_verdicts_a_json_export_cannot(tmp_path):
    from robench.report.reproduction import find_results
    from robench.store_export import export_suite

    with Store(build_store(tmp_path / "results.sqlite"), create=False) as store:
        export_suite(store, "repro", tmp_path / "runs" / "repro")
    found = find_results("repro", [tmp_path / "runs"], tmp_path)
    assert found.label == "per-sample export `runs/repro`"
    claim = Claim.model_validate(dict(claim="c", metric="mean_norm", left={"model": "A", "attack": "min"}, op="between",
                                      range=[1.8, 2.2], right={"model": "B", "attack": "min"}))
    assert evaluate(claim, found.results, FACTS, []).verdict == HOLDS
