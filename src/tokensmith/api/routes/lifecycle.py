"""Token lifecycle routes: rotation, expiry policy, webhooks, leak reports and the audit log."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query, Request, Response
from pydantic import BaseModel, Field

from tokensmith.api.auth import Context, acting, bearer_secret
from tokensmith.api.context import AppContext
from tokensmith.api.guard import guarded_verify, request_ip
from tokensmith.api.routes.tokens import created_out
from tokensmith.api.schemas import CreatedTokenOut, Page, problem_responses
from tokensmith.api.schemas import Request as RequestBody
from tokensmith.db.models import AuditEvent, Webhook
from tokensmith.leaks import MAX_REPORTS, Leaked, LeakService, Report
from tokensmith.objectstore.limits import CEILING, DEFAULT_MAX_DURATION, MIN_ALLOWANCE
from tokensmith.policy import ExpiryPolicy
from tokensmith.tokens.expiration import DEFAULT_EXPIRATION
from tokensmith.usecases import Actor, org, tokens
from tokensmith.usecases.org import EVENTS, AuditFilter

router = APIRouter(prefix="/v1", responses=problem_responses(401, 403))
log = logging.getLogger("tokensmith.leaks")


# --- rotation --------------------------------------------------------------------------------


class RotateRequest(RequestBody):
    grace: str = Field(default="0s", description="How long the old secret keeps working: 0s to 7d.",
                       examples=["1h"])
    expiration: str | None = Field(default=None, description="A new lifetime; default: keep the current expiry.")
    expires_at: datetime | None = None
    kubeconfig: bool = Field(default=False, description="Also return a kubeconfig for the token's clusters.")


@router.post("/tokens/{token_id}/rotate", tags=["tokens"], response_model=CreatedTokenOut,
             responses=problem_responses(404, 409, 422))
def rotate_token(
    token_id: str, caller: Annotated[Actor, acting(tokens.rotate_token)], ctx: Context, request: Request,
    response: Response, body: RotateRequest | None = None,
) -> CreatedTokenOut:
    """A new secret for the same token; the old one works until the grace period ends."""
    body = body or RotateRequest()
    # A token rotating itself proves it is still the current secret: concurrent self-rotations get one winner.
    presented = bearer_secret(request.headers.get("authorization")) if token_id == caller.token_public_id else None
    with ctx.unit_of_work() as uow:
        out = created_out(tokens.rotate_token(uow, caller, token_id, grace=body.grace, expiration=body.expiration,
                                              expires_at=body.expires_at, kubeconfig=body.kubeconfig,
                                              presented_secret=presented), ctx)
    response.headers["Cache-Control"] = "no-store"
    return out


# --- expiry policy ---------------------------------------------------------------------------


class PolicyBody(RequestBody):
    max_lifetime_days: int | None = Field(default=None, description="Longest allowed lifetime; null: no maximum.")
    allow_never: bool = Field(default=True, description="Whether tokens that never expire are allowed; "
                              "always false when max_lifetime_days is set (the answer says so).")
    default_expiration: str = Field(default=DEFAULT_EXPIRATION, description="Used when a request names none.")
    max_access_key_seconds: int = Field(
        default=DEFAULT_MAX_DURATION, ge=MIN_ALLOWANCE, le=CEILING,
        description=f"Longest lifetime of a temporary S3 access key in seconds: {MIN_ALLOWANCE} (1 hour) to "
                    f"{CEILING} (365 days, the hard ceiling); default {DEFAULT_MAX_DURATION} (7 days).",
    )


class PolicyOut(BaseModel):
    max_lifetime_days: int | None
    allow_never: bool
    default_expiration: str
    max_access_key_seconds: int
    description: str

    @classmethod
    def of(cls, policy: ExpiryPolicy) -> PolicyOut:
        return cls(max_lifetime_days=policy.max_lifetime_days, allow_never=policy.allow_never,
                   default_expiration=policy.default_expiration,
                   max_access_key_seconds=policy.max_access_key_seconds,
                   description=f"{policy.describe()}; {policy.describe_access_keys()}")


@router.get("/org/policy", tags=["policy"], response_model=PolicyOut)
def get_policy(caller: Annotated[Actor, acting(org.get_policy)], ctx: Context) -> PolicyOut:
    """The organization's expiry policy (every member may read it)."""
    with ctx.unit_of_work() as uow:
        return PolicyOut.of(org.get_policy(uow, caller))


@router.put("/org/policy", tags=["policy"], response_model=PolicyOut, responses=problem_responses(422))
def put_policy(body: PolicyBody, caller: Annotated[Actor, acting(org.set_policy)], ctx: Context) -> PolicyOut:
    """Set the policy (admins, scope org:admin): every field, omitted ones take their defaults.

    Applies to tokens created or rotated, and access keys minted, from now on.
    """
    policy = ExpiryPolicy(body.max_lifetime_days, body.allow_never, body.default_expiration,
                          body.max_access_key_seconds)
    with ctx.unit_of_work() as uow:
        return PolicyOut.of(org.set_policy(uow, caller, policy))


# --- webhooks --------------------------------------------------------------------------------


