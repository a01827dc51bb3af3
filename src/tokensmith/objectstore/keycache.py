"""In-process memory of what SigV4 verification needs per S3 access key, so a gateway's hot
``POST /v1/object-storage/verify`` costs no database read, no decryption and no key derivation.

What is kept per access key id (``_Entry``), filled by ``AccessKeyService.verify_signature`` on a
miss and only for a key that was live then:

* whose it is (``KeyOwner``: access key id, user name, organization name; what a valid answer
  names), and the ids its liveness hangs on: organization, user, minting token;
* its own expiry (checked against the clock on every answer, like a token's);
* the **derived SigV4 signing keys** of the scopes (day, region, service) it was used in, at most
  ``MAX_SCOPES_PER_KEY``. Never the secret key: the secret is decrypted on a miss, used to derive
  the scope's key and dropped. A request in a scope not derived yet (a new day, another region) is
  a miss and fills it. A signing key signs only that key's requests of that one day, region and
  service, and the secret cannot be computed back from it (it is what a streaming upload's answer
  already hands the gateway).

Bounded: at most ``max_size`` keys (``TOKENSMITH_ACCESS_KEY_CACHE_SIZE``), the oldest dropped
first; each entry lives at most ``ttl`` seconds (≤ 60). Nothing here is ever logged, and reprs
leave key material out.

Invalidation is immediate (db/changes.py): a committed change to an access key row drops that key,
a change to a token drops the keys it minted, a change to a user the keys they own; a bulk
statement on access keys, a cluster change or a lost notification channel drops them all. The
composition root subscribes it to the database's change hub (``Database.changes``), which carries
this process's commits, other workers' on the same SQLite file (verify/feed.py, polled before
every cached answer through ``poll``) and other PostgreSQL replicas' (LISTEN/NOTIFY,
verify/background.py). A generation counter stops a fill that raced an invalidation from storing
what it read before it.

Refusals are not remembered: a dead, unknown or other organization's key always takes the slow way
(one query), where failures are counted.

Renewed before it expires: a key answered in the last quarter of its entry's life is read again in
the background (``refresh``, set by the composition root: tokensmith/refresher.py) while its answers keep
coming from memory, and the entry lives on from that read. Without it, every request in flight when
a busy key's entry expired missed at once (32 gateways' requests: 32 reads and decryptions on the
slow way, a stall of every answer behind them, once per ``ttl``). The read is the miss's own (the
key's row, its owner's, its token's, with the same liveness checks); a key found dead is dropped. An
entry dropped or refilled meanwhile is left as it is. A refresh that fails leaves the entry to expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from tokensmith.db.changes import Changes
from tokensmith.objectstore import sigv4
from tokensmith.objectstore.verdict import KeyOwner, Verdict, judge, refuse_unsignable
from tokensmith.refresher import REFRESH_AHEAD
from tokensmith.tokens.expiration import is_expired

MAX_TTL: Final = 60.0
# Scopes (day/region/service) remembered per key: today's and yesterday's in a couple of regions.
MAX_SCOPES_PER_KEY: Final = 4
EXPIRED_KEY: Final = "access key expired"


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What a live key's answers depend on, read from its row on a miss (no key material)."""

    owner: KeyOwner
    org_id: int
    user_id: int
    token_id: int | None
    expires_at: datetime | None


@dataclass(slots=True)
class _Entry:
    facts: KeyFacts
    fresh_until: float
    refresh_at: float
    # credential scope ("20261123/us-east-1/s3/aws4_request") -> its derived signing key.
    signing_keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    refreshing: bool = False  # handed to ``refresh`` once; a renewal is a new entry


# What a background refresh renews: the entry as it was when the refresh was asked for.
Renewal = _Entry


