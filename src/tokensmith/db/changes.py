"""Which tokens, users, webhook credentials and S3 access keys a transaction changed, told to whoever
caches verification results.

Hooked on SQLAlchemy's Session events for every session of the process, so no service has to
remember to invalidate anything: a revocation, a rotation, a leak report, a grant change, a user
disabled or demoted — any write to a Token or User row through the ORM is seen here.

* ``after_flush`` collects the ids (and, for tokens, the digests) of changed rows, and on PostgreSQL
  queues ``pg_notify`` in the same transaction: the notification is delivered on commit only, so a
  rolled-back change never invalidates anything on other replicas.
  On SQLite, a ``verification_changes`` row is written in the transaction instead, for the other
  worker processes on the same file (verify/feed.py).
* ``after_commit`` tells this process's subscribers at once; ``after_rollback`` forgets.
* ORM bulk UPDATE/DELETE on those tables, and any change to clusters (grants cascade from them),
  invalidate everything: their rows are not known one by one. A bulk UPDATE/DELETE of access keys
  (the keys a deleted token minted, a deleted service account's keys) drops every cached access
  key (``all_access_keys``) but no token: S3 keys are their own, much smaller cache.
* A change to a trust policy or an organization's policy sets ``federation``: the exchange's cache
  of policies (federation/exchange.py) drops what it holds; so does any change to a user (a service
  account disabled, deleted) and ``everything``.

Writes that do not concern verification (``last_used_at``/``last_used_ip``) are ignored.

Each ``Database`` owns one ``ChangeFeed``: the hub every cache subscribes to. It publishes this
process's commits and, re-published by verify/feed.py (SQLite workers) and verify/background.py
(PostgreSQL replicas), what other processes committed, so a cache subscribes once and hears both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy import Table, event, insert, inspect, text
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from tokensmith.db.models import (
    AccessKey,
    Cluster,
    OrgPolicy,
    Token,
    TrustPolicy,
    User,
    VerificationChange,
    WebhookCredential,
    token_clusters,
    trust_policy_clusters,
)

CHANNEL: Final = "tokensmith_invalidate"
_KEY: Final = "tokensmith.changes"
# Columns whose writes never change what a verification answers.
_IRRELEVANT: Final = {Token: frozenset({"last_used_at", "last_used_ip"}), User: frozenset({"password_hash"}),
                      WebhookCredential: frozenset({"last_used_at"}), AccessKey: frozenset({"name"})}
# pg_notify payloads are limited to 8000 bytes; beyond this many ids we just say "everything".
_MAX_IDS_PER_NOTICE: Final = 500


@dataclass
class Changes:
    """What one transaction changed. ``everything`` means: drop it all."""

    token_ids: set[int] = field(default_factory=set)
    user_ids: set[int] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)
    webhook_credential_ids: set[int] = field(default_factory=set)  # a revoked or changed webhook credential
    everything: bool = False
    # S3 access key ids (the public TSMP…/TSTM… strings) whose row changed; all_access_keys: every cached
    # key (a bulk statement on the table). Keys minted by a changed token or owned by a changed user
    # are dropped through token_ids/user_ids (objectstore/keycache.py), so they need not be listed.
    access_key_ids: set[str] = field(default_factory=set)
    all_access_keys: bool = False
    federation: bool = False  # a trust policy or an organization's policy changed

    def __bool__(self) -> bool:
        return self.everything or self.all_access_keys or self.federation or bool(
            self.token_ids or self.user_ids or self.digests or self.webhook_credential_ids or self.access_key_ids)

    @property
    def touches_federation(self) -> bool:
        """Whether what a token exchange reads may have changed (policies, a service account, clusters)."""
        return self.everything or self.federation or bool(self.user_ids)

    def merge(self, other: Changes) -> None:
        self.token_ids |= other.token_ids
        self.user_ids |= other.user_ids
        self.digests |= other.digests
        self.webhook_credential_ids |= other.webhook_credential_ids
        self.everything = self.everything or other.everything
        self.access_key_ids |= other.access_key_ids
        self.all_access_keys = self.all_access_keys or other.all_access_keys
        self.federation = self.federation or other.federation

    def to_payload(self) -> str:
        count = len(self.token_ids) + len(self.user_ids) + len(self.digests) + len(self.webhook_credential_ids) \
            + len(self.access_key_ids)
        if self.everything or count > _MAX_IDS_PER_NOTICE:
            return json.dumps({"all": True})
        payload: dict[str, Any] = {"t": sorted(self.token_ids), "u": sorted(self.user_ids), "d": sorted(self.digests)}
        if self.webhook_credential_ids:  # only when set: a payload older code reads the same way
            payload["w"] = sorted(self.webhook_credential_ids)
        if self.access_key_ids:  # likewise: older readers ignore "k"/"K" (they cache no access keys)
            payload["k"] = sorted(self.access_key_ids)
        if self.all_access_keys:
            payload["K"] = True
        if self.federation:
            payload["f"] = True
        return json.dumps(payload)

    @classmethod
    def from_payload(cls, payload: str) -> Changes:
        """Parse a notification; anything unreadable means "everything" (fail safe, not open)."""
        try:
            data = json.loads(payload)
            if data.get("all"):
                return cls(everything=True)
            return cls(
                token_ids={int(i) for i in data.get("t", ())},
                user_ids={int(i) for i in data.get("u", ())},
                digests={str(d) for d in data.get("d", ())},
                webhook_credential_ids={int(i) for i in data.get("w", ())},
                access_key_ids={str(k) for k in data.get("k", ())},
                all_access_keys=bool(data.get("K", False)),
                federation=bool(data.get("f", False)),
            )
        except (ValueError, TypeError, AttributeError):
            return cls(everything=True)


Subscriber = Callable[[Changes], None]
# Where a session finds the feed of its database (``Database`` puts it into every session's info).
FEED_KEY = "tokensmith.change_feed"


class ChangeFeed:
    """One database's subscribers to its committed changes (each ``Database`` owns one)."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every change to tokens, users, clusters, webhook credentials, access
        keys or trust policies, committed here or heard from another process; returns unsubscribe."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, changes: Changes) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            subscriber(changes)


