"""What a running server holds: settings, database, clock, server key and the verifier."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy.orm import Session

from tokensmith.accounts.service import AccountService
from tokensmith.clock import Clock
from tokensmith.clusters.service import ClusterService, VpcService
from tokensmith.config import Settings
from tokensmith.db.database import Database
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier


@dataclass
class Services:
    """The services of one unit of work, sharing one session and committed together."""

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
