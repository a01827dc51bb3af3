"""``last_used_at``, ``last_used_ip`` and hourly use counts without a database write per request.

Each verification only notes (time, ip) and one more use in its hour, in memory. ``flush()``
writes what is due: a token is written at most once per ``interval`` (a minute), with its latest
use; ``flush(force=True)`` writes everything still pending (on shutdown). Writes go through
SQLAlchemy Core, not the ORM, so they never look like a change that should invalidate cached verifications.

Hourly counts (``token_usage_hours``) are written in the same transaction, at most once per
``interval`` (and on ``force``), as one batched upsert that adds to what is stored: replicas sum up.
``record`` stays lock-free: it adds to the current counts dict, which ``flush`` swaps for a fresh one
and writes one flush later, when no ``record`` that began before the swap can still be adding to it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Token, TokenUsageHour
from tokensmith.errors import InvalidInput

log = logging.getLogger("tokensmith.verify")
INTERVAL = timedelta(minutes=1)
_tokens = cast(Table, Token.__table__)  # a mapped class's table is a Table
_WRITE = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("token_id"))
    .values(last_used_at=bindparam("used_at"), last_used_ip=bindparam("used_ip"))
)
HOUR_SECONDS = 3600
# Hourly buckets are kept this long (what GET /v1/tokens/{id}/usage may ask for); older ones are
# deleted by the flush that writes counts, at most once an hour per replica.
RETENTION = timedelta(days=90)
PRUNE_EVERY = timedelta(hours=1)
_usage = cast(Table, TokenUsageHour.__table__)


def hour_of(index: int) -> datetime:
    """The start of the UTC hour number ``index`` (hours since the epoch)."""
    return datetime.fromtimestamp(index * HOUR_SECONDS, UTC)


def _hour_window(now: datetime) -> tuple[datetime, datetime, int]:
    """The UTC hour ``now`` falls in: its start, its end and its index (hours since the epoch)."""
    index = int(now.timestamp()) // HOUR_SECONDS
    return hour_of(index), hour_of(index + 1), index


def _add_counts(dialect: str) -> Any:
    """INSERT ... ON CONFLICT (token_id, hour) DO UPDATE SET count = count + excluded.count."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(_usage).values(token_id=bindparam("token_id"), hour=bindparam("hour"),
                                      count=bindparam("count"))
    return statement.on_conflict_do_update(
        index_elements=[_usage.c.token_id, _usage.c.hour],
        set_={"count": _usage.c.count + statement.excluded.count},
    )


