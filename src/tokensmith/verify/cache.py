"""In-process memory of verification results, keyed by secret digest (never by secret).

* Positive entries: a verified Identity, kept at most ``ttl`` seconds (≤ 60) and at most
  ``max_size`` of them; the oldest goes first when full.
* Negative entries: digests that matched no live token, in a much smaller, shorter-lived set, so
  a flood of random secrets costs one lookup each at most every ``negative_ttl`` seconds while
  the memory they can take stays bounded.

Expiry is *not* decided here: the verifier checks it against the clock on every call.
A generation counter stops a lookup that raced an invalidation from caching its stale answer.

A positive entry answered in the last quarter of its life is looked up again in the background
(``refresh``: the verifier's, tokensmith/refresher.py) while it keeps answering; the lookup renews
it for a whole ``ttl`` (or drops it: no live token any more). So a busy caller (a gateway's token
asking once per request) never expires under load: every request in flight would miss at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from tokensmith.db.changes import Changes
from tokensmith.refresher import REFRESH_AHEAD

if TYPE_CHECKING:
    from tokensmith.verify.core import Identity

MAX_TTL: Final = 60.0


class _Unknown:
    """The cached answer "no live token has this digest"."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(slots=True)
class _Entry:
    identity: Identity
    fresh_until: float
    refresh_at: float
    refreshing: bool = False  # handed to ``refresh`` once; a renewal is a new entry


# What a background lookup renews: the entry as it was when the lookup was asked for.
Renewal = _Entry


class VerificationCache:
    def __init__(
        self,
        max_size: int = 10_000,
        ttl: float = 30.0,
        negative_max_size: int = 1_024,
        negative_ttl: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < ttl <= MAX_TTL:
            raise ValueError(f"cache ttl must be in (0, {MAX_TTL}] seconds")
        self.max_size = max_size
        self.ttl = ttl
        self.negative_max_size = negative_max_size
        self.negative_ttl = negative_ttl
        self._monotonic = monotonic
        self._positive: dict[str, _Entry] = {}
        self._negative: dict[str, float] = {}
        self._by_token: dict[int, set[str]] = {}
        self._by_user: dict[int, set[str]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        # Looks a digest up again in the background (``renewal``, then ``renew``); must not block.
        # Set by the verifier; None: entries just expire.
        self.refresh: Callable[[str], None] | None = None

    def __len__(self) -> int:
        return len(self._positive)

    @property
    def negative_size(self) -> int:
        return len(self._negative)

    def get(self, digest: str) -> Identity | _Unknown | None:
        """The cached Identity, UNKNOWN for a cached miss, or None when nothing fresh is cached."""
        # Lock-free read: single dict operations are atomic; a stale read only costs a lookup.
        entry = self._positive.get(digest)
        now = self._monotonic()
        if entry is not None:
            if now < entry.refresh_at:
                return entry.identity
            if now < entry.fresh_until:
                if not entry.refreshing and self.refresh is not None:
                    entry.refreshing = True  # once per entry (the refresher takes a key once)
                    self.refresh(digest)
                return entry.identity
            self._drop(digest)
            return None
        until = self._negative.get(digest)
        if until is not None:
            if now < until:
                return UNKNOWN
            with self._lock:
                self._negative.pop(digest, None)
        return None

    def put(self, digest: str, identity: Identity, generation: int) -> None:
        """Remember a verified identity, unless an invalidation happened since ``generation`` was read."""
        with self._lock:
            if generation != self.generation:
                return
            self._negative.pop(digest, None)
            self._remove(digest)
            while len(self._positive) >= self.max_size:
                self._remove(next(iter(self._positive)))
            self._add(digest, identity)

    def renewal(self, digest: str) -> Renewal | None:
        """The entry a background lookup of ``digest`` renews, read before the lookup; None when there
        is none to renew (dropped meanwhile)."""
        entry = self._positive.get(digest)
        return entry if entry is not None and entry.refreshing else None

    def renew(self, digest: str, renewal: Renewal, identity: Identity | None) -> None:
        """After a background lookup: a live ``identity`` is cached a whole ``ttl`` from now; None (no
        live token) drops the entry. Unless the entry was dropped or replaced since ``renewal`` (an
        invalidation: what was looked up may be older than it)."""
        with self._lock:
            if self._positive.get(digest) is not renewal:
                return
            self._remove(digest)
            if identity is not None:
                # Unchanged: the same identity, with the answers encoded for it (Identity.wire).
                self._add(digest, renewal.identity if identity == renewal.identity else identity)

    def _add(self, digest: str, identity: Identity) -> None:
        now = self._monotonic()
        self._positive[digest] = _Entry(identity, now + self.ttl, now + self.ttl * (1 - REFRESH_AHEAD))
        self._by_token.setdefault(identity.token_id, set()).add(digest)
        if identity.parent_token_id is not None:
            # A change to the parent (a revoked CLI login) must drop its derived tokens at once.
            self._by_token.setdefault(identity.parent_token_id, set()).add(digest)
        self._by_user.setdefault(identity.user_id, set()).add(digest)

    def put_unknown(self, digest: str, generation: int) -> None:
        """Remember that ``digest`` matched no live token (briefly; the set is small and bounded)."""
        with self._lock:
            if generation != self.generation:
                return
            self._negative.pop(digest, None)
            while len(self._negative) >= self.negative_max_size:
                del self._negative[next(iter(self._negative))]
            self._negative[digest] = self._monotonic() + self.negative_ttl

    def invalidate(self, changes: Changes) -> None:
        """Forget everything ``changes`` touched (or everything at all)."""
        with self._lock:
            self.generation += 1
            if changes.everything:
                self._clear()
                return
            for token_id in changes.token_ids:
                for digest in list(self._by_token.get(token_id, ())):
                    self._remove(digest)
            for user_id in changes.user_ids:
                for digest in list(self._by_user.get(user_id, ())):
                    self._remove(digest)
            for digest in changes.digests:
                self._remove(digest)
                self._negative.pop(digest, None)
            if changes.token_ids or changes.user_ids:
                # A refusal may have come from a disabled user or a since-changed token, and unknown
                # entries do not say whose they were: forget them all (few, and seconds-lived).
                self._negative.clear()

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._clear()

    def cached_token_ids(self) -> list[int]:
        with self._lock:
            return list(self._by_token)

    def _clear(self) -> None:
        self._positive.clear()
        self._negative.clear()
        self._by_token.clear()
        self._by_user.clear()

    def _drop(self, digest: str) -> None:
        with self._lock:
            self._remove(digest)

    def _remove(self, digest: str) -> None:
        entry = self._positive.pop(digest, None)
        if entry is None:
            return
        keys = [(self._by_token, entry.identity.token_id), (self._by_user, entry.identity.user_id)]
        if entry.identity.parent_token_id is not None:
            keys.append((self._by_token, entry.identity.parent_token_id))
        for index, key in keys:
            digests = index.get(key)
            if digests is not None:
                digests.discard(digest)
                if not digests:
                    del index[key]
