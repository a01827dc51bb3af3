"""Brute-force limits: failed authentications counted per client IP (and per user name for passwords).

Only failures are counted, in fixed windows stored in the database, so every replica sees the same
totals. A request with a valid credential never touches the counters. A client over its limit is
refused with 429 before the expensive path (database lookup, argon2): locally from a small cache
learned when its failure was recorded, and for password sign-in also from the shared counters.

Three kinds of key (docs/threat-model.md, "Brute force"):

* ``ip:<address>`` - one client (the TCP peer, or the original client a trusted proxy forwarded);
  ``per_ip`` failures per window, then that client is refused outright.
* ``user:<hash>`` - one user name at password sign-in; ``per_user``.
* ``via:<intermediary>`` - a proxy, gateway or API server that speaks for many clients (a
  forward-auth proxy that named no client, an introspection or TokenReview caller). Its ceiling
  ``per_gateway`` is much higher, and the doors never refuse it outright: over the ceiling they
  answer from the verification cache only (tokens in use keep passing, unknown ones no longer
  reach the database). 0 turns these keys off.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import AuthFailure
from tokensmith.errors import TokensmithError

# Old windows are swept now and then, not on every failure.
SWEEP_EVERY = 200
MAX_BLOCKED_ENTRIES = 10_000
# A user name under lockout is refused from every address past this many times its limit.
USER_HARD_FACTOR = 10


class RateLimited(TokensmithError):
    """Too many failed authentications from this client; try again after ``retry_after`` seconds."""

    status = 429
    title = "Too many requests"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed authentication attempts; retry after {retry_after} s")
        self.retry_after = retry_after


def parse_networks(entries: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """TOKENSMITH_TRUSTED_PROXIES entries (addresses or CIDRs); ValueError naming a bad one."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"TOKENSMITH_TRUSTED_PROXIES: {entry!r} is not an IP address or network") from None
    return tuple(networks)


