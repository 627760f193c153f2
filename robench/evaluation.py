"""Evaluate one pretrained model without writing a suite: ``robench evaluate`` and
:func:`robench.evaluate`.

Both build an ordinary suite (one model, the attacks asked for, their eps) and run it through the
normal runner, so every number has the harness's verification behind it and lands in a store that
``robench leaderboard`` / ``publish`` read. The command line writes that suite as YAML next to the
store, so the run can be repeated or extended with ``robench run``.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional

import typer

from .api import Norm
from .errors import UserInputError

LOADERS = ("torch-file", "torchscript", "onnx")
#: eps used when none is given: the RobustBench / AutoAttack Linf threat model.
DEFAULT_EPS = {"Linf": ["8/255"]}


def parse_model_option(text: str) -> tuple[str, Path]:
    """``torchscript:net.pt`` -> ("torchscript", Path("net.pt")); a bare path picks the loader by suffix."""
    kind, sep, rest = text.partition(":")
    if sep and kind in LOADERS:
        return kind, Path(rest)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx", path
    if suffix in (".pt", ".pth", ".safetensors", ".bin"):
        raise UserInputError(f"--model {text}: say how to read it: torchscript:{text} for a torch.jit file, or torch-file:{text} "
                             "with --arch package.module:factory for a state dict")
    raise UserInputError(f"--model must look like LOADER:PATH with LOADER one of {', '.join(LOADERS)} (e.g. torchscript:net.pt), got {text!r}")


def eps_options(values: Iterable[str]) -> dict[str, list[str]]:
    """``["Linf=8/255", "L2=0.5,1"]`` -> {"Linf": ["8/255"], "L2": ["0.5", "1"]}, each value checked."""
    from .suite import parse_norm_eps

    out: dict[str, list[str]] = {}
    for text in values:
        try:
            norm, _ = parse_norm_eps(text)  # checks the norm and every value
        except ValueError as exc:
            raise UserInputError(f"--eps {text}: {exc}") from None
        out.setdefault(str(norm), []).extend(v.strip() for v in text.partition("=")[2].split(","))
    return out


def arch_kwargs_options(values: Iterable[str]) -> dict[str, Any]:
    """``["width=32", "name=vgg"]`` -> ``{"width": 32, "name": "vgg"}``: each value read as YAML (a number, a
    boolean, a list, or else a string), as the suite file's ``kwargs:`` would read it."""
    import yaml

    out: dict[str, Any] = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.strip().isidentifier():
            raise UserInputError(f"--arch-kwarg {text!r}: expected KEY=VALUE with KEY a Python name, e.g. width=32")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError as exc:
            raise UserInputError(f"--arch-kwarg {text!r}: the value is not a YAML scalar or list ({exc.problem})") from None
    return out


