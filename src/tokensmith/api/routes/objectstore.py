"""Object storage routes: S3 access keys, the AWS SDK token exchange, SigV4 verification for gateways."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tokensmith.api.auth import Context, acting, scoped
from tokensmith.api.context import AppContext
from tokensmith.api.guard import (
    CLIENT_ADDRESS_PARAMETER,
    cached_scoped,
    guarded_for_client,
    guarded_verify,
    named_client,
)
from tokensmith.api.schemas import Page, problem_responses
from tokensmith.api.schemas import Request as RequestBody
from tokensmith.db.models import AccessKey
from tokensmith.errors import AuthenticationFailed
from tokensmith.objectstore.limits import CEILING, MIN_DURATION
from tokensmith.objectstore.service import DURATION_RULE, AccessKeyService, CreatedAccessKey
from tokensmith.objectstore.verdict import StreamingSigning, Verdict
from tokensmith.ratelimit import RateLimited
from tokensmith.tokens.expiration import is_expired
from tokensmith.usecases import Actor
from tokensmith.usecases import access_keys as uc
from tokensmith.verify.core import Identity

router = APIRouter(prefix="/v1/object-storage", tags=["object storage"], responses=problem_responses(401, 403))
# The verify door is hot (once per S3 request): its caller is answered from memory when cached.
Gateway = Annotated[Identity, Depends(cached_scoped("object-storage:verify", scoped("object-storage:verify")))]


def access_keys(session: Any, ctx: AppContext) -> AccessKeyService:
    return AccessKeyService(session, ctx.clock, ctx.keyring, ctx.access_key_cache)


# --- schemas -----------------------------------------------------------------------------------


class AccessKeyAttributes(RequestBody):
    name: str | None = Field(default=None, description="1-100 characters, no control characters.")


class AccessKeyCreate(RequestBody):
    durationSeconds: Any = Field(
        description=DURATION_RULE + ".", json_schema_extra={"anyOf": [
            {"type": "integer", "const": 0},
            {"type": "integer", "minimum": MIN_DURATION, "maximum": CEILING},
        ]},
        examples=[0, MIN_DURATION, 3600],
    )
    attributes: AccessKeyAttributes = Field(default_factory=AccessKeyAttributes)


class AccessKeyOut(BaseModel):
    accessKeyId: str
    name: str
    permanent: bool
    expiry: datetime | None = Field(description="RFC 3339; null for a permanent key.")
    expired: bool
    createdAt: datetime
    mintedByToken: str | None = Field(description="Id of the token that minted the key.")

    @classmethod
    def of(cls, key: AccessKey, now: datetime) -> AccessKeyOut:
        return cls(
            accessKeyId=key.access_key_id, name=key.name, permanent=key.expires_at is None, expiry=key.expires_at,
            expired=is_expired(key.expires_at, now), createdAt=key.created_at,
            mintedByToken=key.token.public_id if key.token is not None else None,
        )


class CreatedAccessKeyOut(BaseModel):
    accessKeyId: str
    secretKey: str = Field(description="Shown exactly once.")
    expiry: datetime | None
    name: str
    createdAt: datetime

    @classmethod
    def of(cls, created: CreatedAccessKey) -> CreatedAccessKeyOut:
        key = created.key
        return cls(accessKeyId=key.access_key_id, secretKey=created.secret, expiry=key.expires_at, name=key.name,
                   createdAt=key.created_at)


class ContainerCredentials(BaseModel):
    """The AWS container-credentials format every AWS SDK reads."""

    AccessKeyId: str
    SecretAccessKey: str
    Token: str = Field(description="Not a secret and not checked: tokensmith keys need no session token.")
    Expiration: str


class VerifyRequest(RequestBody):
    method: str = Field(max_length=20, examples=["PUT"])
    path: str = Field(max_length=8192, description="The request path as sent, percent-encoded.")
    query: str = Field(default="", max_length=16384, description="The raw query string, without '?'.")
    headers: dict[str, Annotated[str, Field(max_length=8192)]] = Field(
        max_length=200, description="Request headers as seen, including Host, X-Amz-Date, X-Amz-Content-Sha256 "
                                    "and Authorization when present.",
    )
    bodySha256: str | None = Field(
        default=None, pattern="^[0-9a-fA-F]{64}$",
        description="Optional: the hex SHA-256 of the body the gateway received, checked against "
                    "X-Amz-Content-Sha256 (the gateway can also check it itself).",
    )


class StreamingOut(BaseModel):
    """What a gateway verifies each chunk of a signed aws-chunked upload with (docs/object-storage.md)."""

    signingKey: str = Field(description="Hex of the request's date-scoped SigV4 signing key (one day, region, "
                                        "service; not the secret key). Keep it for this request only.")
    seedSignature: str = Field(description="The request's own signature: the first chunk's previous signature.")
    amzDate: str
    scope: str = Field(examples=["20261123/us-east-1/s3/aws4_request"])

    @classmethod
    def of(cls, streaming: StreamingSigning | None) -> StreamingOut | None:
        if streaming is None:
            return None
        return cls(signingKey=streaming.signing_key.hex(), seedSignature=streaming.seed_signature,
                   amzDate=streaming.amz_date, scope=streaming.scope)


class VerifyResult(BaseModel):
    valid: bool
    accessKeyId: str | None = None
    user: str | None = None
    org: str | None = None
    reason: str | None = Field(default=None, description="Which check failed; never a secret.")
    streaming: StreamingOut | None = Field(
        default=None, description="Only for a valid STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) request: the "
                                  "gateway must verify every chunk's signature with it.")

    @classmethod
    def of(cls, verdict: Verdict) -> VerifyResult:
        if not verdict.valid or verdict.owner is None:
            return cls(valid=False, reason=verdict.reason)
        owner = verdict.owner
        return cls(valid=True, accessKeyId=owner.access_key_id, user=owner.username, org=owner.org_name,
                   streaming=StreamingOut.of(verdict.streaming))


# --- access keys ----------------------------------------------------------------------------


@router.post("/access-keys", status_code=201, response_model=CreatedAccessKeyOut,
             responses=problem_responses(400, 422))
def create_access_key(
    body: AccessKeyCreate, caller: Annotated[Actor, acting(uc.mint_access_key)], ctx: Context, response: Response
) -> CreatedAccessKeyOut:
    """Mint an S3 access key with the calling token: durationSeconds 0 for a permanent key, else a temporary one.

    The response is the only one that ever carries the secret key.
    """
    with ctx.unit_of_work() as uow:
        out = CreatedAccessKeyOut.of(uc.mint_access_key(uow, caller, body.durationSeconds, body.attributes.name))
    response.headers["Cache-Control"] = "no-store"
    return out


@router.get("/access-keys", response_model=Page[AccessKeyOut], responses=problem_responses(422))
def list_access_keys(
    caller: Annotated[Actor, acting(uc.list_access_keys)], ctx: Context, cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Page[AccessKeyOut]:
    """The caller's live access keys, newest first (no secrets)."""
    with ctx.unit_of_work() as uow:
        page = uc.list_access_keys(uow, caller, cursor=cursor, limit=limit)
        now = ctx.clock.now()
        return Page[AccessKeyOut](items=[AccessKeyOut.of(k, now) for k in page.items], next_cursor=page.next_cursor)


