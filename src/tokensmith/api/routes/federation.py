"""Service accounts, trust policies, and the two exchange doors (RFC 8693 and STS).

The exchange doors answer in their own protocols' shapes, not RFC 9457 problems: RFC 6749 JSON
errors at ``/v1/oauth2/token``, AWS STS XML at ``/v1/sts`` (what boto3 and the AWS CLI parse).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tokensmith.api.auth import Context, acting, request_context
from tokensmith.api.context import AppContext, context_of
from tokensmith.api.guard import guard_exchange, guarded_exchange
from tokensmith.api.routes.tokens import created_out
from tokensmith.api.schemas import CreatedTokenOut, TokenCreate, problem_responses
from tokensmith.api.schemas import Request as RequestBody
from tokensmith.db.models import TrustPolicy, User
from tokensmith.federation.policies import DEFAULT_LIFETIME, DEFAULT_MAX_TOKEN_AGE, MAX_LIFETIME, PolicyRequest
from tokensmith.ratelimit import RateLimited
from tokensmith.usecases import Actor, RequestContext, federation
from tokensmith.usecases.federation import ExchangeRefused
from tokensmith.usecases.tokens import TokenRequest

router = APIRouter(prefix="/v1", responses=problem_responses(401, 403))
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a grant type name
JWT_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"
ID_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105 - a type name
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type name
STS_NAMESPACE: Final = "https://sts.amazonaws.com/doc/2011-06-15/"
NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


# --- service accounts -------------------------------------------------------------------------


class ServiceAccountCreate(RequestBody):
    name: str = Field(description="Letters, digits, '-._'; unique among users and service accounts.",
                      examples=["ci-deployer"])
    admin: bool = Field(default=False, description="Make it an organization admin (never by default).")


class ServiceAccountUpdate(RequestBody):
    disabled: bool


class ServiceAccountOut(BaseModel):
    id: str = Field(examples=["svc_3kTq..."])
    name: str
    admin: bool
    disabled: bool
    created_at: datetime

    @classmethod
    def of(cls, account: User) -> ServiceAccountOut:
        return cls(id=account.public_id, name=account.username, admin=account.is_admin, disabled=account.disabled,
                   created_at=account.created_at)


@router.post("/service-accounts", tags=["service accounts"], status_code=201, response_model=ServiceAccountOut,
             responses=problem_responses(409, 422))
def create_service_account(
    body: ServiceAccountCreate, caller: Annotated[Actor, acting(federation.create_service_account)], ctx: Context,
) -> ServiceAccountOut:
    """A non-human principal of the organization that owns tokens (admins)."""
    with ctx.unit_of_work() as uow:
        return ServiceAccountOut.of(federation.create_service_account(uow, caller, body.name, admin=body.admin))


@router.get("/service-accounts", tags=["service accounts"], response_model=list[ServiceAccountOut])
def list_service_accounts(
    caller: Annotated[Actor, acting(federation.list_service_accounts)], ctx: Context,
) -> list[ServiceAccountOut]:
    with ctx.unit_of_work() as uow:
        return [ServiceAccountOut.of(a) for a in federation.list_service_accounts(uow, caller)]


@router.patch("/service-accounts/{ref}", tags=["service accounts"], response_model=ServiceAccountOut,
              responses=problem_responses(404, 422))
def update_service_account(
    ref: str, body: ServiceAccountUpdate, caller: Annotated[Actor, acting(federation.set_service_account_disabled)],
    ctx: Context,
) -> ServiceAccountOut:
    """Disable (its tokens stop at once) or enable a service account."""
    with ctx.unit_of_work() as uow:
        return ServiceAccountOut.of(
            federation.set_service_account_disabled(uow, caller, ref, disabled=body.disabled))


@router.delete("/service-accounts/{ref}", tags=["service accounts"], status_code=204,
               responses=problem_responses(404))
def delete_service_account(
    ref: str, caller: Annotated[Actor, acting(federation.delete_service_account)], ctx: Context,
) -> Response:
    """Delete a service account with its tokens, S3 keys and trust policies."""
    with ctx.unit_of_work() as uow:
        federation.delete_service_account(uow, caller, ref)
    return Response(status_code=204)


@router.post("/service-accounts/{ref}/tokens", tags=["service accounts"], status_code=201,
             response_model=CreatedTokenOut, responses=problem_responses(404, 422))
def create_service_account_token(
    ref: str, body: TokenCreate, caller: Annotated[Actor, acting(federation.issue_service_account_token)],
    ctx: Context, response: Response,
) -> CreatedTokenOut:
    """Mint a token owned by the service account (the secret is shown once)."""
    request = TokenRequest(name=body.name, note=body.note, expiration=body.expiration, expires_at=body.expires_at,
                           clusters=body.clusters, scopes=body.scopes, kubeconfig=body.kubeconfig)
    with ctx.unit_of_work() as uow:
        out = created_out(federation.issue_service_account_token(uow, caller, ref, request), ctx)
    response.headers["Cache-Control"] = "no-store"
    return out


# --- trust policies ---------------------------------------------------------------------------


class TrustPolicyCreate(RequestBody):
    name: str = Field(examples=["github-deploy"], description="Also the role name in an STS RoleArn.")
    service_account: str = Field(description="The service account's id or name.")
    issuer: str = Field(max_length=2048, examples=["https://token.actions.githubusercontent.com"],
                        description="Exactly the tokens' iss claim. Its keys are discovered from "
                                    "<issuer>/.well-known/openid-configuration unless jwks is given.")
    jwks: dict[str, Any] | None = Field(default=None, description="The issuer's JWKS inline (air-gapped clusters).")
    audience: str = Field(max_length=2048, description="The exact aud the tokens must carry.")
    subject: str | None = Field(default=None, max_length=1000, examples=["repo:octo-org/app:ref:refs/heads/main"],
                                description="A glob on sub: * within one /-segment, ** across segments.")
    conditions: dict[str, str] = Field(
        default_factory=dict, examples=[{"/repository": "octo-org/*", "/kubernetes.io/namespace": "ci"}],
        description="Claim conditions: a JSON pointer to a claim → a glob (or an exact value).")
    scopes: list[str] | None = Field(
        default=None, description="What the tokens hold (⊆ the service account's); default: a member's default "
                                  "scopes except tokens:write.")
    clusters: list[Annotated[str, Field(max_length=100)]] = Field(default=[], max_length=100)
    lifetime_seconds: int = Field(default=DEFAULT_LIFETIME, description=f"900 to {MAX_LIFETIME} (12 hours).")
    max_token_age_seconds: int = Field(default=DEFAULT_MAX_TOKEN_AGE,
                                       description="The oldest external token accepted, from its iat.")


class TrustPolicyOut(BaseModel):
    id: str
    name: str
    service_account: str
    issuer: str
    inline_jwks: bool
    audience: str
    subject: str | None
    conditions: dict[str, str]
    scopes: list[str]
    clusters: list[str]
    lifetime_seconds: int
    max_token_age_seconds: int
    role_arn: str = Field(description="The RoleArn for AWS SDKs (AWS_ROLE_ARN).")
    created_at: datetime

    @classmethod
    def of(cls, policy: TrustPolicy) -> TrustPolicyOut:
        return cls(
            id=policy.public_id, name=policy.name, service_account=policy.service_account.username,
            issuer=policy.issuer, inline_jwks=policy.jwks is not None, audience=policy.audience,
            subject=policy.subject, conditions=json.loads(policy.conditions or "{}"),
            scopes=(policy.scopes or "").split(), clusters=[c.name for c in policy.clusters],
            lifetime_seconds=policy.lifetime_seconds, max_token_age_seconds=policy.max_token_age_seconds,
            role_arn=f"arn:tokensmith:iam::{policy.service_account.organization.name}:role/{policy.name}",
            created_at=policy.created_at,
        )


@router.post("/trust-policies", tags=["trust policies"], status_code=201, response_model=TrustPolicyOut,
             responses=problem_responses(404, 409, 422))
def create_trust_policy(
    body: TrustPolicyCreate, caller: Annotated[Actor, acting(federation.create_trust_policy)], ctx: Context,
) -> TrustPolicyOut:
    """Trust an OIDC issuer's tokens that match the conditions, as a service account (admins)."""
    request = PolicyRequest(
        name=body.name, service_account=body.service_account, issuer=body.issuer, audience=body.audience,
        subject=body.subject, conditions=body.conditions, scopes=body.scopes, clusters=body.clusters,
        lifetime_seconds=body.lifetime_seconds, max_token_age_seconds=body.max_token_age_seconds,
        jwks=json.dumps(body.jwks) if body.jwks is not None else None,
    )
    with ctx.unit_of_work() as uow:
        return TrustPolicyOut.of(federation.create_trust_policy(uow, caller, request))


