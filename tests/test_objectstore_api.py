"""S3 access keys over the REST API: minting, listing, revoking, validation, the SDK exchange,
what deleting a token does to the keys it minted, and secret keys encrypted at rest."""

from __future__ import annotations

import base64
import os
import re
import stat
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import SECRET_KEY
from tokensmith.api.app import create_app
from tokensmith.clock import SystemClock
from tokensmith.config import Settings
from tokensmith.objectstore.crypto import DecryptionError, KeyRing
from tokensmith.objectstore.service import AccessKeyService
from tokensmith.tokens.service import TokenService

KEYS = "/v1/object-storage/access-keys"
EXCHANGE = "/v1/object-storage/temporary-credentials"
SURVIVING = "Tokensmith-Surviving-Access-Keys"
KEY_ID = re.compile(r"[0-9A-Z]{20}")


def mint(client, account, duration=0, name="backup") -> dict:
    response = client.post(KEYS, json={"durationSeconds": duration, "attributes": {"name": name}},
                           headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def second_token(database, clock, account) -> dict:
    """Another token of the same user, so the first can be deleted while we still look around."""
    with database.session() as session:
        created = TokenService(session, clock, SECRET_KEY).create(account.user, "second")
    return {"Authorization": f"Bearer {created.secret}"}


# --- minting ---------------------------------------------------------------------------------


def test_permanent_key_has_a_20_char_id_a_40_char_secret_and_no_expiry(client, alice):
    response = client.post(KEYS, json={"durationSeconds": 0, "attributes": {"name": "backup"}},
                           headers=alice.headers)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"accessKeyId", "secretKey", "expiry", "name", "createdAt"}
    assert KEY_ID.fullmatch(body["accessKeyId"]) and body["accessKeyId"].startswith("TSMP")
    assert len(body["secretKey"]) == 40
    assert body["expiry"] is None
    assert body["name"] == "backup"


def test_temporary_key_expires_after_its_duration(client, alice, clock):
    body = mint(client, alice, 900)
    assert body["accessKeyId"].startswith("TSMT")
    assert body["expiry"] == (clock.now() + timedelta(seconds=900)).isoformat().replace("+00:00", "Z")


def test_seven_days_is_the_longest_temporary_key(client, alice):
    assert mint(client, alice, 7 * 24 * 3600)["expiry"] is not None


def test_a_temporary_key_never_outlives_the_token_that_minted_it(client, make_account, clock):
    short = make_account("short", expiration="2h")
    body = mint(client, short, 7 * 24 * 3600)
    assert body["expiry"] == (clock.now() + timedelta(hours=2)).isoformat().replace("+00:00", "Z")


def test_a_permanent_key_is_not_capped_by_its_tokens_expiry(client, make_account):
    short = make_account("short", expiration="2h")
    assert mint(client, short, 0)["expiry"] is None


def test_name_defaults_by_kind(client, alice):
    response = client.post(KEYS, json={"durationSeconds": 3600}, headers=alice.headers)
    assert response.status_code == 201
    assert response.json()["name"] == "temporary key"


BAD_DURATIONS = [-1, 1, 899, 604801, 10**30, 900.5, 3600.0, "3600", "", None, True, [900], {"s": 900}]
BAD_NAMES = ["bad\nname", "tab\there", "nul\x00", "esc\x1b[31m", "line\u2028sep", "", " ", "x" * 101]
MALFORMED_BODIES = [{"durationSeconds": 0, "extra": 1}, {"durationSeconds": 0, "attributes": "x"},
                    {"durationSeconds": 0, "attributes": {"name": 5}},
                    {"durationSeconds": 0, "attributes": {"colour": "red"}}, {"attributes": {"name": "x"}}, [], "0"]


def test_duration_outside_the_rules_is_422_stating_the_range(client, alice):
    # A loop rather than parameters: each parameter would cost a database set-up on two engines.
    for duration in BAD_DURATIONS:
        response = client.post(KEYS, json={"durationSeconds": duration, "attributes": {"name": "x"}},
                               headers=alice.headers)
        assert response.status_code == 422, (duration, response.text)
        assert "0 (a permanent key)" in response.json()["detail"]
        assert "900 to 604800" in response.json()["detail"]


