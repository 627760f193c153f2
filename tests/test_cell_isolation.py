"""The cell boundary against hostile attack plugins (tests/dishonest_plugins.py): nothing an attack
does to its arguments, its model or its process stores a fake success or changes a later cell."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SUITE = """\
name: honesty
dataset: {{name: digits, limit: 40}}
batch_size: 10
models:
  - {{name: m, plugin: mlp, params: {{hidden: 16, epochs: 3}}}}
attacks:
{attacks}
epsilons: {{Linf: [0.1]}}
"""


def write_suite(tmp: Path, attacks: list[tuple[str, str]], name: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(SUITE.format(attacks="\n".join(f"  - {{name: {n}, plugin: {plugin}}}" for n, plugin in attacks)))
    return p


def robench(*args):
    return subprocess.run([sys.executable, "-m", "robench.cli", *map(str, args)], capture_output=True, text=True)


def cells(store: Path) -> dict[str, dict]:
    db = sqlite3.connect(store)
    db.row_factory = sqlite3.Row
    out = {}
    for c in db.execute("SELECT key, attack, status, error FROM cells"):
        rows = db.execute("SELECT idx, label, clean_pred, success, rejected, l0, l1, l2, linf, forward, backward "
                          "FROM samples WHERE cell=? ORDER BY idx", (c["key"],)).fetchall()
        out[c["attack"]] = {"status": c["status"], "error": c["error"] or "", "rows": [tuple(r) for r in rows]}
    return out


def fake_successes(cell: dict) -> int:
    """Successes on samples the model classifies correctly: each would be a fake (the attacks only return tiny shifts)."""
    return sum(1 for r in cell["rows"] if r[3] and r[1] == r[2] and r[8] < 0.05)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """The honest FGSM cell of a run without dishonest attacks, and the model cache it trained."""
    import os

    tmp = tmp_path_factory.mktemp("clean")
    env = {"ROBENCH_CACHE": str(tmp / "cache"),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        suite = write_suite(tmp, [("fgsm", "fgsm")], "clean")
        proc = robench("run", suite, "--out", tmp / "out", "-q", "--no-leaderboard")
        assert proc.returncode == 0, proc.stderr
        yield tmp, cells(tmp / "out" / "results.sqlite")["fgsm"]["rows"]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _env(clean_run, monkeypatch):
    import os

    tmp, _ = clean_run
    monkeypatch.setenv("ROBENCH_CACHE", str(tmp / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))


DISHONEST = ["edit-x", "edit-y", "weights", "patch-method", "patch-class", "exit"]


def test_dishonest_attacks_store_nothing_fake_and_leave_later_cells_alone(clean_run, tmp_path, monkeypatch):
    _env(clean_run, monkeypatch)
    _, honest = clean_run
    attacks = []
    for d in DISHONEST:  # each dishonest cell is followed by an honest FGSM cell
        attacks += [(d, f"dishonest-{d}"), (f"fgsm_after_{d.replace('-', '_')}", "fgsm")]
    suite = write_suite(tmp_path, attacks, "dishonest")
    proc = robench("run", suite, "--out", tmp_path / "out", "-q", "--no-leaderboard", "-p", "dishonest_plugins")
    assert proc.returncode == 1, proc.stderr  # the run completed; some cells failed
    got = cells(tmp_path / "out" / "results.sqlite")
    assert len(got) == 2 * len(DISHONEST)
    for d in DISHONEST:
        assert fake_successes(got[d]) == 0, d
        after = got[f"fgsm_after_{d.replace('-', '_')}"]
        assert after["status"] == "done", (d, after["error"])
        assert after["rows"] == honest, f"the FGSM cell after {d} differs from a clean run"

    # in-place edits of x and y: the cell completes, every claimed adversarial is rejected
    for d, reason in (("edit-x", "exceeds eps"), ("edit-y", "not misclassified")):
        assert got[d]["status"] == "done"
        claimed = [r for r in got[d]["rows"] if r[1] == r[2]]
        assert claimed and all(r[4] and not r[3] for r in claimed), d
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    reasons = {a: {r[0].split(" (")[0].split(" norm")[0] for r in db.execute(
        "SELECT reject_reason FROM samples s JOIN cells c ON s.cell=c.key WHERE c.attack=? AND rejected=1", (a,))}
        for a in ("edit-x", "edit-y")}
    assert reasons == {"edit-x": {"Linf"}, "edit-y": {"not misclassified"}}
    # the stored labels are the dataset's, not the ones the attack wrote
    assert [r[1] for r in got["edit-y"]["rows"]] == [r[1] for r in honest]

    # changing the model fails the cell with a message saying so, before any batch is stored
    for d, what in (("weights", "weights model.net"), ("patch-method", "attribute model.scores"), ("patch-class", ".scores")):
        assert got[d]["status"] == "failed", d
        assert "changed the model it was given" in got[d]["error"] and what in got[d]["error"], got[d]["error"]
        assert got[d]["rows"] == []
    assert got["exit"]["status"] == "failed" and "SystemExit" in got["exit"]["error"]
    assert "would have ended the whole run" in got["exit"]["error"]


def test_process_isolation_survives_os_exit_and_segfault(clean_run, tmp_path, monkeypatch):
    _env(clean_run, monkeypatch)
    _, honest = clean_run
    attacks = [("os_exit", "dishonest-os-exit"), ("fgsm_a", "fgsm"), ("segv", "dishonest-segfault"),
               ("patch", "dishonest-patch-class"), ("fgsm_b", "fgsm")]
    suite = write_suite(tmp_path, attacks, "crashing")
    proc = robench("run", suite, "--out", tmp_path / "out", "-q", "--no-leaderboard", "-p", "dishonest_plugins",
                   "--isolate", "process")
    assert proc.returncode == 1, proc.stderr
    got = cells(tmp_path / "out" / "results.sqlite")
    assert got["os_exit"]["status"] == "failed" and "exit code 7" in got["os_exit"]["error"], got["os_exit"]["error"]
    assert got["segv"]["status"] == "failed" and "SIGSEGV" in got["segv"]["error"], got["segv"]["error"]
    assert got["patch"]["status"] == "failed" and "changed the model" in got["patch"]["error"]
    for a in ("fgsm_a", "fgsm_b"):
        assert got[a]["status"] == "done" and got[a]["rows"] == honest, a
    assert all(not c["rows"] for a, c in got.items() if not a.startswith("fgsm"))


def test_process_isolation_verifies_in_the_parent(clean_run, tmp_path, monkeypatch):
    """A plugin that patches the verifier in its own process cannot fake a success: the child only
    sends candidates back (JSON + raw float bytes, never a pickle) and the parent verifies them."""
    _env(clean_run, monkeypatch)
    _, honest = clean_run
    suite = write_suite(tmp_path, [("patch_verifier", "dishonest-patch-verifier"), ("fgsm", "fgsm")], "verifier")
    proc = robench("run", suite, "--out", tmp_path / "out", "-q", "--no-leaderboard", "-p", "dishonest_plugins",
                   "--isolate", "process")
    assert proc.returncode == 0, proc.stderr
    got = cells(tmp_path / "out" / "results.sqlite")
    assert got["patch_verifier"]["status"] == "done" and got["patch_verifier"]["rows"]
    assert fake_successes(got["patch_verifier"]) == 0
    assert got["fgsm"]["status"] == "done" and got["fgsm"]["rows"] == honest


def test_a_child_message_that_is_not_the_cells_is_refused():
    import torch

    from robench.cell import Candidates
    from robench.errors import RobenchError
    from robench.isolation import decode_message, encode_message

    class Job:
        positions = [0, 1, 2]

    msg = ("batch", Candidates([0, 1], torch.rand(2, 1, 2, 2), 3.0, 1.0, 0.01), {"r": 1.0}, ["hello"])
    raw = encode_message(msg)
    back = decode_message(raw, Job, set())
    assert back["candidates"].chunk == [0, 1] and torch.equal(back["candidates"].adv, msg[1].adv)
    assert back["logs"] == ["hello"] and back["records"] == {"r": 1.0}
    for bad, sent in ((raw, {1}),  # positions already stored
                      (raw[:-4], set()),  # candidates cut short
                      (b"\x80\x04garbage\n", set()),  # a pickle, say
                      (encode_message(("batch", Candidates([0, 5], torch.rand(2, 1, 2, 2), 3.0, 1.0, 0.0), {}, [])), set())):
        with pytest.raises(RobenchError):
            decode_message(bad, Job, sent)


def test_counting_wrapper_forwards_only_declared_capabilities():
    from robench.counting import CountingModel
    from robench.errors import RobenchError
    from robench.testing import LinearModel

    g = torch.Generator().manual_seed(0)
    m = LinearModel(torch.randn(3, 16, generator=g), torch.randn(3, generator=g), (1, 4, 4))
    wrapped = CountingModel(m, "model test")
    assert not hasattr(wrapped, "inner") and not hasattr(wrapped, "weight") and not hasattr(wrapped, "net")
    with pytest.raises(AttributeError, match="does not expose 'weight'"):
        wrapped.weight  # noqa: B018


class _Tally(__import__("robench").Model):
    """An independent count of what an attack asks of a model (delegates everything)."""

    def __init__(self, model):
        super().__init__(model.params, model.info)
        self.model, self.rows, self.weight_calls = model, 0, 0
        self.exposes = type(model).exposes
        self.differentiable = model.differentiable

    def scores(self, x):
        self.rows += len(x)
        return self.model.scores(x)

    def linear_weights(self):
        self.weight_calls += 1
        return self.model.linear_weights()

    def hidden_weights(self):
        self.weight_calls += 1
        return self.model.hidden_weights()

    def hidden_signs(self, x):
        self.rows += len(x)
        return self.model.hidden_signs(x)


@pytest.mark.parametrize("which", ["linear_sign", "mlp01_hidden"])
def test_built_in_01_loss_attacks_are_counted_and_declare_weights(which):
    import robench
    from robench.counting import CountingModel
    from robench.errors import RobenchError
    from robench_plugins.datasets.digits import Digits
    from robench_plugins.zero_one.attacks import LinearSign, MLP01Hidden
    from robench_plugins.zero_one.models import MLP01, SCD01

    ds = Digits(Digits.Params())
    (xtr, ytr), (xte, yte) = ds.load("train", None), ds.load("test", None)
    tr, te = (ytr == 3) | (ytr == 8), (yte == 3) | (yte == 8)
    info = robench.DatasetInfo("digits", ds.info().input_shape, ("3", "8"))
    cls, attack_cls, extra = (SCD01, LinearSign, {}) if which == "linear_sign" else (MLP01, MLP01Hidden, {"hidden": 6})
    model = cls(cls.Params(votes=4, iterations=40, coords=32, **extra), info)
    model.fit(xtr[tr], (ytr[tr] == 8).long(), robench.Context(seed=0))
    x, y = xte[te][:60], (yte[te][:60] == 8).long()
    attack = attack_cls(attack_cls.Params())
    assert "weights" in attack.needs

    tally = _Tally(model)
    counting = CountingModel(tally, "model test", needs=attack.needs)
    adv = attack.run(counting, x, y, eps=0.2, ctx=robench.Context())
    assert counting.forward_rows == tally.rows and tally.rows >= len(x)  # every pass counted, hidden_signs included
    assert counting.weight_reads == tally.weight_calls >= 1
    if which == "mlp01_hidden":
        assert tally.rows > len(x)  # hidden_signs (one row per input) and the decision queries
    assert not torch.equal(adv, x)
    # the same attack without the declared need gets no weights
    with pytest.raises(RobenchError, match="must declare needs 'weights'"):
        attack.run(CountingModel(model, "model test", needs={"decisions"}), x, y, eps=0.2, ctx=robench.Context())


def test_weights_need_is_recorded_with_the_cell_and_shown_in_the_leaderboard(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("ROBENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "w.yaml"
    suite.write_text(
        "name: whitebox\n"
        "dataset: {name: digits, classes: [3, 8], limit: 30}\n"
        "models:\n"
        "  - {name: s, plugin: scd01, params: {votes: 4, iterations: 40, coords: 32}}\n"
        "attacks:\n"
        "  - {name: ls, plugin: linear_sign}\n"
        "epsilons: {Linf: [0.2]}\n"
    )
    proc = robench("run", suite, "--out", tmp_path / "out", "-q")
    assert proc.returncode == 0, proc.stderr
    assert "| s | ls | bounded, reads weights |" in proc.stdout
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert json.loads(db.execute("SELECT needs FROM cells").fetchone()[0]) == ["decisions", "weights"]
    assert db.execute("SELECT MIN(forward) FROM samples").fetchone()[0] >= 1  # its decision queries are counted
    rows = json.loads(robench("leaderboard", tmp_path / "out", "-f", "json").stdout)
    assert rows[0]["needs"] == ["decisions", "weights"]


def _hang_report(pgid: int) -> str:
    """The processes of a hung run and, where py-spy is installed, the Python stack of each."""
    import shutil

    ps = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:20,etime,cmd", "-g", str(pgid)], capture_output=True, text=True).stdout
    report = [ps]
    spy = shutil.which("py-spy") or (str(Path(sys.executable).with_name("py-spy")) if Path(sys.executable).with_name("py-spy").exists() else None)
    for line in ps.strip().splitlines()[1:] if spy else []:
        pid = line.split()[0]
        dump = subprocess.run([spy, "dump", "--pid", pid], capture_output=True, text=True, timeout=30)
        report.append(f"py-spy dump {pid}:\n{dump.stdout}{dump.stderr}")
    return "\n".join(report)


def test_ctrl_c_with_process_isolation_stops_the_run_and_its_child(clean_run, tmp_path, monkeypatch):
    import os
    import signal
    import time

    _env(clean_run, monkeypatch)
    flag = tmp_path / "batches"
    suite = tmp_path / "slow.yaml"
    suite.write_text(SUITE.format(attacks=f"  - {{name: slow, plugin: fault-noise, params: {{sleep: 30, flag: {flag}}}}}"))
    monkeypatch.setenv("ROBENCH_DATA", str(tmp_path))  # the flag file is a path parameter: inside the data dir
    data = os.environ.get("ROBENCH_DATA")
    proc = subprocess.Popen([sys.executable, "-m", "robench.cli", "run", str(suite), "--out", str(tmp_path / "out"), "-q",
                             "--no-leaderboard", "-p", "reliability_plugins", "--isolate", "process"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not (flag.exists() and flag.read_text().strip()):
        time.sleep(0.2)
    assert flag.exists(), f"no batch started (data dir {data})"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on a terminal does: the whole foreground group
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # say where it hangs (it did once, under load in CI, and never since)
        state = _hang_report(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the run did not exit within 60 s of SIGINT\n{state}\nstderr:\n{err[-3000:]}") from None
    assert proc.returncode == 130, err
    assert "interrupted" in err
    gone = time.time() + 15  # the cell's child (and multiprocessing's resource tracker) exit with the run
    while time.time() < gone:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    left = subprocess.run(["ps", "-o", "pid,stat,cmd", "-g", str(proc.pid)], capture_output=True, text=True).stdout
    assert len(left.strip().splitlines()) <= 1, left


def test_device_digest_sees_any_single_change():
    """The checksum used for weights on an accelerator (computed here on CPU tensors: same ops)."""
    from robench.guard import device_digest

    g = torch.Generator().manual_seed(0)
    for t in (torch.randn(64, 33, generator=g), torch.randn(50, generator=g).half(), torch.randint(0, 9, (40,), generator=g),
              torch.rand(30, generator=g) > 0.5):
        ref = device_digest(t)
        assert device_digest(t.clone()) == ref
        for i in (0, t.numel() // 2, t.numel() - 1):
            u = t.clone().reshape(-1)
            u[i] = (~u[i]) if u.dtype == torch.bool else u[i] + 1
            assert device_digest(u.reshape(t.shape)) != ref
        swapped = t.clone().reshape(-1)
        swapped[[0, 1]] = swapped[[1, 0]]
        if not torch.equal(swapped, t.reshape(-1)):
            assert device_digest(swapped.reshape(t.shape)) != ref  # positions count, not only values


def test_restore_puts_back_the_weights_of_a_model_complete_at_construction(tmp_path):
    from robench.guard import changes, fingerprint
    from robench.models import ModelPool
    from robench.plugins import load_registry
    from robench.suite import load_suite

    import wrapped_plugins

    reg = load_registry(["wrapped_plugins"])
    text = ("name: shared\ndataset: {name: digits, limit: 10}\nmodels:\n  - {name: s, plugin: test-shared-net}\n"
            "attacks:\n  - {name: f, plugin: fgsm}\nepsilons: {Linf: [0.1]}\n")
    resolved = load_suite("shared.yaml", reg, text=text)
    pool = ModelPool(resolved, reg, torch.device("cpu"), tmp_path / "cache", tmp_path)
    pool.compute_keys()
    info = reg.get("dataset", "digits").factory(reg.get("dataset", "digits").params()).info()
    pool.models["s"] = model = pool.load("s", info)
    before = fingerprint(model)
    weight = wrapped_plugins.SHARED_NET.weight.detach().clone()
    with torch.no_grad():
        wrapped_plugins.SHARED_NET.weight.zero_()  # what a hostile attack would do to the shared object
    assert changes(before, fingerprint(model))
    restored = pool.restore("s", info)
    assert torch.equal(wrapped_plugins.SHARED_NET.weight, weight)
    assert not any(p.requires_grad for p in restored.net.parameters())


def test_a_ray_worker_does_not_reuse_a_model_a_cell_changed(clean_run, tmp_path, monkeypatch):
    """One Ray worker runs every cell in turn (it caches models between cells): a changed model is
    dropped (its class put back) instead of being handed to the next cell."""
    pytest.importorskip("ray")
    _env(clean_run, monkeypatch)
    _, honest = clean_run
    attacks = [("weights", "dishonest-weights"), ("fgsm_a", "fgsm"), ("patch", "dishonest-patch-class"), ("fgsm_b", "fgsm")]
    suite = write_suite(tmp_path, attacks, "ray")
    proc = robench("run", suite, "--out", tmp_path / "out", "-q", "--no-leaderboard", "-p", "dishonest_plugins",
                   "--executor", "ray", "--workers", "1")
    assert proc.returncode == 1, proc.stderr
    got = cells(tmp_path / "out" / "results.sqlite")
    for a in ("weights", "patch"):
        assert got[a]["status"] == "failed" and "changed the model it was given" in got[a]["error"], got[a]["error"]
        assert got[a]["rows"] == []
    for a in ("fgsm_a", "fgsm_b"):
        assert got[a]["status"] == "done" and got[a]["rows"] == honest, a
