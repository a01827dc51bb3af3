"""Revocation across worker processes on one SQLite file (``tokensmith serve --workers N``).

PostgreSQL replicas hear each other through LISTEN/NOTIFY (verify/background.py). SQLite has no
such channel, so each committed change to tokens or users also leaves a ``verification_changes``
row in its own transaction (db/changes.py). This feed reads them:

* before every verification, ``poll()`` asks SQLite ``PRAGMA data_version`` on a connection of its
  own: an integer that moves when any *other* connection has committed. It costs a couple of µs and
  no read transaction, so a deleted token is refused by every worker from the very next request on;
* only when it moved are the rows newer than the last one seen read (one indexed query) and each
  invalidates the cache like a local commit would. Other writes (last-used times, failure counters)
  move the version too; they cost that one query, which finds nothing.

Old rows are deleted by ``prune()`` (called by the background sweep).
"""

from __future__ import annotations

import logging
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
        self._version = self._data_version()
        row = self._connection.execute("SELECT max(id) FROM verification_changes").fetchone()
        self._last_id: int = row[0] or 0

    def _data_version(self) -> int:
        return self._cursor.execute("PRAGMA data_version").fetchone()[0]

    def poll(self) -> None:
        """Apply what other connections committed since the last poll (cheap when nothing was)."""
        with self._lock:
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
            self._connection.close()


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL; None for in-memory databases and other dialects."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return parsed.database