def test_bad_names_are_422(client, alice):
    for name in BAD_NAMES:
        response = client.post(KEYS, json={"durationSeconds": 0, "attributes": {"name": name}},
                               headers=alice.headers)
        assert response.status_code == 422, name
        assert "name" in response.json()["detail"]


def test_malformed_bodies_are_422(client, alice):
    for body in MALFORMED_BODIES:
        assert client.post(KEYS, json=body, headers=alice.headers).status_code == 422, body


def test_nothing_is_written_on_bad_input(client, alice):
    client.post(KEYS, json={"durationSeconds": -5, "attributes": {"name": "x"}}, headers=alice.headers)
    assert client.get(KEYS, headers=alice.headers).json()["items"] == []


# --- scopes ----------------------------------------------------------------------------------


def limited_headers(database, clock, account, scopes) -> dict:
    with database.session() as session:
        created = TokenService(session, clock, SECRET_KEY).create(account.user, "limited", scopes=scopes)
    return {"Authorization": f"Bearer {created.secret}"}


def test_minting_needs_object_storage_write(client, database, clock, alice):
    headers = limited_headers(database, clock, alice, ["object-storage:read"])
    response = client.post(KEYS, json={"durationSeconds": 0}, headers=headers)
    assert response.status_code == 403
    assert "object-storage:write" in response.json()["detail"]
    assert client.get(KEYS, headers=headers).status_code == 200


def test_listing_needs_object_storage_read(client, database, clock, alice):
    headers = limited_headers(database, clock, alice, ["tokens:read"])
    assert client.get(KEYS, headers=headers).status_code == 403


def test_unauthenticated_is_401(client):
    assert client.post(KEYS, json={"durationSeconds": 0}).status_code == 401
    assert client.get(KEYS).status_code == 401


# --- list, get, delete -------------------------------------------------------------------------


def test_list_shows_own_keys_without_secrets(client, alice, bob):
    mine = mint(client, alice, 0, "alice-key")
    mint(client, bob, 0, "bob-key")
    response = client.get(KEYS, headers=alice.headers)
    assert response.status_code == 200
    items = response.json()["items"]
    assert [k["accessKeyId"] for k in items] == [mine["accessKeyId"]]
    assert items[0]["permanent"] is True and items[0]["mintedByToken"] == alice.token_id
    assert mine["secretKey"] not in response.text


def test_get_one_key(client, alice):
    key = mint(client, alice, 3600)
    body = client.get(f"{KEYS}/{key['accessKeyId']}", headers=alice.headers).json()
    assert body["name"] == "backup" and body["permanent"] is False and body["expired"] is False
    assert "secretKey" not in body


def test_other_users_and_orgs_keys_are_404(client, alice, bob, mallory):
    key = mint(client, alice)
    for account in (bob, mallory):
        assert client.get(f"{KEYS}/{key['accessKeyId']}", headers=account.headers).status_code == 404
        assert client.delete(f"{KEYS}/{key['accessKeyId']}", headers=account.headers).status_code == 404


def test_admin_may_delete_a_members_key_in_the_same_org(client, alice, admin):
    key = mint(client, alice)
    assert client.delete(f"{KEYS}/{key['accessKeyId']}", headers=admin.headers).status_code == 204


def test_delete_revokes_and_the_key_disappears(client, alice):
    key = mint(client, alice)
    assert client.delete(f"{KEYS}/{key['accessKeyId']}", headers=alice.headers).status_code == 204
    assert client.get(f"{KEYS}/{key['accessKeyId']}", headers=alice.headers).status_code == 404
    assert client.delete(f"{KEYS}/{key['accessKeyId']}", headers=alice.headers).status_code == 404


def test_unknown_or_garbage_ids_are_404(client, alice):
    for key_id in ("TSMPAAAAAAAAAAAAAAAA", "x" * 300, "%00"):
        assert client.get(f"{KEYS}/{key_id}", headers=alice.headers).status_code == 404


# --- deleting the minting token ---------------------------------------------------------------