@router.get("/access-keys/{access_key_id}", response_model=AccessKeyOut, responses=problem_responses(404))
def get_access_key(
    access_key_id: str, caller: Annotated[Actor, acting(uc.get_access_key)], ctx: Context
) -> AccessKeyOut:
    with ctx.unit_of_work() as uow:
        return AccessKeyOut.of(uc.get_access_key(uow, caller, access_key_id), ctx.clock.now())


@router.delete("/access-keys/{access_key_id}", status_code=204, responses=problem_responses(404))
def delete_access_key(
    access_key_id: str, caller: Annotated[Actor, acting(uc.delete_access_key)], ctx: Context
) -> Response:
    """Revoke an access key: signatures made with it are invalid from now on."""
    with ctx.unit_of_work() as uow:
        uc.delete_access_key(uow, caller, access_key_id)
    return Response(status_code=204)


# --- the AWS SDK exchange -----------------------------------------------------------------------


def _exchange_secret(authorization: str | None) -> str:
    # AWS SDKs send AWS_CONTAINER_AUTHORIZATION_TOKEN verbatim: accept "Bearer <t>" and the bare secret.
    value = (authorization or "").strip()
    if not value:
        raise AuthenticationFailed("authentication required: send Authorization: Bearer <token>", error=None)
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        value = rest.strip()
    if not value or " " in value:
        raise AuthenticationFailed("invalid token")
    return value


