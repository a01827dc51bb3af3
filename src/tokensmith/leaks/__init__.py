"""Leaked-secret response: reporters tell us where a secret was found; we revoke it at once.

Reporters authenticate with their own credential (``tsr_...``, stored as a digest). The answer
is the same whether or not a report matched, so the endpoint cannot be used to test guesses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tokensmith import audit, secrets
from tokensmith.clock import Clock
from tokensmith.db.models import LeakReporter, Token
from tokensmith.errors import AuthenticationFailed
from tokensmith.validation import clean_name
from tokensmith.webhooks.service import emit, token_data

MAX_REPORTS = 1000


@dataclass(frozen=True)
class Report:
    token: str
    url: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class NewReporter:
    reporter: LeakReporter
    secret: str


class LeakService:
    def __init__(self, session: Session, clock: Clock, secret_key: bytes) -> None:
        self.session = session
        self.clock = clock
        self.secret_key = secret_key

    def create_reporter(self, name: str) -> NewReporter:
        """Mint a reporter credential; its secret is returned only now."""
        secret = secrets.generate(secrets.REPORTER_PREFIX)
        reporter = LeakReporter(
            public_id=secrets.public_id("rep"), name=clean_name(name),
            secret_digest=secrets.digest(secret, self.secret_key), created_at=self.clock.now(),
        )
        self.session.add(reporter)
        self.session.flush()
        return NewReporter(reporter, secret)

    def authenticate(self, secret: str) -> LeakReporter:
        """The live reporter behind ``secret``; AuthenticationFailed otherwise."""
        if not secrets.is_well_formed(secret, secrets.REPORTER_PREFIX):
            raise AuthenticationFailed("invalid reporter credential")
        digest = secrets.digest(secret, self.secret_key)
        reporter = self.session.scalar(select(LeakReporter).where(LeakReporter.secret_digest == digest))
        if reporter is None or reporter.revoked_at is not None:
            raise AuthenticationFailed("invalid reporter credential")
        return reporter

    def report(
        self, reporter: LeakReporter, reports: list[Report], client_ip: str | None = None,
        user_agent: str | None = None,
    ) -> int:
        """Revoke every live token whose current or in-grace secret was reported; returns how many.

        Each revoked token gets a token.leaked event and an audit entry saying where it was found.
        Callers must not reveal the count: the answer has to be the same either way.
        """
        now = self.clock.now()
        revoked = 0
        for item in reports:
            if not secrets.is_well_formed(item.token):
                continue
            digest = secrets.digest(item.token, self.secret_key)
            tokens = self.session.scalars(select(Token).where(
                Token.revoked_at.is_(None),
                or_(Token.secret_digest == digest, Token.previous_secret_digest == digest),
            )).all()
            for token in tokens:
                self._revoke(token, item, reporter, now, client_ip, user_agent)
                revoked += 1
        self.session.flush()
        return revoked

    def _revoke(
        self, token: Token, item: Report, reporter: LeakReporter, now: datetime,
        client_ip: str | None, user_agent: str | None,
    ) -> None:
        token.revoked_at = now
        # Reports quote where a secret was found, often with the secret in it: never pass that on.
        where = {"url": audit.scrub((item.url or "")[:1000]), "source": audit.scrub((item.source or "")[:200])}
        emit(self.session, token.org_id, "token.leaked", {"token": token_data(token), "found": where}, now)
        audit.record(
            self.session, "token.leaked", at=now, org_id=token.org_id, actor_user=f"reporter:{reporter.name}",
            client_ip=client_ip, user_agent=user_agent, target=token.public_id,
            details={"name": token.name, "owner": token.user.username, **where},
        )
