"""The Access Keys page: the viewer's S3 access keys, minting one (temporary or permanent), a one-time
reveal of its secret key, and deleting one.

A console user has a session, not a token, so they choose which of their active tokens mints the
key (the key records it, as keys minted over the API record the token presented). The rules live in
tokensmith.objectstore; this module reads the form, calls the services, audits and renders.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from tokensmith.console.common import (
    Csrf,
    Signed,
    Text,
    actor_of,
    check_csrf,
    context_of,
    pop_flash,
    put_flash,
    redirect,
    refusals,
    render,
    router,
)
from tokensmith.console.format import exact
from tokensmith.console.sessions import Viewer
from tokensmith.db.models import AccessKey
from tokensmith.errors import InvalidInput
from tokensmith.objectstore.limits import MIN_DURATION, in_words
from tokensmith.objectstore.minters import minter_for, minting_tokens
from tokensmith.objectstore.service import AccessKeyService, parse_duration
from tokensmith.usecases import access_keys as access_keys_uc
from tokensmith.validation import clean_name

# Lifetimes offered for a temporary key; those beyond the organization's limit are left out.
LIFETIMES = (900, 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400, 90 * 86400, 365 * 86400)
DEFAULT_LIFETIME = "3600"
PAGE_SIZE = 100


def _service(session: Session, request: Request) -> AccessKeyService:
    ctx = context_of(request)
    return AccessKeyService(session, ctx.clock, ctx.keyring)


def _key_row(key: AccessKey, now: Any) -> dict[str, Any]:
    token = key.token
    return {
        "id": key.access_key_id, "name": key.name, "permanent": key.expires_at is None,
        "created_at": key.created_at, "expires_at": key.expires_at,
        "expired": key.expires_at is not None and now >= key.expires_at,
        "token_name": token.name if token is not None else None,
        "token_id": token.public_id if token is not None else None,
        "token_deleted": token is None or token.revoked_at is not None,
    }


def _lifetimes(limit: int) -> list[tuple[str, str]]:
    offered = [s for s in LIFETIMES if s <= limit]
    if limit not in offered:
        offered.append(limit)
    return [(str(s), in_words(s)) for s in offered]


def _profile_name(key_name: str) -> str:
    """An AWS profile name from the key's name: ``Nightly backup`` → ``nightly-backup``."""
    slug = re.sub(r"[^a-z0-9]+", "-", key_name.lower()).strip("-")[:40].strip("-")
    return slug or "tokensmith"


def _page(
    request: Request, who: Viewer, *, cursor: str | None = None, form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None, status: int = 200,
) -> HTMLResponse:
    ctx = context_of(request)
    now = ctx.clock.now()
    with ctx.services() as s, refusals():
        keys = _service(s.session, request)
        page = keys.list(who, cursor=cursor, limit=PAGE_SIZE)
        rows = [_key_row(k, now) for k in page.items]
        limit = keys.max_duration(who.org_id)
        tokens: list[dict[str, Any]] = [{"id": t.public_id, "name": t.name, "hint": t.hint, "expires_at": t.expires_at}
                  for t in minting_tokens(s.session, who, now)]
        # The one-time flash is read (and so destroyed) only by a plain page view.
        flash = pop_flash(request, s.session, who) if form is None else None
    if form is None:
        form = {"name": "", "kind": "temporary", "lifetime": DEFAULT_LIFETIME,
                "token": tokens[0]["id"] if tokens else ""}
    return render(
        request, "access_keys.html", status, who=who, keys=rows, next_cursor=page.next_cursor, tokens=tokens,
        lifetimes=_lifetimes(limit), limit_words=in_words(limit), flash=flash, form=form, errors=errors or {},
    )


@router.get("/access-keys")
def access_keys_page(request: Request, who: Signed, cursor: str | None = None) -> Response:
    return _page(request, who, cursor=cursor)


def _duration(kind: str, lifetime: str, limit: int) -> int:
    """Seconds for the service from the dialog: 0 for permanent, else the chosen lifetime."""
    if kind == "permanent":
        return 0
    if kind != "temporary":
        raise InvalidInput("Choose Temporary or Permanent.", "kind")
    rule = f"Choose a lifetime from {in_words(MIN_DURATION)} to {in_words(limit)} (your organization's limit)."
    if not lifetime.strip().isdigit():
        raise InvalidInput(rule, "lifetime")
    try:
        return parse_duration(int(lifetime.strip()), limit)
    except InvalidInput:
        raise InvalidInput(rule, "lifetime") from None


@router.post("/access-keys")
def create_access_key(
    request: Request, who: Signed, csrf: Csrf = "", name: Text = "", kind: Text = "temporary",
    lifetime: Text = DEFAULT_LIFETIME, token: Text = "",
) -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    form = {"name": name, "kind": kind, "lifetime": lifetime, "token": token}
    now = ctx.clock.now()
    errors: dict[str, str] = {}
    with ctx.services() as s:
        keys = _service(s.session, request)
        # Check every field first, so the dialog can mark all wrong fields at once.
        checked: dict[str, Any] = {}
        checks = {
            "name": lambda: clean_name(name),
            "lifetime": lambda: keys.allowed_duration(
                who.org_id, _duration(kind, lifetime, keys.max_duration(who.org_id)), "kind"),
            "token": lambda: minter_for(s.session, who, token, now),
        }
        for field, check in checks.items():
            try:
                checked[field] = check()
            except InvalidInput as exc:
                errors[exc.field or field] = exc.detail[:1].upper() + exc.detail[1:]
    if not errors:
        with ctx.unit_of_work() as uow:  # the same operation as POST /v1/object-storage/access-keys
            minter = checked["token"]
            created = access_keys_uc.mint_access_key(uow, actor_of(request, who), checked["lifetime"], name,
                                                     token=minter.token_public_id)
            key = created.key
            put_flash(request, uow.session, who, {
                "kind": "access_key", "name": key.name, "access_key_id": key.access_key_id, "secret": created.secret,
                "expires": exact(key.expires_at) if key.expires_at else None,
                "profile": _profile_name(key.name), "token_name": minter.token_name,
            })
    if errors:
        return _page(request, who, form=form, errors=errors, status=422)
    return redirect("/access-keys")


@router.post("/access-keys/{access_key_id}/delete")
def delete_access_key(request: Request, who: Signed, access_key_id: str, csrf: Csrf = "") -> Response:
    check_csrf(request, who, csrf)
    ctx = context_of(request)
    with ctx.unit_of_work() as uow, refusals():
        key = access_keys_uc.delete_access_key(uow, actor_of(request, who), access_key_id)
        put_flash(request, uow.session, who, {
            "kind": "notice", "text": f"Access key {key.access_key_id} (“{key.name}”) was deleted; "
                                      "requests signed with it are refused from now on."})
    return redirect("/access-keys")
