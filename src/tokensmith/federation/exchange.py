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
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tokensmith import scopes as scope_rules
from tokensmith.clock import Clock
from tokensmith.db.models import AccessKey, Token, TrustPolicy
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
from tokensmith.net.outbound import OutboundPolicy
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.tokens.service import CreatedToken, TokenService

SWEEP_INTERVAL: Final = 60.0
SWEEP_BATCH: Final = 500
# How far a refusal got for a policy: the closest policy's reason is the one reported.
_PROGRESS: Final = {"malformed": 0, "issuer": 0, "keys": 1, "signature": 1, "expired": 2, "audience": 3,
                    "condition": 4, "account": 5}


class FederationRuntime:
    """What outlives a request: the issuers' key cache, parsed inline key sets, the sweep timer."""

    def __init__(self, outbound: OutboundPolicy, *, allow_loopback_http: bool = False,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.jwks = JwksCache(outbound, allow_loopback_http=allow_loopback_http, monotonic=monotonic)
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


@dataclass
class Match:
    policy: TrustPolicy
    claims: dict[str, Any]
    issuer: str
    subject: str
    org_policy: ExpiryPolicy | None = None  # read on first use


class Exchange:
    def __init__(self, session: Session, clock: Clock, secret_key: bytes, runtime: FederationRuntime) -> None:
        self.session = session
        self.clock = clock
        self.secret_key = secret_key
        self.runtime = runtime

    def peek(self, token: str) -> Unverified:
        """The token's header and unverified claims (TokenRejected if it is no acceptable JWT)."""
        return parse(token)

    def _keys(self, policy: TrustPolicy, kid: str | None) -> KeySet:
        try:
            if policy.jwks is not None:
                return self.runtime.inline(policy.jwks)
            return self.runtime.jwks.keys_for(policy.issuer, kid)
        except KeysUnavailable as exc:
            raise TokenRejected(f"the issuer's signing keys are unavailable: {exc}", "keys") from None
        except InvalidInput as exc:
            raise TokenRejected(exc.detail, "keys") from None

    def match(self, token: str, *, policy: TrustPolicy | None = None) -> Match:
        """The policy this token satisfies; TokenRejected naming what did not match otherwise."""
        unverified = parse(token)
        issuer = unverified.issuer
        if policy is not None and policy.issuer != issuer:
            raise TokenRejected("the token's issuer is not the one this trust policy trusts", "issuer")
        candidates = [policy] if policy is not None else TrustPolicyService(self.session, self.clock).for_issuer(issuer)
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
                        verified[source] = verify_signature(token, unverified, self._keys(candidate, unverified.kid))
                    except TokenRejected as exc:
                        verified[source] = exc
                outcome = verified[source]
                if isinstance(outcome, TokenRejected):
                    raise outcome
                check_times(outcome, now, candidate.max_token_age_seconds)
                if not has_audience(outcome, candidate.audience):
                    raise TokenRejected("audience: the token's aud is not the one the trust policy expects",
                                        "audience")
                mismatch = claim_rules.first_mismatch(outcome, candidate.subject, policy_conditions(candidate))
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
        """The organization's token policy, read once per exchange."""
        if match.org_policy is None:
            match.org_policy = PolicyService(self.session, self.clock).get(match.policy.org_id)
        return match.org_policy

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

    def issue(self, match: Match, *, lifetime_seconds: int, scopes: Sequence[str] | None = None) -> CreatedToken:
        """The service account's new short-lived token for this match.

        InvalidInput (field "scope") when asked for scopes the policy does not grant; TokenRejected
        (kind "account") when the service account is disabled.
        """
        policy = match.policy
        account = policy.service_account
        if account.disabled:
            raise TokenRejected("the trust policy's service account is disabled", "account")
        granted = scope_rules.deserialize(policy.scopes) or frozenset()
        if scopes is not None:
            wanted = frozenset(scopes)
            beyond = sorted(wanted - granted)
            if beyond:
                raise InvalidInput(f"the trust policy does not grant {', '.join(beyond)}", "scope")
            granted = wanted
        now = self.clock.now()
        created = TokenService(self.session, self.clock, self.secret_key).create(
            account, f"federated: {policy.name}"[:100], f"{match.issuer} {match.subject}"[:1000],
            expires_at=now + timedelta(seconds=lifetime_seconds), clusters=list(policy.clusters),
            scopes=sorted(granted), grant_service_scopes=True, federated=(match.issuer[:2048], match.subject),
            policy=self.org_policy(match),
        )
        return created

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
