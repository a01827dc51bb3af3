"""Kubernetes: webhook credentials of clusters (admins), and the TokenReview webhook API servers call."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tokensmith import metrics, secrets
from tokensmith.api.auth import Context, acting, bearer_secret
from tokensmith.api.context import AppContext, context_of
from tokensmith.api.guard import Refusal, SubjectKeys, check_subject, guarded_verify, request_ip, tokenreview_error
from tokensmith.api.schemas import problem_responses
from tokensmith.db.models import WebhookCredential
from tokensmith.errors import AuthenticationFailed
from tokensmith.kube import authz, denials, tokenreview
from tokensmith.kube.callers import WebhookCaller
from tokensmith.kube.webhooks import WebhookCredentialService
from tokensmith.ratelimit import via_key
from tokensmith.usecases import Actor
from tokensmith.usecases import clusters as uc
from tokensmith.verify.core import Identity

router = APIRouter(prefix="/v1/clusters", tags=["kubernetes"])
CREDENTIAL_DOOR = "tokenreview-credential"  # the metrics' name for a webhook credential's check


class WebhookCredentialOut(BaseModel):
    id: str
    cluster: str = Field(description="The cluster's id.")
    hint: str = Field(description="The last 4 characters of the credential.")
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, credential: WebhookCredential) -> WebhookCredentialOut:
        return cls(id=credential.public_id, cluster=credential.cluster.public_id, hint=credential.hint,
                   created_at=credential.created_at, last_used_at=credential.last_used_at)


class MintedWebhookCredentialOut(BaseModel):
    credential: WebhookCredentialOut
    secret: str = Field(description="Shown exactly once: put it in the API server's webhook kubeconfig now.")
    tokenreview_path: str = Field(description="Where the API server sends TokenReviews, relative to tokensmith.")


@router.post(
    "/{cluster}/webhook-credentials", status_code=201, response_model=MintedWebhookCredentialOut,
    responses=problem_responses(401, 403, 404),
)
def mint_webhook_credential(
    cluster: str, caller: Annotated[Actor, acting(uc.mint_webhook_credential)], ctx: Context, response: Response
) -> MintedWebhookCredentialOut:
    """Mint a webhook credential for a cluster's API server; the cluster's other credentials keep working."""
    with ctx.unit_of_work() as uow:
        done = uc.mint_webhook_credential(uow, caller, cluster)
        out = MintedWebhookCredentialOut(
            credential=WebhookCredentialOut.of(done.minted.credential), secret=done.minted.secret,
            tokenreview_path=f"/v1/clusters/{done.cluster.public_id}/tokenreview",
        )
    response.headers["Cache-Control"] = "no-store"
    return out


@router.get(
    "/{cluster}/webhook-credentials", response_model=list[WebhookCredentialOut],
    responses=problem_responses(401, 403, 404),
)
def list_webhook_credentials(
    cluster: str, caller: Annotated[Actor, acting(uc.list_webhook_credentials)], ctx: Context
) -> list[WebhookCredentialOut]:
    """The cluster's live webhook credentials (never their secrets)."""
    with ctx.unit_of_work() as uow:
        return [WebhookCredentialOut.of(c) for c in uc.list_webhook_credentials(uow, caller, cluster)]


@router.delete(
    "/{cluster}/webhook-credentials/{credential}", status_code=204, responses=problem_responses(401, 403, 404)
)
def revoke_webhook_credential(
    cluster: str, credential: str, caller: Annotated[Actor, acting(uc.revoke_webhook_credential)], ctx: Context,
) -> Response:
    """Revoke a webhook credential: the API server using it is refused from its next review on."""
    with ctx.unit_of_work() as uow:
        uc.revoke_webhook_credential(uow, caller, cluster, credential)
    return Response(status_code=204)


