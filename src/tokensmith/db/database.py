"""Engine and session handling for SQLite (embedded default) and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tokensmith.db.changes import FEED_KEY, ChangeFeed


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _create_private_sqlite_file(url: str) -> None:
    """Create a new SQLite database file 0600 before SQLite does (it would use the umask: 0644).

    SQLite gives the -wal and -shm files the database file's mode, so they are owner-only too.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):  # another worker process made it first, the same way
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLAC")


class _SqliteConnection(sqlite3.Connection):
    """A SQLite connection that hands this process's writer lock on once SQLite has committed.

    SQLAlchemy announces a commit (its ``commit`` event) *before* it commits: a lock handed on
    there let the next writer in while this connection still held SQLite's write lock, and that
    writer slept in SQLite's busy handler (1 ms and up; about once per token exchange at
    concurrency 8). Handed on here, after the commit or rollback itself, the next writer finds the
    database free.
    """

    writer_lock: threading.RLock | None = None  # held by this connection's open write transaction

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.hand_on()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.hand_on()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.hand_on()

    def hand_on(self) -> None:
        lock, self.writer_lock = self.writer_lock, None
        if lock is not None:
            lock.release()


def _serialize_sqlite_writers(engine: Engine) -> None:
    """One write transaction at a time per process, waiting in line on a lock.

    SQLite allows one writer anyway; without this, concurrent writers of this process wait in
    SQLite's busy handler, which sleeps in steps of up to 100 ms, so a burst of writes (token
    exchanges at concurrency 8) turns into a tail latency of hundreds of milliseconds. The lock is
    taken at a transaction's first write and released when it ends: after its commit or rollback
    (``_SqliteConnection``), or when the connection goes back to the pool or closes. Re-entrant:
    a thread that opens a second session to record an audit event apart still gets SQLite's own
    wait, as before.
    """
    lock = threading.RLock()

    def before(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        connection = cursor.connection
        # Bounded: should a holder ever fail to release, writers fall back to SQLite's own waiting.
        if (isinstance(connection, _SqliteConnection) and connection.writer_lock is None
                and statement.lstrip()[:6].upper() in _WRITES and lock.acquire(timeout=10)):
            connection.writer_lock = lock

    def checkin(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, _SqliteConnection):
            dbapi_connection.hand_on()

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine.pool, "checkin", checkin)


def _check_connections_on_checkout(engine: Engine) -> None:
    """Hand out no pooled connection that the server has closed, without a round trip per checkout.

    This replaces SQLAlchemy's ``pool_pre_ping``, which sends a ping (an empty query) on every checkout: on
    a busy machine that round trip cost about as much as the query it guarded. A server that ends
    a connection (restart, ``pg_terminate_backend``, an idle timeout, a proxy going away) sends an
    error and closes the socket, so the socket of an idle pooled connection turns readable. Only
    then is the real ping sent; if it fails, the pool opens a new connection for this checkout
    (``DisconnectionError``). A connection lost without a word (a silent network drop) is not
    seen here, nor was it by the ping, which would wait on it just the same.
    """
    dialect = engine.dialect

    def checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if not _may_be_closed(dbapi_connection):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:  # any failure of the ping: this connection is not to be used
            raise DisconnectionError(f"pooled connection lost ({type(exc).__name__})") from None

    event.listen(engine, "checkout", checkout)


def _may_be_closed(dbapi_connection: Any) -> bool:
    """True when an idle connection is closed or has something to read (data it never asked for)."""
    if getattr(dbapi_connection, "closed", False):
        return True
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # no poll() on this platform, no socket (psycopg raises its own error): ping it
        return True


def make_engine(url: str) -> Engine:
    # hide_parameters: SQLAlchemy's exception text quotes bound parameters (a password hash, a
    # digest), and exception text can reach a log line; statements alone are enough to debug.
    if url.startswith("sqlite"):
        _create_private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10,
                                                  "factory": _SqliteConnection}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_pragmas)
        _serialize_sqlite_writers(engine)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20, hide_parameters=True)
    _check_connections_on_checkout(engine)
    return engine


