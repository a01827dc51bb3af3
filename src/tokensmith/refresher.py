"""Background reads that renew a cache entry before it expires, so a busy entry never expires under load.

A cache whose entries live ``ttl`` seconds hands the key of an entry answered in its last quarter to
``Refresher.submit`` (once per entry), goes on answering from it, and the read done here renews it
(verify/cache.py, objectstore/keycache.py). Without it every request in flight when a busy entry
expired missed at once: with 32 concurrent requests, 32 reads on the slow way and a stall of every
answer behind them, once per ``ttl``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("tokensmith.cache")
# An entry answered when less than this part of its life is left is read again in the background.
REFRESH_AHEAD = 0.25


class Refresher:
    """Runs ``read(key)`` for each submitted key, one after another, on a thread of its own (started on
    the first), so the event loop that submitted never waits for a database read. A key already
    waiting or being read is not taken again: the caches may ask from several threads at once."""

    def __init__(self, read: Callable[[str], None], name: str) -> None:
        self._read = read
        self._name = name
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending: set[str] = set()  # submitted and not yet read

    def submit(self, key: str) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
        self._queue.put(key)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout=5)

    def _run(self) -> None:
        while (key := self._queue.get()) is not None:
            try:
                self._read(key)
            except Exception as exc:  # the entry expires as it would have; the next request reads it
                log.warning("%s: a refresh failed: %s", self._name, type(exc).__name__)
            finally:
                with self._lock:
                    self._pending.discard(key)
