"""The exchange: an external JWT in, a short-lived token of a service account out.

``Exchange.match`` finds the trust policy a token satisfies (all of them for its issuer, or the
one an STS RoleArn names): signature with the issuer's keys, times, audience, subject and claim
conditions, in that order. A refusal names what did not match, for the policy that came closest,
and never the token or a claim's value.

``Exchange.issue`` mints the token: owned by the policy's service account, holding the policy's
scopes (or fewer, when asked) and clusters, living the policy's lifetime, and marked with the
external issuer and subject. It is an ordinary token from then on (verified, revocable, listed,
audited); expired federated tokens are deleted by ``Exchange.sweep``, which the exchange runs
at most once a minute per process.

The hot path (docs/performance.md, "Workload identity federation"): the policies of an issuer are
read once and kept as immutable snapshots (``PolicySnapshot``: the policy, its clusters, its service
account, its organization's token policy) in ``FederationRuntime.policies``, dropped on any change
that could alter them (db/changes.py: a trust policy, an organization policy, any user, any
cluster), in this process at once and in other processes and replicas as the change feed hears
them. The cache is never the authority on who may get a token: the token row is inserted with one
Core statement that inserts nothing unless the service account is enabled and the policy still
exists *in the database at that moment*, so a disabled account gets no token from the next
exchange on, whatever any cache holds. Federated tokens do not count against the per-user token
cap (``TOKENSMITH_MAX_TOKENS_PER_USER``): they are bounded by their policy's lifetime and swept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, cast

from sqlalchemy import Table, bindparam, delete, exists, insert, select
from sqlalchemy.orm import Session

from tokensmith import scopes as scope_rules
from tokensmith import secrets
from tokensmith.clock import Clock
from tokensmith.db.database import Transaction
from tokensmith.db.driver import DriverStatement
from tokensmith.db.models import AccessKey, Cluster, Token, TrustPolicy, User, token_clusters
from tokensmith.errors import InvalidInput
from tokensmith.federation import claims as claim_rules
from tokensmith.federation.jwks import JwksCache, KeySet, KeysUnavailable, parse_jwks
from tokensmith.federation.policies import TrustPolicyService, policy_conditions
from tokensmith.federation.verification import (
    TokenRejected,
    Unverified,
    check_times,
    has_audience,
    parse,
    verify_signature,
)
from tokensmith.kube import levels
from tokensmith.net.outbound import OutboundPolicy
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.validation import clean_name, clean_note

if TYPE_CHECKING:
    from tokensmith.db.changes import ChangeFeed, Changes

SWEEP_INTERVAL: Final = 60.0
SWEEP_BATCH: Final = 500
# How far a refusal got for a policy: the closest policy's reason is the one reported.
_PROGRESS: Final = {"malformed": 0, "issuer": 0, "keys": 1, "signature": 1, "expired": 2, "audience": 3,
                    "condition": 4, "account": 5}


@dataclass(frozen=True)
class ClusterSnapshot:
    id: int
    name: str
    member_max_level: str


@dataclass(frozen=True)
class AccountSnapshot:
    """The service account as the policy was read (``disabled`` is re-checked by the token's INSERT)."""

    id: int
    org_id: int
    username: str
    is_admin: bool
    disabled: bool


@dataclass(frozen=True)
class PolicySnapshot:
    """A trust policy with what an exchange under it needs, read once and never changed."""

    id: int
    public_id: str
    org_id: int
    org_name: str
    name: str
    issuer: str
    jwks: str | None
    audience: str
    subject: str | None
    conditions: Mapping[str, str]
    scopes: str
    lifetime_seconds: int
    max_token_age_seconds: int
    account: AccountSnapshot
    clusters: tuple[ClusterSnapshot, ...]
    org_policy: ExpiryPolicy

    @classmethod
    def of(cls, policy: TrustPolicy, org_policy: ExpiryPolicy) -> PolicySnapshot:
        account = policy.service_account
        return cls(
            id=policy.id, public_id=policy.public_id, org_id=policy.org_id, org_name=account.organization.name,
            name=policy.name, issuer=policy.issuer, jwks=policy.jwks, audience=policy.audience,
            subject=policy.subject, conditions=policy_conditions(policy), scopes=policy.scopes or "",
            lifetime_seconds=policy.lifetime_seconds, max_token_age_seconds=policy.max_token_age_seconds,
            account=AccountSnapshot(account.id, account.org_id, account.username, account.is_admin,
                                    account.disabled),
            clusters=tuple(ClusterSnapshot(c.id, c.name, c.member_max_level) for c in policy.clusters),
            org_policy=org_policy,
        )


def load_policies(session: Session, clock: Clock, issuer: str) -> tuple[PolicySnapshot, ...]:
    """Every organization's policies for this issuer, oldest first, as snapshots (from the database)."""
    found = TrustPolicyService(session, clock).for_issuer(issuer)
    org_policies: dict[int, ExpiryPolicy] = {}
    for policy in found:
        if policy.org_id not in org_policies:
            org_policies[policy.org_id] = PolicyService(session, clock).get(policy.org_id)
    return tuple(PolicySnapshot.of(policy, org_policies[policy.org_id]) for policy in found)


MAX_CACHED_ISSUERS: Final = 1000


class PolicyCache:
    """Each issuer's policy snapshots (an empty tuple: none), dropped on any change that may alter them.

    Caches only once ``watch`` is called: a runtime that hears no changes reads the database every time.
    """

    def __init__(self) -> None:
        self._by_issuer: dict[str, tuple[PolicySnapshot, ...]] = {}
        self._lock = threading.Lock()
        self._generation = 0
        self._poll: Callable[[], None] | None = None
        self.watching = False

    def watch(self, feed: ChangeFeed, poll: Callable[[], None] | None = None) -> Callable[[], None]:
        """Hear ``feed`` (this process's commits and what it hears from others); ``poll`` before each read
        asks other processes on the same SQLite file what they committed (verify/feed.py).
        Returns what stops it (and the caching)."""
        unsubscribe = feed.subscribe(self.invalidate)
        self._poll = poll
        self.watching = True

        def unwatch() -> None:
            self.watching = False
            unsubscribe()
            self.clear()

        return unwatch

    def get(self, issuer: str, load: Callable[[], tuple[PolicySnapshot, ...]]) -> tuple[PolicySnapshot, ...]:
        if self._poll is not None:
            self._poll()
        if not self.watching:
            return load()
        found = self._by_issuer.get(issuer)
        if found is not None:
            return found
        generation = self._generation
        loaded = load()
        with self._lock:
            # A change committed while we read may not be in what we read: keep it only if none was heard.
            if generation == self._generation:
                if len(self._by_issuer) >= MAX_CACHED_ISSUERS:  # unknown issuers are cached too: bounded
                    self._by_issuer.clear()
                self._by_issuer[issuer] = loaded
        return loaded

    def held(self, issuer: str) -> tuple[PolicySnapshot, ...] | None:
        """What the cache holds for ``issuer`` now (None: nothing; the next exchange reads the database)."""
        return self._by_issuer.get(issuer)

    def invalidate(self, changes: Changes) -> None:
        if changes.touches_federation:
            self.clear()

    def clear(self) -> None:
        with self._lock:
            self._generation += 1
            self._by_issuer.clear()


class FederationRuntime:
    """What outlives a request: the issuers' key cache, parsed inline key sets, trust policy snapshots,
    the sweep timer."""

    def __init__(self, outbound: OutboundPolicy, *, allow_loopback_http: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.jwks = JwksCache(outbound, allow_loopback_http=allow_loopback_http, monotonic=monotonic)
        self.policies = PolicyCache()
        self.allow_loopback_http = allow_loopback_http
        self.monotonic = monotonic
        self._inline: dict[str, KeySet] = {}
        self._last_sweep = float("-inf")
        self._lock = threading.Lock()

    def inline(self, jwks: str) -> KeySet:
        found = self._inline.get(jwks)
        if found is None:
            found = parse_jwks(jwks)
            if len(self._inline) > 1000:  # policies come and go; this only bounds the memory
                self._inline.clear()
            self._inline[jwks] = found
        return found

    def sweep_due(self) -> bool:
        with self._lock:
            now = self.monotonic()
            if now - self._last_sweep < SWEEP_INTERVAL:
                return False
            self._last_sweep = now
            return True


@dataclass(frozen=True)
class Match:
    policy: PolicySnapshot
    claims: dict[str, Any]
    issuer: str
    subject: str


@dataclass(frozen=True)
class FederatedToken:
    """The token an exchange inserted (its secret shown once)."""

    id: int
    public_id: str
    name: str
    expires_at: datetime
    scopes: frozenset[str]
    cluster_ids: tuple[int, ...]
    secret: str


class StalePolicy(TokenRejected):
    """The database no longer holds what the cached policy said (disabled account, deleted policy)."""


_TOKENS: Final = cast(Table, Token.__table__)
_USERS: Final = cast(Table, User.__table__)
_POLICIES: Final = cast(Table, TrustPolicy.__table__)
_CLUSTERS: Final = cast(Table, Cluster.__table__)
_TOKEN_COLUMNS: Final = ("public_id", "user_id", "org_id", "name", "note", "secret_digest", "hint", "created_at",
                         "expires_at", "scopes", "federated_issuer", "federated_subject")
# One statement: the token row, inserted only if its service account is enabled and its policy
# still exists now, in the database (the authority; the snapshot may be a moment old).
_INSERT_TOKEN: Final = DriverStatement(insert(_TOKENS).from_select(
    list(_TOKEN_COLUMNS),
    select(*(bindparam(c, type_=_TOKENS.c[c].type) for c in _TOKEN_COLUMNS)).where(
        exists().where(_USERS.c.id == bindparam("user_id"), _USERS.c.disabled.is_(False)),
        exists().where(_POLICIES.c.id == bindparam("policy_id"))),
).returning(_TOKENS.c.id))
# A grant of a cluster deleted meanwhile inserts nothing (rather than failing a foreign key).
_INSERT_GRANT: Final = DriverStatement(insert(token_clusters).from_select(
    ["token_id", "cluster_id", "level"],
    select(bindparam("token_id", type_=_TOKENS.c.id.type), _CLUSTERS.c.id,
           bindparam("level", type_=token_clusters.c.level.type)).where(_CLUSTERS.c.id == bindparam("cluster_id")),
))


class Exchange:
    def __init__(self, transaction: Transaction, clock: Clock, secret_key: bytes, runtime: FederationRuntime) -> None:
        # The unit of work's transaction: its ORM session opens only when a read needs it (a policy
        # not cached, the sweep); the token's INSERT goes through its connection (db/driver.py).
        self.transaction = transaction
        self.clock = clock
        self.secret_key = secret_key
        self.runtime = runtime

    def peek(self, token: str) -> Unverified:
        """The token's header and unverified claims (TokenRejected if it is no acceptable JWT)."""
        return parse(token)

    def _keys(self, policy: PolicySnapshot, kid: str | None) -> KeySet:
        try:
            if policy.jwks is not None:
                return self.runtime.inline(policy.jwks)
            return self.runtime.jwks.keys_for(policy.issuer, kid)
        except KeysUnavailable as exc:
            raise TokenRejected(f"the issuer's signing keys are unavailable: {exc}", "keys") from None
        except InvalidInput as exc:
            raise TokenRejected(exc.detail, "keys") from None

    def policies_for(self, issuer: str) -> tuple[PolicySnapshot, ...]:
        """The issuer's policies: from the runtime's cache, read from the database when not cached."""
        return self.runtime.policies.get(issuer, lambda: load_policies(self.session, self.clock, issuer))

    def snapshot(self, policy: TrustPolicy) -> PolicySnapshot:
        """A policy just read from the database (the STS door names it by its RoleArn)."""
        return PolicySnapshot.of(policy, PolicyService(self.session, self.clock).get(policy.org_id))

    def match(self, token: str, *, policy: PolicySnapshot | None = None) -> Match:
        """The policy this token satisfies; TokenRejected naming what did not match otherwise."""
        unverified = parse(token)
        issuer = unverified.issuer
        if policy is not None and policy.issuer != issuer:
            raise TokenRejected("the token's issuer is not the one this trust policy trusts", "issuer")
        candidates = (policy,) if policy is not None else self.policies_for(issuer)
        if not candidates:
            raise TokenRejected("the token's issuer is not registered in any trust policy", "issuer")
        now = self.clock.now().timestamp()
        verified: dict[str, dict[str, Any] | TokenRejected] = {}  # by key source: each signature checked once
        refusals: list[TokenRejected] = []
        for candidate in candidates:
            source = f"inline:{candidate.jwks}" if candidate.jwks is not None else f"issuer:{issuer}"
            try:
                if source not in verified:
                    try:
                        verified[source] = verify_signature(unverified, self._keys(candidate, unverified.kid))
                    except TokenRejected as exc:
                        verified[source] = exc
                outcome = verified[source]
                if isinstance(outcome, TokenRejected):
                    raise outcome
                check_times(outcome, now, candidate.max_token_age_seconds)
                if not has_audience(outcome, candidate.audience):
                    raise TokenRejected("audience: the token's aud is not the one the trust policy expects",
                                        "audience")
                mismatch = claim_rules.first_mismatch(outcome, candidate.subject, candidate.conditions)
                if mismatch is not None:
                    raise TokenRejected(f"{mismatch}: the token does not satisfy the trust policy", "condition")
                return Match(candidate, outcome, issuer, str(outcome.get("sub", ""))[:1000])
            except TokenRejected as exc:
                refusals.append(exc)
        furthest = max(_PROGRESS[r.kind] for r in refusals)
        closest = [r for r in refusals if _PROGRESS[r.kind] == furthest]
        reasons = list(dict.fromkeys(r.reason for r in closest))
        rejected = TokenRejected("; ".join(reasons[:3]), closest[0].kind)
        orgs = {c.org_id for c in candidates}
        rejected.org_id = orgs.pop() if len(orgs) == 1 else None
        raise rejected

    def org_policy(self, match: Match) -> ExpiryPolicy:
        """The organization's token policy (read with the trust policy)."""
        return match.policy.org_policy

    def lifetime(self, match: Match, requested: int | None) -> int:
        """Seconds the new token lives: the policy's (or less, when asked), within the org's token policy."""
        allowed = match.policy.lifetime_seconds
        org_policy = self.org_policy(match)
        if org_policy.max_lifetime_days:
            allowed = min(allowed, org_policy.max_lifetime_days * 86400)
        if requested is None:
            return allowed
        if requested > allowed:
            raise InvalidInput(f"the trust policy allows at most {allowed} seconds", "lifetime")
        return requested

    def issue(self, match: Match, *, lifetime_seconds: int, scopes: Sequence[str] | None = None) -> FederatedToken:
        """The service account's new short-lived token for this match.

        InvalidInput (field "scope") when asked for scopes the policy does not grant; TokenRejected
        (kind "account") when the service account is disabled; StalePolicy when the database says
        the account is disabled or the policy is gone although the snapshot did not (nothing written).
        Every check comes before the one write: a refusal is recorded apart (record_apart).
        """
        policy = match.policy
        account = policy.account
        if account.disabled:
            raise TokenRejected("the trust policy's service account is disabled", "account")
        granted = scope_rules.deserialize(policy.scopes) or frozenset()
        if scopes is not None:
            wanted = frozenset(scopes)
            beyond = sorted(wanted - granted)
            if beyond:
                raise InvalidInput(f"the trust policy does not grant {', '.join(beyond)}", "scope")
            granted = wanted
        # What TokenService.create checks for any token (a token never holds more than its owner).
        beyond_owner = sorted(granted - scope_rules.permitted(account.is_admin))
        if beyond_owner:
            raise InvalidInput(f"a token cannot hold more than its owner: {', '.join(beyond_owner)} not permitted",
                               "scopes")
        clusters = policy.clusters
        granted_levels = levels.decide([c.id for c in clusters], {c.id: c.name for c in clusters}, {},
                                       is_admin=account.is_admin,
                                       member_max={c.id: c.member_max_level for c in clusters})
        name = clean_name(f"federated: {policy.name}"[:100])
        note = clean_note(f"{match.issuer} {match.subject}"[:1000])
        now = self.clock.now()
        expires_at = policy.org_policy.enforce(now, now + timedelta(seconds=lifetime_seconds))
        assert expires_at is not None
        secret = secrets.generate()
        public_id = secrets.public_id("tok")
        connection = self.transaction.connection
        token_id = _INSERT_TOKEN.scalar(connection, {
            "public_id": public_id, "user_id": account.id, "org_id": account.org_id, "name": name, "note": note,
            "secret_digest": secrets.digest(secret, self.secret_key), "hint": secrets.hint(secret),
            "created_at": now, "expires_at": expires_at, "scopes": scope_rules.serialize(granted),
            "federated_issuer": match.issuer[:2048], "federated_subject": match.subject, "policy_id": policy.id,
        })
        if token_id is None:
            self.runtime.policies.clear()  # what this process held was stale
            raise self._stale(policy)
        for cluster_id, level in granted_levels.items():
            _INSERT_GRANT.execute(connection, {"token_id": token_id, "cluster_id": cluster_id, "level": level})
        return FederatedToken(token_id, public_id, name, expires_at, granted, tuple(granted_levels), secret)

    @property
    def session(self) -> Session:
        return self.transaction.session

    def _stale(self, policy: PolicySnapshot) -> StalePolicy:
        disabled = self.session.scalar(select(User.disabled).where(User.id == policy.account.id))
        if disabled is None or disabled:
            return StalePolicy("the trust policy's service account is disabled", "account")
        return StalePolicy("the trust policy changed during the exchange; try again", "issuer")

    def sweep(self) -> int:
        """Delete expired federated tokens (and the S3 keys they minted), a batch at a time."""
        now = self.clock.now()
        expired = list(self.session.scalars(
            select(Token).where(Token.federated_issuer.is_not(None), Token.expires_at < now)
            .order_by(Token.expires_at).limit(SWEEP_BATCH)))
        if not expired:
            return 0
        self.session.execute(delete(AccessKey).where(AccessKey.token_id.in_([t.id for t in expired])))
        for token in expired:
            self.session.delete(token)
        self.session.flush()
        return len(expired)