class Database:
    """One engine and its session factory; ``session()`` commits on success, rolls back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        # Committed changes to tokens and users are published here (the verification cache listens).
        self.changes = ChangeFeed()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, info={FEED_KEY: self.changes})
        # One statement per transaction on PostgreSQL: the statement runs alone (its own snapshot) with
        # no BEGIN before it and no ROLLBACK when the connection goes back to the pool, two round trips
        # fewer. (A ROLLBACK also makes psycopg drop its prepared statements, so a statement read that
        # way is never prepared.) SQLite starts no transaction for a read anyway.
        self._single_reads = self.engine if self.is_sqlite else self.engine.execution_options(
            isolation_level="AUTOCOMMIT")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction through the ORM: committed when the block ends normally, rolled back on any error."""
        with self.transaction() as transaction:
            yield transaction.session

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction, opened on first use (``Transaction``): committed when the block ends
        normally, rolled back on any error."""
        transaction = Transaction(self._sessions, self.engine)
        try:
            yield transaction
            transaction.commit()
        except BaseException:
            transaction.rollback()
            raise
        finally:
            transaction.close()

    def single_read(self) -> Connection:
        """A connection for ONE read-only statement, as ``with database.single_read() as c: ...``.

        On PostgreSQL it is in autocommit: one round trip per statement, and two statements through
        it would see two different snapshots (use ``session()`` for reads that must agree).
        """
        return self._single_reads.connect()

    def dispose(self) -> None:
        self.engine.dispose()


class Transaction:
    """One transaction, opened on first use, through the ORM (``session``) or through Core alone (``connection``).

    Almost every unit of work uses the session. The token exchange writes its two rows with Core
    (db/driver.py) and reads nothing through the ORM on its hot path: a Session around its
    connection cost it about a third of its time (docs/performance.md, "Workload identity
    federation"). Whichever is asked for first opens the transaction. A session asked for after the
    connection joins that connection's transaction and takes control of it
    (``join_transaction_mode="control_fully"``): its commit and rollback are the transaction's, and
    its events (the change feed, db/changes.py) fire after the real commit, as for any session.
    """

    def __init__(self, sessions: sessionmaker[Session], engine: Engine) -> None:
        self._sessions = sessions
        self._engine = engine
        self._session: Session | None = None
        self._connection: Connection | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            if self._connection is None:
                self._session = self._sessions()
            else:
                self._session = self._sessions(bind=self._connection, join_transaction_mode="control_fully")
        return self._session

    @property
    def connection(self) -> Connection:
        """The transaction's connection, for Core statements (the session's, once there is a session)."""
        if self._session is not None:
            return self._session.connection()
        if self._connection is None:
            self._connection = self._engine.connect()
            self._connection.begin()
        return self._connection

    def commit(self) -> None:
        if self._session is not None:
            self._session.commit()
        # A session that joined the connection but ran nothing has not taken its transaction over:
        # the connection's own writes are still to commit.
        if self._connection is not None and self._connection.in_transaction():
            self._connection.commit()

    def rollback(self) -> None:
        """Roll back what was written so far (SQLite's write lock is free again); the transaction may go on."""
        if self._session is not None:
            self._session.rollback()
        if self._connection is not None and self._connection.in_transaction():
            self._connection.rollback()

    def close(self) -> None:
        """Give the connection back (an open transaction rolls back)."""
        try:
            if self._session is not None:
                self._session.close()
        finally:
            if self._connection is not None:
                self._connection.close()


def flush_or_conflict(session: Session, conflict: Exception) -> None:
    """Flush; a unique constraint hit (a same-name create that raced ours and won) raises ``conflict``.

    The look-up before an insert cannot see a concurrent transaction's row; the constraint can.
    Only the constraint's kind is kept: the database's message quotes the row's values.
    """
    try:
        session.flush()
    except IntegrityError:
        raise conflict from None
