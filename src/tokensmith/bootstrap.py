"""First start: data directory, database, migrations, the default organization and its admin.

Idempotent: a second start changes nothing, except that the initial-password file goes once the
admin's password is no longer the one it holds (changed in the console, over the API or directly).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from tokensmith.accounts.passwords import generate_password, verify_password
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
        else:
            _forget_stale_initial_password(settings, session.scalar(select(User).where(User.username == ADMIN_USER)))
    if password is not None:
        write_private_file(settings.data_dir / INITIAL_PASSWORD_FILE, password + "\n")
    return Bootstrap(database, secret_key, password)


def forget_initial_password(settings: Settings, username: str) -> bool:
    """Remove the initial-password file when ``username`` (the first admin) got a new password.

    A file holding a password that no longer works only misleads (and keeps a secret on disk).
    Call it after any change of a user's password; True if a file was removed.
    """
    if username != ADMIN_USER:
        return False
    try:
        (settings.data_dir / INITIAL_PASSWORD_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def _forget_stale_initial_password(settings: Settings, admin: User | None) -> None:
    # The safety net at start-up, for a change made where no one called forget_initial_password.
    path = settings.data_dir / INITIAL_PASSWORD_FILE
    if not path.is_file():
        return
    if admin is None or not verify_password(admin.password_hash, path.read_text().strip()):
        path.unlink(missing_ok=True)
