"""The optional authorization webhook: SubjectAccessReview (authorization.k8s.io/v1) for a cluster.

Put before RBAC (``--authorization-mode=Node,Webhook,RBAC``), it enforces each token's access level
even when someone binds the user name to a bigger role. It never grants:

* a request that did not come through a tokensmith token (no ``tokensmith.io/token-id`` in the
  user's extra): **no opinion** (``allowed: false`` without ``denied``): the next authorizer decides;
* a tokensmith token whose level permits the request: **no opinion**: RBAC decides, with the
  bindings ``tokensmith admin cluster rbac`` prints (so the level is a ceiling, never a grant);
* anything else (beyond the level; the token unknown to this cluster's organization, revoked,
  expired, or not granting this cluster): **denied**, with the reason.

What each level permits mirrors Kubernetes' built-in roles (docs/kubernetes.md has the table):

=============  ============================================================================
view           get, list, watch on namespaced and cluster-scoped resources, except secrets and
               the pods/exec, attach, portforward, proxy and serviceaccounts/token subresources;
               GET/HEAD on non-resource URLs (/version, /healthz, discovery)
edit           view, plus secrets, plus create, update, patch, delete, deletecollection on
               namespaced resources (and those subresources) except Roles, RoleBindings,
               ResourceQuotas, LimitRanges and namespaces themselves; impersonate ServiceAccounts
admin          edit, plus Roles and RoleBindings (namespaced) and LocalSubjectAccessReviews
cluster-admin  everything
=============  ============================================================================

Every level may create SelfSubjectReviews, SelfSubjectAccessReviews and SelfSubjectRulesReviews
(``kubectl auth whoami`` / ``can-i``), as the built-in ``system:basic-user`` role allows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from tokensmith.kube import levels
from tokensmith.kube.tokenreview import MalformedReview

API_VERSION: Final = "authorization.k8s.io/v1"
KIND: Final = "SubjectAccessReview"
MAX_BODY_BYTES: Final = 64 * 1024
DENIED_ACTION: Final = "kube.subjectaccessreview.denied"

READ: Final = frozenset({"get", "list", "watch"})
WRITE: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
SELF_REVIEWS: Final = frozenset({
    ("authorization.k8s.io", "selfsubjectaccessreviews"), ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
})
# Subresources that run code in, or reach into, a workload: not for view.
INTRUSIVE: Final = frozenset({"exec", "attach", "portforward", "proxy", "token", "ephemeralcontainers"})
RBAC_GROUP: Final = "rbac.authorization.k8s.io"
NOT_FOR_EDIT: Final = frozenset({("", "resourcequotas"), ("", "limitranges"), ("", "namespaces")})
ADMIN_EXTRA: Final = frozenset({(RBAC_GROUP, "roles"), (RBAC_GROUP, "rolebindings"),
                                ("authorization.k8s.io", "localsubjectaccessreviews")})


@dataclass(frozen=True)
class Attributes:
    """What a SubjectAccessReview asks: a resource request or a non-resource one."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    path: str | None = None  # set: a non-resource request

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.verb} {self.path}"
        what = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        what = f"{what}.{self.group}" if self.group else what
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {what}{where}"


@dataclass(frozen=True)
class Review:
    attributes: Attributes
    token_ids: tuple[str, ...]  # from the user's extra; empty: not a tokensmith token


