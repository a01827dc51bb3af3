"""First start: data directory, database, migrations, the default organization and its admin.

Idempotent: a second start changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from tokensmith.accounts.passwords import generate_password
from tokensmith.accounts.service import AccountService
from tokensmith.clock import Clock, SystemClock
from tokensmith.config import Settings, write_private_file
from tokensmith.db.database import Database
from tokensmith.db.migrate import upgrade
from tokensmith.db.models import User

DEFAULT_ORG = "default"
ADMIN_USER = "admin"
INITIAL_PASSWORD_FILE = "initial-admin-password"  # noqa: S105 - a file name


@dataclass(frozen=True)
class Bootstrap:
    database: Database
    secret_key: bytes
    initial_admin_password: str | None  # set only on the start that created the admin


def prepare(settings: Settings, clock: Clock | None = None, *, migrate: bool = True) -> Bootstrap:
    clock = clock or SystemClock()
    settings.ensure_data_dir()
    secret_key = settings.secret_key()
    database = Database(settings.database_url)
    if migrate:
        upgrade(database.engine)
    password = None
    with database.session() as session:
        if session.scalar(select(User.id).limit(1)) is None:
            accounts = AccountService(session, clock)
            org = accounts.get_or_create_org(DEFAULT_ORG)
            password = generate_password()
            accounts.create_user(org, ADMIN_USER, password, is_admin=True, must_change_password=True)
    if password is not None:
        write_private_file(settings.data_dir / INITIAL_PASSWORD_FILE, password + "\n")
    return Bootstrap(database, secret_key, password)
