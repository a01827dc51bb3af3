"""Revocation across worker processes on one SQLite file (``tokensmith serve --workers N``).

PostgreSQL replicas hear each other through LISTEN/NOTIFY (verify/background.py). SQLite has no
such channel, so each committed change to tokens or users also leaves a ``verification_changes``
row in its own transaction (db/changes.py). This feed reads them:

* before every verification, ``poll()`` looks whether any connection committed since it last looked,
  so a deleted token is refused by every worker from the very next request on. The authority is
  ``PRAGMA data_version`` on a connection of its own (it moves when any *other* connection has
  committed), but a PRAGMA costs a few µs, as much as the whole cached verification. So in WAL
  mode (the engine's) it first compares the 48-byte WAL-index header in the ``-shm`` file, mapped
  into memory (https://www.sqlite.org/walformat.html, "The WAL-Index Header"): every commit rewrites
  it (``iChange`` counts transactions, ``mxFrame`` grows) before it becomes visible to readers,
  so an unchanged header means nothing was committed; a changed one sends ``poll()`` to the PRAGMA.
  Without a ``-shm`` file (not WAL) every poll asks the PRAGMA;
* only when it moved are the rows newer than the last one seen read (one indexed query) and each
  invalidates the cache like a local commit would. Other writes (last-used times, failure counters)
  move the version too; they cost that one query, which finds nothing.

Old rows are deleted by ``prune()`` (called by the background sweep).
"""

from __future__ import annotations

import logging
import mmap
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tokensmith.db.changes import Changes

log = logging.getLogger("tokensmith.verify")
KEEP = timedelta(minutes=10)


class SQLiteChangeFeed:
    def __init__(self, path: str, invalidate: Callable[[Changes], None]) -> None:
        self.invalidate = invalidate
        # Autocommit (no implicit transactions): a PRAGMA or SELECT here never holds a read snapshot.
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self._connection.execute("PRAGMA busy_timeout=10000")
        self._cursor = self._connection.cursor()  # reused: the per-request PRAGMA builds nothing
        self._lock = threading.Lock()
        # The WAL index exists while a connection (ours) is open in WAL mode; it stays until we close.
        self._shm = _map_wal_index(path)
        self._header = self._shm[:_WAL_INDEX_HEADER] if self._shm is not None else b""
        self._version = self._data_version()
        row = self._connection.execute("SELECT max(id) FROM verification_changes").fetchone()
        self._last_id: int = row[0] or 0

    def _data_version(self) -> int:
        return self._cursor.execute("PRAGMA data_version").fetchone()[0]

    def poll(self) -> None:
        """Apply what other connections committed since the last poll (cheap when nothing was)."""
        if self._shm is not None and self._shm[:_WAL_INDEX_HEADER] == self._header:
            return  # no commit anywhere since the last look
        with self._lock:
            if self._shm is not None:
                self._header = self._shm[:_WAL_INDEX_HEADER]  # before the PRAGMA: a later commit is seen next time
            version = self._data_version()
            if version == self._version:
                return
            self._version = version
            rows = self._connection.execute(
                "SELECT id, payload FROM verification_changes WHERE id > ? ORDER BY id", (self._last_id,)
            ).fetchall()
            if rows:
                self._last_id = rows[-1][0]
        for _id, payload in rows:
            self.invalidate(Changes.from_payload(payload))

    def prune(self, now: datetime | None = None) -> None:
        """Delete rows every worker has had minutes to read."""
        cutoff = (now or datetime.now(UTC)) - KEEP
        with self._lock:
            self._connection.execute("DELETE FROM verification_changes WHERE at < ?",
                                     (cutoff.strftime("%Y-%m-%d %H:%M:%S.%f"),))

    def close(self) -> None:
        with self._lock:
            if self._shm is not None:
                self._shm.close()
                self._shm = None
            self._connection.close()


_WAL_INDEX_HEADER = 48


def _map_wal_index(path: str) -> mmap.mmap | None:
    """The WAL index (``<db>-shm``) mapped read-only, or None when the database is not in WAL mode."""
    try:
        with open(f"{path}-shm", "rb") as file:
            if os.fstat(file.fileno()).st_size < _WAL_INDEX_HEADER:
                return None
            return mmap.mmap(file.fileno(), _WAL_INDEX_HEADER, access=mmap.ACCESS_READ)
    except OSError:
        return None


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL; None for in-memory databases and other dialects."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database