class UsageRecorder:
    def __init__(self, database: Database, clock: Clock, interval: timedelta = INTERVAL) -> None:
        self.database = database
        self.clock = clock
        self.interval = interval
        self._pending: dict[int, tuple[datetime, str | None]] = {}
        self._written_at: dict[int, datetime] = {}
        self._lock = threading.Lock()
        # (token id, hour index) -> uses: current (record adds), retired (swapped out by the last
        # flush), unwritten (owned by flush, under the lock; kept when a write fails).
        self._counts: dict[tuple[int, int], int] = {}
        self._retired: dict[tuple[int, int], int] = {}
        self._unwritten: dict[tuple[int, int], int] = {}
        self._counts_written_at: datetime | None = None
        self._pruned_at: datetime | None = None
        self._hour = _hour_window(clock.now())  # (start, end, index) of the hour record() last saw

    def record(self, token_id: int, ip: str | None, now: datetime | None = None) -> None:
        """Note a use of ``token_id`` at ``now`` (default: the clock's), from ``ip`` (None when unknown); no I/O."""
        now = now or self.clock.now()
        pending = self._pending.get(token_id)
        # Keep the last known address when a later use (e.g. a webhook) does not know one.
        self._pending[token_id] = (now, ip if ip is not None or pending is None else pending[1])
        hour = self._hour
        if not hour[0] <= now < hour[1]:  # datetime.timestamp() costs most of a record(): once an hour
            hour = self._hour = _hour_window(now)
        counts = self._counts  # one read: a concurrent flush may swap the attribute meanwhile
        key = (token_id, hour[2])
        counts[key] = counts.get(key, 0) + 1

    def _take_counts(self, force: bool) -> None:
        """Move counts no ``record`` can still be adding to into ``_unwritten`` (call under the lock)."""
        settled = [self._retired]
        self._retired, self._counts = self._counts, {}
        if force:  # shutdown: the counts just swapped out go too (no request is being served)
            settled.append(self._retired)
            self._retired = {}
        for part in settled:
            for key, count in part.items():
                self._unwritten[key] = self._unwritten.get(key, 0) + count

    def flush(self, force: bool = False) -> int:
        """Write due uses (and, once per interval, hourly counts) in one transaction; returns tokens written."""
        now = self.clock.now()
        with self._lock:
            self._take_counts(force)
            due = {
                token_id: use for token_id, use in list(self._pending.items())
                if force or token_id not in self._written_at or now - self._written_at[token_id] >= self.interval
            }
            counts_due = bool(self._unwritten) and (
                force or self._counts_written_at is None or now - self._counts_written_at >= self.interval)
            if not due and not counts_due:
                return 0
            rows = [{"token_id": t, "used_at": at, "used_ip": ip} for t, (at, ip) in due.items()]
            counted = dict(self._unwritten) if counts_due else {}
            prune = bool(counted) and (self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY)
            try:
                with self.database.engine.begin() as connection:
                    if rows:
                        connection.execute(_WRITE, rows)
                    if counted:
                        connection.execute(_add_counts(connection.dialect.name), [
                            {"token_id": t, "hour": hour_of(h), "count": n} for (t, h), n in sorted(counted.items())
                        ])
                    if prune:
                        connection.execute(delete(_usage).where(_usage.c.hour < now - RETENTION))
            except Exception as exc:  # keep them pending; the next flush retries
                log.warning("could not record token use: %s", type(exc).__name__)
                return 0
            if counted:
                self._unwritten = {}
                self._counts_written_at = now
            if prune:
                self._pruned_at = now
            for token_id, use in due.items():
                if self._pending.get(token_id) == use:
                    del self._pending[token_id]
                self._written_at[token_id] = now
            # Forget write times older than the interval: the map stays as small as recent traffic.
            if len(self._written_at) > 10_000:
                self._written_at = {t: w for t, w in self._written_at.items() if now - w < self.interval}
            return len(rows)


# --- reading ---------------------------------------------------------------------------------

MAX_HOURS = RETENTION // timedelta(hours=1)  # what GET /v1/tokens/{id}/usage may ask for


@dataclass(frozen=True)
class Usage:
    """A token's verifications per hour over a window ending with the current hour."""

    hours: list[tuple[datetime, int]]  # every hour of the window, oldest first, zeros included
    last_used_at: datetime | None
    unused_days: int  # whole days since the last use (since creation when never used)

    @property
    def total(self) -> int:
        return sum(count for _, count in self.hours)


def read_usage(session: Session, token: Token, now: datetime, hours: int = 24) -> Usage:
    """``token``'s stored hourly counts for the ``hours`` hours up to and including the current one.

    Counts still in a replica's memory (at most one flush interval, a minute) are not yet included.
    """
    if not 1 <= hours <= MAX_HOURS:
        raise InvalidInput(f"hours must be between 1 and {MAX_HOURS}", "hours")
    first = int(now.timestamp()) // HOUR_SECONDS - hours + 1
    counts = hourly_counts(session, [token.id], now, hours)[token.id]
    window = [(hour_of(first + i), count) for i, count in enumerate(counts)]
    return Usage(window, token.last_used_at, unused_days(token, now))


def unused_days(token: Token, now: datetime) -> int:
    """Whole days since ``token`` was last used (since it was created, if never)."""
    return max(0, (now - (token.last_used_at or token.created_at)).days)


def hourly_counts(session: Session, token_ids: list[int], now: datetime, hours: int) -> dict[int, list[int]]:
    """Each token's counts for the ``hours`` hours up to now, oldest first, in one query (the console's charts)."""
    current = int(now.timestamp()) // HOUR_SECONDS
    first = current - hours + 1
    result = {token_id: [0] * hours for token_id in token_ids}
    if not token_ids:
        return result
    rows = session.execute(
        select(_usage.c.token_id, _usage.c.hour, _usage.c.count)
        .where(_usage.c.token_id.in_(token_ids), _usage.c.hour >= hour_of(first), _usage.c.hour <= hour_of(current))
    )
    for token_id, hour, count in rows:
        result[token_id][int(hour.timestamp()) // HOUR_SECONDS - first] = int(count)
    return result