async def _webhook_credential(request: Request, cluster: str) -> str:
    """The bearer credential of a webhook call; a refusal is audited (coalesced), "none sent" apart."""
    header = request.headers.get("authorization")
    try:
        return bearer_secret(header)
    except AuthenticationFailed:
        reason = denials.NO_CREDENTIAL if not (header or "").strip() else denials.BAD_CREDENTIAL
        await run_in_threadpool(denials.record_refused_credential, request, cluster, reason)
        raise


async def _read_limited(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise tokenreview.ReviewTooLarge(f"a TokenReview is at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise tokenreview.ReviewTooLarge(f"a TokenReview is at most {limit} bytes")
    return bytes(body)


TOKENREVIEW_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": list(tokenreview.API_VERSIONS)},
        "kind": {"type": "string", "enum": [tokenreview.KIND]},
        "spec": {
            "type": "object",
            "required": ["token"],
            "properties": {"token": {"type": "string", "minLength": 1},
                           "audiences": {"type": "array", "items": {"type": "string"},
                                         "maxItems": tokenreview.MAX_AUDIENCES}},
        },
    },
}


def _review_limited(request: Request, token: str, keys: SubjectKeys) -> Identity:
    """The verification core under the cluster's ceiling; a refusal is a failed review, never an error."""
    verifier = request.app.state.context.verifier
    checked = check_subject(request, "tokenreview", token, verifier.verify, verifier.verify_cached, keys)
    if isinstance(checked, Refusal):  # judge() turns it into authenticated: false with this error
        raise AuthenticationFailed(tokenreview_error(checked, denials.CLUSTER_LIMITED))
    return checked


def _authenticated_webhook(request: Request, session: Any, cluster: str, credential: str) -> WebhookCredential:
    """The cluster's webhook credential the API server presented (TokenReview and SubjectAccessReview alike).

    A wrong one is audited (coalesced) and counted against the caller's address (429 over the limit).
    A right one is remembered (``AppContext.webhook_callers``), so the next reviews need no database.
    """
    ctx = context_of(request)
    generation = ctx.webhook_callers.generation

    def authenticate(secret: str) -> WebhookCredential:
        try:
            return WebhookCredentialService(session, ctx.clock, ctx.secret_key).authenticate_credential(cluster, secret)
        except AuthenticationFailed:
            denials.record_refused_credential(request, cluster)  # audited, coalesced
            raise

    webhook = guarded_verify(request, CREDENTIAL_DOOR, credential, authenticate)
    ctx.webhook_callers.put(secrets.digest(credential, ctx.secret_key), caller_of(webhook), generation)
    return webhook


def caller_of(webhook: WebhookCredential) -> WebhookCaller:
    """What a review needs to remember of an authenticated credential and its cluster."""
    cluster = webhook.cluster
    assert webhook.last_used_at is not None  # authenticate_credential has just noted this use
    return WebhookCaller(
        credential_id=webhook.id, credential_public_id=webhook.public_id, cluster_id=cluster.id,
        cluster_public_id=cluster.public_id, cluster_name=cluster.name, org_id=cluster.org_id,
        token_audience=cluster.token_audience, username_prefix=cluster.username_prefix,
        last_used_at=webhook.last_used_at)


def webhook_caller(request: Request, cluster: str, credential: str) -> WebhookCaller:
    """The API server behind a review: remembered, or authenticated now (blocking I/O: call it in a thread)."""
    ctx = context_of(request)
    started = time.perf_counter()
    ctx.verifier.hear_changes()  # a credential revoked by another worker is forgotten first
    remembered = ctx.webhook_callers.recall(credential, ctx.secret_key, ctx.clock.now())
    if remembered is not None and remembered.names(cluster):
        metrics.observe_verification(CREDENTIAL_DOOR, "ok", time.perf_counter() - started)
        return remembered
    with ctx.services() as s:
        return caller_of(_authenticated_webhook(request, s.session, cluster, credential))


