"""Brute-force limits: failed authentications per client key in fixed windows, shared by replicas.

Revision ID: 0008
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = '0008'
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('auth_failures',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('window_start', UTCDateTime(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key', 'window_start', name=op.f('pk_auth_failures'))
    )
    with op.batch_alter_table('auth_failures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_auth_failures_window_start'), ['window_start'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('auth_failures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_auth_failures_window_start'))

    op.drop_table('auth_failures')
