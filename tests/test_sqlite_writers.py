"""SQLite writers of one process wait in line on a lock (db/database.py), not in SQLite's busy handler."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from tokensmith.clock import FrozenClock
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.db.models import Organization


@pytest.fixture
def sqlite(tmp_path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'w.db'}")
    upgrade(database.engine)
    yield database
    database.dispose()


def _add_org(database: Database, name: str) -> None:
    with database.session() as session:
        session.add(Organization(public_id=f"org_{name}", name=name, created_at=FrozenClock().now()))


def _write_concurrently(database: Database, writers: int, each: int) -> list[BaseException]:
    """``writers`` threads each adding ``each`` organizations; the exceptions they met."""
    failures: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(each):
                _add_org(database, f"o{n}-{i}")
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return failures


def test_concurrent_write_transactions_all_commit(sqlite):
    assert _write_concurrently(sqlite, writers=8, each=20) == []
    with sqlite.session() as session:
        assert session.scalar(select(func.count()).select_from(Organization)) == 160


def test_a_failed_write_transaction_lets_the_next_writer_in(sqlite):
    _add_org(sqlite, "taken")
    with pytest.raises(IntegrityError):
        _add_org(sqlite, "taken")
    done = threading.Event()
    threading.Thread(target=lambda: (_add_org(sqlite, "next"), done.set())).start()
    assert done.wait(5)


def test_a_write_left_uncommitted_is_released_when_the_session_closes(sqlite):
    session = sqlite._sessions()
    session.add(Organization(public_id="org_x", name="x", created_at=FrozenClock().now()))
    session.flush()
    session.close()  # neither commit nor rollback by hand: the connection goes back to the pool
    done = threading.Event()  # another thread: the lock is re-entrant for this one
    threading.Thread(target=lambda: (_add_org(sqlite, "y"), done.set())).start()
    started = time.monotonic()
    assert done.wait(5) and time.monotonic() - started < 5


def test_the_next_writer_never_finds_sqlites_write_lock_still_held(sqlite):
    """The lock is handed on once SQLite has committed: with SQLite's own waiting turned off
    (busy_timeout 0), no writer ever meets its write lock ("database is locked")."""
    sqlite.dispose()
    event.listen(sqlite.engine, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA busy_timeout=0"))
    assert _write_concurrently(sqlite, writers=8, each=30) == []
