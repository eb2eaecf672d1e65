"""Short SQLite connections for the workspace's small stores that a threaded server writes (tokens and audit,
staff marks): one connection per call, rows as ``sqlite3.Row``, committed when the block ends."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    con = sqlite3.connect(path, timeout=30)
    con.row_factory = sqlite3.Row
    try:
        with con:
            yield con
    finally:
        con.close()


class Store:
    """A long-lived SQLite store in the workspace (WAL; writes in explicit ``_tx`` transactions), for the
    ledgers a run writes as it goes."""

    def __init__(self, path: Path, schema: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._con = sqlite3.connect(path, timeout=60, isolation_level=None)
        self._con.execute("pragma journal_mode=wal")
        self._con.execute("pragma synchronous=full")
        self._con.executescript(schema)

    def close(self) -> None:
        self._con.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("begin immediate")
        try:
            yield self._con
        except BaseException:
            self._con.execute("rollback")
            raise
        self._con.execute("commit")
