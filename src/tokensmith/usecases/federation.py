"""Service accounts, trust policies, and the exchanges of external OIDC tokens (issue 15).

Admins manage service accounts and trust policies (``org:admin``). The two exchanges — RFC 8693
``POST /v1/oauth2/token`` and the STS ``AssumeRoleWithWebIdentity`` door — are called by workloads
that hold no tokensmith credential yet: the external token is their credential, so they declare
no scope, and every refusal is recorded on its own (``record_apart``) before it is raised.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from tokensmith import audit
from tokensmith.db.models import Cluster, Organization, TrustPolicy, User
from tokensmith.errors import InvalidInput, NotFound
from tokensmith.federation.accounts import ServiceAccountService
from tokensmith.federation.exchange import Exchange, FederatedToken, Match, PolicySnapshot
from tokensmith.federation.policies import PolicyRequest, TrustPolicyService
from tokensmith.federation.verification import TokenRejected
from tokensmith.kube import access
from tokensmith.kube.access import IssuedKubeconfig
from tokensmith.objectstore.minters import MINT_SCOPE, TokenMinter
from tokensmith.objectstore.service import AccessKeyService, CreatedAccessKey
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation
from tokensmith.usecases.tokens import IssuedToken, TokenRequest, _creation_details, _issue

log = logging.getLogger("tokensmith.federation")
REFUSED: Final = "token.exchange_refused"
_NAME: Final = r"([A-Za-z0-9][A-Za-z0-9._-]{0,62})"
ROLE_ARN: Final = re.compile(rf"arn:tokensmith:iam::{_NAME}:role/{_NAME}")
SESSION_NAME: Final = re.compile(r"[\w+=,.@-]{2,64}")


def _accounts(uow: UnitOfWork) -> ServiceAccountService:
    return ServiceAccountService(uow.session, uow.clock)


def _policies(uow: UnitOfWork) -> TrustPolicyService:
    return TrustPolicyService(uow.session, uow.clock, allow_loopback_http=uow.settings.allow_loopback_http_issuers)


def _exchange(uow: UnitOfWork) -> Exchange:
    return Exchange(uow.transaction, uow.clock, uow.secret_key, uow.federation)


# --- service accounts -------------------------------------------------------------------------


@operation("org:admin")
def list_service_accounts(uow: UnitOfWork, actor: Actor) -> list[User]:
    return _accounts(uow).list(actor.org_id)


@operation("org:admin", audit="service_account.created")
def create_service_account(uow: UnitOfWork, actor: Actor, name: str, *, admin: bool = False) -> User:
    """A new service account of the admin's organization (an admin only when asked explicitly)."""
    account = _accounts(uow).create(actor.org_id, name, is_admin=admin)
    uow.record(actor, "service_account.created", target=account.public_id,
               details={"name": account.username, "admin": account.is_admin})
    return account


@operation("org:admin", audit="service_account.updated")
def set_service_account_disabled(uow: UnitOfWork, actor: Actor, ref: str, *, disabled: bool) -> User:
    """Disable a service account (its tokens stop at once, exchanges for it are refused) or enable it."""
    account = _accounts(uow).set_disabled(actor.org_id, ref, disabled=disabled)
    uow.record(actor, "service_account.updated", target=account.public_id,
               details={"name": account.username, "disabled": account.disabled})
    return account


@operation("org:admin", audit="service_account.deleted", manages_credentials=True)
def delete_service_account(uow: UnitOfWork, actor: Actor, ref: str) -> User:
    """Delete a service account with its tokens, S3 keys and trust policies."""
    account, tokens = _accounts(uow).delete(actor.org_id, ref)
    uow.record(actor, "service_account.deleted", target=account.public_id,
               details={"name": account.username, "tokens_deleted": tokens})
    return account


@operation("org:admin", audit="token.created", manages_credentials=True)
def issue_service_account_token(uow: UnitOfWork, actor: Actor, ref: str, request: TokenRequest) -> IssuedToken:
    """A token owned by the service account, within what the calling credential holds.

    Service scopes (introspect, object-storage:verify) may be granted: an admin is asking.
    """
    account = _accounts(uow).get(actor.org_id, ref)
    issued = _issue(uow, actor, account, request, grant_service_scopes=True)
    uow.record(actor, "token.created", target=issued.token.public_id,
               details=_creation_details(issued.token, issued, owner=account.username, service_account=True))
    return issued


# --- trust policies ---------------------------------------------------------------------------


@operation("org:admin")
def list_trust_policies(uow: UnitOfWork, actor: Actor) -> list[TrustPolicy]:
    return _policies(uow).list(actor.org_id)


