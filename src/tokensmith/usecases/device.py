"""Browser sign-in for the CLI (RFC 8628 device authorization grant), for every door.

The device (``tokensmith login --web``) is anonymous until a person approves its request at the
console; the token it then receives is minted here, through the same rules as a password login,
for the approving person. Requested, approved and denied requests and the sign-in are audited.
"""

from __future__ import annotations

from datetime import timedelta

from tokensmith.db.models import DeviceAuthorization, User
from tokensmith.errors import Forbidden
from tokensmith.tokens.device_grant import (
    DEFAULT_LIFETIME,
    DeviceGrantError,
    DeviceGrantService,
    DeviceRequest,
    format_user_code,
)
from tokensmith.usecases.actor import Actor
from tokensmith.usecases.auth import signed_in
from tokensmith.usecases.base import UnitOfWork, operation
from tokensmith.usecases.tokens import IssuedToken, TokenRequest, _issue

__all__ = ["format_user_code"]


def _service(uow: UnitOfWork) -> DeviceGrantService:
    return DeviceGrantService(uow.session, uow.clock, uow.secret_key)


def _person(actor: Actor) -> None:
    # Only someone signed in to the console approves: a token could approve its own device requests
    # in a loop, turning one leaked secret into many.
    if actor.kind not in ("session", "operator"):
        raise Forbidden("sign-in requests are approved by a person signed in to the console")


def _details(found: DeviceAuthorization, **extra: object) -> dict[str, object]:
    return {"device_name": found.client_name, "device_ip": found.client_ip,
            "scopes": found.scopes.split() if found.scopes else "all", **extra}


@operation(None, audit="device.requested")
def request_device_authorization(
    uow: UnitOfWork, actor: Actor, device_name: str | None, scopes: list[str] | None, *,
    lifetime: timedelta = DEFAULT_LIFETIME,
) -> DeviceRequest:
    """A device (anonymous) asks to sign in; it gets a device code to poll with and a user code to show.

    Raises InvalidInput (an unknown scope, a secret in the device name).
    """
    made = _service(uow).request(device_name, actor.request.client_ip, scopes, lifetime)
    event = uow.record(actor, "device.requested", target=made.authorization.public_id,
                       details=_details(made.authorization))
    event.org_id = None  # nobody's organization yet: the approval names it
    return made


@operation(None)
def pending_device_request(uow: UnitOfWork, actor: Actor, user_code: str) -> DeviceAuthorization:
    """The pending request a person typed the code of (to show what it asks). NotFound otherwise."""
    _person(actor)
    return _service(uow).pending(user_code)


def _approver(uow: UnitOfWork, actor: Actor) -> User:
    user = uow.session.get(User, actor.user_id)
    if user is None or user.org_id != actor.org_id or user.disabled:
        raise Forbidden("this account cannot approve sign-in requests")
    return user


@operation("tokens:write", audit="device.approved", manages_credentials=True)
def approve_device_request(uow: UnitOfWork, actor: Actor, user_code: str) -> DeviceAuthorization:
    """The signed-in person approves: the device will receive a token of theirs (with the scopes asked).

    Raises NotFound (no such pending request), InvalidInput (scopes beyond the person's).
    """
    _person(actor)
    service = _service(uow)
    found = service.pending(user_code)
    service.decide(found, _approver(uow, actor), approve=True)
    uow.record(actor, "device.approved", target=found.public_id, details=_details(found))
    return found


@operation(None, audit="device.denied")
def deny_device_request(uow: UnitOfWork, actor: Actor, user_code: str) -> DeviceAuthorization:
    """The signed-in person denies: the device's next poll answers access_denied."""
    _person(actor)
    service = _service(uow)
    found = service.pending(user_code)
    service.decide(found, _approver(uow, actor), approve=False)
    uow.record(actor, "device.denied", target=found.public_id, details=_details(found))
    return found


@operation(None)
def poll_device_code(uow: UnitOfWork, actor: Actor, device_code: str) -> DeviceAuthorization:
    """A device polls. The approved request, or DeviceGrantError (authorization_pending, slow_down,
    access_denied, expired_token, invalid_grant). Only the poll time is written (no audit: bookkeeping)."""
    return _service(uow).poll(device_code)


@operation(None, audit="auth.sign_in")
def redeem_device_code(uow: UnitOfWork, actor: Actor, device_code: str) -> IssuedToken:
    """An approved device receives its token, once: a new token of the approving person's.

    Raises DeviceGrantError (invalid_grant: unknown, not approved or already redeemed; expired_token).
    """
    service = _service(uow)
    found = service.claim(device_code)
    user = uow.session.get(User, found.user_id) if found.user_id is not None else None
    if user is None or user.disabled:
        raise DeviceGrantError("invalid_grant", "the person who approved this request can no longer sign in")
    me = signed_in(user, actor)
    issued = _issue(uow, me, user, TokenRequest(name=f"cli@{found.client_name}"[:100],
                                                scopes=service.requested_scopes(found)))
    service.attach(found, issued.token)
    uow.record(me, "auth.sign_in", target=issued.token.public_id,
               details={"method": "device", "request": found.public_id, "device_name": found.client_name})
    return issued
