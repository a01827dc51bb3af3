"""The audit log page (admins): the organization's events, filtered, newest first, with an export.

Reads through the use-case layer (``usecases.org``) like ``GET /v1/audit-events``: the same filters, the
same cursors, the same admin rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Final
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from tokensmith.console.common import Signed, actor_of, context_of, refusals, render, require_admin, router
from tokensmith.errors import InvalidInput
from tokensmith.usecases import org
from tokensmith.usecases.org import DENIED, FAILURE, SUCCESS, AuditFilter, as_record

PAGE_SIZE: Final = 50
OUTCOMES: Final = (SUCCESS, FAILURE, DENIED)
# Offered as suggestions in the action filter; any exact action or prefix ending in "." works.
KNOWN_ACTIONS: Final = (
    "auth.", "auth.sign_in", "token.", "token.created", "token.rotated", "token.deleted", "token.expired",
    "token.leaked", "token.used_from_new_ip", "kubeconfig.issued", "access_key.", "policy.updated",
    "webhook.", "webhook.created", "webhook.deleted",
)


def _moment(text: str, field: str, errors: dict[str, str]) -> datetime | None:
    """A ``datetime-local`` value (read as UTC), or None when empty; a bad one goes to ``errors``."""
    if not text.strip():
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        errors[field] = "Enter a date and time such as 2030-01-31T09:00."
        return None


def _filter(action: str, actor: str, outcome: str, since: str, until: str,
            errors: dict[str, str]) -> AuditFilter:
    return AuditFilter(action=action.strip() or None, actor=actor.strip() or None, outcome=outcome.strip() or None,
                       since=_moment(since, "since", errors), until=_moment(until, "until", errors))


@router.get("/audit")
def audit_log(request: Request, who: Signed, action: str = "", actor: str = "", outcome: str = "", since: str = "",
              until: str = "", cursor: str = "") -> Response:
    require_admin(who)
    ctx = context_of(request)
    filters = {"action": action, "actor": actor, "outcome": outcome, "since": since, "until": until}
    errors: dict[str, str] = {}
    where = _filter(action, actor, outcome, since, until, errors)
    events, next_cursor = [], None
    if not errors:
        with ctx.unit_of_work() as uow, refusals():
            try:
                page = org.audit_events(uow, actor_of(request, who), where, cursor or None, PAGE_SIZE)
            except InvalidInput as exc:  # a cursor that was tampered with
                errors["cursor"] = exc.detail[:1].upper() + exc.detail[1:]
            else:
                events = [{"at": e.at, "actor_user": e.actor_user, "actor_token": e.actor_token,
                           "client_ip": e.client_ip, "user_agent": e.user_agent, "action": e.action,
                           "target": e.target, "outcome": e.outcome, "details": e.details} for e in page.items]
                next_cursor = page.next_cursor
    active = {k: v for k, v in filters.items() if v}
    return render(
        request, "audit.html", 422 if errors else 200, who=who, events=events, filters=filters, errors=errors,
        outcomes=OUTCOMES, known_actions=KNOWN_ACTIONS, filtered=bool(active),
        older_url=f"/audit?{urlencode({**active, 'cursor': next_cursor})}" if next_cursor else None,
        export_url=f"/audit/export.jsonl?{urlencode(active)}" if active else "/audit/export.jsonl",
    )


@router.get("/audit/export.jsonl")
def export_audit_log(request: Request, who: Signed, action: str = "", actor: str = "", outcome: str = "",
                     since: str = "", until: str = "") -> Response:
    """The events the page's filters select, all of them, as JSON Lines (newest first)."""
    require_admin(who)
    errors: dict[str, str] = {}
    where = _filter(action, actor, outcome, since, until, errors)
    if errors:
        raise InvalidInput(next(iter(errors.values())), next(iter(errors)))
    ctx = context_of(request)

    def lines() -> Iterator[str]:
        with ctx.unit_of_work() as uow:
            for event in org.all_audit_events(uow, actor_of(request, who), where):
                yield json.dumps(as_record(event, who.org_name), ensure_ascii=False) + "\n"

    stamp = ctx.clock.now().strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers={
        "Content-Disposition": f'attachment; filename="audit-{stamp}.jsonl"'})
