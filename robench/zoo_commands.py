"""``robench zoo list | verify | add``, and :func:`add_models`, which trains (or takes from the
cache) a suite's models and puts their weights in the zoo (:mod:`robench.zoo`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import List, Optional

import typer

from .content import sha256_file
from .errors import RobenchError, UserInputError
from .zoo import Entry, read_manifest, update_manifest, verify_entry, zoo_dir


def add_models(suite_path: Path, names: list[str] | None, data_dir: Path, cache_dir: Path, *, retrain: bool = False,
               zoo: Path | None = None, log=print) -> list[Entry]:
    """Train (or take from the cache) the suite's trainable models on CPU and put them in the zoo,
    with their clean accuracy on the suite's evaluation slice."""
    import torch

    from .data import load_eval_data, load_train_data
    from .models import ModelPool
    from .plugins import get_registry
    from .suite import load_suite

    zoo = zoo or zoo_dir()
    registry = get_registry()
    resolved = load_suite(suite_path, registry)
    suite = resolved.suite
    wanted = names or [m.name for m in suite.models]
    unknown = sorted(set(wanted) - {m.name for m in suite.models})
    if unknown:
        raise UserInputError(f"{suite_path}: no model named {', '.join(unknown)}; models are {[m.name for m in suite.models]}")

    class Quiet:
        """Plain log lines: training a CIFAR model takes hours on a CPU, so every unit of progress
        (an epoch) is a line with the elapsed time and a linear estimate of what is left."""
        label, started = "", 0.0

        def phase(self, text): log(text)

        def start_task(self, label, total):
            self.label, self.started = label, time.perf_counter()
            log(f"{label} ...")

        def advance_task(self, done, total=None):
            if not total or not done:
                return
            spent = time.perf_counter() - self.started
            log(f"{self.label}: {done}/{total} ({spent / 60:.1f} min, about {spent / done * (total - done) / 60:.0f} min left)")

        def end_task(self, status): log(status)
        def log(self, text): log(text)

    device = torch.device("cpu")
    train = {}

    def train_data():
        if "xy" not in train:
            train["xy"] = load_train_data(resolved, registry, data_dir)
        return train["xy"]

    pool = ModelPool(resolved, registry, device, cache_dir, data_dir, retrain=retrain, reporter=Quiet(), train_data=train_data)
    pool.compute_keys()
    data = load_eval_data(resolved, registry, data_dir, None)
    entries = read_manifest(zoo)
    added = []
    for name in wanted:
        entry_cfg = next(m for m in suite.models if m.name == name)
        spec = registry.get("model", entry_cfg.plugin)
        if not spec.factory.trainable:
            log(f"model {name}: not trainable, nothing to put in the zoo")
            continue
        key = pool.keys[name]
        folder = cache_dir / key
        fresh = retrain or not (folder / "weights.safetensors").is_file()
        t0 = time.perf_counter()
        model = pool.load(name, data.info)
        with torch.no_grad():
            pred = torch.cat([model.predict(data.x[i:i + 500]) for i in range(0, len(data.x), 500)])
        acc = float((pred == data.y).float().mean())
        config = json.loads((folder / "config.json").read_text())
        seconds = config.get("train_seconds") if not fresh else time.perf_counter() - t0
        zoo.mkdir(parents=True, exist_ok=True)
        old = entries.get(key)  # the same model reached from another suite keeps its file name and command
        file = old.file if old is not None else f"{suite.name}-{name}-{key[:12]}.safetensors"
        shutil.copyfile(folder / "weights.safetensors", zoo / file)
        rel = os.path.relpath(Path(suite_path).resolve(), zoo.resolve().parent)
        command = old.command if old is not None and not retrain else f"robench zoo add {rel} --model {name} --retrain"
        suites = sorted(set((old.suites or []) if old else []) | {suite.name})
        entries[key] = Entry(key=key, file=file, sha256=sha256_file(zoo / file), config=config, command=command,
                             train_seconds=seconds, clean_accuracy=acc, clean_n=len(data.x), suites=suites)
        added.append(entries[key])
        log(f"model {name}: key {key}, clean accuracy {acc:.4f} on {len(data.x)} {suite.dataset.name} {suite.dataset.split} "
            f"images, {(zoo / file).stat().st_size / 2**20:.2f} MiB -> {zoo / file}")
    update_manifest(added, zoo)
    return added


def register_cli(app, fail) -> None:
    """``robench zoo list | verify | add``."""
    zoo_app = typer.Typer(help="The model zoo: trained weights of the committed suites' models, seeding the cache.",
                          no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(zoo_app, name="zoo")

    @zoo_app.command("list")
    def zoo_list() -> None:
        """List the zoo's models: key, suites, clean accuracy, training time, file size."""
        entries = read_manifest()
        if not entries:
            typer.echo(f"the zoo at {zoo_dir()} is empty")
            return
        for e in entries.values():
            size = (zoo_dir() / e.file).stat().st_size / 2**20 if (zoo_dir() / e.file).is_file() else float("nan")
            acc = f"{e.clean_accuracy:.4f} on {e.clean_n}" if e.clean_accuracy is not None else "?"
            train = f"{e.train_seconds:.0f}s" if e.train_seconds is not None else "?"
            typer.echo(f"{e.key}  {','.join(e.suites or [])}  {e.config.get('plugin')} {json.dumps(e.config.get('params', {}).get('arch'))}"
                       f"  clean {acc}  trained {train} on {e.config.get('device')}  {size:.2f} MiB  {e.file}")

    @zoo_app.command("verify")
    def zoo_verify() -> None:
        """Check every zoo file against its SHA-256 in the manifest (exit 1 on a mismatch)."""
        entries = read_manifest()
        bad = [p for p in (verify_entry(e) for e in entries.values()) if p]
        for p in bad:
            typer.echo(f"error: {p}", err=True)
        typer.echo(f"{len(entries) - len(bad)} of {len(entries)} zoo files match their manifest")
        if bad:
            raise typer.Exit(1)

    @zoo_app.command("add")
    def zoo_add(
        suite: Path = typer.Argument(..., help="suite whose trainable models to add"),
        model: Optional[List[str]] = typer.Option(None, "--model", help="only this model of the suite (repeatable)"),
        retrain: bool = typer.Option(False, "--retrain", help="train again instead of taking the cached weights"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset files [default: $ROBENCH_DATA]"),
        cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="model cache [default: $ROBENCH_CACHE]"),
    ) -> None:
        """Train (on CPU, or take from the cache) a suite's models and put their weights in the zoo."""
        from .data import resolve_data_dir
        from .models import default_cache_dir

        try:
            add_models(suite, model, resolve_data_dir(data_dir), cache_dir or default_cache_dir(), retrain=retrain,
                       log=lambda t: typer.echo(t, err=True))
        except RobenchError as exc:
            fail(exc)
