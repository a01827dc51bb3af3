"""organization allowance for temporary S3 access key lifetimes

Revision ID: 0009_keys
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_keys"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL (every existing policy) means the built-in limit of 7 days.
    with op.batch_alter_table("org_policies", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_access_key_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("org_policies", schema=None) as batch_op:
        batch_op.drop_column("max_access_key_seconds")
