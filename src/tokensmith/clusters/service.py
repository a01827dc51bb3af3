"""Clusters and VPCs: admins create and delete, every member of the organization reads."""

from __future__ import annotations

import ipaddress
import unicodedata
from urllib.parse import urlsplit

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.actor import Actor, require_admin
from tokensmith.clock import Clock
from tokensmith.db.database import flush_or_conflict
from tokensmith.db.models import Cluster, Vpc
from tokensmith.errors import Conflict, InvalidInput, NotFound
from tokensmith.kube import levels
from tokensmith.pagination import DEFAULT_LIMIT, Page, paginate
from tokensmith.validation import clean_identifier

MAX_CA_BYTES = 64 * 1024


def validate_server_url(server: str) -> str:
    """An API server URL: https, a host, no credentials, query or fragment; returned as validated.

    urlsplit silently drops tabs and newlines, so what it checked would differ from the text:
    whitespace and control characters inside are refused, and the stored URL is rebuilt from the
    parts that were checked.
    """
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in server.strip()):
        raise InvalidInput("server must be an https URL without spaces or control characters", "server")
    try:
        parts = urlsplit(server.strip())
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise InvalidInput("server must be a valid https URL", "server") from None
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput("server must be an https URL with a host, e.g. https://10.0.0.1:6443", "server")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise InvalidInput("server must not contain credentials, a query or a fragment", "server")
    return parts.geturl().rstrip("/")


MAX_AUDIENCE_LENGTH = 2048
MAX_PREFIX_LENGTH = 64
# New clusters put this before TokenReview user names, so "alice" from tokensmith is never the
# same RBAC subject as an x509 or OIDC "alice" (clusters made before it keep bare names).
RECOMMENDED_PREFIX = "tokensmith:"


def validate_username_prefix(prefix: str) -> str:
    """A user-name prefix: printable, no spaces, at most 64 characters; "" for bare names."""
    if len(prefix) > MAX_PREFIX_LENGTH or not prefix.isprintable() or any(c.isspace() for c in prefix):
        raise InvalidInput(
            f"username_prefix must be printable text without spaces, at most {MAX_PREFIX_LENGTH} characters "
            f"(recommended: {RECOMMENDED_PREFIX!r}; empty for bare user names)", "username_prefix")
    return prefix


def validate_audience(audience: str | None) -> str | None:
    """A TokenReview audience (any printable string without spaces, usually a URL); None or blank: the default."""
    if audience is None or not audience.strip():
        return None
    value = audience.strip()
    if len(value) > MAX_AUDIENCE_LENGTH or not value.isprintable() or any(c.isspace() for c in value):
        raise InvalidInput(
            f"audience must be printable text without spaces, at most {MAX_AUDIENCE_LENGTH} characters", "audience"
        )
    return value


def validate_certificate_authority(pem: str) -> str:
    """One or more PEM certificates, normalised; InvalidInput if anything does not parse."""
    if len(pem.encode()) > MAX_CA_BYTES:
        raise InvalidInput(f"certificate_authority must be at most {MAX_CA_BYTES} bytes", "certificate_authority")
    try:
        certificates = x509.load_pem_x509_certificates(pem.strip().encode())
    except ValueError:
        raise InvalidInput(
            "certificate_authority must be PEM-encoded X.509 certificates (-----BEGIN CERTIFICATE-----)",
            "certificate_authority",
        ) from None
    from cryptography.hazmat.primitives.serialization import Encoding

    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certificates)


def validate_cidr(cidr: str) -> str:
    try:
        return str(ipaddress.ip_network(cidr.strip(), strict=True))
    except ValueError as exc:
        raise InvalidInput(f"cidr {cidr!r} is not a valid network ({exc}); e.g. 10.0.0.0/16", "cidr") from None


