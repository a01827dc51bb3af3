"""Service accounts: organization-owned principals (svc_…) that own tokens and cannot sign in."""

from __future__ import annotations

import json

from sqlalchemy import select

from tokensmith.db.models import AuditEvent


def create(client, caller, name: str = "grafana", **extra) -> dict:
    response = client.post("/v1/service-accounts", json={"name": name, **extra}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def mint(client, admin, account: str = "grafana", **body) -> dict:
    response = client.post(f"/v1/service-accounts/{account}/tokens", json={"name": "t", **body},
                           headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_an_admin_creates_a_service_account_with_a_svc_id_and_no_admin_rights(client, admin):
    account = create(client, admin)
    assert account["id"].startswith("svc_") and account["admin"] is False and account["disabled"] is False
    assert [a["name"] for a in client.get("/v1/service-accounts", headers=admin.headers).json()] == ["grafana"]


def test_whoami_with_a_service_account_token_names_the_service_account(client, admin):
    account = create(client, admin)
    who = client.get("/v1/whoami", headers=bearer(mint(client, admin)["secret"])).json()
    assert who["user"] == {"id": account["id"], "username": "grafana", "is_admin": False, "kind": "service"}


def test_service_account_tokens_keep_working_after_the_creating_admin_is_disabled(client, admin, make_account):
    boss = make_account("boss", admin=True)
    create(client, boss)
    secret = mint(client, boss)["secret"]
    assert client.patch("/v1/service-accounts/grafana", json={"disabled": False}, headers=boss.headers).is_success
    from tokensmith.usecases import Actor, users

    with client.app.state.context.unit_of_work() as uow:
        users.disable_user(uow, Actor.operator(boss.user.org_id), "boss")
    assert client.get("/v1/whoami", headers=boss.headers).status_code == 401
    assert client.get("/v1/whoami", headers=bearer(secret)).status_code == 200


def test_a_service_account_cannot_reach_admin_operations(client, admin):
    create(client, admin)
    headers = bearer(mint(client, admin)["secret"])
    assert client.put("/v1/org/policy", json={}, headers=headers).status_code == 403
    assert client.post("/v1/service-accounts", json={"name": "x"}, headers=headers).status_code == 403
    assert client.get("/v1/audit-events", headers=headers).status_code == 403
    assert client.get("/v1/tokens", params={"all": "true"}, headers=headers).status_code == 403


def test_a_service_account_token_cannot_be_granted_admin_scopes(client, admin):
    create(client, admin)
    response = client.post("/v1/service-accounts/grafana/tokens", json={"name": "t", "scopes": ["org:admin"]},
                           headers=admin.headers)
    assert response.status_code == 422 and "org:admin" in response.text


def test_a_service_account_made_admin_explicitly_is_one(client, admin):
    create(client, admin, "ops-bot", admin=True)
    who = client.get("/v1/whoami", headers=bearer(mint(client, admin, "ops-bot")["secret"])).json()
    assert who["user"]["is_admin"] is True


def test_a_service_account_cannot_sign_in_with_a_password(client, admin):
    create(client, admin)
    response = client.post("/v1/auth/token", json={"username": "grafana", "password": "anything at all"})
    assert response.status_code == 401


def test_members_cannot_manage_service_accounts(client, admin, alice):
    create(client, admin)
    assert client.post("/v1/service-accounts", json={"name": "x"}, headers=alice.headers).status_code == 403
    assert client.post("/v1/service-accounts/grafana/tokens", json={"name": "t"},
                       headers=alice.headers).status_code == 403


def test_another_organizations_admin_cannot_see_or_use_the_service_account(client, admin, mallory):
    create(client, admin)
    assert client.get("/v1/service-accounts", headers=mallory.headers).json() == []
    assert client.post("/v1/service-accounts/grafana/tokens", json={"name": "t"},
                       headers=mallory.headers).status_code == 404


def test_disabling_a_service_account_stops_its_tokens_at_once(client, admin):
    create(client, admin)
    headers = bearer(mint(client, admin)["secret"])
    assert client.get("/v1/whoami", headers=headers).status_code == 200
    client.patch("/v1/service-accounts/grafana", json={"disabled": True}, headers=admin.headers)
    assert client.get("/v1/whoami", headers=headers).status_code == 401


def test_deleting_a_service_account_deletes_its_tokens(client, admin):
    create(client, admin)
    headers = bearer(mint(client, admin)["secret"])
    assert client.delete("/v1/service-accounts/grafana", headers=admin.headers).status_code == 204
    assert client.get("/v1/whoami", headers=headers).status_code == 401
    assert client.get("/v1/service-accounts", headers=admin.headers).json() == []


def test_its_tokens_appear_in_the_organizations_token_list_with_the_account_as_owner(client, admin):
    account = create(client, admin)
    token = mint(client, admin)["token"]
    listed = client.get("/v1/tokens", params={"all": "true"}, headers=admin.headers).json()["items"]
    [found] = [t for t in listed if t["id"] == token["id"]]
    assert found["owner"] == {"id": account["id"], "username": "grafana", "kind": "service"}


def test_every_change_is_audited_with_the_admin_as_actor(client, admin, database):
    create(client, admin)
    mint(client, admin)
    client.patch("/v1/service-accounts/grafana", json={"disabled": True}, headers=admin.headers)
    client.delete("/v1/service-accounts/grafana", headers=admin.headers)
    with database.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    trail = [(e.action, e.actor_user) for e in events if e.action.startswith(("service_account", "token.created"))]
    assert trail[-4:] == [("service_account.created", "admin"), ("token.created", "admin"),
                          ("service_account.updated", "admin"), ("service_account.deleted", "admin")]
    assert json.loads(events[-1].details)["tokens_deleted"] == 1


def test_a_taken_name_is_a_conflict(client, admin):
    create(client, admin)
    assert client.post("/v1/service-accounts", json={"name": "admin"}, headers=admin.headers).status_code == 409


def test_a_service_account_never_gets_a_password_through_the_user_admin_path(client, admin):
    import pytest

    from tokensmith.errors import NotFound
    from tokensmith.usecases import Actor, users

    account = create(client, admin)
    operator = Actor.operator(admin.user.org_id)
    with client.app.state.context.unit_of_work() as uow, pytest.raises(NotFound):
        users.reset_password(uow, operator, account["id"])
    with client.app.state.context.unit_of_work() as uow:
        assert "grafana" not in [u.username for u in users.list_users(uow, operator)]
