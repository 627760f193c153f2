"""The bnn plugin without TensorFlow: registration never imports TF; use says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_registration_does_not_import_tensorflow():
    code = (
        "import sys; from robench.plugins import load_registry; "
        "spec = load_registry().get('model', 'bnn'); "
        "assert spec.factory.framework == 'tensorflow'; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported at registration'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_using_it_without_tf_says_how_to_install(monkeypatch):
    import robench
    from robench_plugins.bnn import BNN

    monkeypatch.setitem(sys.modules, "larq", None)  # makes `import larq` fail like a missing package
    info = robench.DatasetInfo("digits", (1, 8, 8), tuple("0123456789"))
    with pytest.raises(ImportError, match=r"pip install 'robench\[tf\]'"):
        BNN(BNN.Params(), info)


def test_tf_imported_first_with_keras_3_gives_a_clear_error():
    pytest.importorskip("tensorflow")
    code = (
        "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None); import tensorflow; "
        "from robench_plugins.bnn.model import import_tf\n"
        "try:\n    import_tf()\nexcept RuntimeError as e:\n    assert 'TF_USE_LEGACY_KERAS=1' in str(e), e\n"
        "else:\n    raise SystemExit('no error')"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_USE_LEGACY_KERAS"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
