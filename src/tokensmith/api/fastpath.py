"""The hot doors' fast path: a cached caller's answer as plain ASGI, before anything else runs.

Every request to every service behind tokensmith pays for one of its doors: forward-auth for a
reverse proxy, TokenReview for a Kubernetes API server, RFC 7662 introspection for a gateway, SigV4
verify for an S3 gateway, and ``GET /v1/whoami`` as the reference of an ordinary API call. Through
FastAPI a cached answer cost 10-40x what the verification itself costs (``Request``/``Response``
objects, dependency solving, a thread-pool hop per sync dependency, an ORM session, header
middlewares re-scanning the header list; profiled in docs/performance.md). Here a door whose caller
(and subject) the caches already know costs: one pass over the raw header list, the client address,
``Verifier.recall`` (HMAC, dict, expiry), a plain-integer metric, and one ``send`` of an answer
encoded once per cached identity (kept in ``Identity.wire``, dropped with it on any change). S3
verify asks the access key cache (objectstore/keycache.py: derived signing keys, never secrets)
instead of the database.

What such an answer says is exactly what the route says - the same body, the same headers,
security headers, ``Cache-Control: no-store`` and HSTS behind a trusted TLS proxy included - and
it counts the same metrics and notes the same use; ``tests/test_fastpath.py`` and
``tests/test_forward_auth_fastpath.py`` compare both paths for every door.

Anything else falls through to the routes, unchanged: no or malformed credentials, cache misses,
refusals (they are counted and audited there), a first use from a new address (audited there), a
request with a body the door cannot read cheaply. A body read here is handed on as it was read.
So the fast path decides nothing the slow path would decide differently; it only skips work.

Position: outermost in ``api/middleware.stack`` (before FastAPI's error middleware and the header
middlewares, which then never run for a fast answer); its answers are complete on their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tokensmith import metrics
from tokensmith.api.answers import INACTIVE, identity_headers, introspection
from tokensmith.api.bodylimit import (
    DEFAULT_BODY_TIMEOUT_SECONDS,
    read_within,
    refusal_message,
    replay,
    timeout_detail,
    whole_body,
)
from tokensmith.api.guard import CLIENT_ADDRESS_HEADER, SubjectKeys, client_key_of, proxy_subject_keys
from tokensmith.api.headers import API_CSP, SECURITY_HEADERS
from tokensmith.api.routes.objectstore import VerifyRequest, VerifyResult  # S3 verify's answer is the route's
from tokensmith.api.tls import HSTS, forwarded_https
from tokensmith.clientaddress import first_headers, scope_ip
from tokensmith.errors import InvalidInput
from tokensmith.kube import tokenreview
from tokensmith.protocols import ENCODED_HEADERS, EncodedHeaders
from tokensmith.verify.core import Identity

if TYPE_CHECKING:
    from tokensmith.api.context import AppContext

FORWARD_AUTH_PATH = "/v1/auth/verify"
WHOAMI_PATH = "/v1/whoami"
INTROSPECTION_PATH = "/v1/oauth2/introspect"
S3_VERIFY_PATH = "/v1/object-storage/verify"
S3_DOOR = "s3-verify"
VERIFY_SCOPE = "object-storage:verify"
DOOR = "forward-auth"
# Where the fast path leaves what it computed for the slow forward-auth route (a key of the ASGI scope).
HANDOFF = "tokensmith.forward_auth"
# Bodies the hot doors read here: a TokenReview's ceiling; an introspection form or a SigV4
# description is far smaller.
MAX_HOT_BODY = tokenreview.MAX_BODY_BYTES
FORM = b"application/x-www-form-urlencoded"
INTROSPECTION_FIELDS = frozenset({"token", "token_type_hint"})

# Sent with every answer here: the API's Cache-Control, the security headers and the API's CSP,
# exactly what api/middleware.py's policy adds to a route's answer (tests compare the two).
_COMMON_HEADERS = {"Cache-Control": "no-store", **SECURITY_HEADERS, "Content-Security-Policy": API_CSP}
_COMMON_RAW = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in _COMMON_HEADERS.items()]
_SECURITY_RAW = [(name, value) for name, value in _COMMON_RAW if name != b"cache-control"]
_HSTS_RAW = (b"strict-transport-security", HSTS.encode("latin-1"))
_JSON_TYPE = (b"content-type", b"application/json")
_EMPTY_BODY = {"type": "http.response.body", "body": b"", "more_body": False}


def encode_json(content: Any) -> bytes:
    """JSON exactly as Starlette's ``JSONResponse`` renders it (the routes' answers)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


