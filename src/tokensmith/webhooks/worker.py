"""The delivery worker: finds expiring tokens, claims due deliveries, POSTs them, retries with backoff.

Every replica may run one. A delivery is claimed in the database before it is sent, so two
replicas never send the same one: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, an atomic
conditional ``UPDATE`` on SQLite (whose writers are serialized anyway). A claim is a lease: if a
replica dies mid-delivery, the row becomes due again when the lease ends.

Receivers belong to tenants and may be hostile, so one organization can never hold up another:

* each attempt is counted in the database *before* the request goes out, so a delivery that
  crashes its process is retried with backoff and given up after ``MAX_ATTEMPTS``, never forever;
* a pass claims at most ``per_org`` deliveries of one organization, round-robin over the
  longest-waiting organizations, and sends them on a small pool of threads, each request bounded
  by one deadline and a few KiB of answer (``tokensmith.net.outbound.fetch``);
* once a webhook's receiver fails in a pass, its other deliveries wait for the next one, so a
  hanging receiver costs a pass about one timeout, not one per delivery;
* a failure of any kind is that delivery's failure, never the pass's;
* logs name the webhook id and host, never the URL (its path or query may carry the receiver's
  own secrets).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import zip_longest
from typing import Any, Final

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from tokensmith import audit
from tokensmith.clock import Clock
from tokensmith.db.database import Database
from tokensmith.db.models import Token, TokenNotice, Webhook, WebhookDelivery
from tokensmith.net.outbound import OutboundError, OutboundPolicy, OutboundRefused, fetch, parse_url
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
MAX_RESPONSE_BYTES: Final = 4096  # of a receiver's answer; only its status line matters
IN_FLIGHT: Final = "no outcome recorded (the attempt was interrupted)"  # until the outcome replaces it
ABANDONED: Final = "gave up: the last attempt was interrupted"


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after ``attempts`` failed ones: 30 s, 1 min, 2 min ... at most 6 h."""
    return min(BACKOFF_BASE * (2 ** max(attempts - 1, 0)), BACKOFF_CAP)


def host_of(url: str) -> str:
    """What a log line may say about a webhook's URL: its host and port, or that it is unusable."""
    try:
        return parse_url(url).host_header
    except OutboundError:
        return "(invalid URL)"


@dataclass(frozen=True)
class Claimed:
    id: int
    public_id: str
    event: str
    payload: str
    attempts: int
    url: str
    webhook_id: str  # public id, for logs
    encrypted_secret: str  # decrypted per delivery, so one bad row fails alone
    claim: str


