"""Property-based test (hypothesis) over every shipped suite: mutate its YAML (values replaced,
keys deleted or added, lines duplicated or dropped, bytes inserted) and check that validation

* accepts it, and then every number it hands a plugin is finite and bounded (so no run can be
  told to go on for ever), no eps is beyond what the [0, 1] box allows, the headline is one of the
  epsilons, no eps is listed twice, no attack has an empty model list or a source it ignores; or
* rejects it with a SuiteError whose every problem is located (a YAML path and/or a line);

and never raises anything else. ``python tests/test_fuzz_shipped_suites.py N`` runs N mutations
and prints the counts quoted in docs/reliability.md.
"""

from __future__ import annotations

import copy
import math
import random
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml_paths import yaml_paths

from robench.api import PARAM_INT_MAX, Params
from robench.errors import SuiteError
from robench.suite import eps_limits, load_suite

REPO = Path(__file__).resolve().parents[1]
SUITES = sorted((REPO / "suites").rglob("*.yaml"))
DOCS = [yaml.safe_load(p.read_text()) for p in SUITES]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.integers(-3, 300),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 3), st.text(max_size=10),
    st.sampled_from(["8/255", "1/0", "", "L2", "Linf", "L0", "mlp", "pgd", "fgsm", "digits", "tset", "train",
                     "cuda", "..", "../../x", 1e308, 1e18, 2**64, 5000, -1, 0, 1, 2.0, []]),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def mutate_doc(doc: dict, draw_path, draw_op, draw_value, draw_key) -> dict:
    doc = copy.deepcopy(doc)
    path = draw_path([p for p in yaml_paths(doc) if p])
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    leaf = path[-1]
    op = draw_op(["replace", "replace", "delete", "add_key", "duplicate_item"])
    if op == "replace":
        parent[leaf] = draw_value()
    elif op == "delete":
        del parent[leaf]
    elif op == "add_key" and isinstance(parent[leaf], dict):
        parent[leaf][draw_key()] = draw_value()
    elif op == "duplicate_item" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[leaf]))
    return doc


def mutate_text(text: str, rnd: random.Random) -> str:
    lines = text.splitlines(keepends=True)
    op = rnd.choice(["dup_line", "drop_line", "insert", "deep"])
    i = rnd.randrange(len(lines))
    if op == "dup_line":
        lines.insert(i, lines[i])
    elif op == "drop_line":
        del lines[i]
    elif op == "insert":
        pos = rnd.randrange(len(lines[i]) + 1)
        lines[i] = lines[i][:pos] + rnd.choice(["\x00", "\t", ":", "- ", "[", "{", "&a ", "*a", "!!python/object:os.system ", "é"]) + lines[i][pos:]
    else:
        lines.insert(i, "deep: " + "[" * 3000 + "]" * 3000 + "\n")
    return "".join(lines)


def _numbers(value, where=""):
    if isinstance(value, Params):
        for name in type(value).model_fields:
            yield from _numbers(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, bool):
        return
    elif isinstance(value, (int, float)):
        yield where, value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _numbers(v, f"{where}.{k}")


def accepted_but_wrong(resolved) -> list[str]:
    """The classes of issue 21 that an accepted suite must not contain."""
    s = resolved.suite
    bad = []
    every = [("dataset", resolved.dataset_params)] + list(resolved.model_params.items()) + list(resolved.attack_params.items())
    for owner, params in every:
        for where, v in _numbers(params, owner):
            field = where.rsplit(".", 1)[-1].split("[")[0]
            allow_inf = (type(params).model_fields.get(field) and
                         isinstance(type(params).model_fields[field].json_schema_extra, dict) and
                         type(params).model_fields[field].json_schema_extra.get("allow_inf"))
            if isinstance(v, float) and (math.isnan(v) or (math.isinf(v) and not allow_inf)):
                bad.append(f"{where} = {v}")
            if isinstance(v, int) and abs(v) > max(PARAM_INT_MAX, 10**9):
                bad.append(f"{where} = {v}")
    for norm, eps in s.epsilons.items():
        if len(set(eps)) != len(eps) or any(not math.isfinite(e) or e < 0 or e > eps_limits((3, 4096, 4096))[norm] for e in eps):
            bad.append(f"epsilons.{norm} = {eps}")
        if norm == "Linf" and any(e > 1 for e in eps):
            bad.append(f"epsilons.Linf = {eps}")
    for norm, h in s.headline.items():
        if h not in s.epsilons.get(norm, []):
            bad.append(f"headline.{norm} = {h}")
    for a in s.attacks:
        if a.models is not None and not a.models:
            bad.append(f"attack {a.name}: models []")
    if not (0 <= s.seed < 2**32):
        bad.append(f"seed = {s.seed}")
    return bad


def check(registry, text: str) -> str:
    """'ok' or 'located'; fails the test on anything else."""
    try:
        resolved = load_suite("mutated.yaml", registry, text=text)
    except SuiteError as err:
        assert err.problems
        for loc, msg in err.problems:
            assert msg.strip(), (loc, msg)
            assert loc.strip() or msg.startswith("allowed top-level fields") or "suite must be a YAML mapping" in msg, (loc, msg)
        return "located"
    wrong = accepted_but_wrong(resolved)
    assert not wrong, wrong
    return "ok"


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_mutated_shipped_suites_validate_or_fail_located(registry, data):
    k = data.draw(st.integers(0, len(DOCS) - 1))
    doc = DOCS[k]
    for _ in range(data.draw(st.integers(1, 3))):
        doc = mutate_doc(doc, lambda ps: data.draw(st.sampled_from(ps)), lambda ops: data.draw(st.sampled_from(ops)),
                         lambda: data.draw(values), lambda: data.draw(st.text(min_size=1, max_size=6)))
    check(registry, yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(k=st.integers(0, len(SUITES) - 1), seed=st.integers(0, 2**32 - 1))
def test_text_mutations_of_shipped_suites_validate_or_fail_located(registry, k, seed):
    check(registry, mutate_text(SUITES[k].read_text(), random.Random(seed)))


def test_every_shipped_suite_is_found():
    assert len(SUITES) >= 10


def measure(n: int) -> dict[str, int]:
    from robench.plugins import load_registry

    registry = load_registry()
    rnd = random.Random(0)
    counts = {"tried": 0, "ok": 0, "located": 0, "traceback": 0, "accepted_but_wrong": 0}
    for i in range(n):
        if i % 4 == 3:
            text = mutate_text(rnd.choice(SUITES).read_text(), rnd)
        else:
            doc = rnd.choice(DOCS)
            for _ in range(rnd.randint(1, 3)):
                doc = mutate_doc(doc, rnd.choice, rnd.choice, lambda: values.example(), lambda: rnd.choice(["x", "steps", "eps", "é", "1"]))
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        counts["tried"] += 1
        try:
            counts[check(registry, text)] += 1
        except AssertionError:
            counts["accepted_but_wrong"] += 1
        except Exception:
            counts["traceback"] += 1
    return counts


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    print(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1000))
