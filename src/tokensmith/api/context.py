"""The composition root: every collaborator of a running server, built once, typed, handed to the doors.

``create_app`` builds one :class:`AppContext` and keeps it on ``app.state.context``; doors reach it
through ``context_of(request)`` and hand its unit-of-work factory to the use-case layer
(``tokensmith.usecases``). Nothing else is kept on ``app.state`` by the application's own code
(the limiter, the trusted proxies and the shutdown hooks are the context's too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from tokensmith.accounts.service import AccountService
from tokensmith.audit.addresses import AddressBook
from tokensmith.clock import Clock
from tokensmith.clusters.service import ClusterService, VpcService
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.federation.exchange import FederationRuntime
from tokensmith.kube.callers import WebhookCallerCache
from tokensmith.kube.denials import DenialLog
from tokensmith.net.outbound import IPNetwork, OutboundPolicy
from tokensmith.objectstore.crypto import KeyRing, LazyKeyRing
from tokensmith.objectstore.keycache import AccessKeyCache
from tokensmith.objectstore.service import AccessKeyService
from tokensmith.ratelimit import FailureLimiter, Limits, parse_networks
from tokensmith.refresher import Refresher
from tokensmith.tokens.service import TokenService
from tokensmith.usecases.base import UnitOfWork, UnitsOfWork
from tokensmith.verify.cache import VerificationCache
from tokensmith.verify.core import Verifier


@dataclass
class Services:
    """The services of one unit of work, sharing one session and committed together (read paths)."""

    session: Session
    accounts: AccountService
    tokens: TokenService
    clusters: ClusterService
    vpcs: VpcService


@dataclass
class AppContext:
    settings: Settings
    database: Database
    clock: Clock
    secret_key: bytes
    verifier: Verifier
    keyring: KeyRing
    # What S3 SigV4 verification needs per access key in use (objectstore/keycache.py), invalidated
    # with the verifier's cache; ``access_key_cache.verify_cached`` answers a gateway from memory.
    access_key_cache: AccessKeyCache
    addresses: AddressBook  # first use of a token from a new IP (audit)
    denials: DenialLog  # TokenReview denials (audit, coalesced)
    outbound: OutboundPolicy  # where webhooks (and later JWKS fetches) may connect
    limiter: FailureLimiter  # brute-force limits of every door (api/guard.py)
    trusted_proxies: tuple[IPNetwork, ...]  # who may say who the client is (X-Forwarded-For)
    units: UnitsOfWork
    webhook_callers: WebhookCallerCache  # API servers' authenticated webhook credentials (kube/callers.py)
    # Run when the server stops gracefully: last-used flushes, coalesced denial counts, workers.
    shutdown_hooks: list[Callable[[], Any]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, database: Database, secret_key: bytes, clock: Clock) -> AppContext:
        keyring: KeyRing = LazyKeyRing(settings)  # the key file is read once, on first use
        outbound = OutboundPolicy(settings.webhook_allowed_networks)
        # JWKS fetches go through the same outbound address rules as webhooks.
        federation = FederationRuntime(outbound, allow_loopback_http=settings.allow_loopback_http_issuers)
        webhook_callers = WebhookCallerCache()
        unsubscribe = database.changes.subscribe(webhook_callers.invalidate)  # local commits and other processes'
        verifier = Verifier(database, secret_key, clock, VerificationCache(max_size=settings.verification_cache_size))
        access_key_cache = AccessKeyCache(max_size=settings.access_key_cache_size)
        # The database's change hub: this process's commits, other workers' (SQLite, looked for before
        # each answer through ``poll``) and other replicas' (PostgreSQL LISTEN/NOTIFY).
        unsubscribe_keys = database.changes.subscribe(access_key_cache.invalidate)
        access_key_cache.poll = verifier.hear_changes
        # A busy key's entry is renewed in the background before it expires (no wave of misses).
        key_refresher = Refresher(lambda key_id: _refresh_access_key(database, clock, keyring, access_key_cache,
                                                                     key_id), "tokensmith-access-key-refresh")
        access_key_cache.refresh = key_refresher.submit
        # Trust policy snapshots are dropped on every change this process commits or hears of; before
        # each exchange, other workers on the same SQLite file are asked, as before each verification.
        unwatch = federation.policies.watch(database.changes, verifier.hear_changes)
        context = cls(
            settings=settings, database=database, clock=clock, secret_key=secret_key,
            verifier=verifier, keyring=keyring, access_key_cache=access_key_cache, addresses=AddressBook(),
            denials=DenialLog(database, clock), outbound=outbound,
            limiter=FailureLimiter(database, clock, Limits(
                per_ip=settings.failures_per_ip, per_user=settings.failures_per_user,
                window_seconds=settings.failure_window_seconds, per_gateway=settings.failures_per_gateway)),
            trusted_proxies=parse_networks(settings.trusted_proxies),
            units=UnitsOfWork(database=database, clock=clock, secret_key=secret_key, keyring=keyring,
                              settings=settings, outbound=outbound, federation=federation),
            webhook_callers=webhook_callers,
        )
        context.shutdown_hooks.extend((unsubscribe, unsubscribe_keys, unwatch, key_refresher.stop))
        return context

    def unit_of_work(self) -> AbstractContextManager[UnitOfWork]:
        """One transaction for a use case (``tokensmith.usecases``)."""
        return self.units()

    @contextmanager
    def services(self) -> Iterator[Services]:
        """One transaction: committed when the block ends normally, rolled back on any error."""
        with self.database.session() as session:
            yield Services(
                session=session,
                accounts=AccountService(session, self.clock),
                tokens=TokenService(session, self.clock, self.secret_key),
                clusters=ClusterService(session, self.clock),
                vpcs=VpcService(session, self.clock),
            )


def _refresh_access_key(database: Database, clock: Clock, keyring: KeyRing, cache: AccessKeyCache,
                        key_id: str) -> None:
    with database.session() as session:
        AccessKeyService(session, clock, keyring, cache).refresh_cached(key_id)


def context_of(connection: HTTPConnection) -> AppContext:
    """The app's context, from any request or connection."""
    context: AppContext = connection.app.state.context
    return context
