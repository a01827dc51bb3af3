"""Derived tokens (parent_token_id: cluster credentials tied to the CLI login) and device authorizations.

Revision ID: 0011_exec_device
Revises: 0016_kube
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = "0011_exec_device"
down_revision = "0016_kube"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("parent_token_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(batch.f("fk_tokens_parent_token_id_tokens"), "tokens", ["parent_token_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_index(batch.f("ix_tokens_parent_token_id"), ["parent_token_id"], unique=False)
    op.create_table(
        "device_authorizations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("device_code_digest", sa.String(length=64), nullable=False),
        sa.Column("user_code_digest", sa.String(length=64), nullable=False),
        sa.Column("client_name", sa.String(length=100), nullable=False),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("scopes", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("last_polled_at", UTCDateTime(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", UTCDateTime(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_device_authorizations_user_id_users"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["token_id"], ["tokens.id"], name=op.f("fk_device_authorizations_token_id_tokens"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_authorizations")),
        sa.UniqueConstraint("public_id", name=op.f("uq_device_authorizations_public_id")),
        sa.UniqueConstraint("device_code_digest", name=op.f("uq_device_authorizations_device_code_digest")),
        sa.UniqueConstraint("user_code_digest", name=op.f("uq_device_authorizations_user_code_digest")),
    )
    with op.batch_alter_table("device_authorizations") as batch:
        batch.create_index(batch.f("ix_device_authorizations_expires_at"), ["expires_at"], unique=False)
        batch.create_index(batch.f("ix_device_authorizations_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_table("device_authorizations")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_index(batch.f("ix_tokens_parent_token_id"))
        batch.drop_constraint(batch.f("fk_tokens_parent_token_id_tokens"), type_="foreignkey")
        batch.drop_column("parent_token_id")
