"""The tables. Business rules live in the services, not here."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass an aware UTC datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "person" (signs in with a password) or "service" (a service account: svc_ id, no password,
    # owned by the organization; see tokensmith.federation.accounts).
    kind: Mapped[str] = mapped_column(String(16), default="person", server_default="person")

    organization: Mapped[Organization] = relationship(lazy="joined")


token_clusters = Table(
    "token_clusters",
    Base.metadata,
    Column("token_id", ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True),
    Column("cluster_id", ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True),
    # The token's access level on the cluster: view, edit, admin or cluster-admin (tokensmith.kube.levels).
    Column("level", String(16), nullable=False, server_default="view"),
)


class Token(Base):
    __tablename__ = "tokens"
    # The sweep of expired federated tokens (tokensmith.federation) reads this range. Only rotated
    # tokens have a previous digest, only revoked ones a revocation time, only derived ones a
    # parent: those indexes leave out the NULLs (migrations 0017 and 0018 say why).
    __table_args__ = (
        Index("ix_tokens_federated_expiry", "federated_issuer", "expires_at"),
        *(Index(f"ix_tokens_{column}", column, postgresql_where=text(f"{column} IS NOT NULL"),
                sqlite_where=text(f"{column} IS NOT NULL"))
          for column in ("previous_secret_digest", "revoked_at", "parent_token_id")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    note: Mapped[str] = mapped_column(Text, default="")
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_ip: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Space-separated scope names; NULL means "all of the owner's" (see tokensmith.scopes).
    scopes: Mapped[str | None] = mapped_column(Text)
    # Rotation: the replaced secret keeps working until previous_grace_until (exclusive).
    previous_secret_digest: Mapped[str | None] = mapped_column(String(64))
    previous_grace_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A short-lived token derived from another (a cluster credential from the CLI's login): it is
    # refused once its parent is revoked, expired or gone, so revoking the login ends them all.
    parent_token_id: Mapped[int | None] = mapped_column(
        ForeignKey("tokens.id", ondelete="CASCADE"), default=None)
    # Set on tokens minted by a workload identity exchange: who the external workload was.
    federated_issuer: Mapped[str | None] = mapped_column(String(2048))
    federated_subject: Mapped[str | None] = mapped_column(String(1000))

    user: Mapped[User] = relationship(lazy="joined")
    clusters: Mapped[list[Cluster]] = relationship(secondary=token_clusters, lazy="selectin", order_by="Cluster.name")
    # The same rows with their levels; read-only here: TokenService writes levels (tokensmith.kube.levels).
    grants: Mapped[list[TokenClusterGrant]] = relationship(viewonly=True, lazy="selectin")

    @property
    def cluster_levels(self) -> dict[int, str]:
        """Cluster id -> this token's access level on it."""
        return {grant.cluster_id: grant.level for grant in self.grants}


class TokenClusterGrant(Base):
    """One row of token_clusters: a cluster a token grants, at a level."""

    __table__ = token_clusters

    token_id: Mapped[int]
    cluster_id: Mapped[int]
    level: Mapped[str]


class TokenUsageHour(Base):
    """Verifications of a token in one UTC hour, summed by every replica (verify/usage.py upserts them)."""

    __tablename__ = "token_usage_hours"

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True, index=True)  # start of the hour
    count: Mapped[int] = mapped_column(Integer, default=0)


class Vpc(Base):
    __tablename__ = "vpcs"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    region: Mapped[str] = mapped_column(String(100))
    cidr: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Cluster(Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    server: Mapped[str] = mapped_column(String(2048))
    certificate_authority: Mapped[str] = mapped_column(Text)
    vpc_id: Mapped[int | None] = mapped_column(ForeignKey("vpcs.id", ondelete="SET NULL"))
    region: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # None: the server URL. Set when the API server's --api-audiences cannot include that URL.
    audience: Mapped[str | None] = mapped_column(String(2048))
    # Put before every TokenReview user name (like --oidc-username-prefix); "" for clusters made before it.
    username_prefix: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The highest level a member (not an admin) may give a token on this cluster.
    member_max_level: Mapped[str] = mapped_column(String(16), default="edit", server_default="edit")

    organization: Mapped[Organization] = relationship(lazy="joined")
    vpc: Mapped[Vpc | None] = relationship(lazy="joined")

    @property
    def token_audience(self) -> str:
        """The audience a TokenReview must ask for to authenticate a token at this cluster."""
        return self.audience or self.server


class WebhookCredential(Base):
    """How a cluster's API server authenticates its TokenReview calls; only the digest is kept."""

    __tablename__ = "webhook_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    cluster_id: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    hint: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    cluster: Mapped[Cluster] = relationship(lazy="joined")
class AccessKey(Base):
    """An S3 access key. The secret key is stored only as AES-256-GCM ciphertext (see tokensmith.objectstore.crypto)."""

    __tablename__ = "access_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    access_key_id: Mapped[str] = mapped_column(String(20), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    # The token that minted the key: deleting it revokes the temporary keys it minted.
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    # "api" (minted by a person) or "exchange" (the SDK token exchange, which reuses its keys).
    source: Mapped[str] = mapped_column(String(16), default="api")
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # NULL: permanent
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)

    user: Mapped[User] = relationship(lazy="joined")
    token: Mapped[Token | None] = relationship(lazy="joined")
