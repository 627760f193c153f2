"""Checks made before a results store is opened: one writer per store (:class:`StoreLock`), and no
foreign file mistaken for a store (:func:`check_store_file`). :mod:`robench.store` re-exports both."""

from __future__ import annotations

import os
import platform
import sqlite3
import time
from pathlib import Path

from .errors import StoreError

# -- before opening a store: one writer (the lock), and no foreign file mistaken for a store -------


def check_store_file(path: Path) -> None:
    """An existing store file must be a robench store; checked read-only, so a foreign file is left
    exactly as it was (opening it as a store would switch it to WAL mode)."""
    path = Path(path)
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if head and head != b"SQLite format 3\x00":
        raise StoreError(f"{path} is not a robench results store (not an SQLite file); move it away or use another --out")
    if not head:
        return  # an empty file: SQLite makes a new database of it
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a robench results store ({exc}); move it away or use another --out") from None
    if "meta" not in tables or "samples" not in tables:
        raise StoreError(f"{path} is an SQLite file but not a robench results store (tables: {sorted(tables)}); "
                         "move it away or use another --out")


class StoreLock:
    """One writer per store: an exclusive ``flock`` on ``<store>.lock``, held for the whole run.

    The kernel drops the lock when the holder dies (even by SIGKILL), so a crashed run never
    blocks the next one; the file keeps the holder's pid and host for the error message.
    """

    def __init__(self, store_path: Path):
        self.store_path = Path(store_path)
        self.path = self.store_path.with_name(self.store_path.name + ".lock")
        self.fd: int | None = None

    def acquire(self) -> StoreLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot create the lock file {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown process"
            os.close(fd)
            raise StoreError(
                f"{self.store_path} is being written by another robench process ({holder}); "
                "wait for it to finish, or give this run another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
