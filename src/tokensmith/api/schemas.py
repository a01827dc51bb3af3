"""Request and response bodies. Requests forbid unknown fields; responses never carry a secret
except ``CreatedTokenOut``, the one-time reveal."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from tokensmith import scopes as scope_rules
from tokensmith.db.models import Cluster, Token, User, Vpc
from tokensmith.tokens.expiration import DEFAULT_EXPIRATION, PRESETS, is_expired

T = TypeVar("T")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")


class TokenCreate(Request):
    name: str = Field(description="1-100 characters after trimming; any language; no control characters.")
    note: str | None = Field(default=None, description="0-1000 characters.")
    expiration: str | None = Field(
        default=None,
        description=f"A preset ({', '.join(PRESETS)}) or a duration such as 45m, 12h, 3d. Default: the "
                    f"organization policy's default_expiration, built in {DEFAULT_EXPIRATION} (1 month).",
        examples=[DEFAULT_EXPIRATION],
    )
    expires_at: datetime | None = Field(
        default=None, description="An RFC 3339 instant with a timezone, instead of expiration."
    )
    scopes: list[str] | None = Field(
        default=None, description="Limit the token to these scopes; default: all of the owner's.",
        examples=[["tokens:read", "clusters:read"]],
    )
    clusters: list[Annotated[str, Field(max_length=100)]] = Field(
        default=[], max_length=100,
        description="Cluster ids or names of your organization the token grants, each optionally with an access "
                    "level: NAME_OR_ID or NAME_OR_ID=LEVEL (view, edit, admin, cluster-admin; default view).",
        examples=[["prod=view", "staging=edit"]],
    )
    kubeconfig: bool = Field(
        default=False, description="Also return a kubeconfig for the granted clusters (needs at least one).",
    )


class UserRef(BaseModel):
    id: str
    username: str
    kind: str = Field(default="person", description="person, or service (a service account, svc_ id).")

    @classmethod
    def of(cls, user: User) -> UserRef:
        return cls(id=user.public_id, username=user.username, kind=user.kind or "person")


class FederatedOut(BaseModel):
    """Who a federated token was exchanged for (workload identity federation)."""

    issuer: str
    subject: str


class ClusterRef(BaseModel):
    id: str
    name: str


class TokenClusterRef(ClusterRef):
    level: str = Field(description="The token's access level on the cluster: view, edit, admin or cluster-admin.")


class TokenOut(BaseModel):
    id: str
    name: str
    note: str
    hint: str = Field(description="The last 4 characters of the secret, to tell tokens apart.")
    owner: UserRef
    created_at: datetime
    expires_at: datetime | None
    expired: bool
    last_used_at: datetime | None
    clusters: list[TokenClusterRef]
    scopes: list[str] = Field(description="What the token can do now: its scopes cut to its owner's permissions.")
    federated: FederatedOut | None = Field(
        default=None, description="Set when the token was exchanged for an external OIDC token.")

    @classmethod
    def of(cls, token: Token, now: datetime) -> TokenOut:
        return cls(
            id=token.public_id, name=token.name, note=token.note, hint=token.hint, owner=UserRef.of(token.user),
            created_at=token.created_at, expires_at=token.expires_at,
            expired=is_expired(token.expires_at, now), last_used_at=token.last_used_at,
            clusters=[TokenClusterRef(id=c.public_id, name=c.name, level=token.cluster_levels.get(c.id, "view"))
                      for c in token.clusters],
            scopes=sorted(scope_rules.effective(scope_rules.deserialize(token.scopes), token.user.is_admin)),
            federated=None if token.federated_issuer is None else FederatedOut(
                issuer=token.federated_issuer, subject=token.federated_subject or ""),
        )


class CreatedTokenOut(BaseModel):
    token: TokenOut
    secret: str = Field(description="Shown exactly once. Store it now: only a digest is kept.")
    kubeconfig: str | None = Field(default=None, description="With kubeconfig=true: YAML holding the secret.")
    kubeconfig_filename: str | None = Field(default=None, description="A safe file name for the kubeconfig.")


class LoginRequest(Request):
    username: str
    password: str
    name: str = Field(default="cli", description="Name of the token to create.")
    expiration: str | None = None


class PasswordChange(Request):
    username: str
    password: str = Field(description="The current (or initial) password.")
    new_password: str = Field(description="At least 8 characters, different from the current one.")


class OrgOut(BaseModel):
    id: str
    name: str


class UserOut(BaseModel):
    id: str
    username: str
    is_admin: bool
    kind: str = Field(default="person", description="person, or service (a service account).")


class WhoAmI(BaseModel):
    user: UserOut
    organization: OrgOut
    token: TokenOut


class VpcCreate(Request):
    name: str
    region: str
    cidr: str = Field(examples=["10.0.0.0/16"])


class VpcOut(BaseModel):
    id: str
    name: str
    region: str
    cidr: str
    created_at: datetime

    @classmethod
    def of(cls, vpc: Vpc) -> VpcOut:
        return cls(id=vpc.public_id, name=vpc.name, region=vpc.region, cidr=vpc.cidr, created_at=vpc.created_at)


class ClusterCreate(Request):
    name: str
    server: str = Field(description="The API server URL; https only.", examples=["https://10.0.0.1:6443"])
    certificate_authority: str = Field(description="PEM-encoded CA certificate(s) of the API server.")
    region: str
    vpc: str | None = Field(default=None, description="A VPC id or name.")
    audience: str | None = Field(
        default=None, max_length=2048,
        description="The audience TokenReviews must ask for: one of the API server's --api-audiences. "
                    "Default: the server URL.",
    )
    username_prefix: str | None = Field(
        default=None, max_length=64,
        description="Put before every user name in TokenReview answers (like --oidc-username-prefix). "
                    "Default for new clusters: 'tokensmith:'; '' for bare user names.",
    )
    member_max_level: str | None = Field(
        default=None, description="The highest access level a member may give a token here "
                                  "(view, edit, admin, cluster-admin). Default: edit.",
    )


class ClusterUpdate(Request):
    """Only the fields sent change."""

    audience: str | None = Field(
        default=None, max_length=2048, description="The new audience; null or empty resets it to the server URL.",
    )
    username_prefix: str | None = Field(default=None, max_length=64,
                                        description="The new user-name prefix ('' for bare names).")
    member_max_level: str | None = Field(default=None, description="The highest level members may grant here.")


class ClusterOut(BaseModel):
    id: str
    name: str
    server: str
    certificate_authority: str
    region: str
    vpc: str | None = Field(description="The VPC's id, if any.")
    audience: str = Field(description="The audience TokenReviews must ask for (when they name audiences).")
    username_prefix: str = Field(description="Put before user names in TokenReview answers ('' : bare names).")
    member_max_level: str = Field(description="The highest access level a member may give a token here.")
    created_at: datetime

    @classmethod
    def of(cls, cluster: Cluster) -> ClusterOut:
        return cls(
            id=cluster.public_id, name=cluster.name, server=cluster.server,
            certificate_authority=cluster.certificate_authority, region=cluster.region,
            vpc=cluster.vpc.public_id if cluster.vpc else None, audience=cluster.token_audience,
            username_prefix=cluster.username_prefix, member_max_level=cluster.member_max_level,
            created_at=cluster.created_at,
        )


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI entries for the error statuses a route can answer with."""
    return {s: {"model": Problem, "content": {"application/problem+json": {}}} for s in statuses}