def client_ip(peer: str | None, forwarded_for: str | None,
              trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy.

    Behind trusted proxies, X-Forwarded-For is read from the right, skipping trusted hops: the
    first untrusted address is the client (anything left of it could be forged by the client).
    """
    address = peer or "unknown"
    if not trusted or not forwarded_for or not is_trusted(address, trusted):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not is_trusted(hop, trusted):
            return hop if _is_ip(hop) else address
        address = hop
    return address


@functools.lru_cache(maxsize=4096)
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)  # parsing an address costs tens of µs; the same few repeat
def is_trusted(address: str, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def ip_key(ip: str) -> str:
    return f"ip:{ip}"[:200]


def via_key(intermediary: str) -> str:
    return f"via:{intermediary}"[:200]


def user_key(username: str) -> str:
    # Hashed: people sometimes type a password into the user name field.
    return "user:" + hashlib.sha256(username.strip().lower().encode()).hexdigest()[:40]


@dataclass(frozen=True)
class Limits:
    per_ip: int = 30
    per_user: int = 10
    window_seconds: int = 60
    per_gateway: int = 600  # 0: intermediaries are not counted at all


class FailureLimiter:
    def __init__(self, database: Database, clock: Clock, limits: Limits) -> None:
        self.database = database
        self.clock = clock
        self.limits = limits
        self._blocked: dict[str, datetime] = {}  # key -> end of the window it is blocked in
        self._lock = threading.Lock()
        self._recorded = 0

    def _window(self) -> tuple[datetime, datetime]:
        now = self.clock.now()
        seconds = self.limits.window_seconds
        start = datetime.fromtimestamp(math.floor(now.timestamp() / seconds) * seconds, UTC)
        return start, start + timedelta(seconds=seconds)

    def _retry_after(self, until: datetime) -> int:
        return max(1, math.ceil((until - self.clock.now()).total_seconds()))

    def _limit(self, key: str) -> int:
        if key.startswith("user:"):
            return self.limits.per_user
        if key.startswith("via:"):
            return self.limits.per_gateway
        return self.limits.per_ip

    def counts(self, key: str) -> bool:
        """Whether failures of ``key`` are counted at all (intermediaries can be switched off)."""
        return self._limit(key) > 0

    def limited(self, key: str) -> RateLimited:
        """The refusal for ``key`` (just found over its limit): retry when its window ends."""
        return RateLimited(self._retry_after(self._blocked.get(key) or self._window()[1]))

    def blocked_local(self, key: str) -> int | None:
        """Seconds until ``key`` may try again, if this process knows it is over its limit (no I/O)."""
        try:
            self.check_local(key)
        except RateLimited as limited:
            return limited.retry_after
        return None

    def check_local(self, *keys: str) -> None:
        """Raise RateLimited if this process already knows one of ``keys`` is over its limit (no I/O)."""
        if not self._blocked:
            return
        now = self.clock.now()
        with self._lock:
            for key in keys:
                until = self._blocked.get(key)
                if until is not None:
                    if until > now:
                        raise RateLimited(self._retry_after(until))
                    del self._blocked[key]

    def check_shared(self, *keys: str) -> None:
        """Raise RateLimited if any of ``keys`` is over its limit on the shared counters (one query)."""
        self.check_local(*keys)
        start, end = self._window()
        with self.database.session() as session:
            rows = session.execute(
                select(AuthFailure.key, AuthFailure.count)
                .where(AuthFailure.key.in_(keys), AuthFailure.window_start == start)
            ).all()
        for key, count in rows:
            if count >= self._limit(key):
                self._block(key, end)
                raise RateLimited(self._retry_after(end))

    def check_password(self, ip: str, user: str) -> int | None:
        """Before a password check: raise RateLimited, or let it through (one query, shared counters).

        Knowing a user name must not be enough to lock its owner out. So once the user name is over
        its limit, an address with no failure of its own in this window may still try: the owner
        signing in from their usual place gets in. Guessing stays bounded: each address is counted
        (one failure and it is refused too), and past ``USER_HARD_FACTOR`` times the limit the name
        is refused everywhere. Returns the user name's failure count when the attempt passes a
        lockout (the caller tells the owner on success), else None.
        """
        self.check_local(ip)
        start, end = self._window()
        with self.database.session() as session:
            counts = dict(session.execute(
                select(AuthFailure.key, AuthFailure.count)
                .where(AuthFailure.key.in_((ip, user)), AuthFailure.window_start == start)
            ).all())
        if counts.get(ip, 0) >= self._limit(ip):
            self._block(ip, end)
            raise RateLimited(self._retry_after(end))
        failures = counts.get(user, 0)
        if failures < self.limits.per_user:
            return None
        if counts.get(ip, 0) > 0 or failures >= self.limits.per_user * USER_HARD_FACTOR:
            raise RateLimited(self._retry_after(end))
        return failures

    def record_failure(self, *keys: str) -> None:
        """Count one failure against each key; raise RateLimited once a key has exceeded its limit."""
        if self.count_failure(*keys):
            raise RateLimited(self._retry_after(self._window()[1]))

    def count_failure(self, *keys: str) -> list[str]:
        """Count one failure against each counted key; the keys now over their limit (blocked locally)."""
        start, end = self._window()
        over = []
        with self.database.session() as session:
            for key in keys:
                if not self.counts(key):
                    continue
                count = session.execute(self._upsert(key, start)).scalar_one()
                if count > self._limit(key):
                    self._block(key, end)
                    over.append(key)
            self._recorded += 1
            if self._recorded % SWEEP_EVERY == 0:
                session.execute(delete(AuthFailure).where(AuthFailure.window_start < start))
        return over

    def _upsert(self, key: str, start: datetime):
        insert = pg_insert if self.database.engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(AuthFailure).values(key=key, window_start=start, count=1)
        return statement.on_conflict_do_update(
            index_elements=[AuthFailure.key, AuthFailure.window_start],
            set_={"count": AuthFailure.count + 1},
        ).returning(AuthFailure.count)

    def _block(self, key: str, until: datetime) -> None:
        with self._lock:
            if len(self._blocked) >= MAX_BLOCKED_ENTRIES:  # bounded: drop the lot rather than grow
                self._blocked.clear()
            self._blocked[key] = until
