"""Creating, listing, reading and deleting tokens over the REST API."""

import logging
from datetime import timedelta

import pytest

from tokensmith import secrets


def create(client, account, **body):
    body.setdefault("name", "ci-deploy")
    return client.post("/v1/tokens", json=body, headers=account.headers)


def test_create_returns_the_secret_once_with_no_store(client, alice):
    response = create(client, alice, note="for CI", expiration="7d")
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert secrets.is_well_formed(body["secret"])
    assert body["token"]["name"] == "ci-deploy"
    assert body["token"]["note"] == "for CI"
    assert body["token"]["hint"] == body["secret"][-4:]
    assert body["token"]["id"].startswith("tok_")


def test_new_secret_authenticates_whoami(client, alice):
    secret = create(client, alice).json()["secret"]
    me = client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200
    assert me.json()["user"]["username"] == "alice"
    assert me.json()["organization"]["name"] == "default"
    assert me.json()["token"]["name"] == "ci-deploy"


def test_secret_is_absent_from_every_other_response(client, alice):
    created = create(client, alice).json()
    secret, token_id = created["secret"], created["token"]["id"]
    headers = {"Authorization": f"Bearer {secret}"}
    for path in ("/v1/tokens", f"/v1/tokens/{token_id}", "/v1/whoami"):
        response = client.get(path, headers=headers)
        assert response.status_code == 200
        assert secret not in response.text
        assert secret[4:-4] not in response.text


def test_secret_never_reaches_the_logs(client, alice, caplog):
    caplog.set_level(logging.DEBUG)
    secret = create(client, alice).json()["secret"]
    client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret[:-1]}x"})
    assert secret not in caplog.text
    assert secret[4:-6] not in caplog.text


def test_database_keeps_only_a_digest(client, alice, database):
    secret = create(client, alice).json()["secret"]
    from sqlalchemy import text

    with database.engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM tokens")).all()
    dump = repr(rows)
    assert secret not in dump
    assert secret[4:-6] not in dump


def test_list_shows_only_the_callers_tokens(client, alice, bob):
    create(client, alice, name="alice-1")
    create(client, bob, name="bob-1")
    names = [t["name"] for t in client.get("/v1/tokens", headers=alice.headers).json()["items"]]
    assert "alice-1" in names
    assert "bob-1" not in names


def test_list_is_cursor_paginated_newest_first(client, alice):
    for i in range(5):
        create(client, alice, name=f"t{i}")
    first = client.get("/v1/tokens?limit=2", headers=alice.headers).json()
    assert [t["name"] for t in first["items"]] == ["t4", "t3"]
    second = client.get(f"/v1/tokens?limit=2&cursor={first['next_cursor']}", headers=alice.headers).json()
    assert [t["name"] for t in second["items"]] == ["t2", "t1"]
    third = client.get(f"/v1/tokens?limit=2&cursor={second['next_cursor']}", headers=alice.headers).json()
    assert [t["name"] for t in third["items"]] == ["t0", "alice's token"]
    assert third["next_cursor"] is None


def test_bad_cursor_is_422(client, alice):
    response = client.get("/v1/tokens?cursor=!!!", headers=alice.headers)
    assert response.status_code == 422
    assert "cursor" in response.json()["detail"]


def test_admin_lists_a_users_tokens_and_the_whole_org(client, admin, alice, bob):
    create(client, alice, name="alice-1")
    create(client, bob, name="bob-1")
    by_user = client.get("/v1/tokens?user=alice", headers=admin.headers).json()["items"]
    assert {t["owner"]["username"] for t in by_user} == {"alice"}
    whole = client.get("/v1/tokens?all=true", headers=admin.headers).json()["items"]
    assert {"alice-1", "bob-1"} <= {t["name"] for t in whole}


def test_non_admin_asking_for_another_user_gets_404(client, alice, bob):
    assert client.get("/v1/tokens?user=bob", headers=alice.headers).status_code == 404


def test_non_admin_cannot_list_the_whole_org(client, alice):
    assert client.get("/v1/tokens?all=true", headers=alice.headers).status_code == 403


