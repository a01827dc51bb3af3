"""Organization administration: the expiry policy, webhooks and the audit log."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from tokensmith.audit import DENIED, FAILURE, SUCCESS
from tokensmith.audit.query import AuditFilter, all_events, as_record, list_events
from tokensmith.db.models import AuditEvent, Webhook
from tokensmith.pagination import Page
from tokensmith.policy import ExpiryPolicy, PolicyService, policy_change
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.base import UnitOfWork, operation
from tokensmith.webhooks.service import EVENTS, WebhookService

# What the doors need to describe audit events and webhooks, from the layer they call.
__all__ = ["DENIED", "EVENTS", "FAILURE", "SUCCESS", "AuditFilter", "as_record"]


@operation("tokens:read")
def get_policy(uow: UnitOfWork, actor: Actor) -> ExpiryPolicy:
    """The organization's expiry policy: every member may read it (it bounds their tokens)."""
    return PolicyService(uow.session, uow.clock).get(actor.org_id)


@operation("org:admin", audit="policy.updated")
def set_policy(uow: UnitOfWork, actor: Actor, policy: ExpiryPolicy) -> ExpiryPolicy:
    """Replace the policy (admins). Raises InvalidInput if it contradicts itself."""
    policies = PolicyService(uow.session, uow.clock)
    before = policies.get(actor.org_id)
    stored = policies.set(actor.org_id, policy)
    uow.record(actor, "policy.updated", target="expiry-policy", details=policy_change(before, stored))
    return stored


@dataclass(frozen=True)
class CreatedWebhook:
    webhook: Webhook
    signing_secret: str  # shown once


def _webhooks(uow: UnitOfWork) -> WebhookService:
    return WebhookService(uow.session, uow.clock, uow.keyring, uow.outbound)


@operation("org:admin", audit="webhook.created", manages_credentials=True)
def create_webhook(uow: UnitOfWork, actor: Actor, url: str, events: Iterable[str] | None = None) -> CreatedWebhook:
    """Add a webhook; its signing secret is returned once. InvalidInput for a bad URL or event."""
    hook, signing_secret = _webhooks(uow).create(actor, url, events)
    # Only where deliveries go: a receiver's own secret may sit in the URL's path or query.
    parts = urlsplit(hook.url)
    uow.record(actor, "webhook.created", target=hook.public_id,
               details={"scheme": parts.scheme, "host": parts.hostname or ""})
    return CreatedWebhook(hook, signing_secret)


@operation("org:admin")
def list_webhooks(uow: UnitOfWork, actor: Actor) -> list[Webhook]:
    return _webhooks(uow).list(actor)


@operation("org:admin", audit="webhook.deleted")
def delete_webhook(uow: UnitOfWork, actor: Actor, webhook_id: str) -> Webhook:
    hook = _webhooks(uow).delete(actor, webhook_id)
    uow.record(actor, "webhook.deleted", target=hook.public_id)
    return hook


@operation("audit:read")
def audit_events(
    uow: UnitOfWork, actor: Actor, where: AuditFilter, cursor: str | None = None, limit: int = 50,
) -> Page[AuditEvent]:
    """The organization's audit events, newest first (admins)."""
    return list_events(uow.session, actor, where, cursor, limit)


@operation("audit:read")
def all_audit_events(uow: UnitOfWork, actor: Actor, where: AuditFilter) -> Iterator[AuditEvent]:
    """Every matching event, newest first, streamed (the JSON Lines export)."""
    yield from all_events(uow.session, actor, where)