def _yaml_eps(values: list[str]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        try:
            out.append(int(v) if v.isdigit() else float(v))
        except ValueError:
            out.append(v)  # a fraction such as 8/255 stays as written
    return out


def attack_entries(registry, names: Iterable[str], eps: Mapping[str, list[str]]) -> list[dict[str, Any]]:
    """One suite entry per attack and norm: an attack with a ``norm`` parameter is run under every
    norm that has eps (bounded) or that it supports (minimal), with its defaults otherwise."""
    entries: list[dict[str, Any]] = []
    for name in names:
        spec = registry.get("attack", name)
        has_norm = "norm" in spec.params.model_fields
        if not has_norm:
            entries.append({"name": name, "plugin": name})
            continue
        kind = spec.factory.kind
        norms = [str(n) for n in spec.norms if (str(n) in eps or kind != "bounded")]
        if not norms:
            raise UserInputError(f"--attack {name} is a bounded attack for {', '.join(map(str, spec.norms))}, but --eps gives only "
                                 f"{', '.join(eps) or 'nothing'}; add e.g. --eps {spec.norms[0]}=...")
        for norm in norms:
            label = name if len(norms) == 1 else f"{name}-{norm}"
            entries.append({"name": label, "plugin": name, "params": {"norm": norm}})
    return entries


def _rel_or_abs(path: Path, base: Path) -> str:
    full = path.expanduser().resolve()
    return full.relative_to(base.resolve()).as_posix() if full.is_relative_to(base.resolve()) else str(full)


def suite_document(*, model: str, path: Path, out: Path, name: str, dataset: str, split: str, limit: int | None,
                   attacks: list[dict[str, Any]], eps: Mapping[str, list[str]], arch: str | None = None,
                   kwargs: Mapping[str, Any] | None = None, mean: list[float] | None = None, std: list[float] | None = None,
                   device: str = "auto", seed: int = 0, batch_size: int = 100) -> dict[str, Any]:
    """The suite (as a YAML-ready dict) that ``robench evaluate`` runs; paths relative to ``out``."""
    params: dict[str, Any]
    if model == "torch-file":
        if not arch:
            raise UserInputError("--model torch-file:... needs --arch package.module:factory (or file.py:factory): the code that builds the net")
        a_mod, sep, a_attr = arch.partition(":")
        if a_mod.endswith(".py"):
            arch = f"{_rel_or_abs(Path(a_mod), out)}:{a_attr}"
        params = {"architecture": arch, "weights": _rel_or_abs(path, out)}
        if kwargs:
            params["kwargs"] = dict(kwargs)
    else:
        if arch:
            raise UserInputError(f"--arch is for torch-file models; a {model} file holds its architecture")
        if kwargs:
            raise UserInputError(f"--arch-kwarg is for torch-file models (the arguments of --arch's factory), not {model}")
        params = {"file": _rel_or_abs(path, out)}
    if (mean is None) != (std is None):
        raise UserInputError("--mean and --std go together")
    if mean is not None:
        params["normalize"] = {"mean": list(mean), "std": list(std)}
    ds: dict[str, Any] = {"name": dataset, "split": split}
    if limit is not None:
        ds["limit"] = limit
    return {
        "name": f"evaluate-{name}",
        "description": f"robench evaluate of {path.name} ({model})",
        "dataset": ds,
        "seed": seed,
        "device": device,
        "batch_size": batch_size,
        "models": [{"name": name, "plugin": model, "params": params}],
        "attacks": attacks,
        "epsilons": {k: _yaml_eps(v) for k, v in eps.items()},
    }


def dump_yaml(doc: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)


# -- robench.evaluate(nn.Module) ---------------------------------------------------------------


def module_digest(net) -> str:
    """SHA-256 of a module's class (name and source file) and of every tensor of its state dict."""
    import torch

    h = hashlib.sha256()
    cls = type(net)
    h.update(f"{cls.__module__}.{cls.__qualname__}\n".encode())
    try:
        src = inspect.getsourcefile(cls)
    except TypeError:
        src = None
    if src and Path(src).is_file():
        h.update(hashlib.sha256(Path(src).read_bytes()).digest())
    for k, v in sorted(net.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


_MODULES: dict[str, Any] = {}


def _in_memory_spec():
    import torch
    from pydantic import Field

    from .api import ModelSpec, Params, TorchModel

    class ModuleParams(Params):
        digest: str = Field(description="SHA-256 of the module's class and weights (robench.evaluate sets it)")

    class InMemory(TorchModel):
        """An nn.Module handed to robench.evaluate: never trained or cached, eval mode, parameters frozen."""

        Params = ModuleParams
        trainable = False

        def build(self) -> torch.nn.Module:
            return _MODULES[self.params.digest]

        def scores(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x.to(self.device)).float()

        def eval(self):
            self.net.eval()
            for p in self.net.parameters():
                p.requires_grad_(False)
            return self

    return ModelSpec("module", InMemory, "an nn.Module passed to robench.evaluate", origin="robench.evaluate")


def evaluate(model, dataset: str = "digits", attacks: Iterable[str] | str = ("pgd",), eps: Mapping[str, Any] | Iterable[str] | str | None = None,
             *, limit: int | None = None, split: str = "test", out: str | Path | None = None, name: str = "model",
             device: str = "auto", seed: int = 0, batch_size: int = 100, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Attack an ``nn.Module`` (inputs in [0, 1], NCHW) on a dataset and return the leaderboard rows.

    ``eps`` is ``{"Linf": [8/255]}``, ``"Linf=8/255"`` or a list of such strings (default Linf
    8/255); ``attacks`` are attack plugin names run with their defaults. The module is put in eval
    mode with its parameters frozen, never trained; results are stored in ``out`` (default
    ``runs/evaluate-<name>``) keyed by the SHA-256 of the module's weights, so a call with the same
    weights resumes and one with other weights never reuses old results. Each row is a dict with
    ``model, attack, norm, clean_accuracy, robust_accuracy`` ({eps: accuracy}) and the other
    columns of the leaderboard.
    """
    import torch

    from .data import resolve_data_dir
    from .plugins import Registry, get_registry
    from .report.export import rows_json
    from .results import load_results
    from .run import RunOptions, run_suite
    from .suite import Suite, resolve

    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"robench.evaluate expects a torch.nn.Module, got {type(model).__name__}")
    if isinstance(attacks, str):
        attacks = [attacks]
    if eps is None:
        eps_text = dict(DEFAULT_EPS)
    elif isinstance(eps, str):
        eps_text = eps_options([eps])
    elif isinstance(eps, Mapping):
        eps_text = {str(Norm(str(k))): [str(v) for v in (vs if isinstance(vs, (list, tuple)) else [vs])] for k, vs in eps.items()}
    else:
        eps_text = eps_options(eps)
    net = model  # a model that expects normalized inputs: wrap it first, e.g. nn.Sequential(Normalize(...), net)
    digest = module_digest(net)
    _MODULES[digest] = net
    base = get_registry()
    registry = Registry(specs={k: dict(v) for k, v in base.specs.items()}, broken=list(base.broken))
    registry.specs["model"]["module"] = _in_memory_spec()
    doc = {
        "name": f"evaluate-{name}",
        "dataset": {"name": dataset, "split": split, **({"limit": limit} if limit is not None else {})},
        "seed": seed, "device": device, "batch_size": batch_size,
        "models": [{"name": name, "plugin": "module", "params": {"digest": digest}}],
        "attacks": attack_entries(registry, attacks, eps_text),
        "epsilons": {k: _yaml_eps(v) for k, v in eps_text.items()},
    }
    from pydantic import ValidationError

    from .errors import SuiteError

    try:
        suite = Suite.model_validate(doc)
    except ValidationError as exc:
        raise SuiteError("<robench.evaluate>", [(".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]) from None
    resolved = resolve(suite, registry, "<robench.evaluate>")
    out_dir = Path(out) if out is not None else Path("runs") / suite.name
    options = RunOptions(out_dir=out_dir, data_dir=resolve_data_dir(data_dir), limit=limit)
    flags = [(p, p.requires_grad) for p in net.parameters()]
    was_training = net.training
    first = next(iter(net.parameters()), None)
    home = first.device if first is not None else None
    try:
        summary = run_suite(resolved, registry, options)
    finally:  # the harness froze the module and moved it to the run's device; hand it back as it came
        for p, flag in flags:
            p.requires_grad_(flag)
        net.train(was_training)
        if home is not None:
            net.to(home)
        _MODULES.pop(digest, None)
    if not summary.ok:
        problems = [f"model {m}: {e.strip().splitlines()[-1]}" for m, e in summary.models_failed]
        problems += [f"{c}: {e.strip().splitlines()[-1]}" for c, e in summary.cells_failed]
        raise UserInputError("robench.evaluate: " + "; ".join(problems))
    results = [r for r in load_results(summary.store_path) if r.suite == suite.name]
    return rows_json(results)


# -- the command line ------------------------------------------------------------------------


def register_cli(app, fail) -> None:
    """Add ``robench evaluate`` to the typer app (``fail`` turns a RobenchError into an exit)."""

    @app.command()
    def evaluate(
        ctx: typer.Context,
        model: str = typer.Option(..., "--model", "-m", metavar="LOADER:PATH",
                                  help="torchscript:net.pt, onnx:net.onnx or torch-file:weights.safetensors (with --arch)"),
        dataset: str = typer.Option("cifar10", "--dataset", "-d", help="dataset plugin name (see robench plugins)"),
        split: str = typer.Option("test", "--split", help="split to evaluate on"),
        limit: Optional[int] = typer.Option(None, "--limit", "-n", min=1, help="evaluate only the first N samples"),
        attack: Optional[List[str]] = typer.Option(None, "--attack", "-a", metavar="NAME",
                                                   help="attack plugin, with its defaults (repeatable) [default: autoattack]"),
        eps: Optional[List[str]] = typer.Option(None, "--eps", "-e", metavar="NORM=EPS[,EPS]",
                                                help="threat model, e.g. Linf=8/255 or L2=0.25,0.5 (repeatable) [default: Linf=8/255]"),
        arch: Optional[str] = typer.Option(None, "--arch", metavar="MODULE:FACTORY",
                                           help="torch-file: the factory that builds the net, package.module:factory or file.py:factory"),
        arch_kwarg: Optional[List[str]] = typer.Option(None, "--arch-kwarg", metavar="KEY=VALUE",
                                                       help="a keyword argument of the --arch factory, the value read as YAML "
                                                            "(e.g. width=32); repeatable"),
        mean: Optional[str] = typer.Option(None, "--mean", metavar="M1,M2,..", help="per-channel mean the net expects (with --std)"),
        std: Optional[str] = typer.Option(None, "--std", metavar="S1,S2,..", help="per-channel std the net expects (with --mean)"),
        name: Optional[str] = typer.Option(None, "--name", help="model name in the leaderboard [default: the file's stem]"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder [default: runs/evaluate-<name>]"),
        device: str = typer.Option("auto", "--device", help="cpu, cuda or auto"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder with dataset files [default: $ROBENCH_DATA, else ~/.cache/robench/data]"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress output"),
    ) -> None:
        """Evaluate one pretrained model file, no YAML needed: writes the equivalent suite, runs it, prints the leaderboard.

        Example: robench evaluate --model torchscript:net.pt --dataset cifar10 --limit 1000 --attack autoattack --eps Linf=8/255
        """
        from .errors import RobenchError
        from .plugins import get_registry

        try:
            loader, path = parse_model_option(model)
            if not path.exists():
                raise UserInputError(f"--model {model}: file not found: {path}")
            label = name or "".join(c if c.isalnum() or c in "_.+-" else "-" for c in path.stem) or "model"
            out_dir = out or Path("runs") / f"evaluate-{label}"
            reg = get_registry()
            eps_text = eps_options(eps) if eps else dict(DEFAULT_EPS)
            names = attack or ["autoattack" if "autoattack" in reg.specs["attack"] else "pgd"]
            doc = suite_document(
                model=loader, path=path, out=out_dir, name=label, dataset=dataset, split=split, limit=limit,
                attacks=attack_entries(reg, names, eps_text), eps=eps_text, arch=arch, device=device,
                kwargs=arch_kwargs_options(arch_kwarg or []),
                mean=[float(v) for v in mean.split(",")] if mean else None, std=[float(v) for v in std.split(",")] if std else None,
            )
            out_dir.mkdir(parents=True, exist_ok=True)
            suite_path = out_dir / "suite.yaml"
            # Files outside the output folder were named on this command line: their folders are allowed.
            files = [path] + ([Path(arch.partition(":")[0])] if arch and arch.partition(":")[0].endswith(".py") else [])
            allow = sorted({str(f.expanduser().resolve().parent) for f in files
                            if not f.expanduser().resolve().is_relative_to(out_dir.resolve())})
            again = (f"robench run {suite_path} --out {out_dir}" + "".join(f" --allow-dir {a}" for a in allow)
                     + (f" --data-dir {data_dir}" if data_dir is not None else ""))
            suite_path.write_text(f"# written by robench evaluate; repeat or extend it with:\n#   {again}\n" + dump_yaml(doc))
        except (RobenchError, ValueError) as exc:
            fail(exc if isinstance(exc, RobenchError) else UserInputError(str(exc)))
        typer.echo(f"suite written to {suite_path}; to repeat or extend: {again}", err=True)
        run_cmd = typer.main.get_command(app).get_command(ctx, "run")
        argv = [str(suite_path), "--out", str(out_dir)] + [x for a in allow for x in ("--allow-dir", a)] + (["--quiet"] if quiet else [])
        argv += ["--data-dir", str(data_dir)] if data_dir is not None else []
        with run_cmd.make_context("run", argv, parent=ctx) as sub:  # exactly as `robench run` would be called
            run_cmd.invoke(sub)


__all__ = ["evaluate", "suite_document", "attack_entries", "eps_options", "parse_model_option"]
