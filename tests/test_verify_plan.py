"""The cold path's query finds the token through an index, whatever SQLite's statistics say."""

import secrets as pysecrets
import shutil
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from tokensmith.db.database import Database
from tokensmith.db.models import Token, User
from tokensmith.verify.core import _LOOKUP


@pytest.fixture
def database_url(sqlite_template: Path, tmp_path: Path) -> str:
    # SQLite only: PostgreSQL's statistics keep the share of NULLs, and its planner sees the index fit.
    shutil.copy(sqlite_template, tmp_path / "tokensmith.db")
    return f"sqlite:///{tmp_path / 'tokensmith.db'}"


def test_after_analyze_the_lookup_searches_the_digest_indexes_on_sqlite(database: Database, alice) -> None:
    with database.engine.begin() as connection:
        user_id, org_id = connection.execute(select(User.id, User.org_id)).one()
        connection.execute(insert(Token.__table__), [
            {"public_id": f"tok_{n}", "user_id": user_id, "org_id": org_id, "name": "filler", "note": "",
             "secret_digest": pysecrets.token_hex(32), "hint": "xxxx", "created_at": alice.user.created_at}
            for n in range(500)])
        connection.exec_driver_sql("ANALYZE")  # an operator's ANALYZE or PRAGMA optimize
        sql = str(_LOOKUP.compile(dialect=database.engine.dialect))
        plan = [row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("d", "d", "now"))]
    assert "SCAN tokens" not in plan
    assert any("ix_tokens_previous_secret_digest" in step for step in plan)
