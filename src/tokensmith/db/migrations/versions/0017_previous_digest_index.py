"""tokens: the index on previous_secret_digest holds only rotated tokens (a partial index)

Almost every token has no previous digest. A full index holds one NULL entry per token, and
SQLite's ANALYZE then counts all those NULLs as one value shared by every row: its planner
concludes that the index finds a million rows and scans the whole table instead, on every
uncached verification (measured: 1,000,000 tokens, one SCAN per lookup). Indexing only the
non-NULL digests keeps the index tiny and the lookup indexed on both databases; an equality on
the column implies IS NOT NULL, so both planners use it for the verification query.

Revision ID: 0017_previous_digest
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_previous_digest"
down_revision = "0015"
branch_labels = None
depends_on = None

_ROTATED = sa.text("previous_secret_digest IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_tokens_previous_secret_digest", "tokens")
    op.create_index("ix_tokens_previous_secret_digest", "tokens", ["previous_secret_digest"],
                    postgresql_where=_ROTATED, sqlite_where=_ROTATED)


def downgrade() -> None:
    op.drop_index("ix_tokens_previous_secret_digest", "tokens")
    op.create_index("ix_tokens_previous_secret_digest", "tokens", ["previous_secret_digest"])
