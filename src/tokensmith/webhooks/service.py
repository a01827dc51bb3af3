"""Configuring webhooks (admins) and emitting events into the outbox."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.actor import Actor, require_admin
from tokensmith.clock import Clock
from tokensmith.db.models import Organization, Token, Webhook, WebhookDelivery
from tokensmith.errors import InvalidInput, NotFound
from tokensmith.net.outbound import OutboundError, OutboundPolicy
from tokensmith.objectstore.crypto import KeyRing

EVENTS: Final = ("token.expiring", "token.expired", "token.revoked", "token.leaked")
PENDING: Final = "pending"
DELIVERED: Final = "delivered"
FAILED: Final = "failed"
MAX_WEBHOOKS_PER_ORG: Final = 20


def token_data(token: Token) -> dict[str, Any]:
    """What an event says about a token: never its secret, only the usual hint."""
    return {
        "id": token.public_id, "name": token.name, "hint": token.hint,
        "owner": {"id": token.user.public_id, "username": token.user.username},
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


def emit(session: Session, org_id: int, event: str, data: Mapping[str, Any], at: datetime) -> int:
    """Queue ``event`` for every webhook of the organization that wants it; returns how many."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    hooks = session.scalars(select(Webhook).where(Webhook.org_id == org_id)).all()
    queued = 0
    for hook in hooks:
        if hook.events is not None and event not in hook.events.split():
            continue
        delivery_id = secrets.public_id("dlv")
        payload = {"id": delivery_id, "type": event, "created_at": at.isoformat(), "data": dict(data)}
        session.add(WebhookDelivery(
            public_id=delivery_id, webhook_id=hook.id, event=event, payload=json.dumps(payload, sort_keys=True),
            status=PENDING, attempts=0, next_attempt_at=at, created_at=at,
        ))
        queued += 1
    session.flush()
    return queued


class WebhookService:
    def __init__(
        self, session: Session, clock: Clock, keyring: KeyRing, outbound: OutboundPolicy | None = None,
    ) -> None:
        self.session = session
        self.clock = clock
        self.keyring = keyring
        # Where webhooks may point: public addresses only unless the operator allowed more.
        self.outbound = outbound or OutboundPolicy()

    def create(self, actor: Actor, url: str, events: Iterable[str] | None = None) -> tuple[Webhook, str]:
        """Add a webhook (admins). Returns it with its signing secret, which is shown only now.

        InvalidInput for a URL the outbound rules refuse (not plain http(s), control characters or
        whitespace, credentials, a non-public address now or in any spelling; see
        ``tokensmith.net.outbound``), an unknown event, or a full organization.
        """
        require_admin(actor, "managing webhooks")
        wanted = None
        if events is not None:
            wanted = sorted({e.strip() for e in events})
            unknown = [e for e in wanted if e not in EVENTS]
            if unknown or not wanted:
                raise InvalidInput(f"events must be among {', '.join(EVENTS)}", "events")
        try:
            # The URL is stored exactly as given, so what is checked is what is delivered to;
            # checked last of the input, because resolving the name may take a moment.
            self.outbound.check_new_url(url)
        except OutboundError as exc:
            raise InvalidInput(f"url: {exc}", "url") from None
        self._lock_organization(actor.org_id)
        count = self.session.scalar(select(func.count(Webhook.id)).where(Webhook.org_id == actor.org_id)) or 0
        if count >= MAX_WEBHOOKS_PER_ORG:
            raise InvalidInput(f"an organization may have at most {MAX_WEBHOOKS_PER_ORG} webhooks", "url")
        public_id = secrets.public_id("whk")
        signing_secret = "whsec_" + secrets.random_base62(40)
        hook = Webhook(
            public_id=public_id, org_id=actor.org_id, url=url,
            signing_secret=self.keyring.encrypt(signing_secret, public_id),
            events=" ".join(wanted) if wanted is not None else None, created_at=self.clock.now(),
        )
        self.session.add(hook)
        self.session.flush()
        return hook, signing_secret

    def _lock_organization(self, org_id: int) -> None:
        """Serialize webhook creation per organization until this transaction ends, so the count holds.

        PostgreSQL: a row lock on the organization (other organizations are not held up). SQLite:
        the no-op UPDATE takes the database's write lock before the count is read (SQLite has one
        writer at a time anyway); it must be the transaction's first statement, which it is here.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(select(Organization.id).where(Organization.id == org_id).with_for_update())
        else:
            self.session.execute(update(Organization).where(Organization.id == org_id)
                                 .values(id=Organization.id).execution_options(synchronize_session=False))

    def list(self, actor: Actor) -> list[Webhook]:
        require_admin(actor, "managing webhooks")
        return list(self.session.scalars(select(Webhook).where(Webhook.org_id == actor.org_id).order_by(Webhook.id)))

    def delete(self, actor: Actor, public_id: str) -> Webhook:
        """Remove a webhook of the caller's organization (pending deliveries go with it); NotFound otherwise."""
        require_admin(actor, "managing webhooks")
        hook = self.session.scalar(
            select(Webhook).where(Webhook.public_id == public_id, Webhook.org_id == actor.org_id)
        )
        if hook is None:
            raise NotFound(f"webhook {public_id!r} not found")
        self.session.delete(hook)
        self.session.flush()
        return hook
