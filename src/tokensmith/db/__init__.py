"""Persistence: SQLAlchemy models, engine set-up and Alembic migrations."""

from tokensmith.db import changes as _changes  # noqa: F401 - registers the session hooks in every process
from tokensmith.db.database import Database

__all__ = ["Database"]
