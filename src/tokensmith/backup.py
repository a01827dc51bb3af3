"""Backup and restore of the embedded SQLite database with SQLite's online backup API.

A backup is consistent even while the server writes (the API copies a snapshot page by page).
PostgreSQL deployments use pg_dump / pg_restore instead (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from tokensmith.config import Settings

POSTGRES_HINT = "backup and restore handle the embedded SQLite database; for PostgreSQL use pg_dump and pg_restore"


def database_path(settings: Settings) -> Path:
    if not settings.is_sqlite:
        raise ValueError(POSTGRES_HINT)
    name = make_url(settings.database_url).database
    if not name or name == ":memory:":
        raise ValueError("the database is in memory; there is nothing to back up")
    return Path(name)


# (pages copied, pages in all), called as the copy advances: the CLI draws a progress bar with it.
Progress = Callable[[int, int], None]
PAGES_PER_STEP = 1024  # a step per 4 MiB with the default page size; without a callback, one step


def _copy(source: sqlite3.Connection, target: Path, on_progress: Progress | None = None) -> None:
    def report(_status: int, remaining: int, total: int) -> None:
        if on_progress is not None:
            on_progress(total - remaining, total)

    with contextlib.closing(sqlite3.connect(target)) as destination:
        if on_progress is None:
            source.backup(destination)
        else:
            source.backup(destination, pages=PAGES_PER_STEP, progress=report)


def backup(
    settings: Settings, destination: Path, *, force: bool = False, on_progress: Progress | None = None
) -> None:
    """Write a consistent copy of the database to ``destination`` (mode 0600); ValueError when it can't."""
    source_path = database_path(settings)
    if not source_path.exists():
        raise ValueError(f"no database at {source_path}")
    if destination.exists() and not force:
        raise ValueError(f"{destination} exists; pass --force to overwrite it")
    partial = destination.with_name(destination.name + ".partial")
    partial.unlink(missing_ok=True)
    # Created private: the file holds digests and account data.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    with contextlib.closing(sqlite3.connect(source_path)) as source:
        _copy(source, partial, on_progress)
    os.replace(partial, destination)  # a backup is complete or absent, never half-written


def _check_backup(path: Path) -> None:
    if not path.is_file():
        raise ValueError(f"no backup at {path}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            if connection.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise ValueError(f"{path} is damaged (integrity check failed)")
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError:
        raise ValueError(f"{path} is not a SQLite database") from None
    if not {"alembic_version", "tokens", "users"} <= tables:
        raise ValueError(f"{path} is not a tokensmith database")


def _holds_data(path: Path) -> bool:
    if not path.exists():
        return False
    with contextlib.closing(sqlite3.connect(path)) as connection:
        try:
            return connection.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()[0] == 1
        except sqlite3.DatabaseError:
            return path.stat().st_size > 0


def restore(
    settings: Settings, backup_file: Path, *, force: bool = False, on_progress: Progress | None = None
) -> None:
    """Replace the database with ``backup_file``; refuses to clobber a database with data unless ``force``."""
    target = database_path(settings)
    _check_backup(backup_file)
    if _holds_data(target) and not force:
        raise ValueError(f"{target} holds data; restoring would replace it. Pass --force (stop the server first)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)) as source:
        _copy(source, target, on_progress)
    os.chmod(target, 0o600)
