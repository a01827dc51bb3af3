"""What every console page shares: the router, templates, the signed-in viewer, CSRF and rendering.

Every state-changing request is a POST carrying the CSRF token of its session; successful
POSTs redirect (POST-redirect-GET), and a secret to reveal travels to the next GET as an
encrypted one-time flash, so reloading or going back never shows it again.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from tokensmith import actor as actor_rules
from tokensmith.api.context import AppContext
from tokensmith.api.context import context_of as _context_of
from tokensmith.api.guard import request_ip
from tokensmith.console.format import exact, relative
from tokensmith.console.sessions import SessionService, Viewer, csrf_token, csrf_valid
from tokensmith.errors import Forbidden, InvalidInput, TokensmithError
from tokensmith.tokens.expiration import PRESETS
from tokensmith.usecases import Actor, RequestContext

HERE = Path(__file__).parent
SESSION_COOKIE = "tsm_session"
PRE_COOKIE = "tsm_pre"  # anonymous cookie that the sign-in form's CSRF token is bound to
# Which form control shows a service error about a field.
FIELD_ALIASES = {"expires_at": "expiration", "new_password": "new"}

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
)
templates.globals.update(relative=relative, exact=exact, presets=PRESETS)
templates.filters["b64"] = lambda text: base64.b64encode(text.encode()).decode()
router = APIRouter(include_in_schema=False)


class SignInRequired(Exception):
    """No valid session: send the browser to the sign-in page."""


class PasswordChangeRequired(Exception):
    """The user must choose a new password before anything else."""


class Refused(Exception):
    """A console request that cannot be done, shown as a small error page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def context_of(request: Request) -> AppContext:
    return _context_of(request)


def _viewer(request: Request) -> Viewer:
    ctx = context_of(request)
    with ctx.services() as s:
        viewer = SessionService(s.session, ctx.clock, ctx.secret_key).resume(request.cookies.get(SESSION_COOKIE))
    if viewer is None:
        raise SignInRequired()
    return viewer


def any_viewer(request: Request) -> Viewer:
    """The signed-in user, even one who still has to change the password."""
    return _viewer(request)


def viewer(request: Request) -> Viewer:
    """The signed-in user, who has a password of their own."""
    found = _viewer(request)
    if found.must_change_password:
        raise PasswordChangeRequired()
    return found


Signed = Annotated[Viewer, Depends(viewer)]
SignedAny = Annotated[Viewer, Depends(any_viewer)]
Csrf = Annotated[str, Form()]
Text = Annotated[str, Form()]


def check_csrf(request: Request, who: Viewer, submitted: str) -> None:
    if not csrf_valid(context_of(request).secret_key, who.session_id, submitted):
        raise Refused(403, "This form has expired or did not come from this console. Reload the page and try again.")


def require_admin(who: Viewer) -> None:
    """The console's rendering of the one admin rule (``tokensmith.actor.require_admin``): a small error page."""
    try:
        actor_rules.require_admin(who, "this page")
    except Forbidden:
        raise Refused(403, "Only organization admins can do this.") from None


@contextmanager
def refusals() -> Iterator[None]:
    """Service errors other than bad input become a console error page with the same status."""
    try:
        yield
    except InvalidInput:
        raise
    except TokensmithError as exc:
        raise Refused(exc.status, exc.detail) from None


def render(request: Request, name: str, status: int = 200, who: Viewer | None = None, **values: Any) -> HTMLResponse:
    ctx = context_of(request)
    values.setdefault("csrf", csrf_token(ctx.secret_key, who.session_id) if who else "")
    page = templates.get_template(name).render(viewer=who, now=ctx.clock.now(), path=request.url.path, **values)
    return HTMLResponse(page, status_code=status)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def field_error(exc: InvalidInput, default: str) -> dict[str, str]:
    """The error keyed by the form control that shows it, worded for a person filling in a form."""
    field = FIELD_ALIASES.get(exc.field or "", exc.field or default)
    message = exc.detail.replace("expires_at", "the expiry date")
    return {field: message[:1].upper() + message[1:]}


def put_flash(request: Request, session: Session, who: Viewer, flash: dict[str, Any]) -> None:
    """Keep ``flash`` (a notice, or a secret to reveal once) for the viewer's next plain page view."""
    ctx = context_of(request)
    SessionService(session, ctx.clock, ctx.secret_key).put_flash(who.session_id, flash)


def pop_flash(request: Request, session: Session, who: Viewer) -> dict[str, Any] | None:
    """The viewer's flash, destroyed by reading it (only a plain page view should)."""
    ctx = context_of(request)
    return SessionService(session, ctx.clock, ctx.secret_key).pop_flash(who.session_id)


def actor_of(request: Request, who: Viewer) -> Actor:
    """The signed-in person as the use-case layer sees them (a session: everything their role permits)."""
    return Actor.for_session(
        user_id=who.user_id, org_id=who.org_id, is_admin=who.is_admin, username=who.username,
        request=RequestContext(request_ip(request), request.headers.get("user-agent"), via="console"),
    )