def test_deleting_a_token_revokes_its_temporary_keys_and_reports_surviving_permanent_ones(
    client, database, clock, alice
):
    temporary = mint(client, alice, 3600)
    permanent = mint(client, alice, 0)
    other = second_token(database, clock, alice)
    response = client.delete(f"/v1/tokens/{alice.token_id}", headers=other)
    assert response.status_code == 204
    assert response.headers[SURVIVING] == "1"
    remaining = [k["accessKeyId"] for k in client.get(KEYS, headers=other).json()["items"]]
    assert remaining == [permanent["accessKeyId"]]
    assert temporary["accessKeyId"] not in remaining


def test_revoke_access_keys_true_revokes_permanent_keys_too(client, database, clock, alice):
    mint(client, alice, 3600)
    mint(client, alice, 0)
    other = second_token(database, clock, alice)
    response = client.delete(f"/v1/tokens/{alice.token_id}?revoke_access_keys=true", headers=other)
    assert response.status_code == 204
    assert response.headers[SURVIVING] == "0"
    assert client.get(KEYS, headers=other).json()["items"] == []


def test_deleting_a_token_leaves_keys_of_other_tokens_alone(client, database, clock, alice):
    other = second_token(database, clock, alice)
    kept = client.post(KEYS, json={"durationSeconds": 3600}, headers=other).json()
    mint(client, alice, 3600)
    response = client.delete(f"/v1/tokens/{alice.token_id}", headers=other)
    assert response.headers[SURVIVING] == "0"
    assert [k["accessKeyId"] for k in client.get(KEYS, headers=other).json()["items"]] == [kept["accessKeyId"]]


def test_deleting_a_token_without_keys_says_zero(client, alice):
    response = client.delete(f"/v1/tokens/{alice.token_id}", headers=alice.headers)
    assert response.status_code == 204
    assert response.headers[SURVIVING] == "0"


def test_token_service_revoke_applies_the_rule_for_every_caller(client, database, clock, alice, app):
    temporary = mint(client, alice, 3600)
    identity = app.state.context.verifier.verify(alice.secret)
    with database.session() as session:
        TokenService(session, clock, SECRET_KEY).revoke(identity, alice.token_id)
    other = second_token(database, clock, alice)
    assert client.get(f"{KEYS}/{temporary['accessKeyId']}", headers=other).status_code == 404


# --- the SDK exchange -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["Bearer {}", "{}", "bearer {}"])
def test_exchange_accepts_bearer_or_the_bare_secret(client, alice, clock, form):
    response = client.get(EXCHANGE, headers={"Authorization": form.format(alice.secret)})
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert set(body) == {"AccessKeyId", "SecretAccessKey", "Token", "Expiration"}
    assert body["AccessKeyId"].startswith("TSMT") and len(body["SecretAccessKey"]) == 40
    assert body["Expiration"] == (clock.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_exchange_reuses_a_still_valid_key(client, alice, clock):
    first = client.get(EXCHANGE, headers=alice.headers).json()
    clock.advance(timedelta(minutes=39))
    assert client.get(EXCHANGE, headers=alice.headers).json() == first
    clock.advance(timedelta(minutes=2))  # 19 minutes left: the SDK would refresh soon, so mint anew
    assert client.get(EXCHANGE, headers=alice.headers).json()["AccessKeyId"] != first["AccessKeyId"]


def test_exchange_keys_never_outlive_the_token(client, make_account, clock):
    short = make_account("short", expiration="30m")
    body = client.get(EXCHANGE, headers=short.headers).json()
    assert body["Expiration"] == (clock.now() + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    clock.advance(timedelta(minutes=20))
    assert client.get(EXCHANGE, headers=short.headers).json() == body


def test_exchange_with_a_bad_token_is_401(client):
    for value in ("", "Bearer", "Bearer tsm_nope", "tsm_nope", "Basic abc", "Bearer a b"):
        response = client.get(EXCHANGE, headers={"Authorization": value} if value else {})
        assert response.status_code == 401, value


def test_exchange_needs_object_storage_write(client, database, clock, alice):
    headers = limited_headers(database, clock, alice, ["object-storage:read"])
    assert client.get(EXCHANGE, headers=headers).status_code == 403


def test_exchange_keys_die_with_their_token(client, database, clock, alice):
    body = client.get(EXCHANGE, headers=alice.headers).json()
    other = second_token(database, clock, alice)
    client.delete(f"/v1/tokens/{alice.token_id}", headers=other)
    assert client.get(f"{KEYS}/{body['AccessKeyId']}", headers=other).status_code == 404


# --- encryption at rest ------------------------------------------------------------------------


def test_the_database_holds_only_ciphertext(client, alice, database):
    key = mint(client, alice)
    with database.engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM access_keys")).mappings().one()
    stored = " ".join(str(v) for v in row.values())
    assert key["secretKey"] not in stored
    assert row["secret_ciphertext"].startswith("v1.")


def test_without_configuration_a_0600_key_file_is_generated(settings):
    keys = settings.encryption_keys()
    path = settings.data_dir / "encryption-key"
    assert len(keys) == 1 and len(keys[0]) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert settings.encryption_keys() == keys


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_configured_key_list_is_parsed_first_key_first(tmp_path):
    k1, k2 = os.urandom(32), os.urandom(32)
    settings = Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path),
                                  "TOKENSMITH_ENCRYPTION_KEYS": f"{_b64(k2)}, {_b64(k1)}"})
    assert settings.encryption_keys() == [k2, k1]
    assert not (tmp_path / "encryption-key").exists()