class AuthFailure(Base):
    """Failed authentications per client key (``ip:…`` or ``user:<digest>``) in fixed time windows.

    Shared by every replica through the database, so a brute-force limit holds across them.
    """

    __tablename__ = "auth_failures"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True, index=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


# --- token lifecycle (issue 7): policy, webhooks, leak reporters, audit -----------------------


class OrgPolicy(Base):
    """An organization's expiry policy; no row means the built-in defaults."""

    __tablename__ = "org_policies"

    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    max_lifetime_days: Mapped[int | None] = mapped_column(Integer)
    allow_never: Mapped[bool] = mapped_column(Boolean, default=True)
    default_expiration: Mapped[str | None] = mapped_column(String(16))
    # Longest temporary S3 access key, in seconds; NULL means the default (7 days).
    max_access_key_seconds: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    # The HMAC signing key must be usable, so it is stored encrypted under the key ring (like S3
    # secret keys): the database alone never reveals it. Shown once at creation.
    signing_secret: Mapped[str] = mapped_column(Text)
    # Space-separated event types; NULL means every event.
    events: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one webhook: an outbox row, claimed by exactly one worker at a time."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    claimed_by: Mapped[str | None] = mapped_column(String(40))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TokenNotice(Base):
    """Which lifecycle notices a token has had; the key makes each one happen once across replicas."""

    __tablename__ = "token_notices"

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), primary_key=True)  # expiring-7d, expiring-1d, expired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TokenAddress(Base):
    """Client addresses a token has been used from, so a first use from a new one is audited once."""

    __tablename__ = "token_addresses"

    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), primary_key=True)
    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LeakReporter(Base):
    """A credential (tsr_...) that may report leaked secrets to POST /v1/leaks; stored as a digest."""

    __tablename__ = "leak_reporters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEvent(Base):
    """Append-only. Actors and targets are kept as public ids and names, so events outlive their rows."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    org_id: Mapped[int | None] = mapped_column(Integer, index=True)
    actor_user: Mapped[str | None] = mapped_column(String(100))
    actor_token: Mapped[str | None] = mapped_column(String(32))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str | None] = mapped_column(String(300))
    outcome: Mapped[str] = mapped_column(String(20))
    details: Mapped[str | None] = mapped_column(Text)
class ConsoleSession(Base):
    """A signed-in browser. Only a digest of the session id is stored, like token secrets."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A one-time message (a secret being revealed), encrypted under a key derived from the session
    # id, which only the browser holds; removed on first read.
    flash: Mapped[str | None] = mapped_column(Text)

    user: Mapped[User] = relationship(lazy="joined")


class VerificationChange(Base):
    """SQLite only: what a committed transaction changed for verification caches (db/changes.py).

    Written in the same transaction as the change, so a rolled-back change leaves nothing; other
    processes on the same database file (``serve --workers N``) read the rows newer than theirs as
    soon as ``PRAGMA data_version`` says another connection committed (verify/feed.py). PostgreSQL
    uses LISTEN/NOTIFY instead. Rows are deleted after a few minutes.
    """

    __tablename__ = "verification_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    payload: Mapped[str] = mapped_column(Text)


class DeviceAuthorization(Base):
    """An OAuth 2.0 device authorization request (RFC 8628): a CLI waiting for a person's approval.

    Both codes are stored as digests only. The token is minted when the device redeems an approved
    request, so no secret ever rests here.
    """

    __tablename__ = "device_authorizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    device_code_digest: Mapped[str] = mapped_column(String(64), unique=True)
    user_code_digest: Mapped[str] = mapped_column(String(64), unique=True)
    client_name: Mapped[str] = mapped_column(String(100))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    # Space-separated scope names asked for; NULL: all of the approving user's (like a password login).
    scopes: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending, approved, denied, redeemed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Who approved or denied it (and so whose token the device receives).
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"))


trust_policy_clusters = Table(
    "trust_policy_clusters",
    Base.metadata,
    Column("policy_id", ForeignKey("trust_policies.id", ondelete="CASCADE"), primary_key=True),
    Column("cluster_id", ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True),
)


class TrustPolicy(Base):
    """Which external OIDC tokens may be exchanged for a service account's short-lived token."""

    __tablename__ = "trust_policies"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    service_account_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(2048), index=True)
    # The issuer's JWKS given inline (air-gapped clusters); NULL: discovered from the issuer URL.
    jwks: Mapped[str | None] = mapped_column(Text)
    audience: Mapped[str] = mapped_column(String(2048))
    subject: Mapped[str | None] = mapped_column(String(1000))  # a glob; NULL: any subject
    conditions: Mapped[str] = mapped_column(Text, default="{}")  # JSON: {"/json/pointer": "glob"}
    scopes: Mapped[str] = mapped_column(Text)  # space-separated; always explicit
    lifetime_seconds: Mapped[int] = mapped_column(Integer)
    max_token_age_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    service_account: Mapped[User] = relationship(lazy="joined")
    clusters: Mapped[list[Cluster]] = relationship(secondary=trust_policy_clusters, lazy="selectin",
                                                   order_by="Cluster.name")