@router.post(
    "/{cluster}/tokenreview",
    responses={200: {"description": "A TokenReview with status filled in (authenticated or not)."},
               **problem_responses(400, 401, 413)},
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": TOKENREVIEW_SCHEMA}}}},
)
async def review_token(cluster: str, request: Request) -> JSONResponse:
    """Kubernetes webhook token authentication (authentication.k8s.io/v1 or v1beta1).

    The cluster's API server calls this with its webhook credential as bearer token.
    Brute force: a bad webhook credential counts against the caller's address (429 over the limit);
    invalid reviewed tokens count against the cluster with a high ceiling, over which reviews are
    answered from the verification cache only (docs/kubernetes.md).
    """
    credential = await _webhook_credential(request, cluster)
    body = await _read_limited(request, tokenreview.MAX_BODY_BYTES)

    def decide() -> dict[str, Any]:
        caller = webhook_caller(request, cluster, credential)
        keys = SubjectKeys(None, via_key(f"cluster:{caller.cluster_public_id}"))
        review = tokenreview.parse(body)
        verdict = tokenreview.judge(review, caller.cluster_id, caller.token_audience,
                                    lambda token: _review_limited(request, token, keys), caller.username_prefix)
        if verdict.reason is not None and verdict.reason.startswith(denials.CLUSTER_LIMITED):
            # Over the cluster's ceiling: recorded without looking the token up (that is the point).
            denials.record_limited_review(request, caller)
        elif verdict.reason is not None:  # audited, coalesced (kube/denials.py)
            denials.record_denied_review(request, caller, review.token, verdict.reason, verdict.identity)
        return verdict.answer

    return JSONResponse(await run_in_threadpool(decide), headers={"Cache-Control": "no-store"})


SUBJECTACCESSREVIEW_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"type": "string", "enum": [authz.API_VERSION]},
        "kind": {"type": "string", "enum": [authz.KIND]},
        "spec": {"type": "object", "properties": {
            "resourceAttributes": {"type": "object"}, "nonResourceAttributes": {"type": "object"},
            "user": {"type": "string"}, "groups": {"type": "array", "items": {"type": "string"}},
            "extra": {"type": "object"}, "uid": {"type": "string"}}},
    },
}


@router.post(
    "/{cluster}/subjectaccessreview",
    responses={200: {"description": "A SubjectAccessReview with status filled in (no opinion or denied)."},
               **problem_responses(400, 401, 413)},
    openapi_extra={"requestBody": {"required": True,
                                   "content": {"application/json": {"schema": SUBJECTACCESSREVIEW_SCHEMA}}}},
)
async def review_access(cluster: str, request: Request) -> JSONResponse:
    """Kubernetes webhook authorization (authorization.k8s.io/v1), optional: enforces tokens' access levels.

    Authenticated with the cluster's webhook credential, like the TokenReview. Never allows: denies
    what a token's level does not permit, no opinion otherwise and for non-tokensmith requests
    (kube/authz.py, docs/kubernetes.md).
    """
    ctx: AppContext = request.app.state.context
    credential = await _webhook_credential(request, cluster)
    body = await _read_limited(request, authz.MAX_BODY_BYTES)

    def decide() -> dict[str, Any]:
        with ctx.services() as s:
            webhook = _authenticated_webhook(request, s.session, cluster, credential)
            target = webhook.cluster
            review = authz.parse(body)
            now = ctx.clock.now()
            answer, reason = authz.judge(review, lambda token: authz.level_of(s.session, target, token, now))
        if reason is not None:  # audited, coalesced like TokenReview denials
            ip, agent = request_ip(request), request.headers.get("user-agent")
            # Only something shaped like a token id is written: the extra is the caller's text.
            token = review.token_ids[0][:32] if review.token_ids and review.token_ids[0].startswith("tok_") \
                and review.token_ids[0][4:32].isalnum() else denials.UNKNOWN
            context_of(request).denials.note(denials.Denial(
                authz.DENIED_ACTION, target.public_id, target.org_id, token, reason, webhook.public_id, ip, agent))
        return answer

    return JSONResponse(await run_in_threadpool(decide), headers={"Cache-Control": "no-store"})
