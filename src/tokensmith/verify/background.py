"""The verifier's background work: hearing other replicas, sweeping, and writing last-used times.

* On PostgreSQL, a thread LISTENs on a dedicated connection (outside the pool) and drops what
  other replicas changed, typically within milliseconds of their commit. If that connection
  breaks, notifications may have been missed: the whole cache is dropped and it reconnects.
* A periodic sweep (every ``sweep_interval`` seconds, any database) asks which cached tokens are
  no longer live, so a missed notification cannot keep a revoked token alive even for the TTL.
* Last-used times are flushed every ``flush_interval`` seconds (each token at most once a minute).
"""

from __future__ import annotations

import logging
import select as io_select
import socket
import threading

from sqlalchemy import select
from sqlalchemy.engine import make_url

from tokensmith.clock import Clock
from tokensmith.db.changes import CHANNEL, Changes
from tokensmith.db.database import Database
from tokensmith.db.models import Token
from tokensmith.tokens.liveness import live_token
from tokensmith.verify.cache import VerificationCache
from tokensmith.verify.feed import SQLiteChangeFeed
from tokensmith.verify.usage import UsageRecorder

log = logging.getLogger("tokensmith.verify")
_SWEEP_CHUNK = 500
_LISTEN_IDLE = 1.0  # seconds a listener sleeps at most without a notification or a wake-up (a safety net)


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq connection string for a raw psycopg connection."""
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


class Background:
    def __init__(
        self,
        database: Database,
        cache: VerificationCache,
        usage: UsageRecorder,
        clock: Clock,
        sweep_interval: float = 5.0,
        flush_interval: float = 1.0,
        feed: SQLiteChangeFeed | None = None,
    ) -> None:
        self.database = database
        self.feed = feed
        self.cache = cache
        self.usage = usage
        self.clock = clock
        self.sweep_interval = sweep_interval
        self.flush_interval = flush_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.listening = threading.Event()  # set once LISTEN is active (tests and health)
        self._wake: tuple[socket.socket, socket.socket] | None = None  # the listener's wake-up (start, stop)

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads.append(threading.Thread(target=self._maintain, name="tokensmith-verify-maintain", daemon=True))
        if self.database.engine.dialect.name == "postgresql":
            # The listener sleeps on its connection and on this pair, which stop() writes to: it ends at once
            # instead of at its next poll (a 0.2 s poll made every stop, each test app's included, wait for it).
            self._wake = socket.socketpair()
            self._threads.append(threading.Thread(target=self._listen, args=(self._wake[0],),
                                                  name="tokensmith-verify-listen", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop the threads, then write every pending last-used time."""
        self._stop.set()
        wake, self._wake = self._wake, None
        if wake is not None:
            wake[1].send(b"x")
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()
        if wake is not None:
            for end in wake:
                end.close()
        self.usage.flush(force=True)

    # --- threads -----------------------------------------------------------------------------

    def _maintain(self) -> None:
        since_sweep = 0.0
        while not self._stop.wait(self.flush_interval):
            self.usage.flush()
            since_sweep += self.flush_interval
            if since_sweep >= self.sweep_interval:
                since_sweep = 0.0
                try:
                    self.sweep()
                    if self.feed is not None:
                        self.feed.prune()
                except Exception as exc:
                    log.warning("verification cache sweep failed: %s", type(exc).__name__)

    def sweep(self) -> int:
        """Drop cached tokens that are no longer live in the database; returns how many."""
        cached = self.cache.cached_token_ids()
        dead: set[int] = set()
        for start in range(0, len(cached), _SWEEP_CHUNK):
            chunk = cached[start:start + _SWEEP_CHUNK]
            with self.database.engine.connect() as connection:
                alive = set(connection.scalars(
                    select(Token.id).where(Token.id.in_(chunk), live_token(self.clock.now()))
                ))
            dead |= set(chunk) - alive
        if dead:
            self.cache.invalidate(Changes(token_ids=dead))
        return len(dead)

    def _listen(self, wake: socket.socket) -> None:
        import psycopg

        dsn = libpq_dsn(self.database.url)
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    # Anything committed while we were not listening may have been missed.
                    self._publish(Changes(everything=True))
                    self.listening.set()
                    backoff = 0.2
                    while not self._stop.is_set():
                        for notice in connection.notifies(timeout=0):  # what has arrived, without waiting
                            self._publish(Changes.from_payload(notice.payload))
                        # Until the server sends more (or the connection breaks: then notifies() raises) or
                        # stop() writes to ``wake``.
                        io_select.select([connection.fileno(), wake.fileno()], [], [], _LISTEN_IDLE)
            except Exception as exc:
                self.listening.clear()
                self._publish(Changes(everything=True))
                log.warning("invalidation listener lost its connection (%s); reconnecting", type(exc).__name__)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.listening.clear()

    def _publish(self, changes: Changes) -> None:
        """What another replica committed, to every cache of this process (the database's change hub)."""
        self.database.changes.publish(changes)
