"""tokens: the revoked_at and parent_token_id indexes hold only the rows where the column is set

Almost every token is live and underived: both columns are NULL in nearly every row, and a full
index stores one entry per token all the same, so every token inserted (one per token exchange)
wrote a page of each index for a NULL no query looks up. No query searches for a NULL through
them either: ``revoked_at IS NULL`` and ``parent_token_id IS NULL`` match nearly every row, and
an index scan over them is a slower table scan (SQLite, lacking statistics, picked them for the
expiry scan). What they are for stays indexed: the foreign key's cascade finds a parent's derived
tokens with ``parent_token_id = ?``, which implies IS NOT NULL, so both planners use the partial
index (tests/test_partial_indexes.py pins the plans), and a search for revoked tokens by time
(``revoked_at < ?``) likewise.

Revision ID: 0018_partial_token_indexes
Revises: 0017_previous_digest
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_partial_token_indexes"
down_revision = "0017_previous_digest"
branch_labels = None
depends_on = None

_COLUMNS = ("revoked_at", "parent_token_id")


def upgrade() -> None:
    for column in _COLUMNS:
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(f"ix_tokens_{column}", "tokens")
        op.create_index(f"ix_tokens_{column}", "tokens", [column], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for column in _COLUMNS:
        op.drop_index(f"ix_tokens_{column}", "tokens")
        op.create_index(f"ix_tokens_{column}", "tokens", [column])
