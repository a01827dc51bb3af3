"""The audit log: append-only events saying who did what, from where, to what, and how it went.

The use-case layer (``tokensmith.usecases``) records every state-changing operation through its
unit of work (``UnitOfWork.record``), which calls ``record`` inside the operation's transaction:

    from tokensmith import audit
    audit.record(session, "access_key.created", at=now, org_id=..., actor_user="alice",
                 actor_token="tok_...", target="ak_...", client_ip=..., user_agent=...)

Secrets never reach an event: every text field is scrubbed of anything shaped like one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, cast

from sqlalchemy import Table
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tokensmith import secrets
from tokensmith.clientaddress import request_ip  # the one rule for who the client is
from tokensmith.db.driver import DriverStatement
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


def _row(
    action: str, *, at: datetime, org_id: int | None, actor_user: str | None, actor_token: str | None,
    client_ip: str | None, user_agent: str | None, target: str | None, outcome: str,
    details: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """An event's column values, scrubbed: the one place that decides what an event holds."""
    return {
        "at": at, "org_id": org_id, "actor_user": scrub(actor_user), "actor_token": scrub(actor_token),
        "client_ip": (client_ip or None) and client_ip[:64],
        "user_agent": scrub(user_agent[:300]) if user_agent else None,
        "action": action, "target": scrub(target[:300]) if target else None, "outcome": outcome,
        "details": scrub(json.dumps(dict(details), default=str, sort_keys=True)) if details else None,
    }


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
    event = AuditEvent(**_row(action, at=at, org_id=org_id, actor_user=actor_user, actor_token=actor_token,
                              client_ip=client_ip, user_agent=user_agent, target=target, outcome=outcome,
                              details=details))
    session.add(event)
    session.flush()
    return event


def append(
    connection: Connection,
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
) -> None:
    """The same event as ``record``, written with one Core INSERT on the connection's transaction.

    For hot paths (the token exchange): no ORM object to build, track and flush, and the INSERT
    runs on the DBAPI cursor (``db/driver.py``).
    """
    _INSERT_EVENT.execute(connection, _row(
        action, at=at, org_id=org_id, actor_user=actor_user, actor_token=actor_token, client_ip=client_ip,
        user_agent=user_agent, target=target, outcome=outcome, details=details))


_EVENTS: Final = cast(Table, AuditEvent.__table__)
# Built once: a statement built per call pays for its construction and its cache key every time.
_INSERT_EVENT: Final = DriverStatement(_EVENTS.insert())


def client_of(request: Any) -> tuple[str | None, str | None]:
    """(client IP, user agent) of a Starlette request; the IP honours the trusted-proxy setting."""
    return request_ip(request), request.headers.get("user-agent")
