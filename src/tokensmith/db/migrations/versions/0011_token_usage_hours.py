"""Per-token verification counts per hour (usage at a glance).

Revision ID: 0011_usage
Revises: 0009_keys
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = "0011_usage"
down_revision = "0009_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_usage_hours",
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("hour", UTCDateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"], name=op.f("fk_token_usage_hours_token_id_tokens"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token_id", "hour", name=op.f("pk_token_usage_hours")),
    )
    with op.batch_alter_table("token_usage_hours", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_token_usage_hours_hour"), ["hour"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("token_usage_hours", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_token_usage_hours_hour"))
    op.drop_table("token_usage_hours")