class VpcService:
    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    def create(self, actor: Actor, name: str, region: str, cidr: str) -> Vpc:
        """Create a VPC; Forbidden for non-admins, Conflict for a duplicate name."""
        require_admin(actor, "creating a VPC")
        name = clean_identifier(name, "name")
        vpc = Vpc(
            public_id=secrets.public_id("vpc"), org_id=actor.org_id, name=name,
            region=clean_identifier(region, "region"), cidr=validate_cidr(cidr), created_at=self.clock.now(),
        )
        conflict = Conflict(f"a VPC named {name!r} already exists")
        if self.session.scalar(select(Vpc.id).where(Vpc.org_id == actor.org_id, Vpc.name == name)):
            raise conflict
        self.session.add(vpc)
        flush_or_conflict(self.session, conflict)
        return vpc

    def get(self, actor: Actor, ref: str) -> Vpc:
        """A VPC of the caller's organization by id or name; NotFound otherwise."""
        vpc = self.session.scalar(
            select(Vpc).where(Vpc.org_id == actor.org_id, (Vpc.public_id == ref) | (Vpc.name == ref))
        )
        if vpc is None:
            raise NotFound(f"VPC {ref!r} not found")
        return vpc

    def list(self, actor: Actor, cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> Page[Vpc]:
        return paginate(self.session, select(Vpc).where(Vpc.org_id == actor.org_id), Vpc.id, cursor, limit)

    def delete(self, actor: Actor, ref: str) -> None:
        require_admin(actor, "deleting a VPC")
        self.session.delete(self.get(actor, ref))
        self.session.flush()


class ClusterService:
    def __init__(self, session: Session, clock: Clock) -> None:
        self.session = session
        self.clock = clock

    def create(
        self, actor: Actor, name: str, server: str, certificate_authority: str, region: str,
        vpc: str | None = None, audience: str | None = None, username_prefix: str | None = None,
        member_max_level: str | None = None,
    ) -> Cluster:
        """Register a cluster; Forbidden for non-admins, Conflict for a duplicate name, InvalidInput for bad fields.

        ``username_prefix`` None: the recommended ``tokensmith:``. ``member_max_level`` None: ``edit``.
        """
        require_admin(actor, "creating a cluster")
        name = clean_identifier(name, "name")
        cluster = Cluster(
            public_id=secrets.public_id("cls"), org_id=actor.org_id, name=name,
            server=validate_server_url(server),
            certificate_authority=validate_certificate_authority(certificate_authority),
            region=clean_identifier(region, "region"),
            vpc_id=VpcService(self.session, self.clock).get(actor, vpc).id if vpc else None,
            created_at=self.clock.now(), audience=validate_audience(audience),
            username_prefix=validate_username_prefix(
                RECOMMENDED_PREFIX if username_prefix is None else username_prefix),
            member_max_level=levels.check(member_max_level or levels.MEMBER_MAX_DEFAULT, "member_max_level"),
        )
        conflict = Conflict(f"a cluster named {name!r} already exists")
        if self.session.scalar(select(Cluster.id).where(Cluster.org_id == actor.org_id, Cluster.name == name)):
            raise conflict
        self.session.add(cluster)
        flush_or_conflict(self.session, conflict)
        return cluster

    def get(self, actor: Actor, ref: str) -> Cluster:
        """A cluster of the caller's organization by id or name; NotFound otherwise."""
        cluster = self.session.scalar(
            select(Cluster).where(Cluster.org_id == actor.org_id, (Cluster.public_id == ref) | (Cluster.name == ref))
        )
        if cluster is None:
            raise NotFound(f"cluster {ref!r} not found")
        return cluster

    def list(self, actor: Actor, cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> Page[Cluster]:
        query = select(Cluster).where(Cluster.org_id == actor.org_id)
        return paginate(self.session, query, Cluster.id, cursor, limit)

    def set_audience(self, actor: Actor, ref: str, audience: str | None) -> Cluster:
        """Change the audience TokenReviews must ask for (None or blank: the server URL); admins only."""
        require_admin(actor, "changing a cluster")
        cluster = self.get(actor, ref)
        cluster.audience = validate_audience(audience)
        self.session.flush()
        return cluster

    def set_access(self, actor: Actor, ref: str, *, username_prefix: str | None = None,
                   member_max_level: str | None = None) -> Cluster:
        """Change the user-name prefix and/or the highest level members may grant (None: unchanged); admins only.

        Tokens already granted keep their levels; a new prefix applies from the next TokenReview on
        (after the API server's cache TTL), so RBAC bindings to user names must follow it.
        """
        require_admin(actor, "changing a cluster")
        cluster = self.get(actor, ref)
        prefix = None if username_prefix is None else validate_username_prefix(username_prefix)
        ceiling = None if member_max_level is None else levels.check(member_max_level, "member_max_level")
        if prefix is not None:
            cluster.username_prefix = prefix
        if ceiling is not None:
            cluster.member_max_level = ceiling
        self.session.flush()
        return cluster

    def delete(self, actor: Actor, ref: str) -> Cluster:
        """Delete a cluster (its webhook credentials go with it); returns it, for the audit log."""
        require_admin(actor, "deleting a cluster")
        cluster = self.get(actor, ref)
        self.session.delete(cluster)
        self.session.flush()
        return cluster
