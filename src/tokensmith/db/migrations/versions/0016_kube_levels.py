"""kubernetes: access level per token and cluster, username prefix and member ceiling per cluster (issue 16)

Existing grants get the most their owner may hold (cluster-admin for admins' tokens, edit for
members'): nothing changes for them until the new bindings or the authorization webhook are put in
place (docs/kubernetes.md). Existing clusters keep bare user names (empty prefix).

Revision ID: 0016_kube
Revises: 0011_verification_changes
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_kube"
down_revision = "0011_verification_changes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("token_clusters") as batch:
        batch.add_column(sa.Column("level", sa.String(length=16), nullable=False, server_default="view"))
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("username_prefix", sa.String(length=64), nullable=False, server_default=""))
        batch.add_column(sa.Column("member_max_level", sa.String(length=16), nullable=False, server_default="edit"))
    op.execute("UPDATE token_clusters SET level = 'edit'")
    op.execute(
        "UPDATE token_clusters SET level = 'cluster-admin' WHERE token_id IN "
        "(SELECT tokens.id FROM tokens JOIN users ON users.id = tokens.user_id WHERE users.is_admin)"
    )


def downgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("member_max_level")
        batch.drop_column("username_prefix")
    with op.batch_alter_table("token_clusters") as batch:
        batch.drop_column("level")
