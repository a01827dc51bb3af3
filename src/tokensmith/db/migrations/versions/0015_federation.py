"""service accounts and workload identity federation (issue 15)

Revision ID: 0015
Revises: 0011_exec_device
"""

import sqlalchemy as sa
from alembic import op

from tokensmith.db.models import UTCDateTime

revision = "0015"
down_revision = "0011_exec_device"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="person"))
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("federated_issuer", sa.String(length=2048), nullable=True))
        batch.add_column(sa.Column("federated_subject", sa.String(length=1000), nullable=True))
    op.create_table(
        "trust_policies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("service_account_id", sa.Integer(), nullable=False),
        sa.Column("issuer", sa.String(length=2048), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("audience", sa.String(length=2048), nullable=False),
        sa.Column("subject", sa.String(length=1000), nullable=True),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("lifetime_seconds", sa.Integer(), nullable=False),
        sa.Column("max_token_age_seconds", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name="fk_trust_policies_org_id_organizations",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["service_account_id"], ["users.id"],
                                name="fk_trust_policies_service_account_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_trust_policies"),
        sa.UniqueConstraint("public_id", name="uq_trust_policies_public_id"),
        sa.UniqueConstraint("org_id", "name", name="uq_trust_policies_org_id_name"),
    )
    op.create_index("ix_trust_policies_org_id", "trust_policies", ["org_id"])
    op.create_index("ix_trust_policies_service_account_id", "trust_policies", ["service_account_id"])
    op.create_index("ix_trust_policies_issuer", "trust_policies", ["issuer"])
    op.create_table(
        "trust_policy_clusters",
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("cluster_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["policy_id"], ["trust_policies.id"],
                                name="fk_trust_policy_clusters_policy_id_trust_policies", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["cluster_id"], ["clusters.id"],
                                name="fk_trust_policy_clusters_cluster_id_clusters", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("policy_id", "cluster_id", name="pk_trust_policy_clusters"),
    )
    # Expired federated tokens are swept by expiry; this keeps the sweep an index range scan.
    op.create_index("ix_tokens_federated_expiry", "tokens", ["federated_issuer", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_tokens_federated_expiry", table_name="tokens")
    op.drop_table("trust_policy_clusters")
    op.drop_table("trust_policies")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("federated_subject")
        batch.drop_column("federated_issuer")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("kind")
