"""Memory of authenticated webhook credentials, so a cached TokenReview needs no database.

An API server presents the same webhook credential on every review; looking it up costs an ORM
session and a query per review, more than the review itself. This cache keeps, per credential
digest (never the secret), what a review needs to know about its caller: the credential, its
cluster, the cluster's audience and user name prefix. It is filled by the slow path after a
successful authentication and read by the TokenReview fast path (api/fastpath.py).

Invalidation follows the verification cache's rules: entries live at most ``ttl`` seconds (≤ 60);
a revoked or changed credential (``Changes.webhook_credential_ids``) and any cluster change
(``Changes.everything``) drop them at once, in this process and, through the database's change hub,
in every worker and replica. ``last_used_at`` keeps its minute precision: an entry is only served
while its credential's last use was noted less than ``LAST_USED_PRECISION`` ago, after which one
review takes the slow path, which writes it and refills the entry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from tokensmith import secrets
from tokensmith.db.changes import Changes
from tokensmith.kube.webhooks import LAST_USED_PRECISION


@dataclass(frozen=True, slots=True)
class WebhookCaller:
    """An API server authenticated by a live webhook credential of ``cluster_public_id``."""

    credential_id: int
    credential_public_id: str
    cluster_id: int
    cluster_public_id: str
    cluster_name: str
    org_id: int
    token_audience: str
    username_prefix: str
    last_used_at: datetime  # as written by the slow path that filled this entry

    def names(self, cluster_ref: str) -> bool:
        """Whether ``cluster_ref`` (a cluster id or name, as in the URL) is this caller's cluster."""
        return cluster_ref == self.cluster_public_id or cluster_ref == self.cluster_name


class WebhookCallerCache:
    def __init__(self, max_size: int = 1_024, ttl: float = 30.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.max_size = max_size
        self.ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[str, tuple[WebhookCaller, float]] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> WebhookCaller | None:
        """The caller behind ``digest`` while fresh; None when the slow path must decide."""
        entry = self._entries.get(digest)  # lock-free read: a stale read only costs a lookup
        if entry is None:
            return None
        if self._monotonic() >= entry[1]:
            with self._lock:
                self._entries.pop(digest, None)
            return None
        return entry[0]

    def recall(self, secret: str, secret_key: bytes, now: datetime) -> WebhookCaller | None:
        """The cached caller presenting ``secret``, if its last use was noted within the minute.

        None (the slow path decides, and notes the use) for anything else: a malformed or unknown
        credential, an entry gone stale, or one whose ``last_used_at`` is due to be written again.
        """
        try:  # only authenticated (so well-formed) credentials are ever cached: no checksum check here
            caller = self.get(secrets.digest(secret, secret_key))
        except UnicodeEncodeError:
            return None
        if caller is None or now - caller.last_used_at >= LAST_USED_PRECISION:
            return None
        return caller

    def put(self, digest: str, caller: WebhookCaller, generation: int) -> None:
        """Remember ``caller``, unless something was invalidated since ``generation`` was read."""
        with self._lock:
            if generation != self.generation:
                return
            self._entries.pop(digest, None)
            while len(self._entries) >= self.max_size:
                del self._entries[next(iter(self._entries))]
            self._entries[digest] = (caller, self._monotonic() + self.ttl)

    def invalidate(self, changes: Changes) -> None:
        """Forget the credentials ``changes`` touched; everything on a cluster change or "everything"."""
        if not (changes.everything or changes.webhook_credential_ids):
            return
        with self._lock:
            self.generation += 1
            if changes.everything:
                self._entries.clear()
                return
            for digest, (caller, _until) in list(self._entries.items()):
                if caller.credential_id in changes.webhook_credential_ids:
                    del self._entries[digest]
