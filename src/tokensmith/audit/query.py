"""Reading the audit log: the one query behind ``GET /v1/audit-events``, the console page and its export.

Newest first with cursor pagination, filtered by action (exact, or a prefix ending in '.'),
actor user name, target, outcome and a half-open time range [since, until).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tokensmith.actor import Actor, require_admin
from tokensmith.db.models import AuditEvent
from tokensmith.errors import InvalidInput
from tokensmith.pagination import DEFAULT_LIMIT, MAX_LIMIT, Page, paginate


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None  # exact, or a prefix ending in "." such as "token."
    actor: str | None = None  # the actor's user name
    target: str | None = None
    outcome: str | None = None
    since: datetime | None = None  # inclusive; naive means UTC
    until: datetime | None = None  # exclusive; naive means UTC


def _utc(moment: datetime, field: str) -> datetime:
    """In UTC; a moment that has no UTC equivalent (year 1 at +14:00) is refused, not a 500."""
    try:
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (OverflowError, ValueError):
        raise InvalidInput(f"{field} is out of range", field) from None


def list_events(
    session: Session, actor: Actor, where: AuditFilter, cursor: str | None = None, limit: int = DEFAULT_LIMIT,
) -> Page[AuditEvent]:
    """The caller's organization's events matching ``where``, newest first (admins only: Forbidden else)."""
    require_admin(actor, "reading the audit log")
    query = select(AuditEvent).where(AuditEvent.org_id == actor.org_id)
    if where.action:
        query = query.where(AuditEvent.action.startswith(where.action) if where.action.endswith(".")
                            else AuditEvent.action == where.action)
    if where.actor:
        query = query.where(AuditEvent.actor_user == where.actor)
    if where.target:
        query = query.where(AuditEvent.target == where.target)
    if where.outcome:
        query = query.where(AuditEvent.outcome == where.outcome)
    if where.since:
        query = query.where(AuditEvent.at >= _utc(where.since, "since"))
    if where.until:
        query = query.where(AuditEvent.at < _utc(where.until, "until"))
    return paginate(session, query, AuditEvent.id, cursor, limit)


def all_events(session: Session, actor: Actor, where: AuditFilter) -> Iterator[AuditEvent]:
    """Every matching event, newest first, page by page (for exports)."""
    cursor: str | None = None
    while True:
        page = list_events(session, actor, where, cursor, MAX_LIMIT)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def as_record(event: AuditEvent, organization: str | None) -> dict[str, Any]:
    """One event as a JSON Lines record (the shape ``tokensmith admin audit export`` writes)."""
    return {
        "id": event.id, "at": event.at.isoformat(), "organization": organization,
        "actor_user": event.actor_user, "actor_token": event.actor_token, "client_ip": event.client_ip,
        "user_agent": event.user_agent, "action": event.action, "target": event.target, "outcome": event.outcome,
        "details": json.loads(event.details) if event.details else None,
    }
