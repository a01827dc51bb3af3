"""verification changes (SQLite: invalidations across worker processes)

Revision ID: 0011_verification_changes
Revises: 0011_usage
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = "0011_verification_changes"
down_revision = "0011_usage"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "verification_changes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
    )
    op.create_index("ix_verification_changes_at", "verification_changes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_verification_changes_at", "verification_changes")
    op.drop_table("verification_changes")