class WebhookCreate(RequestBody):
    url: str = Field(examples=["https://hooks.example.com/tokensmith"])
    events: list[str] | None = Field(default=None, description=f"Among {', '.join(EVENTS)}; default all.")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime

    @classmethod
    def of(cls, hook: Webhook) -> WebhookOut:
        return cls(id=hook.public_id, url=hook.url, events=hook.events.split() if hook.events else list(EVENTS),
                   created_at=hook.created_at)


class CreatedWebhookOut(BaseModel):
    webhook: WebhookOut
    signing_secret: str = Field(description="HMAC-SHA256 key for X-Tokensmith-Signature; shown once.")


@router.post("/webhooks", tags=["webhooks"], status_code=201, response_model=CreatedWebhookOut,
             responses=problem_responses(422))
def create_webhook(body: WebhookCreate, caller: Annotated[Actor, acting(org.create_webhook)], ctx: Context,
                   response: Response) -> CreatedWebhookOut:
    """Add a webhook (admins, scope org:admin); the signing secret is in this response only."""
    with ctx.unit_of_work() as uow:
        created = org.create_webhook(uow, caller, body.url, body.events)
        out = CreatedWebhookOut(webhook=WebhookOut.of(created.webhook), signing_secret=created.signing_secret)
    response.headers["Cache-Control"] = "no-store"
    return out


@router.get("/webhooks", tags=["webhooks"], response_model=list[WebhookOut])
def list_webhooks(caller: Annotated[Actor, acting(org.list_webhooks)], ctx: Context) -> list[WebhookOut]:
    with ctx.unit_of_work() as uow:
        return [WebhookOut.of(h) for h in org.list_webhooks(uow, caller)]


@router.delete("/webhooks/{webhook_id}", tags=["webhooks"], status_code=204, responses=problem_responses(404))
def delete_webhook(webhook_id: str, caller: Annotated[Actor, acting(org.delete_webhook)], ctx: Context) -> Response:
    with ctx.unit_of_work() as uow:
        org.delete_webhook(uow, caller, webhook_id)
    return Response(status_code=204)


# --- leak reports ----------------------------------------------------------------------------


class LeakReport(RequestBody):
    token: str = Field(max_length=200)
    url: str | None = Field(default=None, max_length=2048)
    source: str | None = Field(default=None, max_length=200)


class LeaksAccepted(BaseModel):
    status: str = "received"
    reports: int


@router.post("/leaks", tags=["leaks"], status_code=202, response_model=LeaksAccepted,
             responses=problem_responses(422))
def report_leaks(
    body: Annotated[list[LeakReport], Field(max_length=MAX_REPORTS)], ctx: Context, request: Request,
    background: BackgroundTasks,
    authorization: Annotated[str | None, Header()] = None,
) -> LeaksAccepted:
    """Report leaked secrets (reporter credential ``tsr_...``). Matching secrets are revoked at once.

    The answer is the same, and takes the same time, whether or not anything matched.
    """
    secret = bearer_secret(authorization)
    ip, agent = request_ip(request), request.headers.get("user-agent")
    with ctx.services() as s:
        leaks = LeakService(s.session, ctx.clock, ctx.secret_key)
        # Bad reporter credentials count against the caller's address like at every other door (429).
        reporter = guarded_verify(request, "leaks", secret, leaks.authenticate)
        leaked = leaks.report(reporter, [Report(r.token, r.url, r.source) for r in body], ip, agent)
    if leaked:  # events and audit entries after the answer: match-only work must not show in its timing
        background.add_task(announce_leaks, ctx, leaked)
    return LeaksAccepted(reports=len(body))


def announce_leaks(ctx: AppContext, leaked: list[Leaked]) -> None:
    try:
        with ctx.database.session() as session:
            LeakService(session, ctx.clock, ctx.secret_key).announce(leaked)
    except Exception:  # the tokens are revoked already; say loudly that their announcement was lost
        log.exception("could not announce %d leaked token(s)", len(leaked))


# --- audit log -------------------------------------------------------------------------------


class AuditEventOut(BaseModel):
    id: int
    at: datetime
    actor_user: str | None
    actor_token: str | None
    client_ip: str | None
    user_agent: str | None
    action: str
    target: str | None
    outcome: str
    details: str | None = Field(description="JSON text with action-specific facts; never a secret.")

    @classmethod
    def of(cls, e: AuditEvent) -> AuditEventOut:
        return cls(id=e.id, at=e.at, actor_user=e.actor_user, actor_token=e.actor_token, client_ip=e.client_ip,
                   user_agent=e.user_agent, action=e.action, target=e.target, outcome=e.outcome, details=e.details)


@router.get("/audit-events", tags=["audit"], response_model=Page[AuditEventOut], responses=problem_responses(422))
def list_audit_events(
    caller: Annotated[Actor, acting(org.audit_events)], ctx: Context,
    action: Annotated[str | None, Query(description="Exact action, or a prefix ending in '.', e.g. 'token.'")] = None,
    actor: Annotated[str | None, Query(description="Actor user name.")] = None,
    target: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[AuditEventOut]:
    """The organization's audit events, newest first (admins)."""
    where = AuditFilter(action=action, actor=actor, target=target, outcome=outcome, since=since, until=until)
    with ctx.unit_of_work() as uow:
        page = org.audit_events(uow, caller, where, cursor, limit)
        return Page[AuditEventOut](items=[AuditEventOut.of(e) for e in page.items], next_cursor=page.next_cursor)
