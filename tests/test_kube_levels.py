"""Cluster access levels per token, the user-name prefix per cluster, and the SubjectAccessReview
webhook (issue 16), over the REST API and the services, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from tests.conftest import SECRET_KEY
from tests.test_kube_api import add_cluster, create_token, mint, review
from tests.test_kube_denials import REFUSED, events, the_one
from tests.test_migrations import empty_database  # noqa: F401 - the fixture
from tokensmith.clock import FrozenClock
from tokensmith.db.migrate import upgrade
from tokensmith.db.models import Cluster, User
from tokensmith.errors import InvalidInput
from tokensmith.kube import authz
from tokensmith.kube.authz import Attributes
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier

SAR = "authorization.k8s.io/v1"


@pytest.fixture
def prod(client, admin):
    return add_cluster(client, admin, "prod")


def level_of(token: dict, cluster: str = "prod") -> str:
    return next(c["level"] for c in token["clusters"] if c["name"] == cluster)


# --- choosing a level at creation --------------------------------------------------------------


def test_a_token_granting_a_cluster_without_a_level_gets_view(client, alice, prod):
    token = create_token(client, alice, clusters=["prod"]).json()["token"]
    assert token["clusters"] == [{"id": prod["id"], "name": "prod", "level": "view"}]


def test_a_level_is_chosen_as_name_equals_level_and_shown_when_the_token_is_read(client, alice, prod):
    created = create_token(client, alice, clusters=["prod=edit"]).json()["token"]
    assert level_of(created) == "edit"
    assert level_of(client.get(f"/v1/tokens/{created['id']}", headers=alice.headers).json()) == "edit"


def test_a_member_cannot_choose_more_than_edit_and_nothing_is_created(client, alice, prod):
    response = create_token(client, alice, clusters=["prod=admin"])
    assert response.status_code == 422
    assert "level 'admin' is above the most you may grant there ('edit')" in response.json()["detail"]
    assert len(client.get("/v1/tokens", headers=alice.headers).json()["items"]) == 1  # her own only


def test_an_admin_may_allow_members_more_on_one_cluster(client, admin, alice, prod):
    raised = client.patch("/v1/clusters/prod", json={"member_max_level": "admin"}, headers=admin.headers)
    assert raised.status_code == 200 and raised.json()["member_max_level"] == "admin"
    assert level_of(create_token(client, alice, clusters=["prod=admin"]).json()["token"]) == "admin"


def test_admins_may_choose_cluster_admin(client, admin, prod):
    assert level_of(create_token(client, admin, clusters=[f"{prod['id']}=cluster-admin"]).json()["token"]) \
        == "cluster-admin"


@pytest.mark.parametrize("ref", ["prod=root", "prod=", "prod=View"])
def test_an_unknown_level_is_a_clear_422(client, alice, prod, ref):
    response = create_token(client, alice, clusters=[ref])
    assert response.status_code == 422
    assert "is not an access level; use one of view, edit, admin, cluster-admin" in response.json()["detail"]


def test_one_cluster_named_twice_with_different_levels_is_refused(client, alice, prod):
    response = create_token(client, alice, clusters=["prod=view", f"{prod['id']}=edit"])
    assert response.status_code == 422 and "named twice with different levels" in response.json()["detail"]


def test_a_token_minted_by_a_view_token_cannot_get_edit(database, clock, alice, prod):
    with database.session() as session:
        owner = session.get(User, alice.user.id)
        cluster = session.scalar(select(Cluster).where(Cluster.public_id == prod["id"]))
        tokens = TokenService(session, clock, SECRET_KEY)
        parent = tokens.create(owner, "parent", clusters=[cluster], cluster_levels={cluster.id: "view"})
        with pytest.raises(InvalidInput, match="above the most you may grant there \\('view'\\)"):
            tokens.create(owner, "child", clusters=[cluster], cluster_levels={cluster.id: "edit"},
                          max_levels=parent.token.cluster_levels)


def test_a_parent_token_not_granting_a_cluster_cannot_pass_it_on(database, clock, alice, prod):
    with database.session() as session:
        owner = session.get(User, alice.user.id)
        cluster = session.scalar(select(Cluster).where(Cluster.public_id == prod["id"]))
        with pytest.raises(InvalidInput, match="the token creating this one does not grant it"):
            TokenService(session, clock, SECRET_KEY).create(owner, "child", clusters=[cluster], max_levels={})


def test_the_verified_identity_carries_the_levels(database, clock, client, alice, prod):
    secret = create_token(client, alice, clusters=["prod=edit"]).json()["secret"]
    identity = Verifier(database, SECRET_KEY, clock).verify(secret)
    assert dict(identity.cluster_levels) == {next(iter(identity.cluster_ids)): "edit"}


# --- the user-name prefix ----------------------------------------------------------------------


def test_new_clusters_prefix_user_names_with_tokensmith(prod):
    assert prod["username_prefix"] == "tokensmith:" and prod["member_max_level"] == "edit"


def test_the_prefix_can_be_changed_and_applies_to_the_next_review(client, admin, alice, prod):
    credential = mint(client, admin, prod)["secret"]
    secret = create_token(client, alice, clusters=["prod=edit"]).json()["secret"]
    assert client.patch("/v1/clusters/prod", json={"username_prefix": ""}, headers=admin.headers).status_code == 200
    user = review(client, prod, credential, secret).json()["status"]["user"]
    assert user["username"] == "alice" and "tokensmith:edit" in user["groups"]


def test_a_prefix_with_spaces_is_refused(client, admin, prod):
    response = client.patch("/v1/clusters/prod", json={"username_prefix": "my prefix:"}, headers=admin.headers)
    assert response.status_code == 422 and "username_prefix must be printable text" in response.json()["detail"]


def test_patching_a_cluster_with_nothing_is_refused(client, admin, prod):
    assert client.patch("/v1/clusters/prod", json={}, headers=admin.headers).status_code == 422


def test_members_cannot_raise_their_own_ceiling(client, alice, prod):
    assert client.patch("/v1/clusters/prod", json={"member_max_level": "cluster-admin"},
                        headers=alice.headers).status_code == 403


# --- the migration -----------------------------------------------------------------------------


def test_existing_grants_keep_their_owners_most_and_existing_clusters_keep_bare_names(empty_database):  # noqa: F811
    upgrade(empty_database.engine, "0009_keys")
    now = FrozenClock().now().replace(tzinfo=None)
    with empty_database.engine.begin() as c:
        c.execute(text("INSERT INTO organizations (id, public_id, name, created_at) VALUES (1, 'org_1', 'o', :now)"),
                  {"now": now})
        for uid, name, is_admin in ((1, "root", True), (2, "member", False)):
            c.execute(text("INSERT INTO users (id, public_id, org_id, username, is_admin, disabled, "
                           "must_change_password, created_at) "
                           "VALUES (:id, :pid, 1, :name, :admin, false, false, :now)"),
                      {"id": uid, "pid": f"usr_{uid}", "name": name, "admin": is_admin, "now": now})
            c.execute(text("INSERT INTO tokens (id, public_id, user_id, org_id, name, note, secret_digest, hint, "
                           "created_at) VALUES (:id, :pid, :id, 1, 't', '', :digest, 'abcd', :now)"),
                      {"id": uid, "pid": f"tok_{uid}", "digest": f"d{uid}", "now": now})
        c.execute(text("INSERT INTO clusters (id, public_id, org_id, name, server, certificate_authority, region, "
                       "created_at) VALUES (1, 'cls_1', 1, 'old', 'https://10.0.0.1', 'x', 'r', :now)"), {"now": now})
        c.execute(text("INSERT INTO token_clusters (token_id, cluster_id) VALUES (1, 1), (2, 1)"))
    upgrade(empty_database.engine)
    with empty_database.engine.connect() as c:
        levels = dict(c.execute(text("SELECT token_id, level FROM token_clusters")).all())
        prefix, ceiling = c.execute(text("SELECT username_prefix, member_max_level FROM clusters")).one()
    assert levels == {1: "cluster-admin", 2: "edit"}
    assert (prefix, ceiling) == ("", "edit")


# --- the SubjectAccessReview webhook -----------------------------------------------------------


def sar(client, cluster, credential, *, token_id=None, headers=None, **attributes):
    spec = {"user": "tokensmith:alice", "groups": ["system:authenticated"],
            "resourceAttributes": {"namespace": "default", "verb": "get", "group": "", "version": "v1",
                                   "resource": "configmaps", **attributes}}
    if token_id is not None:
        spec["extra"] = {"tokensmith.io/token-id": [token_id]}
    body = {"apiVersion": SAR, "kind": "SubjectAccessReview", "spec": spec}
    return client.post(f"/v1/clusters/{cluster['id']}/subjectaccessreview", json=body,
                       headers=headers if headers is not None else {"Authorization": f"Bearer {credential}"})


@pytest.fixture
def webhook(client, admin, prod):
    return mint(client, admin, prod)["secret"]


def test_sar_has_no_opinion_on_a_request_without_a_tokensmith_token(client, prod, webhook):
    status = sar(client, prod, webhook, verb="delete").json()["status"]
    assert status == {"allowed": False, "reason": "not a tokensmith token"}


def test_sar_has_no_opinion_within_the_tokens_level(client, alice, prod, webhook):
    token = create_token(client, alice, clusters=["prod=view"]).json()["token"]
    response = sar(client, prod, webhook, token_id=token["id"], verb="list")
    assert response.status_code == 200 and response.json()["kind"] == "SubjectAccessReview"
    assert response.json()["status"]["allowed"] is False and "denied" not in response.json()["status"]


def test_sar_denies_beyond_the_tokens_level_saying_why(client, alice, prod, webhook):
    token = create_token(client, alice, clusters=["prod=view"]).json()["token"]
    status = sar(client, prod, webhook, token_id=token["id"], verb="delete", name="x").json()["status"]
    assert status["denied"] is True and status["allowed"] is False
    assert status["reason"] == "the token's level view does not allow delete configmaps in namespace default"


def test_sar_denials_are_audited_with_the_token_id_never_other_text(client, database, alice, prod, webhook):
    token = create_token(client, alice, clusters=["prod=view"]).json()["token"]
    sar(client, prod, webhook, token_id=token["id"], verb="delete", name="x")
    event, facts = the_one(database, authz.DENIED_ACTION)
    assert event.target == prod["id"] and facts["token"] == token["id"]
    assert facts["reason"] == "the token's level view does not allow delete configmaps in namespace default"
    secret = create_token(client, alice).json()["secret"]
    sar(client, prod, webhook, token_id=secret, verb="delete")
    assert all(secret not in (e.details or "") for e in events(database, authz.DENIED_ACTION))


def test_sar_denies_a_revoked_token_at_once(client, alice, prod, webhook):
    token = create_token(client, alice, clusters=["prod=edit"]).json()["token"]
    client.delete(f"/v1/tokens/{token['id']}", headers=alice.headers)
    status = sar(client, prod, webhook, token_id=token["id"]).json()["status"]
    assert status["denied"] is True and status["reason"] == authz.TOKEN_UNKNOWN


def test_sar_denies_a_token_of_another_cluster(client, admin, alice, prod, webhook):
    add_cluster(client, admin, "staging", "https://10.0.0.2:6443")
    token = create_token(client, alice, clusters=["staging=edit"]).json()["token"]
    assert sar(client, prod, webhook, token_id=token["id"]).json()["status"]["reason"] == authz.NOT_GRANTED


def test_sar_denies_another_organizations_token_as_unknown(client, mallory, prod, webhook):
    theirs = add_cluster(client, mallory, "evil")
    token = create_token(client, mallory, clusters=["evil=cluster-admin"]).json()["token"]
    assert theirs["id"] != prod["id"]
    assert sar(client, prod, webhook, token_id=token["id"]).json()["status"]["reason"] == authz.TOKEN_UNKNOWN


def test_sar_with_another_clusters_credential_is_401(client, admin, prod, webhook):
    staging = add_cluster(client, admin, "staging", "https://10.0.0.2:6443")
    assert sar(client, staging, webhook).status_code == 401


def test_sar_without_a_credential_is_401_and_audited_as_none_sent(client, database, prod, webhook):
    assert sar(client, prod, webhook, headers={}).status_code == 401
    _event, facts = the_one(database, REFUSED)
    assert facts["reason"] == "no webhook credential sent (is the webhook URL https?)"


def test_sar_with_a_malformed_body_is_a_400_problem(client, prod, webhook):
    response = client.post(f"/v1/clusters/{prod['id']}/subjectaccessreview", content=b"[1]",
                           headers={"Authorization": f"Bearer {webhook}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.headers["content-type"].startswith("application/problem+json")


# --- the level table ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("level", "attributes", "permitted"), [
    ("view", Attributes("get", resource="pods", namespace="ns"), True),
    ("view", Attributes("list", resource="secrets", namespace="ns"), False),
    ("view", Attributes("create", resource="pods", subresource="exec", namespace="ns"), False),
    ("view", Attributes("create", group="authentication.k8s.io", resource="selfsubjectreviews"), True),
    ("view", Attributes("get", path="/version"), True),
    ("edit", Attributes("list", resource="secrets", namespace="ns"), True),
    ("edit", Attributes("create", group="apps", resource="deployments", namespace="ns"), True),
    ("edit", Attributes("create", group="rbac.authorization.k8s.io", resource="rolebindings", namespace="ns"), False),
    ("edit", Attributes("delete", resource="namespaces", namespace="ns"), False),
    ("edit", Attributes("impersonate", resource="serviceaccounts", namespace="ns"), True),
    ("admin", Attributes("create", group="rbac.authorization.k8s.io", resource="rolebindings", namespace="ns"), True),
    ("admin", Attributes("create", group="rbac.authorization.k8s.io", resource="clusterrolebindings"), False),
    ("admin", Attributes("bind", group="rbac.authorization.k8s.io", resource="clusterroles"), False),
    ("admin", Attributes("create", resource="nodes"), False),
    ("cluster-admin", Attributes("delete", resource="nodes"), True),
    ("cluster-admin", Attributes("post", path="/anything"), True),
])
def test_what_each_level_permits_mirrors_the_built_in_roles(level, attributes, permitted):
    assert authz.permits(level, attributes) is permitted