_CLIENT_ADDRESS = CLIENT_ADDRESS_HEADER.lower().encode()


@dataclass(frozen=True, slots=True)
class Handoff:
    """What the fast path knew about a forward-auth request it could not answer (read by the route)."""

    authorization: str | None  # the raw header value, parsed again by the route (its errors are its own)
    client_ip: str
    keys: SubjectKeys


@dataclass(slots=True)
class Call:
    """One request at a hot door, read once: the first of each header, the client, the body."""

    scope: Scope
    headers: dict[bytes, bytes]
    context: AppContext
    client: str  # the client's address (X-Forwarded-For from trusted proxies only)
    body: bytes
    started: float
    now: datetime  # the clock's, read once for the whole request

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer, made once and kept with what it answers for (``Identity.wire``).

    ``headers`` are the raw ASGI headers any server writes; ``encoded`` the same headers checked
    and encoded once, which tokensmith's own server protocol writes as they are (protocols.py).
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    encoded: EncodedHeaders
    body: bytes = b""

    @classmethod
    def of(cls, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> Answer:
        return cls(status, headers, EncodedHeaders.of(headers), body)

    def with_header(self, name: bytes, value: bytes) -> Answer:
        return Answer(self.status, [*self.headers, (name, value)], self.encoded.plus(name, value), self.body)


def ok_answer(identity: Identity) -> Answer:
    """Forward-auth's 200 for ``identity``, made once and kept with the cached identity."""
    answer = identity.wire.get(DOOR)
    if answer is None:
        # Headers encoded by Starlette itself, so the bytes are exactly the slow path's.
        answer = identity.wire[DOOR] = Answer.of(200, Response(status_code=200, headers={
            **identity_headers(identity), **_COMMON_HEADERS}).raw_headers)
    return cast(Answer, answer)


def json_answer(body: bytes) -> Answer:
    return Answer.of(200, [(b"content-length", str(len(body)).encode()), _JSON_TYPE, *_COMMON_RAW], body)


_INACTIVE = json_answer(encode_json(INACTIVE))


def bearer(authorization: str | None) -> str | None:
    """The secret of a well-shaped ``Bearer <secret>`` header value; None for anything a route must judge."""
    if authorization is None:
        return None
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or " " in secret:
        return None
    return secret


def observe(door: str, call: Call) -> None:
    metrics.observe_verification(door, "ok", time.perf_counter() - call.started)


def api_caller(call: Call, scope: str | None) -> Identity | None:
    """The bearer's cached identity, if it holds ``scope`` and its use from this address is already
    known (a first use is audited by the route); None otherwise. Notes nothing yet."""
    secret = bearer(call.header(b"authorization"))
    if secret is None:
        return None
    identity = call.context.verifier.recall(secret, call.now)
    if identity is None or (scope is not None and scope not in identity.scopes):
        return None
    return identity if call.context.addresses.known(identity.token_id, call.client) else None


# --- the doors ----------------------------------------------------------------------------------


def forward_auth(call: Call) -> Answer | None:
    """``GET /v1/auth/verify``: the identity headers of a cached token (api/routes/verification.py)."""
    authorization = call.header(b"authorization")
    secret = bearer(authorization)
    verifier = call.context.verifier
    identity = verifier.recall(secret, call.now) if secret is not None else None
    if identity is None:
        # The route answers (lookup, refusal, counting) with what was worked out here.
        client = call.scope.get("client")
        peer = client[0] if client else "unknown"
        keys = proxy_subject_keys(peer, call.client, call.context.trusted_proxies)
        call.scope[HANDOFF] = Handoff(authorization, call.client, keys)
        call.scope.setdefault("state", {})["client_ip"] = call.client  # api.guard.request_ip reads it here
        return None
    verifier.note_use(identity, call.client, call.now)
    observe(DOOR, call)
    return ok_answer(identity)


def whoami(call: Call) -> Answer | None:
    """``GET /v1/whoami``: the body the route rendered for this cached identity (api/routes/identity.py)."""
    identity = api_caller(call, None)
    if identity is None:
        return None
    answer = identity.wire.get(WHOAMI_PATH)  # made by the route on the identity's first call
    if answer is None:
        return None
    call.context.verifier.note_use(identity, call.client, call.now)
    observe("api", call)
    return cast(Answer, answer)


def introspect(call: Call) -> Answer | None:
    """``POST /v1/oauth2/introspect`` by a bearer holding ``introspect``, about a cached token."""
    content_type = call.headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
    if content_type != FORM or not _names_a_valid_client(call):
        return None  # the route parses (and refuses) what is not a plain form or a valid address
    try:
        fields = parse_qsl(call.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    form = dict(fields)
    if len(form) != len(fields) or not form.keys() <= INTROSPECTION_FIELDS or not form.get("token"):
        return None
    caller = api_caller(call, "introspect")
    if caller is None:
        return None
    verifier = call.context.verifier
    subject = verifier.recall(form["token"], call.now)
    if subject is None:
        return None
    verifier.note_use(caller, call.client, call.now)
    verifier.note_use(subject, call.client, call.now)
    observe("api", call)
    observe("introspection", call)
    if subject.org_id != caller.org_id:
        return _INACTIVE
    answer = subject.wire.get(INTROSPECTION_PATH)
    if answer is None:
        answer = subject.wire[INTROSPECTION_PATH] = json_answer(encode_json(introspection(caller, subject)))
    return cast(Answer, answer)


def review_token(call: Call) -> Answer | None:
    """``POST /v1/clusters/{cluster}/tokenreview`` from a remembered API server, about a cached token."""
    cluster_ref = call.scope["path"][len(CLUSTERS_PREFIX):-len(TOKENREVIEW_SUFFIX)]
    credential = bearer(call.header(b"authorization"))
    if credential is None or "/" in cluster_ref:
        return None
    context = call.context
    context.verifier.hear_changes()  # a credential revoked by another worker is forgotten first
    caller = context.webhook_callers.recall(credential, context.secret_key, call.now)
    if caller is None or not caller.names(cluster_ref):
        return None
    try:
        review = tokenreview.parse(call.body)
    except tokenreview.MalformedReview:
        return None
    if review.audiences is not None and caller.token_audience not in review.audiences:
        return None  # a refusal: audited by the route
    identity = context.verifier.recall(review.token, call.now)
    if identity is None or caller.cluster_id not in identity.cluster_ids or tokenreview.SCOPE not in identity.scopes:
        return None
    # The answer depends on the review only through its version and whether audiences were asked for.
    key = (TOKENREVIEW_SUFFIX, caller.cluster_id, caller.username_prefix, review.api_version,
           review.audiences is not None)
    answer = identity.wire.get(key)
    if answer is None:
        verdict = tokenreview.judge(review, caller.cluster_id, caller.token_audience, lambda _token: identity,
                                    caller.username_prefix)
        if verdict.reason is not None:
            return None
        answer = identity.wire[key] = json_answer(encode_json(verdict.answer))
    # As the route's verify(): the API server is not the token's user.
    context.verifier.note_use(identity, None, call.now)
    observe("tokenreview-credential", call)
    observe("tokenreview", call)
    return cast(Answer, answer)


def verify_signature(call: Call) -> Answer | None:
    """``POST /v1/object-storage/verify`` by a bearer holding ``object-storage:verify``, for a cached key.

    Valid answers, and invalid ones when no client is named (nothing to count); an invalid answer for
    a named client goes to the route, which counts it (api/guard.py ``guarded_for_client``), and so
    does any request of a named client over its limit ("rate limited").
    """
    try:
        client_key = client_key_of(call.header(_CLIENT_ADDRESS))
    except InvalidInput:
        return None  # the route refuses it (422)
    caller = api_caller(call, VERIFY_SCOPE)
    if caller is None:
        return None
    context = call.context
    if client_key is not None and context.limiter.blocked_local(client_key) is not None:
        return None
    try:
        request = VerifyRequest.model_validate_json(call.body)
    except ValidationError:
        return None  # the route's 422
    verdict = context.access_key_cache.verify_cached(caller.org_id, request.method, request.path, request.query,
                                                     request.headers, request.bodySha256, call.now)
    if verdict is None or (not verdict.valid and client_key is not None):
        return None
    context.verifier.note_use(caller, call.client, call.now)
    observe("api", call)
    metrics.observe_verification(S3_DOOR, "ok" if verdict.valid else "invalid", time.perf_counter() - call.started)
    owner = verdict.owner if verdict.valid and verdict.streaming is None else None
    answer = owner.wire.get(S3_VERIFY_PATH) if owner is not None else None
    if answer is None:
        answer = json_answer(encode_json(VerifyResult.of(verdict).model_dump(mode="json", exclude_none=True)))
        if owner is not None:  # a streaming answer carries this request's own signature: never reused
            owner.wire[S3_VERIFY_PATH] = answer
    return cast(Answer, answer)


CLUSTERS_PREFIX = "/v1/clusters/"
TOKENREVIEW_SUFFIX = "/tokenreview"
Door = Callable[[Call], Answer | None]
# Each door with the name its metrics count it under (tokensmith_fast_path_answers_total{door}).
GET_DOORS: dict[str, tuple[str, Door]] = {FORWARD_AUTH_PATH: (DOOR, forward_auth), WHOAMI_PATH: ("api", whoami)}
POST_DOORS: dict[str, tuple[str, Door]] = {INTROSPECTION_PATH: ("introspection", introspect),
                                            S3_VERIFY_PATH: (S3_DOOR, verify_signature)}
TOKENREVIEW_DOOR = ("tokenreview", review_token)


def door_of(method: str, path: str) -> tuple[str, Door] | None:
    """The hot door at ``method path``, if it is one."""
    if method == "GET":
        return GET_DOORS.get(path)
    if method != "POST":
        return None
    door = POST_DOORS.get(path)
    if door is None and path.startswith(CLUSTERS_PREFIX) and path.endswith(TOKENREVIEW_SUFFIX):
        return TOKENREVIEW_DOOR
    return door


def _names_a_valid_client(call: Call) -> bool:
    """No Tokensmith-Client-Address, or one that is an IP address (else the route answers 422)."""
    try:
        client_key_of(call.header(_CLIENT_ADDRESS))
    except InvalidInput:
        return False
    return True


class HotDoors:
    """Answers the hot doors for cached callers as plain ASGI; anything else goes on to ``app``."""

    def __init__(self, app: ASGIApp, body_timeout: float = DEFAULT_BODY_TIMEOUT_SECONDS,
                 max_body: int = MAX_HOT_BODY) -> None:
        self.app = app
        self.body_timeout = body_timeout
        # Never more than the body limit below would let through (an operator may set it lower).
        self.max_body = min(max_body, MAX_HOT_BODY)
        self._context: AppContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot = door_of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if hot is None:
            await self.app(scope, receive, send)
            return
        name, door = hot
        started = time.perf_counter()
        headers = first_headers(scope)
        context = self._context or self._context_of(scope)
        client = scope_ip(scope, headers, context.trusted_proxies)
        body = b""
        if scope["method"] == "POST":
            declared = headers.get(b"content-length", b"")
            if not declared.isdigit() or int(declared) > self.max_body or b"transfer-encoding" in headers:
                await self.app(scope, receive, send)  # bodies it cannot read cheaply: the route's
                return
            try:
                # Exactly Content-Length bytes: the server's parser delivers no more.
                read = await read_within(scope, self.body_timeout, lambda: whole_body(receive))
            except TimeoutError:  # what the body limit answers, with what every API answer carries
                start, rest = refusal_message(408, timeout_detail(self.body_timeout))
                start["headers"] = [*start["headers"], *_SECURITY_RAW]
                await send(start)
                await send(rest)
                return
            if read is None:
                return  # the client went away: nobody is left to answer
            body, receive = read, replay(read, receive)
        answer = door(Call(scope, headers, context, client, body, started, context.clock.now()))
        if answer is None:
            await self.app(scope, receive, send)
            return
        metrics.observe_fast_answer(name)
        if scope.get("scheme") == "https" or (b"x-forwarded-proto" in headers
                                              and forwarded_https(scope, context.trusted_proxies)):
            answer = answer.with_header(*_HSTS_RAW)
        await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers,
                    ENCODED_HEADERS: answer.encoded})
        await send({"type": "http.response.body", "body": answer.body, "more_body": False} if answer.body
                   else _EMPTY_BODY)

    def _context_of(self, scope: Scope) -> AppContext:
        """The application's context (api/context.py), found once: through the scope inside Starlette,
        or the wrapped app's own state outermost. It is made with the app and never replaced."""
        app = scope.get("app")
        self._context = cast(Any, app if app is not None else self.app).state.context
        return self._context
