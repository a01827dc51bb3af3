"""Token lifecycle on the Tokens page: rotation with a grace period, "expires soon", and scopes.

The tokens page (``routes``) asks this module for what each row and the page need; the
rotate form posts here. Rotation reveals the new secret (and a re-issued kubeconfig when the
token grants clusters) through the same one-time encrypted flash as creation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from fastapi import Request, Response

from tokensmith import scopes as scope_rules
from tokensmith.console.common import (
    Csrf,
    Signed,
    Text,
    actor_of,
    check_csrf,
    context_of,
    field_error,
    put_flash,
    redirect,
    refusals,
    router,
)
from tokensmith.console.format import exact, relative
from tokensmith.console.sessions import Viewer
from tokensmith.db.models import Token
from tokensmith.errors import InvalidInput
from tokensmith.tokens.expiration import is_expired
from tokensmith.usecases import UnitOfWork, tokens
from tokensmith.usecases.tokens import EXPIRING_SOON

# What the rotate dialog offers; tokens.rotation.parse_grace accepts any of them (0s..7d).
GRACE_CHOICES: Final = (("0s", "None: the old secret stops working at once"), ("1h", "1 hour"),
                        ("1d", "1 day"), ("7d", "7 days"))
DEFAULT_GRACE: Final = "1h"
# The create dialog: "all" keeps the token at its owner's permissions; "some" uses the boxes ticked.
ALL_SCOPES, SOME_SCOPES = "all", "some"


def expires_soon(expires_at: datetime | None, now: datetime) -> bool:
    return expires_at is not None and not is_expired(expires_at, now) and expires_at <= now + EXPIRING_SOON


def row_extras(token: Token, now: datetime) -> dict[str, Any]:
    """What a token row shows besides the basics: its scopes (None: all of its owner's) and a soon badge."""
    stored = scope_rules.deserialize(token.scopes)
    scopes = None if stored is None else sorted(scope_rules.effective(stored, token.user.is_admin))
    return {"scopes": scopes, "expires_soon": expires_soon(token.expires_at, now)}


def scope_choices(is_admin: bool) -> list[tuple[str, str]]:
    """The scopes the create dialog offers: everything the viewer holds by default (admin-only ones to admins)."""
    offered = scope_rules.default_scopes(is_admin)
    return [(name, description) for name, description in scope_rules.SCOPES.items() if name in offered]


def page_extras(uow: UnitOfWork, request: Request, who: Viewer) -> dict[str, Any]:
    """What the tokens page needs for the banner, the rotate dialogs and the scope picker."""
    expiring = [{"id": t.public_id, "name": t.name, "expires_at": t.expires_at}
                for t in tokens.expiring_soon(uow, actor_of(request, who))]
    return {"expiring": expiring, "scope_choices": scope_choices(who.is_admin), "grace_choices": GRACE_CHOICES,
            "default_grace": DEFAULT_GRACE}


def requested_scopes(mode: str, picked: list[str]) -> list[str] | None:
    """The service's ``scopes`` from the dialog: None for all of the owner's, else the boxes ticked."""
    if mode != SOME_SCOPES:
        return None
    if not picked:
        raise InvalidInput("Pick at least one permission, or choose all of your permissions.", "scopes")
    return list(dict.fromkeys(picked))


def _old_secret_note(token: Token, now: datetime) -> str:
    until = token.previous_grace_until
    if until is None:
        return "The old secret stopped working at once."
    return (f"The old secret keeps working until {exact(until)} ({relative(until, now)}), "
            "so you can switch whatever uses it to the new one.")


@router.post("/tokens/{public_id}/rotate")
def rotate_token(request: Request, who: Signed, public_id: str, csrf: Csrf = "", grace: Text = DEFAULT_GRACE,
                 all: Text = "") -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    try:
        with ctx.unit_of_work() as uow, refusals():
            # The same operation as POST /v1/tokens/{id}/rotate, with a kubeconfig when the token grants clusters.
            current = tokens.get_token(uow, actor_of(request, who), public_id)
            rotated = tokens.rotate_token(uow, actor_of(request, who), public_id, grace=grace,
                                          kubeconfig=bool(current.clusters))
            token = rotated.token
            flash: dict[str, Any] = {"kind": "token", "name": token.name, "secret": rotated.secret,
                                     "rotated": _old_secret_note(token, ctx.clock.now())}
            if rotated.kubeconfig is not None:
                flash.update(kubeconfig=rotated.kubeconfig.text, filename=rotated.kubeconfig.filename)
            put_flash(request, uow.session, who, flash)
    except InvalidInput as exc:  # a grace period or an expiry the policy refuses: shown in the dialog
        from tokensmith.console.routes import tokens_page_with_error  # routes imports this module

        message = next(iter(field_error(exc, "grace").values()))
        return tokens_page_with_error(request, who, whole_org=bool(all),
                                      rotate_error={"id": public_id, "message": message})
    return redirect("/tokens?all=1" if all else "/tokens")
