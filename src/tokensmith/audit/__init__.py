"""The audit log: append-only events saying who did what, from where, to what, and how it went.

Other modules call one of two functions, inside the unit of work that made the change:

    from tokensmith import audit
    audit.record(session, "access_key.created", at=now, org_id=..., actor_user="alice",
                 actor_token="tok_...", target="ak_...", client_ip=..., user_agent=...)
    audit.record_request(session, request, "kubeconfig.issued", target="cls_...")   # in a route

``record_request`` takes the actor from ``request.state.identity`` (set by authentication),
the client IP and user agent from the request, and the time from the app's clock.
Secrets never reach an event: every text field is scrubbed of anything shaped like one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.db.models import AuditEvent

SUCCESS: Final = "success"
FAILURE: Final = "failure"
DENIED: Final = "denied"

def scrub(text: str | None) -> str | None:
    """``text`` with anything shaped like a credential replaced by its masked form."""
    if text is None:
        return None
    return secrets.CREDENTIAL_SHAPE.sub(lambda m: secrets.mask(m.group()), text)


UNKNOWN_USER: Final = "(unknown user name)"


def typed_username(known: Any) -> str:
    """What a failed sign-in records as its actor: the user it names, else a marker.

    People type passwords into the user-name field; an unknown name is never stored verbatim.
    """
    return known.username if known is not None else UNKNOWN_USER


def record(
    session: Session,
    action: str,
    *,
    at: datetime,
    org_id: int | None = None,
    actor_user: str | None = None,
    actor_token: str | None = None,
    client_ip: str | None = None,
    user_agent: str | None = None,
    target: str | None = None,
    outcome: str = SUCCESS,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the session (committed with the caller's unit of work) and return it."""
    event = AuditEvent(
        at=at, org_id=org_id, actor_user=scrub(actor_user), actor_token=scrub(actor_token),
        client_ip=(client_ip or None) and client_ip[:64],
        user_agent=scrub(user_agent[:300]) if user_agent else None,
        action=action, target=scrub(target[:300]) if target else None, outcome=outcome,
        details=scrub(json.dumps(dict(details), default=str, sort_keys=True)) if details else None,
    )
    session.add(event)
    session.flush()
    return event


def client_of(request: Any) -> tuple[str | None, str | None]:
    """(client IP, user agent) of a Starlette request; the IP honours the trusted-proxy setting."""
    from tokensmith.api.guard import request_ip  # the one rule for who the client is

    return request_ip(request), request.headers.get("user-agent")


def record_request(
    session: Session, request: Any, action: str, *, target: str | None = None, outcome: str = SUCCESS,
    details: Mapping[str, Any] | None = None, org_id: int | None = None, actor_user: str | None = None,
) -> AuditEvent:
    """``record`` for a route: actor, organization, address and time come from the request."""
    identity = getattr(request.state, "identity", None)
    ip, agent = client_of(request)
    return record(
        session, action, at=request.app.state.context.clock.now(),
        org_id=org_id if org_id is not None else getattr(identity, "org_id", None),
        actor_user=actor_user if actor_user is not None else getattr(identity, "username", None),
        actor_token=getattr(identity, "token_public_id", None), client_ip=ip, user_agent=agent,
        target=target, outcome=outcome, details=details,
    )
