"""S3 access keys: mint (permanent or temporary), list, revoke, exchange a token, verify SigV4.

Every rule about access keys lives here; the routes, CLI and console call these methods.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tokensmith import caps, secrets
from tokensmith.actor import Actor
from tokensmith.clock import Clock
from tokensmith.db.models import AccessKey, Token, User
from tokensmith.errors import InvalidInput, NotFound
from tokensmith.objectstore import sigv4
from tokensmith.objectstore.crypto import DecryptionError, KeyRing
from tokensmith.objectstore.keycache import EXPIRED_KEY, AccessKeyCache, KeyFacts
from tokensmith.objectstore.limits import CEILING, DEFAULT_MAX_DURATION, MIN_DURATION, in_words
from tokensmith.objectstore.revocation import surviving_permanent_keys_by_token
from tokensmith.objectstore.verdict import KeyOwner, Verdict, judge, refuse_unsignable
from tokensmith.pagination import DEFAULT_LIMIT, Page, paginate
from tokensmith.policy import PolicyService
from tokensmith.tokens.expiration import is_expired
from tokensmith.validation import clean_name

DURATION_RULE: Final = (
    f"durationSeconds must be 0 (a permanent key) or a whole number of seconds from {MIN_DURATION} "
    f"to the organization's limit ({DEFAULT_MAX_DURATION}, 7 days, unless it allows up to {CEILING})"
)
# The SDK exchange mints one-hour keys and hands the same key out while it has 20 minutes left:
# botocore refreshes 15 minutes before expiry, so it always receives a key it can use.
EXCHANGE_LIFETIME: Final = timedelta(hours=1)
EXCHANGE_REUSE_MARGIN: Final = timedelta(minutes=20)
SOURCE_API: Final = "api"
SOURCE_EXCHANGE: Final = "exchange"


class Minter(Actor, Protocol):
    """A caller who can mint keys: an Identity (user, org, and the token presenting itself)."""

    @property
    def token_id(self) -> int: ...

    @property
    def expires_at(self) -> datetime | None: ...

    @property
    def token_name(self) -> str: ...


@dataclass(frozen=True)
class CreatedAccessKey:
    """A key and its secret: the only moment the secret leaves tokensmith."""

    key: AccessKey
    secret: str


def duration_rule(max_seconds: int) -> str:
    """The allowed range of ``durationSeconds`` under an organization's limit, as one sentence."""
    limit = f"{max_seconds} ({in_words(max_seconds)}, this organization's limit)"
    return f"durationSeconds must be 0 (a permanent key) or a whole number of seconds from {MIN_DURATION} to {limit}"


def parse_duration(value: object, max_seconds: int = DEFAULT_MAX_DURATION) -> int:
    """``durationSeconds`` as a JSON value: 0 or MIN..``max_seconds``, an integer. InvalidInput otherwise."""
    # bool is an int in Python and a float may be fractional: both are refused, as are strings.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(duration_rule(max_seconds), "durationSeconds")
    if value != 0 and not MIN_DURATION <= value <= max_seconds:
        raise InvalidInput(duration_rule(max_seconds), "durationSeconds")
    return value


