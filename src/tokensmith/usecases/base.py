"""The unit of work and the ``@operation`` decorator every use case is declared with.

A use case is a function ``(uow, actor, ...) -> result``. Declaring it with ``@operation`` states,
once, the scope it needs, whether it manages credentials, and the audit action it records; the
decorator enforces all three on every call, whichever door made it:

    @operation("tokens:write", audit="token.deleted", manages_credentials=True)
    def delete_token(uow: UnitOfWork, actor: Actor, token_id: str) -> RevokedToken: ...

A state-changing operation that finishes without recording exactly one audit event raises
:class:`AuditMissing` (the transaction rolls back): a forgotten audit line fails loudly in the
tests instead of silently in production.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tokensmith import audit
from tokensmith.accounts.service import AccountService
from tokensmith.clock import Clock
from tokensmith.clusters.service import ClusterService, VpcService
from tokensmith.config import Settings
from tokensmith.db.database import Database, Transaction
from tokensmith.db.models import AuditEvent
from tokensmith.federation.exchange import FederationRuntime
from tokensmith.net.outbound import OutboundPolicy
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.tokens.service import TokenService
from tokensmith.usecases.actor import Actor

P = ParamSpec("P")
R = TypeVar("R")


class AuditMissing(RuntimeError):
    """A state-changing operation recorded no audit event, or more than one (a programming error)."""


class UnitOfWork:
    """One transaction and the domain services over it, plus the audit recorder.

    The transaction opens on first use (db/database.py, ``Transaction``): through ``session`` for
    nearly every operation, through ``connection`` alone for Core writes on a hot path (the token
    exchange), which then never pays for an ORM session it does not use.
    """

    def __init__(self, transaction: Transaction, *, clock: Clock, secret_key: bytes, keyring: KeyRing,
                 settings: Settings, database: Database, outbound: OutboundPolicy | None = None,
                 federation: FederationRuntime | None = None) -> None:
        self.transaction = transaction
        self.clock = clock
        self.secret_key = secret_key
        self.keyring = keyring
        self.settings = settings
        self.database = database
        self.outbound = outbound or OutboundPolicy()
        self.federation = federation or FederationRuntime(
            self.outbound, allow_loopback_http=settings.allow_loopback_http_issuers)
        self.recorded = 0

    @property
    def session(self) -> Session:
        return self.transaction.session

    @property
    def connection(self) -> Connection:
        """The transaction's connection, for Core statements."""
        return self.transaction.connection

    def rollback(self) -> None:
        """Undo what this unit wrote so far (a refusal found after a write); the unit may go on."""
        self.transaction.rollback()

    @functools.cached_property
    def accounts(self) -> AccountService:
        return AccountService(self.session, self.clock)

    @functools.cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.session, self.clock, self.secret_key)

    @functools.cached_property
    def clusters(self) -> ClusterService:
        return ClusterService(self.session, self.clock)

    @functools.cached_property
    def vpcs(self) -> VpcService:
        return VpcService(self.session, self.clock)

    def record(
        self, actor: Actor, action: str, *, target: str | None = None, details: Mapping[str, Any] | None = None,
        outcome: str = audit.SUCCESS, org_id: int | None = None, actor_user: str | None = None,
    ) -> AuditEvent:
        """Append the audit event of this operation, committed with it."""
        self.recorded += 1
        return audit.record(
            self.session, action, at=self.clock.now(), org_id=org_id if org_id is not None else actor.org_id,
            actor_user=actor_user if actor_user is not None else actor.username,
            actor_token=actor.token_public_id, client_ip=actor.request.client_ip,
            user_agent=actor.request.user_agent, target=target, outcome=outcome,
            details={**(details or {}), "via": actor.request.via},
        )

    def record_row(
        self, actor: Actor, action: str, *, target: str | None = None, details: Mapping[str, Any] | None = None,
        outcome: str = audit.SUCCESS, org_id: int | None = None, actor_user: str | None = None,
    ) -> None:
        """``record``, written as one Core INSERT (no ORM object): for hot paths. Counts the same."""
        self.recorded += 1
        audit.append(
            self.connection, action, at=self.clock.now(), org_id=org_id if org_id is not None else actor.org_id,
            actor_user=actor_user if actor_user is not None else actor.username,
            actor_token=actor.token_public_id, client_ip=actor.request.client_ip,
            user_agent=actor.request.user_agent, target=target, outcome=outcome,
            details={**(details or {}), "via": actor.request.via},
        )

    def record_apart(
        self, actor: Actor, action: str, *, outcome: str, details: Mapping[str, Any] | None = None,
        org_id: int | None = None, actor_user: str | None = None, target: str | None = None,
    ) -> None:
        """Record an event in its own transaction: a refusal's record survives the refusal's rollback."""
        with self.database.session() as session:
            audit.record(
                session, action, at=self.clock.now(), org_id=org_id, actor_user=actor_user,
                actor_token=actor.token_public_id, client_ip=actor.request.client_ip,
                user_agent=actor.request.user_agent, target=target, outcome=outcome,
                details={**(details or {}), "via": actor.request.via},
            )


