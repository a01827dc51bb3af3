"""db/database.py, ``Transaction``: one transaction opened on first use, through the ORM session or
through a Core connection alone, and the session joining the connection's transaction when it
comes second."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import Table, func, select

from tokensmith.db.changes import Changes
from tokensmith.db.models import AuditEvent, Token

EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
AT = datetime(2026, 12, 2, tzinfo=UTC)


def _core_event(transaction, action: str) -> None:
    transaction.connection.execute(EVENTS.insert(), {"at": AT, "action": action, "outcome": "success"})


def _orm_event(transaction, action: str) -> None:
    transaction.session.add(AuditEvent(at=AT, action=action, outcome="success"))
    transaction.session.flush()


def _actions(database) -> set[str]:
    with database.session() as session:
        return set(session.scalars(select(AuditEvent.action)))


def test_a_transaction_nobody_used_opens_no_connection(database):
    with database.transaction():
        pass
    assert database.engine.pool.checkedout() == 0
    with database.transaction() as transaction:
        assert transaction._connection is None and transaction._session is None


def test_core_writes_alone_are_committed(database):
    with database.transaction() as transaction:
        _core_event(transaction, "core.only")
    assert "core.only" in _actions(database)


def test_a_session_asked_for_after_the_connection_commits_with_it(database):
    with database.transaction() as transaction:
        _core_event(transaction, "core.first")
        _orm_event(transaction, "orm.second")
    assert {"core.first", "orm.second"} <= _actions(database)


def test_a_session_asked_for_after_the_connection_but_unused_leaves_the_core_writes_committed(database):
    with database.transaction() as transaction:
        _core_event(transaction, "core.kept")
        assert transaction.session is not None  # handed to a service that never queries
    assert "core.kept" in _actions(database)


def test_an_error_rolls_back_both_the_core_and_the_orm_writes(database):
    with pytest.raises(RuntimeError), database.transaction() as transaction:
        _core_event(transaction, "core.lost")
        _orm_event(transaction, "orm.lost")
        raise RuntimeError("the operation failed")
    assert not {"core.lost", "orm.lost"} & _actions(database)


def test_the_connection_of_a_session_first_transaction_is_the_sessions(database):
    with database.transaction() as transaction:
        _orm_event(transaction, "orm.first")
        assert transaction.connection is transaction.session.connection()
        _core_event(transaction, "core.second")
    assert {"orm.first", "core.second"} <= _actions(database)


def test_rollback_undoes_the_writes_so_far_and_the_transaction_goes_on(database):
    with database.transaction() as transaction:
        _core_event(transaction, "undone")
        transaction.rollback()
        _core_event(transaction, "after.rollback")
    actions = _actions(database)
    assert "undone" not in actions and "after.rollback" in actions


def test_rollback_frees_the_write_lock_for_a_write_apart(database):
    """A refusal found after the exchange's first write records its audit event in a transaction of
    its own: on SQLite that write must not wait for the refused transaction's lock."""
    with database.transaction() as transaction:
        _core_event(transaction, "refused.write")
        transaction.rollback()
        done = threading.Event()

        def write_apart() -> None:
            with database.transaction() as other:
                _core_event(other, "recorded.apart")
            done.set()

        writer = threading.Thread(target=write_apart)
        writer.start()
        assert done.wait(5), "the write apart waited for the rolled-back transaction's lock"
        writer.join()
    assert "recorded.apart" in _actions(database)


def test_orm_changes_through_a_joined_session_reach_the_change_feed_after_the_commit(database, make_account):
    account = make_account("feed-user")
    heard: list[Changes] = []
    unsubscribe = database.changes.subscribe(heard.append)
    try:
        with database.transaction() as transaction:
            _core_event(transaction, "core.before.revoke")
            token = transaction.session.get(Token, _token_id(database, account.token_id))
            token.revoked_at = datetime.now(UTC)
            transaction.session.flush()
            assert heard == []  # nothing is told before the commit
    finally:
        unsubscribe()
    assert any(token.id in changes.token_ids for changes in heard)


def _token_id(database, public_id: str) -> int:
    with database.session() as session:
        return session.scalar(select(Token.id).where(Token.public_id == public_id))


def test_the_pool_gets_every_connection_back(database):
    for _ in range(3):
        with database.transaction() as transaction:
            _core_event(transaction, "pooled")
            transaction.session.scalar(select(func.count()).select_from(EVENTS))
    assert database.engine.pool.checkedout() == 0
