"""Token lifecycle on the Tokens page: rotation with a grace period, "expires soon", extending a
token's expiry, the expiration choices the policy allows, usage charts, and scopes.

The tokens page (``routes``) asks this module for what each row and the page need; the
rotate and extend forms post here. Rotation reveals the new secret (and a re-issued kubeconfig when the
token grants clusters) through the same one-time encrypted flash as creation.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from fastapi import Request, Response

from tokensmith import durations
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
from tokensmith.policy import ExpiryPolicy
from tokensmith.tokens.expiration import CUSTOM, is_expired
from tokensmith.usecases import UnitOfWork, org, tokens
from tokensmith.usecases.tokens import EXPIRING_SOON
from tokensmith.verify.usage import hourly_counts, unused_days

# What the rotate dialog offers; tokens.rotation.parse_grace accepts any of them (0s..7d).
GRACE_CHOICES: Final = (("0s", "None: the old secret stops working at once"), ("1h", "1 hour"),
                        ("1d", "1 day"), ("7d", "7 days"))
DEFAULT_GRACE: Final = "1h"
# The rotate dialog's first expiry choice: leave the token's expiry as it is.
KEEP: Final = "keep"
# Hours in each row's usage chart, and from how many idle days a row says "Unused for N days".
CHART_HOURS: Final = 24
UNUSED_AFTER_DAYS: Final = 7
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


def expiry_choices(policy: ExpiryPolicy) -> list[tuple[str, str]]:
    """What the expiration pickers offer under ``policy``: the standard choices it accepts, its default
    (even when it is not one of them, e.g. 7d), and a custom date."""
    offered = policy.choices()
    if policy.default_expiration not in [value for value, _ in offered]:
        offered.insert(0, (policy.default_expiration, policy.default_expiration))
    return [*offered, (CUSTOM, "Custom date…")]


def expiry_input(expiration: str, expires_on: str) -> tuple[str | None, datetime | None]:
    """The service's (expiration, expires_at) from a dialog: a choice, or a custom date at 00:00 UTC."""
    if expiration != CUSTOM:
        return expiration, None
    try:  # the one date grammar (tokensmith.durations): YYYY-MM-DD (00:00 UTC) or RFC 3339
        return None, durations.parse_instant(expires_on, "expiration")
    except InvalidInput:
        raise InvalidInput("Pick the date on which the token should expire.", "expiration") from None


def chart(counts: Sequence[int], now: datetime) -> dict[str, Any]:
    """A usage chart's bars, oldest hour first: height in 0..20 and a title per hour."""
    top = max(counts) or 1
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=len(counts) - 1)
    bars = [{"x": i * 4, "height": 0 if n == 0 else max(1, round(20 * n / top)), "count": n,
             "title": f"{(first + timedelta(hours=i)):%Y-%m-%d %H}:00 UTC: {n} use{'s' if n != 1 else ''}"}
            for i, n in enumerate(counts)]
    return {"bars": bars, "total": sum(counts), "width": len(counts) * 4, "hours": len(counts)}


def page_extras(uow: UnitOfWork, request: Request, who: Viewer, shown: Sequence[Token] = ()) -> dict[str, Any]:
    """What the tokens page needs for the banner, the rotate and extend dialogs, usage charts and the scope picker."""
    actor = actor_of(request, who)
    now = uow.clock.now()
    expiring = [{"id": t.public_id, "name": t.name, "expires_at": t.expires_at}
                for t in tokens.expiring_soon(uow, actor)]
    policy = org.get_policy(uow, actor)
    latest = policy.latest(now)
    counts = hourly_counts(uow.session, [t.id for t in shown], now, CHART_HOURS)
    usage = {t.public_id: {**chart(counts[t.id], now), "unused_days": unused_days(t, now)} for t in shown}
    return {"expiring": expiring, "scope_choices": scope_choices(who.is_admin), "grace_choices": GRACE_CHOICES,
            "default_grace": DEFAULT_GRACE, "expiry_choices": expiry_choices(policy),
            "default_expiration": policy.default_expiration, "policy_text": policy.describe(),
            "earliest_date": (now + timedelta(days=1)).date().isoformat(),
            "latest_date": latest.date().isoformat() if latest else "", "usage": usage,
            "unused_after_days": UNUSED_AFTER_DAYS}


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


def _reopen(request: Request, who: Viewer, public_id: str, whole_org: bool, exc: InvalidInput,
            dialog: str = "rotate") -> Response:
    """The tokens page with the rotate or extend dialog reopened on its error (422)."""
    from tokensmith.console.routes import tokens_page_with_error  # routes imports this module

    message = next(iter(field_error(exc, "grace").values()))
    return tokens_page_with_error(request, who, whole_org=whole_org,
                                  rotate_error={"id": public_id, "message": message, "dialog": dialog})


@router.post("/tokens/{public_id}/rotate")
def rotate_token(request: Request, who: Signed, public_id: str, csrf: Csrf = "", grace: Text = DEFAULT_GRACE,
                 all: Text = "", expiration: Text = KEEP, expires_on: Text = "") -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    try:
        new_expiry = (None, None) if expiration == KEEP else expiry_input(expiration, expires_on)
        with ctx.unit_of_work() as uow, refusals():
            # The same operation as POST /v1/tokens/{id}/rotate, with a kubeconfig when the token grants clusters.
            current = tokens.get_token(uow, actor_of(request, who), public_id)
            rotated = tokens.rotate_token(uow, actor_of(request, who), public_id, grace=grace,
                                          expiration=new_expiry[0], expires_at=new_expiry[1],
                                          kubeconfig=bool(current.clusters))
            token = rotated.token
            flash: dict[str, Any] = {"kind": "token", "name": token.name, "secret": rotated.secret,
                                     "rotated": _old_secret_note(token, ctx.clock.now())}
            if rotated.kubeconfig is not None:
                flash.update(kubeconfig=rotated.kubeconfig.text, filename=rotated.kubeconfig.filename)
            put_flash(request, uow.session, who, flash)
    except InvalidInput as exc:  # a grace period or an expiry the policy refuses: shown in the dialog
        return _reopen(request, who, public_id, bool(all), exc)
    return redirect("/tokens?all=1" if all else "/tokens")


@router.post("/tokens/{public_id}/extend")
def extend_token(request: Request, who: Signed, public_id: str, csrf: Csrf = "", expiration: Text = "",
                 expires_on: Text = "", all: Text = "") -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    try:
        with ctx.unit_of_work() as uow, refusals():  # the same operation as PATCH /v1/tokens/{id}
            chosen, at = expiry_input(expiration, expires_on)
            token = tokens.extend_token(uow, actor_of(request, who), public_id, expiration=chosen, expires_at=at)
            until = f"until {exact(token.expires_at)}" if token.expires_at else "with no expiry"
            put_flash(request, uow.session, who, {"kind": "notice",
                                                  "text": f"Token “{token.name}” now works {until}."})
    except InvalidInput as exc:  # an expiry the policy refuses: shown in the dialog
        return _reopen(request, who, public_id, bool(all), exc, "extend")
    return redirect("/tokens?all=1" if all else "/tokens")
