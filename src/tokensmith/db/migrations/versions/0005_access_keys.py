"""object storage access keys

Revision ID: 0005
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = '0005'
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('access_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('access_key_id', sa.String(length=20), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('org_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('secret_ciphertext', sa.Text(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('expires_at', UTCDateTime(), nullable=True),
    sa.Column('revoked_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['organizations.id'], name=op.f('fk_access_keys_org_id_organizations')),
    sa.ForeignKeyConstraint(['token_id'], ['tokens.id'], name=op.f('fk_access_keys_token_id_tokens'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_access_keys_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_access_keys')),
    sa.UniqueConstraint('access_key_id', name=op.f('uq_access_keys_access_key_id'))
    )
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_access_keys_org_id'), ['org_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_keys_revoked_at'), ['revoked_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_keys_token_id'), ['token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_access_keys_user_id'), ['user_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('access_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_access_keys_user_id'))
        batch_op.drop_index(batch_op.f('ix_access_keys_token_id'))
        batch_op.drop_index(batch_op.f('ix_access_keys_revoked_at'))
        batch_op.drop_index(batch_op.f('ix_access_keys_org_id'))

    op.drop_table('access_keys')
