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
