"""Trust policies: which external OIDC tokens become which service account's short-lived token.

A policy names an issuer (its keys discovered from the issuer URL, or given inline as a JWKS for a
cluster whose issuer cannot be reached), the exact audience the token must carry, a ``sub`` glob
and claim conditions (``tokensmith.federation.claims``), and what a match yields: scopes (a subset
of what the service account may hold), clusters of the organization, a lifetime (default 1 hour,
at most 12 hours and at most the organization's token policy) and the oldest token accepted
(``max_token_age``, default 1 day, measured from the token's ``iat``).
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from tokensmith import scopes as scope_rules
from tokensmith import secrets
from tokensmith.clock import Clock
from tokensmith.db.models import Cluster, TrustPolicy, User
from tokensmith.errors import Conflict, InvalidInput, NotFound
from tokensmith.federation import claims
from tokensmith.federation.jwks import check_issuer_url, parse_jwks
from tokensmith.validation import clean_identifier

DEFAULT_LIFETIME: Final = 3600
MAX_LIFETIME: Final = 12 * 3600
MIN_LIFETIME: Final = 900  # the shortest S3 key; a shorter token could mint none
DEFAULT_MAX_TOKEN_AGE: Final = 24 * 3600
MAX_JWKS_CHARS: Final = 64 * 1024


@dataclass(frozen=True)
class PolicyRequest:
    """What an admin asks for (the same fields in the API and the CLI)."""

    name: str
    service_account: str
    issuer: str
    audience: str
    subject: str | None = None
    conditions: dict[str, str] = field(default_factory=dict)
    scopes: Sequence[str] | None = None  # None: the service account's default scopes
    clusters: Sequence[str] = ()
    lifetime_seconds: int = DEFAULT_LIFETIME
    max_token_age_seconds: int = DEFAULT_MAX_TOKEN_AGE
    jwks: str | None = None  # inline JWKS (JSON text); None: discovery


def policy_conditions(policy: TrustPolicy) -> dict[str, str]:
    loaded = json.loads(policy.conditions or "{}")
    return dict(loaded) if isinstance(loaded, dict) else {}


def _whole_seconds(value: object, field_name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field_name} must be a whole number of seconds from {low} to {high}", field_name)
    return value


class TrustPolicyService:
    def __init__(self, session: Session, clock: Clock, *, allow_loopback_http: bool = False) -> None:
        self.session = session
        self.clock = clock
        self.allow_loopback_http = allow_loopback_http

    def create(self, org_id: int, account: User, clusters: Sequence[Cluster], request: PolicyRequest) -> TrustPolicy:
        """Validate and store a policy; InvalidInput names the field, Conflict a taken name."""
        name = clean_identifier(request.name, "name")
        if self.session.scalar(select(TrustPolicy.id).where(TrustPolicy.org_id == org_id,
                                                            TrustPolicy.name == name)) is not None:
            raise Conflict(f"a trust policy named {name!r} already exists")
        issuer = (request.issuer or "").strip()
        if not issuer or len(issuer) > 2048 or any(ord(c) < 33 for c in issuer):
            raise InvalidInput("issuer must be the issuer's URL exactly as its tokens' iss claim says it", "issuer")
        jwks = None
        if request.jwks is not None and request.jwks.strip():
            if len(request.jwks) > MAX_JWKS_CHARS:
                raise InvalidInput(f"jwks must be at most {MAX_JWKS_CHARS} characters", "jwks")
            parse_jwks(request.jwks)  # refuses a set with no usable public key
            jwks = json.dumps(json.loads(request.jwks), separators=(",", ":"))
        else:
            check_issuer_url(issuer, allow_loopback_http=self.allow_loopback_http)
        audience = (request.audience or "").strip()
        if not audience or len(audience) > 2048:
            raise InvalidInput("audience must be the exact aud the tokens carry (1-2048 characters)", "audience")
        subject = None if request.subject in (None, "") else claims.check_pattern(request.subject, "subject")
        conditions = claims.check_conditions(request.conditions)
        if subject is None and not conditions:
            # Any token the issuer signs for this audience would do: on a shared issuer (GitHub,
            # a cloud's cluster issuer) that is every tenant's workload.
            raise InvalidInput("give a subject pattern or at least one claim condition", "subject")
        granted = self._scopes(account, request.scopes)
        policy = TrustPolicy(
            public_id=secrets.public_id("tp"), org_id=org_id, name=name, service_account_id=account.id,
            issuer=issuer, jwks=jwks, audience=audience, subject=subject,
            conditions=json.dumps(conditions, sort_keys=True), scopes=scope_rules.serialize(granted) or "",
            lifetime_seconds=_whole_seconds(request.lifetime_seconds, "lifetime_seconds", MIN_LIFETIME, MAX_LIFETIME),
            max_token_age_seconds=_whole_seconds(request.max_token_age_seconds, "max_token_age_seconds", 60,
                                                 30 * 24 * 3600),
            created_at=self.clock.now(), clusters=list(clusters),
        )
        self.session.add(policy)
        self.session.flush()
        return policy

    @staticmethod
    def _scopes(account: User, requested: Sequence[str] | None) -> frozenset[str]:
        """Scopes ⊆ what the service account may hold (its default when none are named)."""
        if requested is None:
            # A member's defaults even for an admin service account (admin scopes only when named),
            # and a workload's token should not mint longer-lived ones: tokens:write only when named.
            return scope_rules.default_scopes(False) - {"tokens:write"}
        wanted = scope_rules.parse(requested)
        beyond = sorted(wanted - scope_rules.permitted(account.is_admin))
        if beyond:
            raise InvalidInput(f"the service account cannot hold {', '.join(beyond)}", "scopes")
        if not wanted:
            raise InvalidInput("a trust policy grants at least one scope", "scopes")
        return wanted

    def list(self, org_id: int) -> list[TrustPolicy]:
        return list(self.session.scalars(
            select(TrustPolicy).where(TrustPolicy.org_id == org_id).order_by(TrustPolicy.name)))

    def get(self, org_id: int, ref: str) -> TrustPolicy:
        policy = self.session.scalar(select(TrustPolicy).where(
            TrustPolicy.org_id == org_id, (TrustPolicy.public_id == ref) | (TrustPolicy.name == ref)))
        if policy is None:
            raise NotFound(f"trust policy {ref!r} not found")
        return policy

    def delete(self, org_id: int, ref: str) -> TrustPolicy:
        """Remove a policy: no new exchanges; tokens already issued live out their (short) lifetime."""
        policy = self.get(org_id, ref)
        self.session.delete(policy)
        self.session.flush()
        return policy

    def for_issuer(self, issuer: str) -> builtins.list[TrustPolicy]:
        """Every organization's policies for this issuer, oldest first."""
        # One statement: the clusters joined in, not a second SELECT per exchange (the hot path).
        return list(self.session.scalars(select(TrustPolicy).where(TrustPolicy.issuer == issuer)
                                         .options(joinedload(TrustPolicy.clusters))
                                         .order_by(TrustPolicy.id)).unique())
