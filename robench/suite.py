"""Declarative YAML suites: the pydantic schema, and validation whose every error names its place.

A suite is checked in three passes, each reporting all the problems it finds with their YAML
location (``attacks[1].params.steps``, plus the line number): YAML syntax, the suite's own
structure, then each plugin name and the plugin's parameters.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .api import Context, Norm, Params, construct
from .eps import Eps, distinct_eps, eps_limits, parse_eps, parse_norm_eps  # noqa: F401  (robench.suite.parse_eps, as before)
from .errors import SuiteError
from .plugins import Registry
from .suite_paper import Claim, PaperValue, paper_problems
from .suite_checks import cross_ref_problems, dataset_problems, inert_warnings, params_for, raw_plugin_problems, suite_files
from .suite_text import allowed_fields, decode_text, line_note, parse_yaml, pydantic_problems

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
#: Names become file names (leaderboard pages, plots, model folders): well under any file system's limit.
NAME_MAX = 100

#: The largest seed a suite accepts: the harness derives seeds as ``seed * 1000 + k`` and seeds
#: numpy (< 2**32) and torch (< 2**64) from them, so a larger one would fail only at run time.
SEED_MAX = 2**32 - 1
#: Samples per attack call: more than a million in one call is a typo (and would not fit memory).
BATCH_MAX = 10**6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetRef(_Strict):
    name: str = Field(description="dataset plugin name, e.g. digits, mnist, cifar10")
    split: str = Field("test", description="split the attacks are evaluated on (models train on 'train')")
    limit: int | None = Field(None, ge=1, le=10**9, description="evaluate only this many samples (after offset)")
    offset: int = Field(0, ge=0, le=10**9, description="skip this many samples of the split first")
    classes: list[Annotated[int, Field(ge=0, le=10**6)]] | None = Field(
        None, min_length=2, description="keep only these classes, relabelled 0..k-1 in this order"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="the dataset plugin's own parameters")
    indices: list[Annotated[int, Field(ge=0, le=10**9)]] | None = Field(
        None, min_length=1, description="evaluate only these samples: positions in the split, in this order (stored as each "
        "sample's index); with classes, those of the classes; offset and limit then apply to this list")
    indices_file: str | None = Field(
        None, description="the indices from a file, relative to the suite's folder: .npy (an integer array) or .txt "
        "(integers separated by spaces, commas or newlines)")

    @field_validator("classes", "indices")
    @classmethod
    def _distinct(cls, v, info):
        if v is not None and len(set(v)) != len(v):
            from collections import Counter

            dup = sorted(i for i, n in Counter(v).items() if n > 1)[:5]
            raise ValueError(f"{info.field_name} must be distinct, got {v if len(v) <= 20 else '...'} (repeated: {dup})")
        return v

    @model_validator(mode="after")
    def _one_index_source(self):
        if self.indices is not None and self.indices_file is not None:
            raise ValueError("give indices or indices_file, not both")
        return self


def _plugin_entry(kind: str) -> type[_Strict]:
    """The fields every suite entry of a plugin declares first (``name``, ``plugin``, ``params``),
    described for ``kind`` ("model" or "attack"): the base of ModelEntry and AttackEntry."""

    class PluginEntry(_Strict):
        name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX, description=f"name of this {kind} in tables (unique in the suite)")
        plugin: str = Field(description=f"{kind} plugin name (see `robench plugins`)")
        params: dict[str, Any] = Field(default_factory=dict, description="the plugin's parameters")

    return PluginEntry


class ModelEntry(_plugin_entry("model")):
    pass


class BudgetSpec(_Strict):
    """Passes per sample an attack may spend (robench.budget): past them the model answers uninformatively."""

    forward: int | None = Field(None, ge=1, le=10**9, description="forward passes (rows of scores) per sample")
    backward: int | None = Field(None, ge=0, le=10**9, description="backward passes per sample")

    @model_validator(mode="after")
    def _some(self):
        if self.forward is None and self.backward is None:
            raise ValueError("a budget sets forward, backward or both")
        return self


class AttackEntry(_plugin_entry("attack")):
    models: Annotated[list[str], Field(min_length=1)] | None = Field(None, description="run only against these models (default: all)")
    source: str | None = Field(None, description="for transfer attacks: the model the adversarials are crafted on")
    batch_size: int | None = Field(None, ge=1, le=BATCH_MAX, description="samples per attack call (default: the suite's batch_size)")
    budget: BudgetSpec | None = Field(None, description="passes per sample this attack may spend (default: the suite's budget)")


class NoiseSpec(_Strict):
    sigmas: list[float] = Field(min_length=1, description="standard deviations of the Gaussian noise")

    @field_validator("sigmas")
    @classmethod
    def _positive(cls, v):
        bad = [s for s in v if not (s > 0 and math.isfinite(s))]
        if bad:
            raise ValueError(f"noise sigmas must be finite and > 0, got {bad}")
        if len(set(v)) != len(v):
            raise ValueError(f"noise sigmas must be distinct (each is one column), got {v}")
        return sorted(v)


class Deviation(_Strict):
    """One way the suite departs from the protocol of the paper it reproduces."""

    what: str = Field(min_length=1, max_length=200, description="the setting, e.g. 'SVM ensemble'")
    paper: str = Field(min_length=1, max_length=300, description="the paper's setting, with where it says so")
    ours: str = Field(min_length=1, max_length=300, description="this suite's setting")
    why: str = Field(min_length=1, max_length=500, description="why the suite departs (e.g. its cost on 2 CPU cores)")


class Suite(_Strict):
    """Every model of the suite against every attack, on one dataset slice."""

    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX, description="suite name; also the leaderboard file name")
    description: str = Field("", description="one paragraph shown above the leaderboard")
    estimate: str | None = Field(
        None, max_length=300, description="how long the whole suite takes, e.g. 'about 20 h on 2 CPU cores'; "
                                          "`robench run` prints it with its plan (not part of the suite hash)"
    )
    deviations: list[Deviation] = Field(
        default_factory=list, description="where the suite departs from the paper it reproduces (shown under the leaderboard; "
                                          "not part of the suite hash)"
    )
    paper: list[PaperValue] = Field(
        default_factory=list, description="the reproduced paper's numbers for cells of the suite (shown beside ours; not part of the suite hash)"
    )
    claims: list[Claim] = Field(
        default_factory=list, description="statements about the results, each a rule whose verdict is computed from the store "
                                          "(robench.claims; not part of the suite hash)"
    )
    dataset: DatasetRef
    seed: int = Field(0, ge=0, le=SEED_MAX, description="seeds training, attacks and sampling")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    batch_size: int = Field(100, ge=1, le=BATCH_MAX, description="samples per attack call; also the unit of resume")
    models: list[ModelEntry] = Field(min_length=1)
    attacks: list[AttackEntry] = Field(default_factory=list)
    epsilons: dict[Norm, Annotated[list[Eps], AfterValidator(distinct_eps)]] = Field(
        default_factory=dict, description="thresholds per norm at which robust accuracy is reported (a number or a fraction such as 8/255)"
    )
    headline: dict[Norm, Eps] = Field(
        default_factory=dict, description="the eps per norm that ranks the leaderboard (default: the middle one)"
    )
    noise: NoiseSpec | None = Field(None, description="also measure accuracy under Gaussian noise")
    budget: BudgetSpec | None = Field(None, description="passes per sample every attack may spend (an attack's own budget replaces it)")
    curves: bool = Field(False, description="record best-so-far curves in every cell (docs/budgets.md); always on in a budgeted cell")

    @field_validator("epsilons")
    @classmethod
    def _eps_valid(cls, v):
        for norm, values in v.items():
            if not values:
                raise ValueError(f"{norm}: give at least one eps")
            if norm == Norm.L0 and any(float(e) != int(e) for e in values):
                raise ValueError(f"L0: eps counts pixels and must be whole numbers, got {values}")
            v[norm] = sorted(float(e) for e in values)
        return v

    def budget_for(self, attack: AttackEntry) -> dict[str, int] | None:
        """The attack's budget (its own, else the suite's) as {"forward": N, "backward": M}; None: unlimited."""
        spec = attack.budget or self.budget
        return spec.model_dump(exclude_none=True) if spec else None

    def eps_for(self, norm: Norm) -> list[float]:
        return list(self.epsilons.get(norm, []))

    def headline_eps(self, norm: Norm) -> float | None:
        if norm in self.headline:
            return self.headline[norm]
        eps = self.eps_for(norm)
        return eps[len(eps) // 2] if eps else None

    def content_hash(self) -> str:
        # the estimate, the deviations, the paper's values and the claims are notes on the suite, not part of what is measured
        dump = self.model_dump(mode="json", exclude={"estimate", "deviations", "paper", "claims"})
        # An unset budget (and curves off) is left out, so suites written before budgets keep their hash.
        for entry in [dump] + dump.get("attacks", []):
            if entry.get("budget") is None:
                entry.pop("budget", None)
        if not dump.get("curves"):
            dump.pop("curves", None)
        return hashlib.sha256(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Resolved:
    """A suite whose plugin names and parameters all validated."""

    suite: Suite
    path: str
    dataset_params: Params
    model_params: dict[str, Params]
    attack_params: dict[str, Params]
    #: (location, reason) of each parameter the suite sets that cannot affect the run (see Params.inert)
    warnings: list[tuple[str, str]] = field(default_factory=list)


# -- the three passes ------------------------------------------------------------------------


def load_suite(path: str | Path, registry: Registry, *, text: str | None = None, data_dir: Path | None = None) -> Resolved:
    """Read, validate and resolve a suite file; raises SuiteError listing every problem found.

    With ``data_dir``, facts that need the dataset's files (the offset against the split's size, a
    damaged file) are checked too, where the files are present."""
    path = str(path)
    if text is None:
        try:
            raw = Path(path).read_bytes()
        except FileNotFoundError:
            raise SuiteError(path, [("", "file not found")]) from None
        except IsADirectoryError:
            raise SuiteError(path, [("", "is a folder, not a suite file")]) from None
        except OSError as exc:
            raise SuiteError(path, [("", f"cannot read: {exc.strerror or exc}")]) from None
        text = decode_text(raw, path)
    data, lines = parse_yaml(text, path)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        problems = pydantic_problems(exc, (), lines)
        for err in exc.errors():
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                problems.append(("", f"allowed top-level fields: {allowed_fields(Suite)}"))
                break
        # Report the plugin parameters and cross-references too, wherever the entries are well formed,
        # so that one round of fixes suffices.
        raw_plugin_problems(data, registry, lines, problems)
        cross_ref_problems(data, lines, problems)
        raise SuiteError(path, problems) from None
    return resolve(suite, registry, path, lines, data_dir=data_dir)


def read_indices(file: Path) -> list[int]:
    """Sample indices from a .npy file (integer array, no pickles) or a text file (integers
    separated by whitespace or commas); ValueError with the reason otherwise."""
    import numpy as np

    if file.suffix == ".npy":
        arr = np.load(file, allow_pickle=False)
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"expected a 1-d integer array, found shape {arr.shape} of {arr.dtype}")
        return [int(i) for i in arr]
    words = file.read_text().replace(",", " ").split()
    bad = [w for w in words if not w.isdigit()]
    if bad:
        raise ValueError(f"not a non-negative integer: {bad[0]!r}")
    return [int(w) for w in words]


def _read_indices_file(suite: Suite, path: str, lines: dict, problems: list) -> None:
    """``dataset.indices_file`` read into ``dataset.indices`` (so the selection itself, not the
    file's name, enters the suite hash and every cell key)."""
    ref = suite.dataset
    if ref.indices_file is None:
        return
    where = "dataset.indices_file" + line_note(lines, ("dataset", "indices_file"))
    base = Path(path).resolve().parent if path and not path.startswith("<") else Path.cwd()
    file = Path(ref.indices_file).expanduser()
    file = file if file.is_absolute() else base / file
    if not file.is_file():
        problems.append((where, f"file not found: {file}"))
        return
    try:
        values = read_indices(file)
        ref.indices = DatasetRef.model_validate({"name": ref.name, "indices": values}).indices
    except ValidationError as exc:
        problems.append((where, f"{file}: {exc.errors()[0]['msg']}"))
    except (ValueError, OSError, EOFError) as exc:  # EOFError: an empty or truncated .npy
        problems.append((where, f"{file}: {exc or type(exc).__name__}; expected an integer .npy array or a text file of integers"))


def resolve(suite: Suite, registry: Registry, path: str = "<suite>", lines: dict | None = None, *,
            data_dir: Path | None = None) -> Resolved:
    """Check everything that needs the plugins: names, parameters, cross-references, eps against
    what the input box allows, dataset split and classes, and (given ``data_dir`` holding the
    files) the offset against the split's size. Raises one SuiteError listing every problem."""
    lines = lines or {}
    problems: list[tuple[str, str]] = []
    cross_ref_problems(suite.model_dump(mode="json"), lines, problems)

    dataset_params = params_for(registry, "dataset", suite.dataset.name, suite.dataset.params, ("dataset",), lines, problems)
    if dataset_params is not None:
        dataset_params = suite_files(dataset_params, path, ("dataset", "params"), lines, problems)
    _read_indices_file(suite, path, lines, problems)
    shape = None
    if dataset_params is not None:
        shape = dataset_problems(suite, registry, dataset_params, lines, problems, data_dir)
    model_params = {}
    for i, m in enumerate(suite.models):
        p = params_for(registry, "model", m.plugin, m.params, ("models", i), lines, problems)
        if p is not None:
            model_params[m.name] = suite_files(p, path, ("models", i, "params"), lines, problems)
    attack_params = {}
    attack_norms: dict[str, tuple[str, str]] = {}  # for the paper: values and claims
    for i, a in enumerate(suite.attacks):
        p = params_for(registry, "attack", a.plugin, a.params, ("attacks", i), lines, problems)
        spec = registry.specs["attack"].get(a.plugin)
        if spec is not None and "transfer" in spec.factory.needs and not a.source:
            problems.append((f"attacks[{i}].source" + line_note(lines, ("attacks", i)), f"{a.plugin} is a transfer attack: name the source model with source: <model name>"))
        if spec is not None and a.source and "transfer" not in spec.factory.needs:
            problems.append((f"attacks[{i}].source" + line_note(lines, ("attacks", i, "source")),
                             f"{a.plugin} is not a transfer attack and would ignore source:; remove it (only transfer attacks craft on another model)"))
        if p is None:
            continue
        p = suite_files(p, path, ("attacks", i, "params"), lines, problems)  # e.g. a substitute's weights file
        attack_params[a.name] = p
        factory = spec.factory
        try:
            attack = construct(factory, p, Context(registry=registry))
        except Exception as exc:  # a constructor that rejects a parameter combination
            problems.append((f"attacks[{i}].params" + line_note(lines, ("attacks", i, "params")), f"{a.plugin} rejected these parameters: {exc}"))
            continue
        attack_norms[a.name] = (str(attack.norm), attack.kind)
        if attack.kind == "bounded" and not suite.eps_for(attack.norm):
            problems.append(
                (f"attacks[{i}]" + line_note(lines, ("attacks", i)),
                 f"{a.name} is a bounded {attack.norm} attack, but epsilons has no {attack.norm} list; add e.g. epsilons: {{{attack.norm}: [...]}}")
            )
    limits = eps_limits(shape) if shape else {Norm.Linf: 1.0}
    for norm, values in suite.epsilons.items():
        limit = limits.get(norm)
        too_big = [e for e in values if limit is not None and e > limit]
        if too_big:
            why = "every Linf perturbation of an image in [0, 1] fits within 1" if norm == Norm.Linf else \
                f"no two inputs of shape {'x'.join(map(str, shape))} in the [0, 1] box are further apart"
            problems.append((f"epsilons.{norm}" + line_note(lines, ("epsilons", str(norm))),
                             f"eps {', '.join(f'{e:g}' for e in too_big)} beyond what the [0, 1] box allows for {norm} "
                             f"(at most {limit:g}: {why})"))
    for norm, eps in suite.headline.items():
        where = f"headline.{norm}" + line_note(lines, ("headline", str(norm)))
        if norm not in suite.epsilons:
            problems.append((where, f"no epsilons given for {norm}"))
        elif eps not in suite.epsilons[norm]:
            problems.append((where, f"{eps:g} is not one of epsilons.{norm} {[float(f'{e:g}') for e in suite.epsilons[norm]]}; "
                                    "the headline ranks by one of those columns"))
    paper_problems(suite, attack_norms, lines, problems)
    if problems:
        raise SuiteError(path, problems)
    warnings: list[tuple[str, str]] = []
    inert_warnings(dataset_params, ("dataset", "params"), lines, warnings)
    for i, m in enumerate(suite.models):
        inert_warnings(model_params[m.name], ("models", i, "params"), lines, warnings)
    for i, a in enumerate(suite.attacks):
        inert_warnings(attack_params[a.name], ("attacks", i, "params"), lines, warnings)
    return Resolved(suite, path, dataset_params, model_params, attack_params, warnings)