def test_get_one_token(client, alice):
    token_id = create(client, alice).json()["token"]["id"]
    response = client.get(f"/v1/tokens/{token_id}", headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["id"] == token_id


def test_another_users_token_is_404_for_non_admins(client, alice, bob):
    token_id = create(client, bob).json()["token"]["id"]
    assert client.get(f"/v1/tokens/{token_id}", headers=alice.headers).status_code == 404
    assert client.delete(f"/v1/tokens/{token_id}", headers=alice.headers).status_code == 404


def test_admin_sees_and_deletes_a_members_token(client, admin, bob):
    token_id = create(client, bob).json()["token"]["id"]
    assert client.get(f"/v1/tokens/{token_id}", headers=admin.headers).status_code == 200
    assert client.delete(f"/v1/tokens/{token_id}", headers=admin.headers).status_code == 204


def test_delete_refuses_the_secret_from_the_next_request(client, alice):
    created = create(client, alice).json()
    headers = {"Authorization": f"Bearer {created['secret']}"}
    assert client.get("/v1/whoami", headers=headers).status_code == 200
    assert client.delete(f"/v1/tokens/{created['token']['id']}", headers=alice.headers).status_code == 204
    response = client.get("/v1/whoami", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid token"


def test_deleted_token_disappears_from_list_and_get(client, alice):
    token_id = create(client, alice, name="gone").json()["token"]["id"]
    client.delete(f"/v1/tokens/{token_id}", headers=alice.headers)
    assert client.get(f"/v1/tokens/{token_id}", headers=alice.headers).status_code == 404
    names = [t["name"] for t in client.get("/v1/tokens", headers=alice.headers).json()["items"]]
    assert "gone" not in names
    assert client.delete(f"/v1/tokens/{token_id}", headers=alice.headers).status_code == 404


def test_a_token_can_delete_itself(client, alice):
    assert client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers).status_code == 204
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401


@pytest.mark.parametrize(
    ("expiration", "lifetime"),
    [("1h", timedelta(hours=1)), ("1d", timedelta(days=1)), ("7d", timedelta(days=7)),
     ("30d", timedelta(days=30)), ("90d", timedelta(days=90)), ("1y", timedelta(days=365)),
     ("45m", timedelta(minutes=45))],
)
def test_expiration_presets(client, alice, clock, expiration, lifetime):
    token = create(client, alice, expiration=expiration).json()["token"]
    from datetime import datetime

    assert datetime.fromisoformat(token["expires_at"]) == clock.now() + lifetime


def test_never_expiring_token_has_no_expiry(client, alice):
    assert create(client, alice, expiration="never").json()["token"]["expires_at"] is None


def test_default_expiration_is_30_days(client, alice, clock):
    from datetime import datetime

    token = create(client, alice).json()["token"]
    assert datetime.fromisoformat(token["expires_at"]) == clock.now() + timedelta(days=30)


def test_explicit_expires_at(client, alice, clock):
    from datetime import datetime

    moment = (clock.now() + timedelta(days=3)).isoformat()
    token = create(client, alice, expires_at=moment).json()["token"]
    assert datetime.fromisoformat(token["expires_at"]) == datetime.fromisoformat(moment)


def test_token_stops_working_at_its_expiry_instant(client, alice, clock):
    secret = create(client, alice, expiration="1h").json()["secret"]
    headers = {"Authorization": f"Bearer {secret}"}
    clock.advance(timedelta(minutes=59, seconds=59))
    assert client.get("/v1/whoami", headers=headers).status_code == 200
    clock.advance(timedelta(seconds=1))
    response = client.get("/v1/whoami", headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "token expired"
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_expired_token_is_listed_as_expired(client, alice, clock):
    create(client, alice, name="short", expiration="1h")
    clock.advance(timedelta(hours=2))
    admin_view = {t["name"]: t for t in client.get("/v1/tokens", headers=alice.headers).json()["items"]}
    assert admin_view["short"]["expired"] is True


def test_disabled_user_tokens_stop_working(client, alice, database):
    from sqlalchemy import update

    from tokensmith.db.models import User

    with database.session() as session:
        session.execute(update(User).where(User.username == "alice").values(disabled=True))
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401


def test_names_in_any_language_are_kept_trimmed(client, alice):
    token = create(client, alice, name="  Déploiement 日本語 🚀  ").json()["token"]
    assert token["name"] == "Déploiement 日本語 🚀"


def test_the_consoles_expiration_choices_are_all_accepted(client, alice, clock):
    from datetime import datetime

    from tokensmith.tokens.expiration import CHOICES

    lifetimes = {"1h": timedelta(hours=1), "8h": timedelta(hours=8), "30d": timedelta(days=30),
                 "90d": timedelta(days=90), "1y": timedelta(days=365), "never": None}
    assert [value for value, _ in CHOICES] == list(lifetimes)
    for value, lifetime in lifetimes.items():
        expiry = create(client, alice, expiration=value).json()["token"]["expires_at"]
        assert (None if expiry is None else datetime.fromisoformat(expiry) - clock.now()) == lifetime
