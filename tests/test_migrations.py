"""Migrations run forwards from an empty database, keep data from an earlier release's schema,
and survive a full downgrade/upgrade round trip, on SQLite and PostgreSQL."""

import os
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from tests import hygiene
from tests.conftest import PG_ENV, SECRET_KEY, require
from tokensmith.accounts.service import AccountService
from tokensmith.clock import FrozenClock
from tokensmith.db.database import Database
from tokensmith.db.migrate import alembic_config, current_revision, head_revision, is_current, upgrade
from tokensmith.db.models import Base
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'empty.db'}")
        yield database
        database.dispose()
        return
    server = os.environ.get(PG_ENV)
    require(bool(server), f"PostgreSQL tests need {PG_ENV}")
    url, name = make_url(server), f"tsm_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database(url.set(database=name).render_as_string(hide_password=False))
    yield database
    database.dispose()
    hygiene.scan_postgres(database.url)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_an_empty_database_migrates_to_head_with_every_table(empty_database):
    assert current_revision(empty_database.engine) is None
    upgrade(empty_database.engine)
    assert is_current(empty_database.engine)
    assert set(Base.metadata.tables) <= set(inspect(empty_database.engine).get_table_names())


def test_data_from_the_first_release_survives_the_upgrade(empty_database):
    from alembic import command

    upgrade(empty_database.engine, "0001")
    clock = FrozenClock()
    # The first release's schema: write through SQL that matches it (no scopes column yet).
    with empty_database.engine.begin() as connection:
        connection.execute(text("INSERT INTO organizations (public_id, name, created_at) "
                                "VALUES ('org_1', 'default', :now)"), {"now": clock.now().replace(tzinfo=None)})
    upgrade(empty_database.engine)
    with empty_database.session() as session:
        accounts = AccountService(session, clock)
        user = accounts.create_user(accounts.get_or_create_org("default"), "after", None)
        secret = TokenService(session, clock, SECRET_KEY).create(user, "t").secret
    assert Verifier(empty_database, SECRET_KEY, clock).verify(secret).org_public_id == "org_1"
    command.check(alembic_config(empty_database.engine))  # models and migrations agree


def test_downgrade_to_nothing_and_upgrade_again(empty_database):
    from alembic import command

    upgrade(empty_database.engine)
    command.downgrade(alembic_config(empty_database.engine), "base")
    assert current_revision(empty_database.engine) is None
    assert set(inspect(empty_database.engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_database.engine)
    assert current_revision(empty_database.engine) == head_revision()
