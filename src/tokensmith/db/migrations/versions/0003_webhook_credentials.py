"""webhook credentials

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('cluster_id', sa.Integer(), nullable=False),
    sa.Column('secret_digest', sa.String(length=64), nullable=False),
    sa.Column('hint', sa.String(length=8), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('last_used_at', UTCDateTime(), nullable=True),
    sa.Column('revoked_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.id'],
                            name=op.f('fk_webhook_credentials_cluster_id_clusters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_credentials')),
    sa.UniqueConstraint('public_id', name=op.f('uq_webhook_credentials_public_id')),
    sa.UniqueConstraint('secret_digest', name=op.f('uq_webhook_credentials_secret_digest'))
    )
    with op.batch_alter_table('webhook_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_webhook_credentials_cluster_id'), ['cluster_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_credentials_cluster_id'))

    op.drop_table('webhook_credentials')
