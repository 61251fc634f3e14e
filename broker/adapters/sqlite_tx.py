"""Write transactions on a stdlib ``sqlite3`` connection opened with ``isolation_level=None``."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

__all__ = ["immediate"]


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE: COMMIT when the block ends, ROLLBACK if it raises.

    The write lock is taken at BEGIN, so a transaction that reads before it
    writes sees nothing another process could change before its COMMIT.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            # A failed ROLLBACK must not hide the error that led to it.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