_FEDERATION: Final = (TrustPolicy, OrgPolicy)


def _relevant_change(obj: Any) -> bool:
    ignored = _IRRELEVANT.get(type(obj), frozenset())
    state = inspect(obj)
    return any(attr.key not in ignored and attr.history.has_changes() for attr in state.attrs)


def _pending(session: Session) -> Changes:
    return session.info.setdefault(_KEY, Changes())


@event.listens_for(Session, "after_flush")
def _collect(session: Session, _flush: UOWTransaction) -> None:
    found = Changes()
    for obj in session.new:
        if isinstance(obj, Token):
            # A new token's digest may sit in a negative cache ("unknown") somewhere.
            found.digests.add(obj.secret_digest)
    # Trust policies are created and deleted, never edited; an organization's policy is edited.
    found.federation = any(isinstance(obj, _FEDERATION) for obj in (*session.new, *session.dirty, *session.deleted))
    for obj in session.dirty:
        if isinstance(obj, Token) and _relevant_change(obj):
            found.token_ids.add(obj.id)
            if obj.secret_digest:
                found.digests.add(obj.secret_digest)
        elif isinstance(obj, User) and _relevant_change(obj):
            found.user_ids.add(obj.id)
        elif isinstance(obj, Cluster) and _relevant_change(obj):
            found.everything = True
        elif isinstance(obj, WebhookCredential) and _relevant_change(obj):
            found.webhook_credential_ids.add(obj.id)
        elif isinstance(obj, AccessKey) and _relevant_change(obj):
            found.access_key_ids.add(obj.access_key_id)
    for obj in session.deleted:
        if isinstance(obj, Token):
            found.token_ids.add(obj.id)
        elif isinstance(obj, User):
            found.user_ids.add(obj.id)
        elif isinstance(obj, Cluster):
            found.everything = True
        elif isinstance(obj, WebhookCredential):
            found.webhook_credential_ids.add(obj.id)
        elif isinstance(obj, AccessKey):
            found.access_key_ids.add(obj.access_key_id)
    if found:
        _pending(session).merge(found)
        _notify_in_transaction(session, found)


@event.listens_for(Session, "do_orm_execute")
def _bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    tables = {getattr(m, "local_table", None) for m in state.all_mappers}
    table = getattr(state.statement, "table", None)
    if table is not None:
        tables.add(table)
    if tables & {Token.__table__, User.__table__, Cluster.__table__, token_clusters, WebhookCredential.__table__}:
        found = Changes(everything=True)
    elif AccessKey.__table__ in tables:
        found = Changes(all_access_keys=True)
    elif tables & {TrustPolicy.__table__, OrgPolicy.__table__, trust_policy_clusters}:
        found = Changes(federation=True)
    else:
        return
    _pending(state.session).merge(found)
    _notify_in_transaction(state.session, found)


def _notify_in_transaction(session: Session, found: Changes) -> None:
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Transactional: delivered to listeners at COMMIT, dropped on ROLLBACK.
        connection.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL,
                                                                          "payload": found.to_payload()})
    elif connection.dialect.name == "sqlite":
        # The same for other processes on this database file (serve --workers N): a row committed
        # with the change, read by their verify/feed.py when PRAGMA data_version moves.
        connection.execute(insert(cast(Table, VerificationChange.__table__)).values(
            at=datetime.now(UTC), payload=found.to_payload()))


@event.listens_for(Session, "after_commit")
def _deliver(session: Session) -> None:
    changes: Changes | None = session.info.pop(_KEY, None)
    if not changes:
        return
    feed: ChangeFeed | None = session.info.get(FEED_KEY)
    if feed is not None:
        feed.publish(changes)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_KEY, None)