@pytest.mark.parametrize("value", ["short", base64.b64encode(b"x" * 31).decode(), "not base64 at all!!"])
def test_bad_configured_keys_are_refused_without_echoing_them(tmp_path, value):
    settings = Settings.from_env({"TOKENSMITH_DATA_DIR": str(tmp_path), "TOKENSMITH_ENCRYPTION_KEYS": value})
    with pytest.raises(ValueError, match="entry 1") as info:
        settings.encryption_keys()
    assert value not in str(info.value)


def test_rotation_old_keys_decrypt_and_reencrypt_moves_everything_to_the_first(
    client, alice, app, database, settings
):
    old = KeyRing.from_settings(settings)
    key = mint(client, alice)
    new_key = os.urandom(32)
    old_key = settings.encryption_keys()[0]
    rotated = KeyRing([new_key, old_key])
    with database.session() as session:
        service = AccessKeyService(session, SystemClock(), rotated)
        row = service.get(app.state.context.verifier.verify(alice.secret), key["accessKeyId"])
        assert service.secret_of(row) == key["secretKey"]  # decrypt with any key in the list
        assert not rotated.is_current(row.secret_ciphertext)
        assert service.reencrypt_all() == 1
        assert service.reencrypt_all() == 0  # idempotent
        ciphertext = row.secret_ciphertext
    assert KeyRing([new_key]).decrypt(ciphertext, key["accessKeyId"]) == key["secretKey"]
    with pytest.raises(DecryptionError):
        old.decrypt(ciphertext, key["accessKeyId"])


def test_ciphertext_is_bound_to_its_access_key_id():
    ring = KeyRing([os.urandom(32)])
    sealed = ring.encrypt("secret", "TSMPAAAAAAAAAAAAAAAA")
    with pytest.raises(DecryptionError):
        ring.decrypt(sealed, "TSMPBBBBBBBBBBBBBBBB")
    # Flip a real ciphertext byte: a base64 character near the padding may only carry unused bits.
    version, kid, body = sealed.split(".")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[15] ^= 0x01
    tampered = f"{version}.{kid}.{base64.urlsafe_b64encode(bytes(raw)).decode()}"
    with pytest.raises(DecryptionError):
        ring.decrypt(tampered, "TSMPAAAAAAAAAAAAAAAA")


def test_a_server_with_a_rotated_key_list_serves_old_keys(database, tmp_path, alice, clock):
    old_key, new_key = os.urandom(32), os.urandom(32)

    def app_with(keys: list[bytes]):
        settings = Settings(data_dir=tmp_path / "rot", database_url=database.url,
                            encryption_keys_env=",".join(_b64(k) for k in keys))
        return create_app(settings, database, SECRET_KEY, clock)

    with TestClient(app_with([old_key])) as before:
        first = before.get(EXCHANGE, headers=alice.headers).json()
    with TestClient(app_with([new_key, old_key])) as after:
        assert after.get(EXCHANGE, headers=alice.headers).json() == first  # reused, decrypted with the old key