@router.get("/trust-policies", tags=["trust policies"], response_model=list[TrustPolicyOut])
def list_trust_policies(
    caller: Annotated[Actor, acting(federation.list_trust_policies)], ctx: Context,
) -> list[TrustPolicyOut]:
    with ctx.unit_of_work() as uow:
        return [TrustPolicyOut.of(p) for p in federation.list_trust_policies(uow, caller)]


@router.delete("/trust-policies/{ref}", tags=["trust policies"], status_code=204, responses=problem_responses(404))
def delete_trust_policy(
    ref: str, caller: Annotated[Actor, acting(federation.delete_trust_policy)], ctx: Context,
) -> Response:
    """No new exchanges; tokens already issued live out their short lifetime (or delete them)."""
    with ctx.unit_of_work() as uow:
        federation.delete_trust_policy(uow, caller, ref)
    return Response(status_code=204)


# --- RFC 8693 token exchange ------------------------------------------------------------------


def _form_fields(form: Any) -> dict[str, str]:
    # Only text fields; a repeated field counts as its first value (RFC 6749 forbids repeats anyway).
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str) and key not in fields:
            fields[key] = value
    return fields


# POST /v1/oauth2/token's form (api/routes/oauth_token.py): the token exchange's fields, and the
# device-code grant's (grant_type, device_code, client_id).
_FORM_CONTENT: Final = "application/x-www-form-urlencoded"
TOKEN_FORM_SCHEMA: Final = {"requestBody": {"required": True, "content": {_FORM_CONTENT: {"schema": {
    "type": "object", "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": [TOKEN_EXCHANGE, "urn:ietf:params:oauth:grant-type:device_code"]},
        "device_code": {"type": "string", "description": "device_code grant: from device_authorization."},
        "client_id": {"type": "string", "description": "device_code grant: the client that asked."},
        "subject_token": {"type": "string", "description": "The external OIDC token (a JWT)."},
        "subject_token_type": {"type": "string", "enum": [JWT_TYPE, ID_TOKEN_TYPE]},
        "requested_token_type": {"type": "string", "const": ACCESS_TOKEN_TYPE},
        "scope": {"type": "string", "description": "Space-separated; at most what the trust policy grants."},
        "kubeconfig": {"type": "boolean", "description": "Also return a kubeconfig for the policy's clusters."},
    }}}}}}


