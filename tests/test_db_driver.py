"""db/driver.py: a hot-path statement on the DBAPI cursor stores exactly what SQLAlchemy would, inside
the same transaction, seen by the engine's events, with SQLAlchemy's errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Table, event, select, text
from sqlalchemy.exc import IntegrityError

from tokensmith.db.driver import DriverStatement
from tokensmith.db.models import AuditEvent, ConsoleSession, User

EVENTS: Table = AuditEvent.__table__  # type: ignore[assignment]
SESSIONS: Table = ConsoleSession.__table__  # type: ignore[assignment]


def _event(action: str, **values: Any) -> dict[str, Any]:
    return {"at": datetime(2026, 12, 2, 17, 5, 6, 789, tzinfo=UTC), "org_id": 7, "actor_user": "ci",
            "actor_token": None, "client_ip": "127.0.0.1", "user_agent": None, "action": action,
            "target": "tok_x", "outcome": "success", "details": '{"door": "oauth2"}', **values}


def _stored(database, action: str) -> tuple[Any, ...]:
    with database.engine.connect() as connection:  # the columns as the database holds them, no type processing
        return tuple(connection.execute(text(
            "SELECT at, org_id, actor_user, actor_token, client_ip, user_agent, target, outcome, details "
            "FROM audit_events WHERE action = :action"), {"action": action}).one())


def test_a_driver_statement_stores_exactly_what_sqlalchemy_stores(database):
    with database.engine.begin() as connection:
        connection.execute(EVENTS.insert(), _event("via.sqlalchemy"))
        DriverStatement(EVENTS.insert()).execute(connection, _event("via.driver"))
    assert _stored(database, "via.driver") == _stored(database, "via.sqlalchemy")
    with database.session() as session:  # and the ORM reads it back as it reads its own rows
        at = session.scalar(select(AuditEvent.at).where(AuditEvent.action == "via.driver"))
    assert at == datetime(2026, 12, 2, 17, 5, 6, 789, tzinfo=UTC)


def test_a_driver_statement_is_part_of_the_connections_transaction(database):
    with pytest.raises(RuntimeError), database.engine.begin() as connection:
        DriverStatement(EVENTS.insert()).execute(connection, _event("rolled.back"))
        raise RuntimeError("the unit of work fails after the write")
    with database.engine.connect() as connection:
        assert connection.scalar(select(EVENTS.c.id).where(EVENTS.c.action == "rolled.back")) is None


def test_a_driver_statement_answers_what_returning_returns(database):
    with database.engine.begin() as connection:
        new_id = DriverStatement(EVENTS.insert().returning(EVENTS.c.id)).scalar(connection, _event("returning"))
        assert new_id == connection.scalar(select(EVENTS.c.id).where(EVENTS.c.action == "returning"))


def test_a_driver_statement_is_announced_to_the_engines_listeners(database):
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(statement.split()[0])

    event.listen(database.engine, "before_cursor_execute", listen)
    with database.engine.begin() as connection:
        DriverStatement(EVENTS.insert()).execute(connection, _event("announced"))
    assert seen == ["INSERT"]


def test_a_driver_statement_raises_sqlalchemys_error_with_its_parameters_hidden(database, make_account):
    user: User = make_account("driver-user").user
    row = {"digest": "d" * 64, "user_id": user.id, "created_at": datetime.now(UTC), "last_seen_at": datetime.now(UTC)}
    insert = DriverStatement(SESSIONS.insert())
    with database.engine.begin() as connection:
        insert.execute(connection, row)
    with pytest.raises(IntegrityError) as raised, database.engine.begin() as connection:
        insert.execute(connection, row)
    # As Connection.execute on this engine (hide_parameters): the parameter list is not in the text.
    # (PostgreSQL's own message may still name the duplicate key; callers keep only the error's kind.)
    assert "[SQL parameters hidden due to hide_parameters=True]" in str(raised.value)


def test_a_driver_statement_passes_repeated_parameters_in_the_statements_order(database):
    with database.engine.begin() as connection:
        assert DriverStatement(text("SELECT :a * 100 + :b * 10 + :a")).scalar(connection, {"b": 2, "a": 1}) == 121


def test_a_driver_statement_needs_every_value(database):
    with database.engine.begin() as connection, pytest.raises(ValueError, match="no value for b"):
        DriverStatement(text("SELECT :a + :b")).scalar(connection, {"a": 1})