class AccessKeyCache:
    def __init__(self, max_size: int = 10_000, ttl: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"access key cache ttl must be in (0, {MAX_TTL}] seconds")
        if max_size < 1:
            raise ValueError("access key cache size must be at least 1")
        self.max_size = max_size
        self.ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[str, _Entry] = {}
        self._by_token: dict[int, set[str]] = {}
        self._by_user: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        # Hears other worker processes on the same SQLite file before answering (verify/feed.py);
        # set by the composition root to the verifier's feed, None elsewhere.
        self.poll: Callable[[], None] | None = None
        # Reads a key again in the background (``renewal``, then ``renew``); must not block. Set by
        # the composition root (Refresher.submit); None: entries just expire.
        self.refresh: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"AccessKeyCache(size={len(self._entries)}, max_size={self.max_size}, ttl={self.ttl})"

    # --- answering -------------------------------------------------------------------------------

    def verify_cached(self, org_id: int, method: str, path: str, query: str, headers: Mapping[str, str],
                      body_sha256: str | None, now: datetime) -> Verdict | None:
        """The answer for a request of a cached key, from memory (no I/O, no thread), or None.

        Exactly the verdict ``AccessKeyService.verify_signature`` gives: valid (with the owner and,
        for signed aws-chunked uploads, the streaming signing info) or invalid with its reason
        (signature mismatch, expired key, too old, ...). None when only the slow way can answer: a
        malformed request (its 422 is the slow way's), a key not cached, not live or of another
        organization, a scope not derived yet. ``org_id`` is the asking gateway's organization.
        Counting an invalid answer against a client is the caller's (api/guard.py).
        """
        try:
            request = sigv4.parse(method, path, query, headers)
        except sigv4.MalformedRequest:
            return None
        return self.answer(org_id, request, body_sha256, now)

    def answer(self, org_id: int, request: sigv4.SignedRequest, body_sha256: str | None,
               now: datetime) -> Verdict | None:
        """``verify_cached`` for an already parsed request."""
        if self.poll is not None:
            self.poll()
        key_id = request.credential.access_key_id
        entry = self._entries.get(key_id)
        if entry is None:
            return None
        now_monotonic = self._monotonic()
        if now_monotonic >= entry.refresh_at:
            if now_monotonic >= entry.fresh_until:
                with self._lock:
                    if self._entries.get(key_id) is entry:
                        self._remove(key_id)
                return None
            if not entry.refreshing and self.refresh is not None:
                entry.refreshing = True  # once per entry (the refresher takes a key once)
                self.refresh(key_id)
        facts = entry.facts
        if facts.org_id != org_id:
            return None  # "unknown access key", answered (and counted) the slow way
        if is_expired(facts.expires_at, now):
            return Verdict(False, EXPIRED_KEY)
        refused = refuse_unsignable(request)
        if refused is not None:
            return refused
        signing_key = entry.signing_keys.get(request.credential.scope)
        if signing_key is None:
            return None
        return judge(facts.owner, signing_key, request, body_sha256, now)

    # --- filling ---------------------------------------------------------------------------------

    def put(self, facts: KeyFacts, scope: str, signing_key: bytes, generation: int) -> None:
        """Remember a live key's facts and one scope's signing key, unless an invalidation happened
        since ``generation`` was read (before the key's row was)."""
        key_id = facts.owner.access_key_id
        with self._lock:
            if generation != self.generation:
                return
            old = self._entries.get(key_id)
            # A key id's secret never changes (a rotation is a new key), so the scopes derived before
            # stay good; the facts and the freshness are the new read's.
            keys = dict(old.signing_keys) if old is not None else {}
            self._remove(key_id)
            keys.pop(scope, None)
            keys[scope] = signing_key
            while len(keys) > MAX_SCOPES_PER_KEY:
                del keys[next(iter(keys))]
            while len(self._entries) >= self.max_size:
                self._remove(next(iter(self._entries)))
            self._add(facts, keys)

    def renewal(self, key_id: str) -> Renewal | None:
        """The entry a background refresh of ``key_id`` renews, read before the key's row; None when
        there is none to renew (dropped meanwhile)."""
        entry = self._entries.get(key_id)
        return entry if entry is not None and entry.refreshing else None

    def renew(self, renewal: Renewal, facts: KeyFacts | None) -> None:
        """After a background read of the key: live (``facts``), its entry lives on from now, with the
        scopes derived so far (a key id's secret never changes); dead (None), it is dropped. Unless
        the entry was dropped or replaced since ``renewal`` (an invalidation: what was read may be
        older than it)."""
        key_id = renewal.facts.owner.access_key_id
        with self._lock:
            if self._entries.get(key_id) is not renewal:
                return
            self._remove(key_id)
            if facts is not None:
                # Unchanged facts: the same owner, with the answers encoded for it (KeyOwner.wire).
                self._add(renewal.facts if facts == renewal.facts else facts, renewal.signing_keys)

    def _add(self, facts: KeyFacts, signing_keys: dict[str, bytes]) -> None:
        key_id = facts.owner.access_key_id
        now = self._monotonic()
        self._entries[key_id] = _Entry(facts, now + self.ttl, now + self.ttl * (1 - REFRESH_AHEAD), signing_keys)
        if facts.token_id is not None:
            self._by_token.setdefault(facts.token_id, set()).add(key_id)
        self._by_user.setdefault(facts.user_id, set()).add(key_id)

    # --- forgetting ------------------------------------------------------------------------------

    def invalidate(self, changes: Changes) -> None:
        """Forget every key ``changes`` touched: by id, minted by a changed token, owned by a changed user."""
        with self._lock:
            self.generation += 1
            if changes.everything or changes.all_access_keys:
                self._clear()
                return
            for key_id in changes.access_key_ids:
                self._remove(key_id)
            for token_id in changes.token_ids:
                for key_id in list(self._by_token.get(token_id, ())):
                    self._remove(key_id)
            for user_id in changes.user_ids:
                for key_id in list(self._by_user.get(user_id, ())):
                    self._remove(key_id)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._clear()

    def _clear(self) -> None:
        self._entries.clear()
        self._by_token.clear()
        self._by_user.clear()

    def _remove(self, key_id: str) -> None:
        entry = self._entries.pop(key_id, None)
        if entry is None:
            return
        indexes: list[tuple[dict[int, set[str]], int]] = [(self._by_user, entry.facts.user_id)]
        if entry.facts.token_id is not None:
            indexes.append((self._by_token, entry.facts.token_id))
        for index, owner_id in indexes:
            ids = index.get(owner_id)
            if ids is not None:
                ids.discard(key_id)
                if not ids:
                    del index[owner_id]