@dataclass(frozen=True, slots=True)
class GrantAnswer:
    """A token endpoint answer before it is put on the wire: status, JSON body, headers beyond ``NO_STORE``."""

    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


def _error(error: str, description: str, status: int = 400, headers: Mapping[str, str] | None = None) -> GrantAnswer:
    return GrantAnswer(status, {"error": error, "error_description": description}, headers or {})


def exchange_grant(ctx: AppContext, who: RequestContext, fields: Mapping[str, str]) -> GrantAnswer:
    """RFC 8693 token exchange: a workload's OIDC token (GitHub Actions, Kubernetes, ...) for a short-lived token.

    Blocking (a thread's work). Unauthenticated: the subject token is the credential. It must satisfy
    a trust policy (docs/federation.md); refusals are RFC 6749 JSON errors naming what did not match.
    The one implementation behind both ways in: the ``POST /v1/oauth2/token`` route
    (``token_exchange_grant``) and the plain-ASGI door for well-formed forms (``api/exchange_door.py``).
    """
    subject_token = fields.get("subject_token", "").strip()
    if not subject_token:
        return _error("invalid_request", "subject_token is required")
    if fields.get("subject_token_type") not in (JWT_TYPE, ID_TOKEN_TYPE):
        return _error("invalid_request", f"subject_token_type must be {JWT_TYPE}")
    if fields.get("requested_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
        return _error("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    scope = fields.get("scope")
    scopes = scope.split() if scope is not None and scope.strip() else None
    kubeconfig = fields.get("kubeconfig", "false").strip().lower() in ("1", "true", "yes")
    actor = Actor.anonymous(who)

    def run() -> federation.Exchanged:
        with ctx.unit_of_work() as uow:
            return federation.exchange_token(uow, actor, subject_token, scopes=scopes, kubeconfig=kubeconfig)

    try:
        exchanged = guard_exchange(ctx.limiter, who.client_ip or "unknown", "oauth2", run, ExchangeRefused)
    except RateLimited as limited:
        return _error("invalid_request", limited.detail, 429, {"Retry-After": str(limited.retry_after)})
    except ExchangeRefused as refused:
        if refused.kind == "request":
            return _error("invalid_scope" if refused.field == "scope" else "invalid_request", refused.reason)
        return _error("invalid_grant", refused.reason)
    body: dict[str, Any] = {
        "access_token": exchanged.secret, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer",
        "expires_in": exchanged.expires_in, "scope": " ".join(exchanged.scopes),
    }
    if exchanged.kubeconfig is not None:
        body["kubeconfig"] = exchanged.kubeconfig.text
    return GrantAnswer(200, body)


def render_grant(answer: GrantAnswer) -> Response:
    """A token endpoint answer on the wire: JSON, never stored by any cache (RFC 6749 §5.1)."""
    return JSONResponse(answer.body, status_code=answer.status, headers={**NO_STORE, **answer.headers})


def token_exchange_grant(request: Request, fields: Mapping[str, str]) -> Response:
    """The token exchange grant of ``POST /v1/oauth2/token`` (``api/routes/oauth_token.GRANTS``), run in a
    worker thread, for the forms ``api/exchange_door.py`` leaves to the route."""
    return render_grant(exchange_grant(context_of(request), request_context(request), fields))


# --- STS AssumeRoleWithWebIdentity ----------------------------------------------------------------

_STS_CODES: Final = {"expired": ("ExpiredTokenException", 400), "keys": ("IDPCommunicationError", 400),
                     "condition": ("AccessDenied", 403), "role": ("AccessDenied", 403),
                     "account": ("AccessDenied", 403), "request": ("ValidationError", 400)}


def sts_error(code: str, message: str, status: int = 400, headers: dict[str, str] | None = None) -> Response:
    """An STS error document, as boto3 parses it (ErrorResponse/Error/Code)."""
    body = (f'<ErrorResponse xmlns="{STS_NAMESPACE}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
    return Response(body, status_code=status, media_type="text/xml", headers={**NO_STORE, **(headers or {})})


def _sts_success(role: federation.AssumedRole, session_name: str) -> Response:
    key = role.key.key
    expiration = role.expiration.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    arn = f"arn:tokensmith:sts::{role.org_name}:assumed-role/{role.policy.name}/{session_name}"
    body = (
        f'<AssumeRoleWithWebIdentityResponse xmlns="{STS_NAMESPACE}"><AssumeRoleWithWebIdentityResult>'
        f"<SubjectFromWebIdentityToken>{escape(role.subject)}</SubjectFromWebIdentityToken>"
        f"<Audience>{escape(role.audience)}</Audience>"
        f"<AssumedRoleUser><Arn>{escape(arn)}</Arn>"
        f"<AssumedRoleId>{escape(role.policy.public_id)}:{escape(session_name)}</AssumedRoleId></AssumedRoleUser>"
        f"<Credentials><AccessKeyId>{key.access_key_id}</AccessKeyId>"
        f"<SecretAccessKey>{escape(role.key.secret)}</SecretAccessKey>"
        # Not a secret and not checked (as in the container-credentials exchange): tokensmith keys
        # need no session token, but SDKs expect one.
        f"<SessionToken>{key.access_key_id}</SessionToken><Expiration>{expiration}</Expiration></Credentials>"
        f"<Provider>{escape(role.issuer)}</Provider>"
        f"</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId>"
        f"</ResponseMetadata></AssumeRoleWithWebIdentityResponse>"
    )
    return Response(body, media_type="text/xml", headers=NO_STORE)


_STS_FORM: Final = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["Action", "Version", "RoleArn", "RoleSessionName", "WebIdentityToken"],
    "properties": {
        "Action": {"type": "string", "const": "AssumeRoleWithWebIdentity"},
        "Version": {"type": "string", "const": "2011-06-15"},
        "RoleArn": {"type": "string", "examples": ["arn:tokensmith:iam::default:role/github-deploy"]},
        "RoleSessionName": {"type": "string"}, "WebIdentityToken": {"type": "string"},
        "DurationSeconds": {"type": "integer", "minimum": 900, "maximum": MAX_LIFETIME},
    }}}}}}


