"""The validation holes of issue 21, one test per class: each input used to crash with a traceback,
run for ever, or be accepted though wrong; now each is an error at its YAML place (exit code 2).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.errors import DataFileError, SuiteError, UserInputError
from robench.suite import eps_limits, load_suite, parse_eps, parse_norm_eps

from fault_suites import suite_text

GOOD = suite_text("t", "name: digits, limit: 20",
                  ["name: m, plugin: mlp, params: {hidden: 8, epochs: 1}", "name: s, plugin: mlp, params: {hidden: 4, epochs: 1}"],
                  ["name: a, plugin: pgd, params: {norm: Linf, steps: 5}", "name: b, plugin: fgsm"], "Linf: [0.1, 0.2], L2: [0.5]")


def problems(registry, text, **kw) -> list[tuple[str, str]]:
    with pytest.raises(SuiteError) as info:
        load_suite("suite.yaml", registry, text=text, **kw)
    return info.value.problems


def one(registry, text, where: str, *words: str, **kw) -> str:
    """The single problem of ``text``: its location starts with ``where`` and names a line."""
    probs = problems(registry, text, **kw)
    hits = [(loc, msg) for loc, msg in probs if loc.startswith(where)]
    assert hits, probs
    loc, msg = hits[0]
    assert "line " in loc, (loc, msg)
    for w in words:
        assert w in msg, (w, msg)
    return msg


def test_good_suite_validates(registry):
    load_suite("suite.yaml", registry, text=GOOD)


# -- tracebacks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "name: " + "[" * 5000 + "]" * 5000 + "\n",
    GOOD.replace("steps: 5", "steps: " + "[" * 3000 + "1" + "]" * 3000),
    "a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)) + "  " * 200 + "v: 1\n",
])
def test_deep_nesting_is_a_located_error_not_a_recursion_error(registry, text):
    probs = problems(registry, text)
    assert any("nested more than" in msg for _, msg in probs), probs
    assert all(loc.startswith("line ") for loc, _ in probs)


def test_non_utf8_byte_names_its_line(registry, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("name: t\n", "name: t\ndescription: caf\xe9\n").encode("latin-1"))
    with pytest.raises(SuiteError) as info:
        load_suite(path, registry)
    (loc, msg), = info.value.problems
    assert loc == "line 2, column 17" and "0xe9" in msg and "UTF-8" in msg


def test_utf8_with_bom_is_read(registry, tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_suite(path, registry).suite.name == "t"


def test_nul_character_is_a_located_yaml_error(registry):
    (loc, msg), = problems(registry, GOOD.replace("name: t", "name: t\x00"))
    assert loc.startswith("YAML syntax (line 1") and "0x00" in msg


@pytest.mark.parametrize("text, words", [
    ("a: &x [*x]\nname: t\n", "refers to the collection that contains it"),
    ("a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e]\n", "through YAML aliases"),
])
def test_recursive_and_exploding_aliases_are_refused(registry, text, words):
    (loc, msg), = problems(registry, text)
    assert loc.startswith("line ") and words in msg


# -- damaged data files -----------------------------------------------------------------------------

TINY = dict(x_train=np.zeros((30, 28, 28), np.uint8), y_train=(np.arange(30) % 10).astype(np.uint8),
            x_test=np.zeros((12, 28, 28), np.uint8), y_test=(np.arange(12) % 10).astype(np.uint8))


def _mnist(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / kind
    d.mkdir()
    if kind == "good":
        np.savez(d / "mnist.npz", **TINY)
    elif kind == "notzip":
        (d / "mnist.npz").write_bytes(b"PK\x03\x04 not a zip archive" * 20)
    elif kind == "truncated":
        np.savez(d / "mnist.npz", **TINY)
        raw = (d / "mnist.npz").read_bytes()
        (d / "mnist.npz").write_bytes(raw[: len(raw) // 2])
    elif kind == "objects":  # a pickle payload in an object array
        np.savez(d / "mnist.npz", **{**TINY, "y_test": np.array([{"x": 1}] * 12, dtype=object),
                                      "x_test": np.array([None] * 12, dtype=object)})
    return d


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should never run",))


def _cifar_tar(tmp_path: Path) -> Path:
    d = tmp_path / "cifar"
    d.mkdir()
    raw = pickle.dumps({b"data": _Evil(), b"labels": [1]})
    with tarfile.open(d / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return d


@pytest.mark.parametrize("kind, words", [
    ("notzip", "BadZipFile"), ("truncated", "damaged"), ("objects", "Python objects"),
])
def test_damaged_npz_is_one_line_naming_the_file(registry, tmp_path, kind, words):
    d = _mnist(tmp_path, kind)
    ds = registry.get("dataset", "mnist")
    with pytest.raises(DataFileError) as info:
        ds.factory(ds.params()).load("test", d)
    msg = str(info.value)
    assert msg.startswith(str(d / "mnist.npz")) and words in msg and "replace it" in msg and "\n" not in msg


def test_pickle_payload_in_cifar_tar_is_refused_with_a_message(registry, tmp_path):
    d = _cifar_tar(tmp_path)
    ds = registry.get("dataset", "cifar10")
    with pytest.raises(DataFileError) as info:
        ds.factory(ds.params()).load("test", d)
    assert "refusing to load" in str(info.value) and "system" in str(info.value)


def test_truncated_idx_file_is_a_data_file_error(registry, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 10)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05" + b"\x01" * 5)
    ds = registry.get("dataset", "mnist")
    with pytest.raises(DataFileError) as info:
        ds.factory(ds.params()).load("test", tmp_path)
    assert "t10k-images-idx3-ubyte" in str(info.value)


MNIST = "name: mn\ndataset: {name: mnist, limit: 5, offset: OFFSET}\nmodels:\n  - {name: m, plugin: mlp, params: {hidden: 4, epochs: 1}}\n"


@pytest.mark.parametrize("kind", ["notzip", "objects"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_on_a_damaged_data_file_exits_2_without_traceback(tmp_path, kind, command):
    d = _mnist(tmp_path, kind)
    suite = tmp_path / "mn.yaml"
    suite.write_text(MNIST.replace("OFFSET", "0"))
    extra = ["-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--quiet"] if command == "run" else []
    res = CliRunner().invoke(app, [command, str(suite), "--data-dir", str(d), *extra])
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "mnist.npz" in res.output and "Traceback" not in res.output


# -- hangs: loop counts and sizes have bounds, floats are finite -------------------------------------


@pytest.mark.parametrize("old, new, where", [
    ("epochs: 1}", "epochs: 9223372036854775808}", "models[0].params.epochs"),
    ("epochs: 1}", "epochs: 10001}", "models[0].params.epochs"),
    ("steps: 5", "steps: 1.0e+18", "attacks[0].params.steps"),
    ("hidden: 8", "hidden: 1.0e+12", "models[0].params.hidden"),
    ("epochs: 1}", "epochs: 1, lr: .inf}", "models[0].params.lr"),
    ("epochs: 1}", "epochs: 1, lr: .nan}", "models[0].params.lr"),
    ("steps: 5", "steps: 5, rel_step_size: .inf", "attacks[0].params.rel_step_size"),
    ("epochs: 1}", "epochs: 1, adversarial: {eps: .inf}}", "models[0].params.adversarial.eps"),
])
def test_absurd_loop_counts_and_infinite_floats_are_rejected(registry, old, new, where):
    one(registry, GOOD.replace(old, new, 1), where)


def test_every_builtin_numeric_parameter_is_finite_and_bounded(registry):
    """The generic rule: no float field takes inf or NaN (unless it declares allow_inf), no int field
    takes more than PARAM_INT_MAX; checked on every parameter of every built-in plugin."""
    from robench.api import PARAM_INT_MAX

    accepted = []
    for kind in ("model", "attack", "dataset"):
        for name, spec in sorted(registry.specs[kind].items()):
            for field, info in spec.params.model_fields.items():
                ann = str(info.annotation)
                extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
                tries = []
                if "float" in ann:
                    tries += [math.nan] + ([] if extra.get("allow_inf") else [math.inf])
                if "int" in ann and "tuple" not in ann and "list" not in ann:
                    tries += [PARAM_INT_MAX + 1, 2**63]
                base = {"base": "digits"} if name == "saturated" else {}
                for value in tries:
                    try:
                        spec.params.model_validate({**base, field: value})
                    except Exception:
                        continue
                    accepted.append(f"{kind} {name}.{field} = {value}")
    assert not accepted, "\n".join(accepted)


# -- accepted though wrong ----------------------------------------------------------------------


def test_duplicate_yaml_keys_name_both_lines(registry):
    msg = one(registry, GOOD.replace("epsilons:", "seed: 1\nseed: 2\nepsilons:"), "seed (line 10)", "line 9")
    assert "duplicate key 'seed'" in msg
    one(registry, GOOD.replace("steps: 5", "steps: 5, steps: 7"), "attacks[0].params.steps (line 7)", "duplicate key")


@pytest.mark.parametrize("headline, words", [
    ("{Linf: 0.5}", "not one of epsilons.Linf"),
    ("{Linf: .nan}", "finite"),
    ("{Linf: -0.1}", ">= 0"),
    ("{L1: 1.0}", "no epsilons given for L1"),
])
def test_headline_must_be_one_of_the_epsilons(registry, headline, words):
    one(registry, GOOD + f"headline: {headline}\n", "headline", words)


def test_headline_given_as_a_fraction_matches_its_eps(registry):
    r = load_suite("s.yaml", registry, text=GOOD.replace("[0.1, 0.2]", "[4/255, 8/255]") + "headline: {Linf: 8/255}\n")
    assert r.suite.headline_eps("Linf") == 8 / 255 and r.suite.eps_for("Linf") == [4 / 255, 8 / 255]


def test_duplicate_eps_values_are_an_error(registry):
    one(registry, GOOD.replace("[0.1, 0.2]", "[0.1, 0.2, 0.1]"), "epsilons.Linf (line 9)", "listed twice")
    one(registry, GOOD.replace("[0.1, 0.2]", "[8/255, 0.0313725490196078431]"), "epsilons.Linf", "listed twice")


def test_attack_with_an_empty_model_list_is_an_error(registry):
    one(registry, GOOD.replace("plugin: fgsm}", "plugin: fgsm, models: []}"), "attacks[1].models (line 8)", "at least 1")


def test_source_on_a_non_transfer_attack_is_an_error(registry):
    one(registry, GOOD.replace("plugin: fgsm}", "plugin: fgsm, source: s}"), "attacks[1].source (line 8)", "not a transfer attack")


@pytest.mark.parametrize("eps, words", [
    ("{Linf: [.inf]}", "finite"),
    ("{Linf: [1.0e+308]}", "beyond what the [0, 1] box allows"),
    ("{Linf: [2.0]}", "at most 1"),
    ("{Linf: [0.1], L2: [8.01]}", "at most 8"),  # digits: 1x8x8, sqrt(64) = 8
    ("{Linf: [0.1], L1: [65]}", "at most 64"),
    ("{Linf: [0.1], L0: [65]}", "at most 64"),
    ("{Linf: [1/0]}", "divides by zero"),
    ("{Linf: [eight]}", "fraction like 8/255"),
])
def test_eps_beyond_the_box_or_not_finite_is_an_error(registry, eps, words):
    one(registry, GOOD.replace("{Linf: [0.1, 0.2], L2: [0.5]}", eps), "epsilons", words)


def test_eps_at_the_box_limits_is_accepted(registry):
    r = load_suite("s.yaml", registry, text=GOOD.replace("{Linf: [0.1, 0.2], L2: [0.5]}", "{Linf: [1], L2: [8.0], L1: [64], L0: [64]}"))
    assert r.suite.eps_for("L2") == [8.0]
    assert eps_limits((3, 32, 32)) == {"Linf": 1.0, "L2": math.sqrt(3072), "L1": 3072.0, "L0": 1024.0}


@pytest.mark.parametrize("old, new, where, words", [
    ("epsilons:", "noise: {sigmas: [.inf]}\nepsilons:", "noise.sigmas", "finite"),
    ("epsilons:", "noise: {sigmas: [0.1, 0.1]}\nepsilons:", "noise.sigmas", "distinct"),
    ("epsilons:", "seed: 18446744073709551616\nepsilons:", "seed", "4294967295"),
    ("epsilons:", "batch_size: 1.0e+15\nepsilons:", "batch_size", "1000000"),
    ("limit: 20}", "limit: 20, classes: [0, -1]}", "dataset.classes[1]", "greater than or equal to 0"),
])
def test_other_suite_numbers_are_bounded(registry, old, new, where, words):
    one(registry, GOOD.replace(old, new), where, words)


def test_seed_at_its_maximum_is_accepted(registry):
    assert load_suite("s.yaml", registry, text=GOOD + "seed: 4294967295\n").suite.seed == 2**32 - 1


# -- dataset facts at validate time; all problems at once ---------------------------------------------


def test_split_and_classes_are_checked_at_validate_time(registry):
    probs = problems(registry, GOOD.replace("limit: 20}", "limit: 20, split: tset, classes: [0, 12]}"))
    locs = [loc for loc, _ in probs]
    assert any(loc.startswith("dataset.split (line 2)") for loc in locs), probs
    assert any(loc.startswith("dataset.classes[1] (line 2)") for loc in locs), probs


def test_offset_past_the_end_is_checked_when_the_files_are_there(registry, tmp_path):
    d = _mnist(tmp_path, "good")  # 12 test images
    text = MNIST.replace("OFFSET", "12")
    one(registry, text, "dataset.offset (line 2)", "past the end", "12 samples", data_dir=d)
    load_suite("s.yaml", registry, text=MNIST.replace("OFFSET", "11"), data_dir=d)
    load_suite("s.yaml", registry, text=text, data_dir=tmp_path / "absent")  # no files: the run checks
    # digits knows its sizes without files: 30% of 1797 -> 540 test images
    one(registry, GOOD.replace("limit: 20}", "limit: 20, offset: 540}"), "dataset.offset", "540 samples", data_dir=tmp_path)
    load_suite("s.yaml", registry, text=GOOD.replace("limit: 20}", "limit: 20, offset: 539}"), data_dir=tmp_path)


def test_damaged_file_is_reported_by_validate(registry, tmp_path):
    one(registry, MNIST.replace("OFFSET", "0"), "dataset.name (line 2)", "mnist.npz", data_dir=_mnist(tmp_path, "notzip"))


def test_every_problem_of_a_suite_is_reported_at_once(registry):
    bad = (GOOD.replace("name: t", "name: t\nbogus: 1")          # structure: unknown field
           .replace("hidden: 8", "hidden: 0")                     # plugin parameter
           .replace("plugin: fgsm}", "plugin: fgsm, models: [nope]}")  # cross-reference
           .replace("name: s,", "name: m,")                       # duplicate name
           .replace("steps: 5", "steps: 5, stepz: 1"))            # unknown parameter
    locs = [loc for loc, _ in problems(registry, bad)]
    for where in ("bogus", "models[0].params.hidden", "attacks[1].models[0]", "models[1].name", "attacks[0].params.stepz"):
        assert any(loc.startswith(where) for loc in locs), (where, locs)


# -- eps as fractions -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), (" 8 / 255 ", 8 / 255), ("0.5", 0.5), ("1e-3", 1e-3),
                                         (0.25, 0.25), (3, 3.0), ("1.5/2", 0.75)])
def test_parse_eps(text, value):
    assert parse_eps(text) == value


@pytest.mark.parametrize("text", ["8/0", "-1", "inf", "nan", "eight", "8/255/2", True, None, [1]])
def test_parse_eps_rejects(text):
    with pytest.raises(ValueError):
        parse_eps(text)


def test_parse_norm_eps():
    assert parse_norm_eps("Linf=8/255") == ("Linf", [8 / 255])
    assert parse_norm_eps("L2=0.5,1") == ("L2", [0.5, 1.0])
    for bad in ("Linf", "L3=0.1", "Linf=", "Linf=x"):
        with pytest.raises(ValueError):
            parse_norm_eps(bad)


def test_eps_fraction_in_yaml(registry):
    r = load_suite("s.yaml", registry, text=GOOD.replace("[0.1, 0.2]", "[8/255, 16/255]"))
    assert r.suite.eps_for("Linf") == [8 / 255, 16 / 255]


def test_user_input_errors_are_exit_code_2():
    assert DataFileError.exit_code == 2 and issubclass(DataFileError, UserInputError)


def test_any_dataset_plugin_read_error_becomes_one_line(tmp_path):
    """A third-party dataset whose reader trips on a damaged file (here zlib's error) still gives a
    DataFileError naming the dataset and its folder, never a traceback."""
    import zlib

    from robench.data import read_split

    class Broken:
        def load(self, split, data_dir):
            raise zlib.error("Error -3 while decompressing data: invalid stored block lengths")

    with pytest.raises(DataFileError) as info:
        read_split(Broken(), "mine", "test", tmp_path)
    msg = str(info.value)
    assert "dataset 'mine' (test split" in msg and str(tmp_path) in msg and "zlib" not in msg.split("(")[0]
    assert "invalid stored block lengths" in msg and "\n" not in msg


# -- parameters that cannot affect the run: warnings with their line ---------------------------------


def test_parameters_without_effect_are_warned_about_with_their_line(registry):
    text = GOOD.replace("plugin: fgsm}", "plugin: pdpgd, params: {norm: L2, init_range: 0.5, steps: 5}}").replace(
        "hidden: 8, epochs: 1", "hidden: 8, epochs: 1, momentum: 0.5, adversarial: {method: fgsm-rs, eps: 0.1, steps: 3}")
    r = load_suite("s.yaml", registry, text=text)
    got = dict(r.warnings)
    assert "restarts is 1" in got["attacks[1].params.init_range (line 8)"]
    assert "momentum is used only by sgd" in got["models[0].params.momentum (line 4)"]
    assert "one step" in got["models[0].params.adversarial.steps (line 4)"]
    assert len(got) == 3  # defaults that were not written are never reported
    # with two restarts the random start is used: no warning
    text2 = text.replace("init_range: 0.5", "init_range: 0.5, restarts: 2")
    assert not any("init_range" in loc for loc, _ in load_suite("s.yaml", registry, text=text2).warnings)


def test_recipe_defaults_are_not_reported_as_settings(registry):
    """The cnn plugin's per-architecture recipe fills momentum (with the onecycle schedule) and more: values
    the suite did not write are not "has no effect" warnings; the same value written explicitly is."""
    import robench_plugins.cnn as cnn

    base = """name: s
dataset: {name: cifar10, split: test, limit: 2}
models:
  - {name: vgg, plugin: cnn, params: {arch: vgg, width: 8%s}}
attacks:
  - {name: fgsm, plugin: fgsm}
epsilons: {Linf: [0.01]}
"""
    assert cnn.ARCH_DEFAULTS["vgg"]["schedule"] == "onecycle" and "momentum" in cnn.ARCH_DEFAULTS["vgg"]
    assert load_suite("s.yaml", registry, text=base % "").warnings == []
    got = dict(load_suite("s.yaml", registry, text=base % ", momentum: 0.9").warnings)
    assert "cycles the momentum itself" in got["models[0].params.momentum (line 4)"]
    assert cnn.CNNParams(arch="vgg").model_dump() == cnn.CNNParams(**cnn.ARCH_DEFAULTS["vgg"], arch="vgg").model_dump()


def test_validate_cli_prints_warnings_and_exits_0(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD.replace("hidden: 8, epochs: 1", "hidden: 8, epochs: 1, lr_decay: 0.5"))
    res = CliRunner().invoke(app, ["validate", str(path)])
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "models[0].params.lr_decay (line 4): has no effect" in out, res.output


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY\x01\x00", bytes(range(256))])
def test_damaged_indices_file_is_a_located_error(registry, tmp_path, content):
    (tmp_path / "idx.npy").write_bytes(content)
    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\ndataset: {name: digits, indices_file: idx.npy}\nmodels:\n  - {name: m, plugin: mlp}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(suite, registry)
    (loc, msg), = info.value.problems
    assert loc.startswith("dataset.indices_file (line 2)") and "idx.npy" in msg


def test_names_that_name_files_are_at_most_100_characters(registry):
    one(registry, GOOD.replace("name: t\n", "name: " + "t" * 101 + "\n"), "name (line 1)", "at most 100")
    one(registry, GOOD.replace("name: a,", "name: " + "a" * 101 + ","), "attacks[0].name (line 7)", "at most 100")
    load_suite("s.yaml", registry, text=GOOD.replace("name: t\n", "name: " + "t" * 100 + "\n"))
