"""A Ctrl-C that arrives as a run finishes (while the leaderboard prints, or while the interpreter
shuts down) exits 130 with a message, or 0 when nothing was left to do: never a silent -2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

SUITE = """\
name: tiny
dataset: {name: digits, limit: 20}
device: cpu
models:
  - {name: m, plugin: mlp, params: {hidden: 8, epochs: 1}}
attacks:
  - {name: b, plugin: fgsm}
epsilons: {Linf: [0.1]}
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_at_the_end_of_a_run_never_kills_silently(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    env = {**os.environ, "ROBENCH_CACHE": str(tmp_path / "cache")}
    seen = []
    for delay in (0.0, 0.3, 0.8):
        p = subprocess.Popen([sys.executable, "-m", "robench.cli", "run", str(suite), "-o", str(tmp_path / "out")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        err = ""
        for line in p.stderr:
            err += line
            if " cells: " in line:  # the run is over: the summary line
                time.sleep(delay)
                p.send_signal(signal.SIGINT)
                break
        _, rest = p.communicate(timeout=120)
        err += rest
        seen.append(p.returncode)
        assert p.returncode in (0, 130), (delay, p.returncode, err[-2000:])
        assert "Traceback" not in err
        if p.returncode == 130:
            assert "every result is stored in" in err
    assert seen  # at least the first interrupt lands while the leaderboard is printed or the process exits
