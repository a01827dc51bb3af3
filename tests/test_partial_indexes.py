"""The tokens indexes on mostly-NULL columns (revoked_at, parent_token_id) hold only the rows where
the column is set (migration 0018), and the searches they exist for still use them, on SQLite and
PostgreSQL."""

from datetime import timedelta

import pytest
from sqlalchemy import inspect, select

from tokensmith.db.database import Database
from tokensmith.db.migrate import alembic_config, upgrade
from tokensmith.db.models import Token

PARTIAL = ("revoked_at", "parent_token_id", "previous_secret_digest")


def plan(database: Database, sql: str, params: dict) -> str:
    with database.engine.connect() as connection:
        if database.is_sqlite:
            return " | ".join(row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
        # A near-empty table: PostgreSQL would scan it whatever the indexes; ask what it can use.
        connection.exec_driver_sql("SET enable_seqscan = off")
        return " | ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}", params))


@pytest.mark.parametrize("column", PARTIAL)
def test_the_index_on_a_mostly_null_column_leaves_the_nulls_out(database: Database, column: str) -> None:
    index = next(i for i in inspect(database.engine).get_indexes("tokens") if i["name"] == f"ix_tokens_{column}")
    where = index["dialect_options"]["sqlite_where" if database.is_sqlite else "postgresql_where"]
    assert "is not null" in str(where).lower()


def test_the_cascade_to_derived_tokens_searches_the_parent_index(database: Database) -> None:
    # What the foreign key's ON DELETE CASCADE runs for a deleted token (SQLite's action trigger and
    # PostgreSQL's referential-integrity query): an equality on parent_token_id, which implies IS NOT NULL.
    sql = "DELETE FROM tokens WHERE parent_token_id = %(p)s" if not database.is_sqlite else \
        "DELETE FROM tokens WHERE parent_token_id = :p"
    assert "ix_tokens_parent_token_id" in plan(database, sql, {"p": 1})


def test_a_search_for_tokens_revoked_before_a_time_uses_the_revoked_index(database: Database) -> None:
    sql = "SELECT id FROM tokens WHERE revoked_at < %(t)s" if not database.is_sqlite else \
        "SELECT id FROM tokens WHERE revoked_at < :t"
    assert "ix_tokens_revoked_at" in plan(database, sql, {"t": "2030-01-01 00:00:00"})


def test_deleting_a_login_token_still_deletes_its_derived_tokens(database: Database, alice, clock) -> None:
    from tokensmith.tokens.service import TokenService

    with database.session() as session:
        tokens = TokenService(session, clock, b"k" * 32)
        user = session.merge(alice.user)
        parent = tokens.create(user, "login").token
        child = tokens.create(user, "derived", expires_at=clock.now() + timedelta(hours=1)).token
        child.parent_token_id = parent.id
        session.flush()
        parent_id, child_id = parent.id, child.id
    with database.session() as session:
        session.delete(session.get(Token, parent_id))
    with database.session() as session:
        assert session.scalar(select(Token.id).where(Token.id == child_id)) is None


def test_the_migration_down_and_up_again_restores_the_full_and_the_partial_indexes(database_url: str) -> None:
    from alembic import command

    database = Database(database_url)
    try:
        config = alembic_config(database.engine)
        command.downgrade(config, "0017_previous_digest")
        full = {i["name"]: i for i in inspect(database.engine).get_indexes("tokens")}
        assert not full["ix_tokens_revoked_at"].get("dialect_options", {}).get(
            "sqlite_where" if database.is_sqlite else "postgresql_where")
        upgrade(database.engine)
        partial = {i["name"]: i for i in inspect(database.engine).get_indexes("tokens")}
        assert partial["ix_tokens_parent_token_id"]["dialect_options"]
    finally:
        database.dispose()