async def _assume_role(request: Request, ctx: Context) -> Response:
    fields = _form_fields(await request.form())
    if fields.get("Action") != "AssumeRoleWithWebIdentity":
        return sts_error("InvalidAction", "only Action=AssumeRoleWithWebIdentity is supported")
    if fields.get("Version") != "2011-06-15":
        return sts_error("InvalidParameterValue", "Version must be 2011-06-15")
    for name in ("RoleArn", "RoleSessionName", "WebIdentityToken"):
        if not fields.get(name, "").strip():
            return sts_error("MissingParameter", f"The request must contain the parameter {name}")
    duration: int | None = None
    if fields.get("DurationSeconds", "").strip():
        text = fields["DurationSeconds"].strip()
        if not text.isdigit() or not 900 <= int(text) <= MAX_LIFETIME:
            return sts_error("ValidationError", f"DurationSeconds must be a whole number from 900 to {MAX_LIFETIME}")
        duration = int(text)
    actor = Actor.anonymous(request_context(request))
    session_name = fields["RoleSessionName"]

    def run() -> federation.AssumedRole:
        with ctx.unit_of_work() as uow:
            return federation.assume_role_with_web_identity(uow, actor, fields["RoleArn"], fields["WebIdentityToken"],
                                                            session_name, duration)

    try:
        role = await run_in_threadpool(guarded_exchange, request, "sts", run, ExchangeRefused)
    except RateLimited as limited:
        return sts_error("Throttling", limited.detail, 400, {"Retry-After": str(limited.retry_after)})
    except ExchangeRefused as refused:
        code, status = _STS_CODES.get(refused.kind, ("InvalidIdentityToken", 400))
        return sts_error(code, refused.reason, status)
    return _sts_success(role, session_name)


@router.post("/sts", tags=["federation"], openapi_extra=_STS_FORM, responses={
    200: {"description": "AssumeRoleWithWebIdentityResponse (XML)", "content": {"text/xml": {}}},
    400: {"description": "STS ErrorResponse (XML)", "content": {"text/xml": {}}}})
async def sts(request: Request, ctx: Context) -> Response:
    """AWS STS AssumeRoleWithWebIdentity: a workload's OIDC token for temporary S3 keys.

    Set AWS_ENDPOINT_URL_STS to this URL, AWS_ROLE_ARN to the trust policy's role_arn
    (arn:tokensmith:iam::<organization>:role/<policy name>) and AWS_WEB_IDENTITY_TOKEN_FILE to the
    token's file: boto3 and the AWS CLI then fetch and refresh keys themselves (docs/federation.md).
    """
    return await _assume_role(request, ctx)


@router.post("/sts/", include_in_schema=False)
async def sts_slash(request: Request, ctx: Context) -> Response:
    # AWS SDKs append the operation's path "/" to AWS_ENDPOINT_URL_STS.
    return await _assume_role(request, ctx)