class DeliveryWorker:
    def __init__(
        self, database: Database, clock: Clock, *, keyring: KeyRing, outbound: OutboundPolicy | None = None,
        batch: int = 20, per_org: int = 5, concurrency: int = 4, timeout: float = 10.0,
    ) -> None:
        self.database = database
        self.clock = clock
        self.keyring = keyring  # signing secrets are stored encrypted
        self.outbound = outbound or OutboundPolicy()  # public addresses only, unless allowed
        self.batch = batch
        self.per_org = per_org
        self.concurrency = max(concurrency, 1)
        self.timeout = timeout  # for one whole delivery: DNS, connect, TLS, write, read
        # A claim outlives the slowest possible pass over a batch, so no other worker can take a row over
        # while this one may still be sending it.
        self.lease = timedelta(seconds=math.ceil(batch / self.concurrency) * timeout) + LEASE_MARGIN

    def run_once(self) -> int:
        """One pass: queue expiry notices, then deliver what is due. Returns deliveries attempted."""
        try:
            self.scan_expirations()
        except Exception:  # notices are retried next pass; deliveries must not wait for them
            log.exception("webhook expiry scan failed")
        self.give_up_interrupted()
        claimed = self.claim()
        failing: set[str] = set()  # webhooks whose receiver failed in this pass
        lock = threading.Lock()
        if len(claimed) <= 1 or self.concurrency == 1:
            for delivery in claimed:
                self._deliver_alone(delivery, failing, lock)
        else:
            with ThreadPoolExecutor(min(self.concurrency, len(claimed)), thread_name_prefix="tokensmith-hook") as pool:
                list(pool.map(lambda d: self._deliver_alone(d, failing, lock), claimed))
        return len(claimed)

    # --- expiry notices ----------------------------------------------------------------------

    def scan_expirations(self) -> int:
        """Queue token.expiring (7 d, 1 d before) and token.expired once per token; returns how many."""
        now = self.clock.now()
        emitted = 0
        with self.database.session() as session:
            tokens = session.scalars(select(Token).where(
                # Derived cluster credentials expire hourly by design: no notices for them.
                Token.revoked_at.is_(None), Token.expires_at.is_not(None), Token.parent_token_id.is_(None),
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
            WebhookDelivery.attempts < MAX_ATTEMPTS,
            or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until <= now),
        )

    def give_up_interrupted(self) -> int:
        """Fail deliveries whose last allowed attempt never recorded an outcome (its process died)."""
        now = self.clock.now()
        with self.database.session() as session:
            result = session.execute(update(WebhookDelivery).where(
                WebhookDelivery.status == PENDING, WebhookDelivery.attempts >= MAX_ATTEMPTS,
                or_(WebhookDelivery.claimed_until.is_(None), WebhookDelivery.claimed_until <= now),
            ).values(status=FAILED, last_error=ABANDONED, claimed_by=None, claimed_until=None))
            return int(getattr(result, "rowcount", 0) or 0)

    def _fair_share(self, session: Any, now: datetime) -> list[int]:
        """Due delivery ids for one pass: round-robin over the longest-waiting organizations, at most
        ``per_org`` of each, so a backlog of one never crowds out the others."""
        waiting = session.execute(
            select(Webhook.org_id, func.min(WebhookDelivery.next_attempt_at).label("oldest"))
            .join(Webhook, Webhook.id == WebhookDelivery.webhook_id).where(self._due(now))
            .group_by(Webhook.org_id).order_by("oldest", Webhook.org_id).limit(self.batch)
        ).all()
        per_org = [session.scalars(
            select(WebhookDelivery.id).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
            .where(Webhook.org_id == org_id, self._due(now))
            .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(min(self.per_org, self.batch))
        ).all() for org_id, _oldest in waiting]
        # Interleaved: the first delivery of every organization, then the second ... so each one's
        # first delivery is among the first sent.
        ids = [i for rank in zip_longest(*per_org) for i in rank if i is not None]
        return ids[:self.batch]

    def claim(self) -> list[Claimed]:
        """Claim up to ``batch`` due deliveries for this worker (a fair share per organization)."""
        now = self.clock.now()
        claim = uuid.uuid4().hex
        with self.database.session() as session:
            ids = self._fair_share(session, now)
            if ids and not self.database.is_sqlite:
                # Rows another replica is claiming right now are skipped, not waited for; the due
                # condition is checked again on the locked rows.
                ids = list(session.scalars(select(WebhookDelivery.id).where(
                    WebhookDelivery.id.in_(ids), self._due(now)).with_for_update(skip_locked=True)).all())
            if ids:
                # On SQLite the conditional UPDATE is the claim: writers are serialized and a row another
                # worker claimed first no longer matches.
                session.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_(ids), self._due(now))
                                .values(claimed_by=claim, claimed_until=now + self.lease))
            rows = session.execute(
                select(WebhookDelivery, Webhook).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                .where(WebhookDelivery.claimed_by == claim)
            ).all()
            order = {delivery_id: n for n, delivery_id in enumerate(ids)}
            return [Claimed(d.id, d.public_id, d.event, d.payload, d.attempts, h.url, h.public_id,
                            h.signing_secret, claim) for d, h in sorted(rows, key=lambda r: order[r[0].id])]

    def _deliver_alone(self, delivery: Claimed, failing: set[str], lock: threading.Lock) -> None:
        # Whatever goes wrong with one delivery is that delivery's problem, not the pass's.
        try:
            with lock:
                skip = delivery.webhook_id in failing
            if skip:
                # Its receiver just failed in this pass: do not spend more of the pass on it. The row
                # goes back unattempted, due after the first backoff step.
                self._record(delivery, {"claimed_by": None, "claimed_until": None,
                                        "next_attempt_at": self.clock.now() + BACKOFF_BASE})
                return
            if not self.deliver(delivery):
                with lock:
                    failing.add(delivery.webhook_id)
        except Exception:
            log.exception("webhook %s delivery %s: unexpected error", delivery.webhook_id, delivery.public_id)

    def _record(self, delivery: Claimed, values: dict[str, Any]) -> None:
        with self.database.session() as session:
            session.execute(update(WebhookDelivery).where(
                WebhookDelivery.id == delivery.id, WebhookDelivery.claimed_by == delivery.claim).values(**values))

    def deliver(self, delivery: Claimed) -> bool:
        """POST one claimed delivery; on a non-2xx answer, a refusal or a network error, schedule a retry."""
        now = self.clock.now()
        attempts = delivery.attempts + 1
        # The attempt counts before anything is sent: if this process dies during the request, the
        # row waits for its backoff and lease like any failure, and MAX_ATTEMPTS still ends it.
        self._record(delivery, {"attempts": attempts, "next_attempt_at": now + backoff(attempts),
                                "last_error": IN_FLIGHT})
        body = delivery.payload.encode()
        try:
            signing_secret = self.keyring.decrypt(delivery.encrypted_secret, delivery.webhook_id)
            headers = {
                "Content-Type": "application/json", "User-Agent": "tokensmith-webhooks",
                signing.SIGNATURE_HEADER: signing.sign(signing_secret, int(now.timestamp()), body),
                signing.EVENT_HEADER: delivery.event, signing.DELIVERY_HEADER: delivery.public_id,
            }
            response = fetch(self.outbound, "POST", delivery.url, body=body, headers=headers,
                             timeout=self.timeout, max_bytes=MAX_RESPONSE_BYTES, read_body=False)
            ok, error = 200 <= response.status < 300, f"HTTP {response.status}"
        except OutboundRefused as exc:
            ok, error = False, f"refused: {exc}"
        except OutboundError as exc:
            ok, error = False, str(exc)
        except Exception as exc:  # e.g. an undecryptable secret: this row fails, the pass goes on
            ok, error = False, f"internal error ({type(exc).__name__})"
            log.exception("webhook %s delivery %s: unexpected error", delivery.webhook_id, delivery.public_id)
        if ok:
            values: dict[str, Any] = {"status": DELIVERED, "delivered_at": now, "last_error": None}
        elif attempts >= MAX_ATTEMPTS:
            values = {"status": FAILED, "last_error": error[:500]}
        else:
            values = {"last_error": error[:500], "claimed_by": None, "claimed_until": None}
        self._record(delivery, values)
        if not ok:
            log.warning("webhook %s delivery %s to %s failed (%s), attempt %d", delivery.webhook_id,
                        delivery.public_id, host_of(delivery.url), error, attempts)
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
