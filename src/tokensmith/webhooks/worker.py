"""The delivery worker: finds expiring tokens, claims due deliveries, POSTs them, retries with backoff.

Every replica may run one. A delivery is claimed in the database before it is sent, so two
replicas never send the same one: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, an atomic
conditional ``UPDATE`` on SQLite (whose writers are serialized anyway). A claim is a lease: if a
replica dies mid-delivery, the row becomes due again when the lease ends.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import httpx
from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from tokensmith import audit
from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Token, TokenNotice, Webhook, WebhookDelivery
from tokensmith.objectstore.crypto import KeyRing
from tokensmith.tokens.expiration import is_expired
from tokensmith.webhooks import signing
from tokensmith.webhooks.service import DELIVERED, FAILED, PENDING, emit, token_data

log = logging.getLogger("tokensmith.webhooks")

BACKOFF_BASE: Final = timedelta(seconds=30)
BACKOFF_CAP: Final = timedelta(hours=6)
MAX_ATTEMPTS: Final = 8
LEASE_MARGIN: Final = timedelta(minutes=1)
INTERVAL_ENV: Final = "TOKENSMITH_WEBHOOK_INTERVAL"  # seconds between worker passes
WARNINGS: Final = (("expiring-1d", timedelta(days=1)), ("expiring-7d", timedelta(days=7)))


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones: 30 s, 1 min, 2 min ... at most 6 h."""
    return min(BACKOFF_BASE * (2 ** max(attempts - 1, 0)), BACKOFF_CAP)


@dataclass(frozen=True)
class Claimed:
    id: int
    public_id: str
    event: str
    payload: str
    attempts: int
    url: str
    signing_secret: str
    claim: str


class DeliveryWorker:
    def __init__(
        self, database: Database, clock: Clock, *, keyring: KeyRing, http: httpx.Client | None = None,
        batch: int = 20, timeout: float = 10.0,
    ) -> None:
        self.database = database
        self.clock = clock
        self.keyring = keyring  # signing secrets are stored encrypted
        self.batch = batch
        # A claim outlives the slowest possible pass over a batch, so no other worker can take a row over
        # while this one may still be sending it.
        self.lease = timedelta(seconds=batch * timeout) + LEASE_MARGIN
        self.http = http or httpx.Client(timeout=timeout, follow_redirects=False)

    def run_once(self) -> int:
        """One pass: queue expiry notices, then deliver what is due. Returns deliveries attempted."""
        self.scan_expirations()
        claimed = self.claim()
        for delivery in claimed:
            self.deliver(delivery)
        return len(claimed)

    # --- expiry notices ----------------------------------------------------------------------

    def scan_expirations(self) -> int:
        """Queue token.expiring (7 d, 1 d before) and token.expired once per token; returns how many."""
        now = self.clock.now()
        emitted = 0
        with self.database.session() as session:
            tokens = session.scalars(select(Token).where(
                Token.revoked_at.is_(None), Token.expires_at.is_not(None),
                Token.expires_at <= now + timedelta(days=7), Token.expires_at > now - timedelta(days=30),
            )).all()
            for token in tokens:
                assert token.expires_at is not None
                if is_expired(token.expires_at, now):
                    kind, event = "expired", "token.expired"
                else:
                    kind = next(k for k, window in WARNINGS if token.expires_at - now <= window)
                    event = "token.expiring"
                if session.get(TokenNotice, (token.id, kind)) is not None:
                    continue
                try:
                    with session.begin_nested():  # the key decides which replica sends it
                        session.add(TokenNotice(token_id=token.id, kind=kind, created_at=now))
                except IntegrityError:
                    continue
                data = token_data(token)
                if event == "token.expiring":
                    data["expires_in_days"] = 1 if kind == "expiring-1d" else 7
                emit(session, token.org_id, event, {"token": data}, now)
                if event == "token.expired":
                    audit.record(session, "token.expired", at=now, org_id=token.org_id,
                                 target=token.public_id, details={"name": token.name})
                emitted += 1
        return emitted

    # --- delivery ----------------------------------------------------------------------------

    def _due(self, now: datetime) -> ColumnElement[bool]:
        return and_(
            WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until <= now),
        )

    def claim(self) -> list[Claimed]:
        """Claim up to ``batch`` due deliveries for this worker; no other worker gets them."""
        now = self.clock.now()
        claim = uuid.uuid4().hex
        with self.database.session() as session:
            if self.database.is_sqlite:
                due = select(WebhookDelivery.id).where(self._due(now)).order_by(WebhookDelivery.id).limit(self.batch)
                session.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id.in_(due), self._due(now))
                    .values(claimed_by=claim, claimed_until=now + self.lease)
                )
            else:
                ids = session.scalars(
                    select(WebhookDelivery.id).where(self._due(now)).order_by(WebhookDelivery.id)
                    .limit(self.batch).with_for_update(skip_locked=True)
                ).all()
                if ids:
                    session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids))
                                    .values(claimed_by=claim, claimed_until=now + self.lease))
            rows = session.execute(
                select(WebhookDelivery, Webhook).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.claimed_by == claim).order_by(WebhookDelivery.id)
            ).all()
            return [Claimed(d.id, d.public_id, d.event, d.payload, d.attempts, h.url,
                            self.keyring.decrypt(h.signing_secret, h.public_id), claim)
                    for d, h in rows]

    def deliver(self, delivery: Claimed) -> bool:
        """POST one claimed delivery; on a non-2xx answer or a network error, schedule a retry."""
        body = delivery.payload.encode()
        now = self.clock.now()
        headers = {
            "Content-Type": "application/json", "User-Agent": "tokensmith-webhooks",
            signing.SIGNATURE_HEADER: signing.sign(delivery.signing_secret, int(now.timestamp()), body),
            signing.EVENT_HEADER: delivery.event, signing.DELIVERY_HEADER: delivery.public_id,
        }
        try:
            response = self.http.post(delivery.url, content=body, headers=headers)
            ok, error = 200 <= response.status_code < 300, f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            ok, error = False, type(exc).__name__
        attempts = delivery.attempts + 1
        if ok:
            values = {"status": DELIVERED, "delivered_at": now, "attempts": attempts, "last_error": None}
        elif attempts >= MAX_ATTEMPTS:
            values = {"status": FAILED, "attempts": attempts, "last_error": error}
        else:
            values = {"attempts": attempts, "last_error": error, "next_attempt_at": now + backoff(attempts),
                      "claimed_by": None, "claimed_until": None}
        with self.database.session() as session:
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery.id, WebhookDelivery.claimed_by == delivery.claim).values(**values))
        if not ok:
            log.warning("webhook delivery %s failed (%s), attempt %d", delivery.public_id, error, attempts)
        return ok


class BackgroundWorker:
    """Runs ``DeliveryWorker.run_once`` every ``interval`` seconds in a daemon thread (app lifespan)."""

    def __init__(self, worker: DeliveryWorker, interval: float | None = None) -> None:
        self.worker = worker
        self.interval = interval if interval is not None else float(os.environ.get(INTERVAL_ENV, "10"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tokensmith-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 15)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.worker.run_once()
            except Exception:  # keep the loop alive; the next pass retries
                log.exception("webhook worker pass failed")
            self._stop.wait(max(self.interval - (time.monotonic() - started), 0.5))