@dataclass(frozen=True)
class OperationSpec:
    """What an operation declares about itself: the table the docs and the tests read."""

    name: str
    scope: str | None  # None: the operation authenticates its caller itself (password sign-in)
    audit: str | None  # the action it records; None for reads
    manages_credentials: bool

    @property
    def changes_state(self) -> bool:
        return self.audit is not None


class Operation(Generic[P, R]):
    """A declared use case: call it like the function it wraps, with a unit of work and an actor first."""

    def __init__(self, spec: OperationSpec, fn: Callable[Concatenate[UnitOfWork, Actor, P], R]) -> None:
        self.spec = spec
        self._fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, uow: UnitOfWork, actor: Actor, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.spec.scope is not None:
            actor.require(self.spec.scope)
        if self.spec.manages_credentials:
            actor.require_credential_management()
        before = uow.recorded
        result = self._fn(uow, actor, *args, **kwargs)
        if self.spec.changes_state and uow.recorded - before != 1:
            raise AuditMissing(f"{self.spec.name} recorded {uow.recorded - before} audit events, not 1")
        return result


def operation(
    scope: str | None, *, audit: str | None = None, manages_credentials: bool = False,
) -> Callable[[Callable[Concatenate[UnitOfWork, Actor, P], R]], Operation[P, R]]:
    """Declare a use case: the scope it needs, the audit action it records, whether it manages credentials."""

    def decorate(fn: Callable[Concatenate[UnitOfWork, Actor, P], R]) -> Operation[P, R]:
        name = f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}"
        return Operation(OperationSpec(name, scope, audit, manages_credentials), fn)

    return decorate


@dataclass(frozen=True)
class UnitsOfWork:
    """Makes units of work: what the composition root hands every door."""

    database: Database
    clock: Clock
    secret_key: bytes
    keyring: KeyRing
    settings: Settings
    outbound: OutboundPolicy | None = None
    federation: FederationRuntime | None = None  # the issuers' key cache, shared by every unit of work

    def __post_init__(self) -> None:
        if self.federation is None:  # one per factory, never one per unit of work: it is a cache
            runtime = FederationRuntime(self.outbound or OutboundPolicy(),
                                        allow_loopback_http=self.settings.allow_loopback_http_issuers)
            runtime.policies.watch(self.database.changes)  # this process's commits (no other process here)
            object.__setattr__(self, "federation", runtime)

    @contextmanager
    def __call__(self) -> Iterator[UnitOfWork]:
        """One transaction: committed when the block ends normally, rolled back on any error."""
        with self.database.transaction() as transaction:
            yield UnitOfWork(transaction, clock=self.clock, secret_key=self.secret_key, keyring=self.keyring,
                             settings=self.settings, database=self.database, outbound=self.outbound,
                             federation=self.federation)
