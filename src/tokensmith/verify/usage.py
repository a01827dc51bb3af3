"""``last_used_at`` and ``last_used_ip`` without a database write per request.

Each verification only notes (time, ip) in memory. ``flush()`` writes what is due: a token is
written at most once per ``interval`` (a minute), with its latest use; ``flush(force=True)``
writes everything still pending (on shutdown). Writes go through SQLAlchemy Core, not the ORM,
so they never look like a change that should invalidate cached verifications.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, update

from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Token

log = logging.getLogger("tokensmith.verify")
INTERVAL = timedelta(minutes=1)
_tokens = cast(Table, Token.__table__)  # a mapped class's table is a Table
_WRITE = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("token_id"))
    .values(last_used_at=bindparam("used_at"), last_used_ip=bindparam("used_ip"))
)


class UsageRecorder:
    def __init__(self, database: Database, clock: Clock, interval: timedelta = INTERVAL) -> None:
        self.database = database
        self.clock = clock
        self.interval = interval
        self._pending: dict[int, tuple[datetime, str | None]] = {}
        self._written_at: dict[int, datetime] = {}
        self._lock = threading.Lock()

    def record(self, token_id: int, ip: str | None, now: datetime | None = None) -> None:
        """Note a use of ``token_id`` at ``now`` (default: the clock's), from ``ip`` (None when unknown); no I/O."""
        now = now or self.clock.now()
        pending = self._pending.get(token_id)
        # Keep the last known address when a later use (e.g. a webhook) does not know one.
        self._pending[token_id] = (now, ip if ip is not None or pending is None else pending[1])

    def flush(self, force: bool = False) -> int:
        """Write due uses in one batch; returns how many tokens were written."""
        now = self.clock.now()
        with self._lock:
            due = {
                token_id: use for token_id, use in list(self._pending.items())
                if force or token_id not in self._written_at or now - self._written_at[token_id] >= self.interval
            }
            if not due:
                return 0
            rows = [{"token_id": t, "used_at": at, "used_ip": ip} for t, (at, ip) in due.items()]
            try:
                with self.database.engine.begin() as connection:
                    connection.execute(_WRITE, rows)
            except Exception as exc:  # keep them pending; the next flush retries
                log.warning("could not record token use: %s", type(exc).__name__)
                return 0
            for token_id, use in due.items():
                if self._pending.get(token_id) == use:
                    del self._pending[token_id]
                self._written_at[token_id] = now
            # Forget write times older than the interval: the map stays as small as recent traffic.
            if len(self._written_at) > 10_000:
                self._written_at = {t: w for t, w in self._written_at.items() if now - w < self.interval}
            return len(rows)
