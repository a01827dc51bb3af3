"""Persistence: SQLAlchemy models, engine set-up and Alembic migrations."""

from tokensmith.db.database import Database

__all__ = ["Database"]