def parse(body: bytes) -> Review:
    """A SubjectAccessReview from raw JSON; MalformedReview (400) naming what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedReview("the body is not JSON; send a SubjectAccessReview") from None
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise MalformedReview(f"kind must be {KIND}")
    if document.get("apiVersion") != API_VERSION:
        raise MalformedReview(f"apiVersion must be {API_VERSION}")
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise MalformedReview("spec is required")
    extra = spec.get("extra") or {}
    if not isinstance(extra, dict):
        raise MalformedReview("spec.extra must be an object of string lists")
    ids = extra.get("tokensmith.io/token-id") or []
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MalformedReview("spec.extra values must be lists of strings")
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if isinstance(resource, dict):
        fields = {k: resource.get(k) or "" for k in ("verb", "group", "resource", "subresource", "namespace")}
        if not all(isinstance(v, str) for v in fields.values()) or not fields["verb"]:
            raise MalformedReview("spec.resourceAttributes needs a verb; its fields are strings")
        attributes = Attributes(**fields)
    elif isinstance(non_resource, dict):
        verb, path = non_resource.get("verb"), non_resource.get("path")
        if not isinstance(verb, str) or not verb or not isinstance(path, str):
            raise MalformedReview("spec.nonResourceAttributes needs a verb and a path")
        attributes = Attributes(verb=verb, path=path)
    else:
        raise MalformedReview("spec needs resourceAttributes or nonResourceAttributes")
    return Review(attributes, tuple(ids))


def permits(level: str, a: Attributes) -> bool:
    """Whether ``level`` allows the request ``a`` (the table in this module's doc)."""
    if level == "cluster-admin":
        return True
    if a.path is not None:
        return a.verb in ("get", "head")
    key = (a.group, a.resource)
    if key in SELF_REVIEWS and a.verb == "create":
        return True
    rank = levels.rank(level)
    if a.verb == "impersonate":
        return rank >= levels.rank("edit") and key == ("", "serviceaccounts")
    if a.verb in READ:
        if rank >= levels.rank("edit"):
            return True
        return key != ("", "secrets") and a.subresource not in INTRUSIVE
    if a.verb not in WRITE:
        return False  # bind, escalate, approve, sign, use, ...: cluster-admin only
    if not a.namespace or key in NOT_FOR_EDIT:
        return False  # changes to cluster-scoped objects (and namespaces, quotas): beyond admin
    if a.group == RBAC_GROUP or key in ADMIN_EXTRA:
        return rank >= levels.rank("admin") and key in ADMIN_EXTRA
    return rank >= levels.rank("edit")


def no_opinion(reason: str) -> dict[str, Any]:
    return _answer({"allowed": False, "reason": reason})


def deny(reason: str) -> dict[str, Any]:
    return _answer({"allowed": False, "denied": True, "reason": reason})


def _answer(status: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "status": status}


TOKEN_UNKNOWN: Final = "the token is unknown, revoked or expired"  # noqa: S105 - a reason
NOT_GRANTED: Final = "the token does not grant this cluster"


def level_of(session: Any, cluster: Any, token_public_id: str, now: Any) -> tuple[str | None, str]:
    """(the token's level on ``cluster``, "") or (None, why not): only a live token of the cluster's
    organization granting it has one. Looked up on every review: a revoked token is refused at once
    here, even while the API server's TokenReview cache still holds it."""
    from sqlalchemy import select

    from tokensmith.db.models import Token, User, token_clusters
    from tokensmith.tokens.expiration import is_expired

    row = session.execute(
        select(Token.id, Token.revoked_at, Token.expires_at, User.disabled).join(User, User.id == Token.user_id)
        .where(Token.public_id == token_public_id[:32], Token.org_id == cluster.org_id)
    ).first()
    if row is None or row.revoked_at is not None or row.disabled or is_expired(row.expires_at, now):
        return None, TOKEN_UNKNOWN
    level = session.scalar(select(token_clusters.c.level).where(
        token_clusters.c.token_id == row.id, token_clusters.c.cluster_id == cluster.id))
    return (level, "") if level is not None else (None, NOT_GRANTED)


def judge(review: Review, level_for: Any) -> tuple[dict[str, Any], str | None]:
    """(the answer, the denial reason or None). ``level_for(token_id)`` is ``level_of`` bound to a session."""
    if not review.token_ids:
        return no_opinion("not a tokensmith token"), None
    if len(review.token_ids) != 1:
        reason = "more than one tokensmith token id"
        return deny(reason), reason
    level, why = level_for(review.token_ids[0])
    if level is None:
        return deny(why), why
    if permits(level, review.attributes):
        return no_opinion(f"within the token's level {level}; RBAC decides"), None
    reason = f"the token's level {level} does not allow {review.attributes.describe()}"
    return deny(reason), reason
