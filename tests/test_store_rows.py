"""The store's row-copy methods (used by ``robench merge``): the only SQL is in the store, and names
that reach the SQL text (tables, columns, ordering) must be the store's own."""

import pytest

from robench.errors import StoreError
from robench.store import Store


def test_rows_insert_update_and_digest(tmp_path):
    with Store(tmp_path / "a.sqlite") as st:
        run_id = st.start_run("s", "h", {"host": "x"})
        st.ensure_cell("k", run_id, suite="s", model="m", model_plugin="mp", attack="a", attack_plugin="ap", norm="linf",
                       kind="minimal", eps=None, source=None, needs=[], config={}, n_total=2)
        with st.transaction():
            assert st.rows("cells", key="k")[0]["status"] == "pending"
            st.update_cell("k", status="done", n_total=3)
            new_id = st.insert_rows("runs", [{"suite": "s", "suite_hash": "h", "started": 1.0, "finished": None,
                                              "status": "running", "provenance": "{}"}])
            st.close_running_run(new_id, 2.0, "done")
        assert [r["status"] for r in st.rows("runs", order="id")] == ["running", "done"]
        assert st.rows("runs", id=new_id)[0]["finished"] == 2.0
        cell = st.rows("cells", order="rowid")[0]
        assert (cell["status"], cell["n_total"], cell["needs"]) == ("done", 3, "[]")  # as stored: JSON text
        empty = st.samples_digest(["label"])
        with st.transaction():
            st.insert_rows("samples", [dict(cell="k", idx=i, sha256="0", label=i, clean_pred=i, success=0, rejected=0,
                                            reject_reason=None, l0=None, l1=None, l2=None, linf=None, forward=1, backward=0,
                                            seconds=0.5 * i) for i in range(2)])
        assert st.samples_digest(["label"]) != empty
        assert [r["idx"] for r in st.rows("samples", cell="k")] == [0, 1]


def test_names_outside_the_schema_are_refused(tmp_path):
    with Store(tmp_path / "a.sqlite") as st:
        for call in (lambda: st.rows("meta"), lambda: st.rows("cells", **{"key=key OR 1": 1}),
                     lambda: st.rows("cells", order="key; DROP TABLE cells"), lambda: st.update_cell("k", nope=1),
                     lambda: st.insert_rows("samples", [{"cell": "k", "bogus": 1}]), lambda: st.samples_digest(["x"])):
            with pytest.raises(StoreError, match="no columns|table"):
                call()
        assert st.rows("cells") == []


def test_read_only_store_does_not_write(tmp_path):
    path = tmp_path / "a.sqlite"
    Store(path).close()
    with Store(path, create=False, read_only=True) as st:
        assert st.read_only
        with pytest.raises(Exception, match="readonly|read-only|read only"):
            with st.transaction():
                st.insert_rows("suites", [{"name": "s", "suite_hash": "h", "config": "{}", "updated": 0.0}])