@operation("org:admin", audit="trust_policy.created")
def create_trust_policy(uow: UnitOfWork, actor: Actor, request: PolicyRequest) -> TrustPolicy:
    """Trust an issuer's tokens that match the conditions, as the named service account.

    Raises NotFound (service account, cluster), InvalidInput (any field), Conflict (a taken name),
    Forbidden (a cluster the calling credential does not reach).
    """
    account = _accounts(uow).get(actor.org_id, request.service_account)
    clusters = [uow.clusters.get(actor, ref) for ref in dict.fromkeys(request.clusters)]
    actor.check_clusters([c.id for c in clusters], {c.id: c.name for c in clusters})
    policy = _policies(uow).create(actor.org_id, account, clusters, request)
    if clusters and "kubernetes" not in (policy.scopes or "").split():
        raise InvalidInput("a trust policy that grants clusters needs the 'kubernetes' scope", "scopes")
    uow.record(actor, "trust_policy.created", target=policy.public_id,
               details={"name": policy.name, "issuer": policy.issuer, "service_account": account.username,
                        "scopes": policy.scopes.split(), "clusters": [c.public_id for c in clusters],
                        "inline_jwks": policy.jwks is not None})
    return policy


@operation("org:admin", audit="trust_policy.deleted")
def delete_trust_policy(uow: UnitOfWork, actor: Actor, ref: str) -> TrustPolicy:
    policy = _policies(uow).delete(actor.org_id, ref)
    uow.record(actor, "trust_policy.deleted", target=policy.public_id, details={"name": policy.name})
    return policy


# --- the exchanges ----------------------------------------------------------------------------