class AccessKeyService:
    def __init__(self, session: Session, clock: Clock, keyring: KeyRing, cache: AccessKeyCache | None = None) -> None:
        self.session = session
        self.clock = clock
        self.keyring = keyring
        # Verification answers from it when it can and fills it on a miss (objectstore/keycache.py).
        self.cache = cache

    # --- minting and reading --------------------------------------------------------------------

    def create(self, minter: Minter, duration_seconds: object, name: str | None = None) -> CreatedAccessKey:
        """Mint a key for the caller: permanent for 0, else living ``duration_seconds``.

        Temporary keys live at most the organization's limit (7 days unless its policy allows
        longer) and never past the minting token's own expiry: the key's expiry is the earlier of
        the two. Permanent keys only where the organization's policy allows "never" (a token that
        never expires): otherwise no key outlives the token that minted it. Raises InvalidInput for
        a bad duration (the message states the range, with the organization's limit, or the policy
        that refuses a permanent key) or name.
        """
        duration = self.allowed_duration(minter.org_id, duration_seconds)
        now = self.clock.now()
        default = "permanent key" if duration == 0 else "temporary key"
        cleaned = clean_name(name if name is not None else default)
        expiry = None if duration == 0 else now + timedelta(seconds=duration)
        if expiry is not None and minter.expires_at is not None:
            # Temporary credentials derived from a token do not outlive it (as the SDK exchange).
            expiry = min(expiry, minter.expires_at)
        return self._mint(minter, cleaned, expiry, SOURCE_API)

    def allowed_duration(self, org_id: int, duration_seconds: object, field: str = "durationSeconds") -> int:
        """``durationSeconds`` as this organization's policy allows it; InvalidInput (naming ``field``) otherwise.

        A permanent key (0) outlives the token that minted it, so it is allowed only where the
        policy allows "never" (a token that never expires); temporary keys up to the allowance.
        """
        policy = PolicyService(self.session, self.clock).get(org_id)
        duration = parse_duration(duration_seconds, policy.max_access_key_seconds)
        if duration == 0 and (not policy.allow_never or policy.max_lifetime_days):
            raise InvalidInput(f"a permanent access key (durationSeconds 0) is refused by the {policy.describe()}; "
                               "ask for a temporary key instead", field)
        return duration

    def max_duration(self, org_id: int) -> int:
        """The longest temporary key this organization allows, in seconds."""
        return PolicyService(self.session, self.clock).get(org_id).max_access_key_seconds

    def exchange(self, minter: Minter) -> CreatedAccessKey:
        """Temporary credentials for an SDK: a still-valid key this token got before, or a new one.

        Keys last an hour, never past the token's own expiry.
        """
        now = self.clock.now()
        cap = now + EXCHANGE_LIFETIME
        if minter.expires_at is not None:
            cap = min(cap, minter.expires_at)
        for key in self.session.scalars(
            select(AccessKey).where(
                AccessKey.token_id == minter.token_id, AccessKey.source == SOURCE_EXCHANGE,
                AccessKey.revoked_at.is_(None), AccessKey.expires_at > now,
            ).order_by(AccessKey.expires_at.desc()).limit(1)
        ):
            assert key.expires_at is not None
            if key.expires_at > now + EXCHANGE_REUSE_MARGIN or key.expires_at >= cap:
                return CreatedAccessKey(key, self.secret_of(key))
        return self._mint(minter, clean_name(f"SDK credentials for {minter.token_name}"), cap, SOURCE_EXCHANGE)

    def _mint(self, minter: Minter, name: str, expiry: datetime | None, source: str) -> CreatedAccessKey:
        now = self.clock.now()
        caps.lock_owner(self.session, minter.user_id)  # counted and inserted one mint at a time
        live = self.session.scalar(select(func.count(AccessKey.id)).where(
            AccessKey.user_id == minter.user_id, AccessKey.revoked_at.is_(None),
            AccessKey.expires_at.is_(None) | (AccessKey.expires_at > now)))
        caps.refuse_over(live or 0, caps.current().access_keys_per_user, "live S3 access keys",
                         "TOKENSMITH_MAX_ACCESS_KEYS_PER_USER")
        access_key_id = secrets.access_key_id(permanent=expiry is None)
        secret = secrets.access_key_secret()
        key = AccessKey(
            access_key_id=access_key_id, user_id=minter.user_id, org_id=minter.org_id, token_id=minter.token_id,
            name=name, source=source, secret_ciphertext=self.keyring.encrypt(secret, access_key_id),
            created_at=self.clock.now(), expires_at=expiry,
        )
        self.session.add(key)
        self.session.flush()
        return CreatedAccessKey(key, secret)

    def list(self, actor: Actor, *, cursor: str | None = None, limit: int = DEFAULT_LIMIT) -> Page[AccessKey]:
        """The caller's live (not revoked) keys, newest first; expired temporary keys included."""
        query = select(AccessKey).where(
            AccessKey.user_id == actor.user_id, AccessKey.org_id == actor.org_id, AccessKey.revoked_at.is_(None)
        )
        return paginate(self.session, query, AccessKey.id, cursor, limit)

    def get(self, actor: Actor, access_key_id: str) -> AccessKey:
        """A live key of the caller's (admins: any in their organization); NotFound otherwise."""
        if not secrets.is_access_key_id(access_key_id):
            raise NotFound("access key not found")
        query = select(AccessKey).where(
            AccessKey.access_key_id == access_key_id, AccessKey.org_id == actor.org_id,
            AccessKey.revoked_at.is_(None),
        )
        if not actor.is_admin:
            query = query.where(AccessKey.user_id == actor.user_id)
        key = self.session.scalar(query)
        if key is None:
            raise NotFound(f"access key {access_key_id[:20]!r} not found")
        return key

    def revoke(self, actor: Actor, access_key_id: str) -> AccessKey:
        """Revoke a key the caller may see: signatures made with it fail from now on. NotFound otherwise."""
        key = self.get(actor, access_key_id)
        key.revoked_at = self.clock.now()
        self.session.flush()
        return key

    def surviving_after_tokens_delete(self, token_ids: builtins.list[int]) -> dict[int, int]:
        """Permanent keys each token minted that would outlive its deletion (token id → count, zeros left out)."""
        return surviving_permanent_keys_by_token(self.session, token_ids)

    def secret_of(self, key: AccessKey) -> str:
        """The decrypted secret key (for SigV4 and the exchange only; never shown in listings)."""
        return self.keyring.decrypt(key.secret_ciphertext, key.access_key_id)

    # --- verification ---------------------------------------------------------------------------

    def verify_signature(self, org_id: int, method: str, path: str, query: str, headers: Mapping[str, str],
                         body_sha256: str | None = None) -> Verdict:
        """Whether a request an S3 gateway of organization ``org_id`` saw carries a valid SigV4
        signature by a live key of that organization.

        Another organization's key is "unknown access key", exactly like a made-up one: the same
        single lookup, the same answer. Raises sigv4.MalformedRequest (InvalidInput) when the
        request cannot be checked at all. With a cache, a cached key is answered from memory and a
        live key read here is remembered (its scope's signing key, never the secret).
        """
        request = sigv4.parse(method, path, query, headers)
        now = self.clock.now()
        generation = 0
        if self.cache is not None:
            cached = self.cache.answer(org_id, request, body_sha256, now)
            if cached is not None:
                return cached
            generation = self.cache.generation  # before the read: a change after it is not stored
        key_id = request.credential.access_key_id
        key = self.session.scalar(select(AccessKey).where(
            AccessKey.access_key_id == key_id, AccessKey.org_id == org_id,
        )) if secrets.is_access_key_id(key_id) else None
        state = self._key_state(key, now)
        if state is not None:
            return Verdict(False, state)
        assert key is not None
        refused = refuse_unsignable(request)
        if refused is not None:
            return refused
        try:
            # The secret lives only in this frame: what is kept is the scope's derived key.
            signing_key = sigv4.signing_key(self.secret_of(key), request.credential)
        except DecryptionError:
            return Verdict(False, "access key cannot be decrypted with the configured encryption keys")
        facts = self._facts(key)
        if self.cache is not None:
            self.cache.put(facts, request.credential.scope, signing_key, generation)
        return judge(facts.owner, signing_key, request, body_sha256, now)

    def refresh_cached(self, key_id: str) -> None:
        """Read a cached key again before its entry expires (objectstore/keycache.py ``refresh``): the
        same read and liveness checks as a miss, no decryption (the derived keys stay good)."""
        assert self.cache is not None
        renewal = self.cache.renewal(key_id)  # before the read: a change after it drops the entry
        if renewal is None:
            return
        key = self.session.scalar(select(AccessKey).where(AccessKey.access_key_id == key_id,
                                                          AccessKey.org_id == renewal.facts.org_id))
        if self._key_state(key, self.clock.now()) is not None:
            self.cache.renew(renewal, None)
            return
        assert key is not None
        self.cache.renew(renewal, self._facts(key))

    def _facts(self, key: AccessKey) -> KeyFacts:
        return KeyFacts(KeyOwner(key.access_key_id, key.user.username, key.user.organization.name),
                        org_id=key.org_id, user_id=key.user_id, token_id=key.token_id, expires_at=key.expires_at)

    def _key_state(self, key: AccessKey | None, now: datetime) -> str | None:
        """Why ``key`` cannot sign anything now, or None if it is live."""
        if key is None:
            return "unknown access key"
        if key.revoked_at is not None:
            return "access key revoked"
        if is_expired(key.expires_at, now):
            return EXPIRED_KEY
        user: User = key.user
        if user.disabled:
            return "access key revoked"
        # Belt and braces: a temporary key never outlives the token that minted it, even if that
        # token was revoked by a path that did not run the revocation hook.
        token: Token | None = key.token
        if key.expires_at is not None and (token is None or token.revoked_at is not None):
            return "access key revoked"
        return None

    # --- maintenance ----------------------------------------------------------------------------

    def reencrypt_all(self, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Re-encrypt every stored secret key under the first encryption key; returns how many changed.

        Raises DecryptionError if a secret is under a key no longer in the ring (nothing is changed then,
        as the caller's transaction rolls back). ``on_progress(done, total)`` follows the keys (CLI progress).
        """
        total = self.session.scalar(select(func.count()).select_from(AccessKey)) or 0
        changed = 0
        for done, key in enumerate(self.session.scalars(select(AccessKey).order_by(AccessKey.id)), start=1):
            if not self.keyring.is_current(key.secret_ciphertext):
                key.secret_ciphertext = self.keyring.encrypt(self.secret_of(key), key.access_key_id)
                changed += 1
            if on_progress is not None:
                on_progress(done, total)
        self.session.flush()
        return changed