@router.get("/temporary-credentials", response_model=ContainerCredentials)
def temporary_credentials(request: Request, ctx: Context, response: Response) -> ContainerCredentials:
    """Exchange a token for temporary S3 credentials in the AWS container-credentials format.

    Point AWS_CONTAINER_CREDENTIALS_FULL_URI here and put the token in AWS_CONTAINER_AUTHORIZATION_TOKEN
    (with or without "Bearer "). Needs the object-storage:write scope. Repeated calls reuse a key
    that still has at least 20 minutes to live.

    Brute force: the SDK calls directly, so invalid tokens count per client address like the API
    (429 with Retry-After over the limit; AWS SDKs retry a non-200 a few times, then fail).
    """
    verifier = ctx.verifier
    identity = guarded_verify(request, "s3-exchange", _exchange_secret(request.headers.get("authorization")),
                              verifier.verify)
    request.state.identity = identity
    minter = Actor.for_token(identity)
    minter.require("object-storage:write")
    minter.require_credential_management()  # a rotated-out secret mints nothing
    with ctx.services() as s:
        created = access_keys(s.session, ctx).exchange(identity)
        key = created.key
        assert key.expires_at is not None
        out = ContainerCredentials(
            AccessKeyId=key.access_key_id, SecretAccessKey=created.secret, Token=key.access_key_id,
            Expiration=key.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
    response.headers["Cache-Control"] = "no-store"
    return out


# --- SigV4 verification for S3 gateways -------------------------------------------------------

RATE_LIMITED = "rate limited"


@router.post("/verify", response_model=VerifyResult, response_model_exclude_none=True,
             responses=problem_responses(400, 422), openapi_extra={"parameters": [CLIENT_ADDRESS_PARAMETER]})
async def verify_signature(
    body: VerifyRequest, caller: Gateway, request: Request, response: Response
) -> VerifyResult:
    """Is this S3 request's AWS Signature Version 4 genuine, by a live key? For S3 gateways.

    200 with valid true/false for every well-formed request; 4xx only when the request described is
    not a SigV4 request at all (missing headers, malformed Authorization).

    Brute force: invalid signatures count against the client the gateway names in the
    Tokensmith-Client-Address header; over its limit that client gets valid false with reason
    "rate limited". Nothing is counted against the gateway itself: any refusal keyed on the
    gateway would refuse valid signatures of everyone behind it.

    A key in use is answered from memory (objectstore/keycache.py) on the event loop; a miss reads
    and remembers it in a thread, as does an invalid answer for a named client (counting is I/O).
    """
    ctx: AppContext = request.app.state.context
    client = named_client(request)
    cache = ctx.access_key_cache

    def from_memory() -> VerifyResult | None:
        verdict = cache.verify_cached(caller.org_id, body.method, body.path, body.query, body.headers,
                                      body.bodySha256, ctx.clock.now())
        return None if verdict is None else VerifyResult.of(verdict)

    def check() -> VerifyResult:
        remembered = from_memory()  # filled by another request meanwhile, or a failure to count
        if remembered is not None:
            return remembered
        with ctx.services() as s:
            return VerifyResult.of(access_keys(s.session, ctx).verify_signature(
                caller.org_id, body.method, body.path, body.query, body.headers, body.bodySha256))

    try:
        known = from_memory()
        if known is not None and (known.valid or client is None):
            # Nothing to count: the guard does no I/O (its local block check and metrics only).
            result = guarded_for_client(request, "s3-verify", client, lambda: known, lambda r: not r.valid)
        else:
            result = await run_in_threadpool(
                guarded_for_client, request, "s3-verify", client, check, lambda r: not r.valid)
        if result.streaming is not None:
            response.headers["Cache-Control"] = "no-store"  # it carries a (date-scoped) signing key
        return result
    except RateLimited as limited:
        response.headers["Retry-After"] = str(limited.retry_after)
        return VerifyResult(valid=False, reason=RATE_LIMITED)