class ExchangeRefused(Exception):
    """A refused exchange, already audited. ``kind`` sorts it (see TokenRejected); ``field`` for bad input."""

    def __init__(self, reason: str, kind: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.field = field


@dataclass(frozen=True)
class Exchanged:
    """A federated token (secret shown once), what it holds, and its kubeconfig when asked for."""

    token: FederatedToken
    secret: str
    scopes: list[str]
    expires_in: int
    kubeconfig: IssuedKubeconfig | None = None


@dataclass(frozen=True)
class AssumedRole:
    """STS credentials: a temporary S3 key minted by a federated token."""

    key: CreatedAccessKey
    token: FederatedToken
    policy: PolicySnapshot
    org_name: str
    subject: str
    audience: str
    issuer: str
    expiration: datetime


def _refuse(uow: UnitOfWork, actor: Actor, door: str, subject_token: str, reason: str, kind: str,
            org_id: int | None = None, field: str | None = None) -> ExchangeRefused:
    """Audit a refusal in its own transaction (the exchange's rolls back) and return what to raise."""
    # Roll back first: a refusal after the exchange's first write (a cap, a stale policy) would
    # otherwise wait on SQLite's write lock this very transaction holds.
    uow.rollback()
    issuer = subject = None
    try:
        claimed = _exchange(uow).peek(subject_token)
        issuer, subject = claimed.claims.get("iss"), claimed.subject
    except TokenRejected:
        pass
    uow.record_apart(actor, REFUSED, outcome=audit.DENIED, org_id=org_id,
                     actor_user=f"federated:{subject}" if isinstance(subject, str) else None,
                     details={"door": door, "reason": reason,
                              "claimed_issuer": issuer[:300] if isinstance(issuer, str) else None})
    return ExchangeRefused(reason, kind, field)


def _sweep(uow: UnitOfWork) -> None:
    """Delete expired federated tokens now and then; never at the cost of the exchange itself."""
    if not uow.federation.sweep_due():
        return
    try:
        with uow.session.begin_nested():  # a savepoint: another replica sweeping the same rows is harmless
            _exchange(uow).sweep()
    except SQLAlchemyError:
        log.warning("sweeping expired federated tokens failed; the next sweep retries", exc_info=True)


def _success_details(match: Match, door: str, **extra: object) -> dict[str, object]:
    return {"door": door, "issuer": match.issuer, "subject": match.subject, "policy": match.policy.name,
            "service_account": match.policy.account.username, **extra}


@operation(None, audit="token.exchanged")
def exchange_token(uow: UnitOfWork, actor: Actor, subject_token: str, *, scopes: Sequence[str] | None = None,
                   kubeconfig: bool = False) -> Exchanged:
    """RFC 8693: an external JWT that satisfies a trust policy → a short-lived token of its service account.

    Raises ExchangeRefused (audited) naming what did not match.
    """
    exchange = _exchange(uow)
    org_id: int | None = None
    try:
        match = exchange.match(subject_token)
        org_id = match.policy.org_id
        lifetime = exchange.lifetime(match, None)
        if kubeconfig and not match.policy.clusters:
            raise InvalidInput("the trust policy grants no clusters, so there is no kubeconfig", "kubeconfig")
        created = exchange.issue(match, lifetime_seconds=lifetime, scopes=scopes)
    except TokenRejected as exc:
        org_id = org_id if exc.org_id is None else exc.org_id
        raise _refuse(uow, actor, "oauth2", subject_token, exc.reason, exc.kind, org_id) from None
    except InvalidInput as exc:
        raise _refuse(uow, actor, "oauth2", subject_token, exc.detail, "request", org_id, exc.field) from None
    issued = None
    if kubeconfig:
        clusters = list(uow.session.scalars(select(Cluster).where(Cluster.id.in_(created.cluster_ids))
                                            .order_by(Cluster.name)))
        issued = access.issue(created, created.secret, clusters)
    # One Core INSERT, like the token's: the exchange is a hot path (docs/performance.md).
    uow.record_row(actor, "token.exchanged", target=created.public_id, org_id=match.policy.org_id,
                   actor_user=match.policy.account.username, details=_success_details(match, "oauth2"))
    _sweep(uow)
    return Exchanged(created, created.secret, sorted(created.scopes), lifetime, issued)


def _role(uow: UnitOfWork, role_arn: str) -> TrustPolicy:
    found = ROLE_ARN.fullmatch(role_arn or "")
    if found is None:
        raise InvalidInput("RoleArn must look like arn:tokensmith:iam::<organization>:role/<trust policy name>",
                           "RoleArn")
    org = uow.session.scalar(select(Organization).where(
        (Organization.name == found.group(1)) | (Organization.public_id == found.group(1))))
    if org is None:
        raise NotFound("no such role")
    return TrustPolicyService(uow.session, uow.clock).get(org.id, found.group(2))


@operation(None, audit="token.exchanged")
def assume_role_with_web_identity(
    uow: UnitOfWork, actor: Actor, role_arn: str, web_identity_token: str, session_name: str,
    duration_seconds: int | None = None,
) -> AssumedRole:
    """STS: an external JWT satisfying the trust policy RoleArn names → temporary S3 keys.

    The keys are minted by a federated token of the policy's service account and die with it.
    Raises ExchangeRefused (audited).
    """
    exchange = _exchange(uow)
    org_id: int | None = None
    try:
        if not SESSION_NAME.fullmatch(session_name or ""):
            raise InvalidInput("RoleSessionName must be 2-64 characters of letters, digits and +=,.@_-",
                               "RoleSessionName")
        try:
            policy = _role(uow, role_arn)
        except NotFound:
            raise TokenRejected("no trust policy matches RoleArn", "role") from None
        org_id = policy.org_id
        match = exchange.match(web_identity_token, policy=exchange.snapshot(policy))
        lifetime = exchange.lifetime(match, duration_seconds)
        if MINT_SCOPE not in (policy.scopes or "").split():
            raise TokenRejected(f"the trust policy does not grant {MINT_SCOPE}, so it mints no S3 keys", "role")
        keys = AccessKeyService(uow.session, uow.clock, uow.keyring)
        allowance = exchange.org_policy(match).max_access_key_seconds
        # Every check before the first write: a refusal after it would be recorded (record_apart)
        # while this transaction holds SQLite's write lock.
        key_seconds = keys.allowed_duration(policy.org_id, min(lifetime, allowance))
        token = exchange.issue(match, lifetime_seconds=lifetime)
        account = match.policy.account
        minter = TokenMinter(account.id, account.org_id, account.is_admin, token.id, token.public_id, token.name,
                             token.expires_at)
        key = keys.create(minter, key_seconds, f"sts {session_name}"[:100])
    except TokenRejected as exc:
        raise _refuse(uow, actor, "sts", web_identity_token, exc.reason, exc.kind, org_id) from None
    except InvalidInput as exc:
        field = "DurationSeconds" if exc.field in ("lifetime", "durationSeconds") else exc.field
        raise _refuse(uow, actor, "sts", web_identity_token, exc.detail, "request", org_id, field) from None
    assert key.key.expires_at is not None
    uow.record(actor, "token.exchanged", target=token.public_id, org_id=policy.org_id, actor_user=account.username,
               details=_success_details(match, "sts", access_key=key.key.access_key_id, session=session_name))
    _sweep(uow)
    return AssumedRole(key, token, match.policy, match.policy.org_name, match.subject, policy.audience,
                       match.issuer, key.key.expires_at)
