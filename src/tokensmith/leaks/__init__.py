"""Leaked-secret response: reporters tell us where a secret was found; we revoke it at once.

Reporters authenticate with their own credential (``tsr_...``, stored as a digest). The answer
is the same whether or not a report matched, so the endpoint cannot be used to test guesses,
and it takes the same time (docs/threat-model.md, bench/bench_leaks.py):

* in the request, every well-formed report costs one indexed lookup, whether it matches or not
  (no relationship loading, so a found token costs no extra query); a matching token gets its
  ``revoked_at`` in the same transaction, so it is refused from the very next request on; and
  every request writes one ``leaks.reported`` audit event, so every commit writes;
* after the answer has been sent, ``announce`` queues the ``token.leaked`` webhook events and
  writes the ``token.leaked`` audit entries (the slow, match-only work). If the process dies in
  between, the token stays revoked; only that announcement is lost (logged as an error).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, lazyload

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
class Leaked:
    """A token revoked by a report, waiting for its announcement (webhook event, audit entry)."""

    token_id: int
    report: Report
    reporter: str
    at: datetime
    client_ip: str | None
    user_agent: str | None


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
    ) -> list[Leaked]:
        """Revoke every live token whose current or in-grace secret was reported; returns what was revoked.

        The same work whether or not anything matched (see the module doc); pass the result to
        ``announce`` after answering. Callers must not reveal it: the answer has to be the same.
        """
        now = self.clock.now()
        leaked: list[Leaked] = []
        for item in reports:
            if not secrets.is_well_formed(item.token):
                continue
            digest = secrets.digest(item.token, self.secret_key)
            tokens = self.session.scalars(select(Token).options(lazyload(Token.user), lazyload(Token.clusters)).where(
                Token.revoked_at.is_(None),
                or_(Token.secret_digest == digest, Token.previous_secret_digest == digest),
            )).all()
            for token in tokens:
                token.revoked_at = now
                leaked.append(Leaked(token.id, item, reporter.name, now, client_ip, user_agent))
        audit.record(self.session, "leaks.reported", at=now, actor_user=f"reporter:{reporter.name}",
                     client_ip=client_ip, user_agent=user_agent, details={"reports": len(reports)})
        self.session.flush()
        return leaked

    def announce(self, leaked: list[Leaked]) -> None:
        """For each revoked token: a token.leaked event for its organization, an audit entry of where it was found."""
        for revoked in leaked:
            token = self.session.get(Token, revoked.token_id)
            if token is None:
                continue
            item = revoked.report
            # Reports quote where a secret was found, often with the secret in it: never pass that on.
            where = {"url": audit.scrub((item.url or "")[:1000]), "source": audit.scrub((item.source or "")[:200])}
            emit(self.session, token.org_id, "token.leaked", {"token": token_data(token), "found": where}, revoked.at)
            audit.record(
                self.session, "token.leaked", at=revoked.at, org_id=token.org_id,
                actor_user=f"reporter:{revoked.reporter}", client_ip=revoked.client_ip, user_agent=revoked.user_agent,
                target=token.public_id, details={"name": token.name, "owner": token.user.username, **where},
            )
        self.session.flush()
