"""`/v1/users`: admins list, create, disable, enable and reset users over the API (what `tokensmith user` uses)."""

from sqlalchemy import select

from tokensmith.db.models import AuditEvent


def test_an_admin_creates_a_user_with_a_generated_first_password(client, admin):
    response = client.post("/v1/users", headers=admin.headers, json={"username": "dev"})
    assert response.status_code == 201
    body = response.json()
    assert body["user"]["username"] == "dev" and body["user"]["must_change_password"]
    assert len(body["password"]) >= 8
    assert response.headers["Cache-Control"] == "no-store"


def test_a_chosen_password_is_never_echoed(client, admin):
    response = client.post("/v1/users", headers=admin.headers, json={"username": "dev", "password": "long-enough-1"})
    assert response.status_code == 201 and response.json()["password"] is None


def test_the_list_has_every_user_of_the_organization_only(client, admin, alice, mallory):
    names = [u["username"] for u in client.get("/v1/users", headers=admin.headers).json()]
    assert names == ["admin", "alice"]


def test_members_are_refused(client, alice):
    assert client.get("/v1/users", headers=alice.headers).status_code == 403
    assert client.post("/v1/users", headers=alice.headers, json={"username": "x"}).status_code == 403


def test_a_disabled_users_token_stops_working_and_enable_restores_it(client, admin, alice):
    assert client.post("/v1/users/alice/disable", headers=admin.headers).json()["disabled"] is True
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401
    assert client.post(f"/v1/users/{alice.user.public_id}/enable", headers=admin.headers).status_code == 200
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


def test_an_admin_cannot_disable_themselves(client, admin):
    response = client.post("/v1/users/admin/disable", headers=admin.headers)
    assert response.status_code == 422 and "your own account" in response.json()["detail"]


def test_another_organizations_user_is_not_found(client, admin, mallory):
    assert client.post("/v1/users/mallory/disable", headers=admin.headers).status_code == 404


def test_reset_password_returns_a_new_one_once(client, admin, alice):
    response = client.post("/v1/users/alice/reset-password", headers=admin.headers)
    assert response.status_code == 200
    assert len(response.json()["password"]) >= 8 and response.json()["user"]["must_change_password"]


def test_a_duplicate_user_name_is_a_409_and_a_short_password_a_422(client, admin, alice):
    assert client.post("/v1/users", headers=admin.headers, json={"username": "alice"}).status_code == 409
    short = client.post("/v1/users", headers=admin.headers, json={"username": "z", "password": "short"})
    assert short.status_code == 422


def test_each_change_is_audited_without_the_password(client, admin, database):
    created = client.post("/v1/users", headers=admin.headers, json={"username": "dev"}).json()
    client.post("/v1/users/dev/disable", headers=admin.headers)
    client.post("/v1/users/dev/enable", headers=admin.headers)
    reset = client.post("/v1/users/dev/reset-password", headers=admin.headers).json()
    with database.session() as session:
        events = list(session.scalars(select(AuditEvent).where(AuditEvent.target == created["user"]["id"])
                                      .order_by(AuditEvent.id)))
        actions = [e.action for e in events]
        text = " ".join(str(e.details) for e in events)
    assert actions == ["user.created", "user.disabled", "user.enabled", "user.password_reset"]
    assert created["password"] not in text and reset["password"] not in text
