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
