"""Kubernetes webhook token authentication: answer a cluster API server's TokenReview.

The reviewed token goes through the one verification core (``Verifier.verify``); this module
only adds what Kubernetes needs on top: the token must grant this cluster and hold the
``kubernetes`` scope, audiences must match, and the answer is a TokenReview in the version asked.
It fails closed: anything not positively verified is ``authenticated: false``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from tokensmith.errors import AuthenticationFailed, TokensmithError
from tokensmith.kube import levels
from tokensmith.verify.core import Identity

API_GROUP: Final = "authentication.k8s.io"
API_VERSIONS: Final = (f"{API_GROUP}/v1", f"{API_GROUP}/v1beta1")
KIND: Final = "TokenReview"
SCOPE: Final = "kubernetes"
# A TokenReview is a token and a few audiences; anything near this size is not one.
MAX_BODY_BYTES: Final = 64 * 1024
MAX_AUDIENCES: Final = 32
TOKEN_ID_EXTRA: Final = "tokensmith.io/token-id"  # noqa: S105 - a key name
ORG_EXTRA: Final = "tokensmith.io/organization"
ADMINS_GROUP: Final = "tokensmith:admins"
AUTHENTICATED_GROUP: Final = "system:authenticated"

NOT_GRANTED = "token does not grant this cluster"
NO_SCOPE = "token lacks the kubernetes scope"
WRONG_AUDIENCE = "none of the requested audiences is this cluster's"


class MalformedReview(TokensmithError):
    status = 400
    title = "Bad request"


class ReviewTooLarge(TokensmithError):
    status = 413
    title = "Content too large"


@dataclass(frozen=True)
class Review:
    """What a TokenReview asks: which token, in which API version, for which audiences (None: any)."""

    api_version: str
    token: str
    audiences: tuple[str, ...] | None


def parse(body: bytes) -> Review:
    """A TokenReview from raw JSON; MalformedReview (400) naming what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
        raise MalformedReview("the body is not JSON; send a TokenReview") from None
    if not isinstance(document, dict):
        raise MalformedReview("the body must be a TokenReview object")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if api_version not in API_VERSIONS:
        raise MalformedReview(f"apiVersion must be one of {', '.join(API_VERSIONS)}")
    if kind != KIND:
        raise MalformedReview(f"kind must be {KIND}")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise MalformedReview("spec is required")
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise MalformedReview("spec.token is required")
    audiences = spec.get("audiences")
    if audiences is not None and (
        not isinstance(audiences, list) or len(audiences) > MAX_AUDIENCES
        or not all(isinstance(a, str) for a in audiences)
    ):
        raise MalformedReview(f"spec.audiences must be a list of at most {MAX_AUDIENCES} strings")
    return Review(api_version, token, tuple(audiences) if audiences else None)


def groups(identity: Identity, level: str | None = None) -> list[str]:
    """The Kubernetes groups of a verified caller: the organization, admins, the token's access level
    on the cluster (``tokensmith:view`` ... ``tokensmith:cluster-admin``), and everyone authenticated."""
    result = [f"tokensmith:org:{identity.org_name}"]
    if identity.is_admin:
        result.append(ADMINS_GROUP)
    if level is not None:
        result.append(levels.group(level))
    result.append(AUTHENTICATED_GROUP)
    return result


def answer(review: Review, status: dict[str, Any]) -> dict[str, Any]:
    """The TokenReview response, in the API version that was asked."""
    return {"apiVersion": review.api_version, "kind": KIND, "metadata": {"creationTimestamp": None},
            "status": status}


def refuse(review: Review, error: str) -> dict[str, Any]:
    return answer(review, {"authenticated": False, "error": error})


@dataclass(frozen=True)
class Verdict:
    """The answer for the API server, and for the audit log why it was a refusal and whose token it was."""

    answer: dict[str, Any]
    reason: str | None = None  # None: authenticated
    identity: Identity | None = None  # the token's owner, when the token verified


def decide(review: Review, cluster_id: int, audience: str, verify: Callable[[str], Identity],
           username_prefix: str = "") -> dict[str, Any]:
    """Review a token for the cluster ``cluster_id``: a TokenReview answer, authenticated or not."""
    return judge(review, cluster_id, audience, verify, username_prefix).answer


def judge(review: Review, cluster_id: int, audience: str, verify: Callable[[str], Identity],
          username_prefix: str = "") -> Verdict:
    """Review a token for the cluster ``cluster_id``: the answer, and the reason when it is a refusal.

    ``verify`` is the verification core (raises AuthenticationFailed). Authenticated only when the
    token is live, grants this cluster, holds the ``kubernetes`` scope, and (when audiences are
    asked for) the cluster's ``audience`` is among them.
    """
    if review.audiences is not None and audience not in review.audiences:
        return Verdict(refuse(review, WRONG_AUDIENCE), WRONG_AUDIENCE)
    try:
        identity = verify(review.token)
    except AuthenticationFailed as failure:
        return Verdict(refuse(review, failure.detail), failure.detail)
    if cluster_id not in identity.cluster_ids:
        return Verdict(refuse(review, NOT_GRANTED), NOT_GRANTED, identity)
    if SCOPE not in identity.scopes:
        return Verdict(refuse(review, NO_SCOPE), NO_SCOPE, identity)
    status: dict[str, Any] = {
        "authenticated": True,
        "user": {
            "username": f"{username_prefix}{identity.username}",
            "uid": identity.user_public_id,
            "groups": groups(identity, identity.cluster_levels.get(cluster_id)),
            "extra": {TOKEN_ID_EXTRA: [identity.token_public_id], ORG_EXTRA: [identity.org_name]},
        },
    }
    if review.audiences is not None:
        status["audiences"] = [audience]
    return Verdict(answer(review, status), identity=identity)
