"""The console's Access Keys page and the token-delete dialog over HTTP (TestClient): listing without
secrets, minting with a chosen token, the one-time reveal, validation, CSRF, isolation, escaping,
auditing, and what deleting a token does to the keys it minted."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tokensmith.db.models import AccessKey, AuditEvent, Token
from tokensmith.tokens.service import TokenService

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
KEYS = "/v1/object-storage/access-keys"
DAY = 86400


@dataclass(frozen=True)
class Owner:
    """The services' Actor, for setting the scene directly."""

    user_id: int
    org_id: int
    is_admin: bool


def csrf_of(client, path: str = "/access-keys") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def create_key(client, csrf: str, **fields):
    """Submit the create dialog; the minting token is the one the page preselects unless given."""
    if "token" not in fields:
        selected = re.search(r'<option value="(tok_[0-9A-Za-z]+)" selected>', client.get("/access-keys").text)
        fields["token"] = selected.group(1) if selected else ""
    data = {"csrf": csrf, "name": "backups", "kind": "temporary", "lifetime": "3600", **fields}
    return client.post("/access-keys", data=data, follow_redirects=False)


def mint_via_api(client, account, duration: int = 0, name: str = "api key") -> dict:
    response = client.post(KEYS, json={"durationSeconds": duration, "attributes": {"name": name}},
                           headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def live_keys(database) -> list[AccessKey]:
    with database.session() as session:
        return list(session.scalars(select(AccessKey).where(AccessKey.revoked_at.is_(None))))


def another_token(database, clock, account, name: str, **kwargs) -> Token:
    with database.session() as session:
        return TokenService(session, clock, SECRET_KEY).create(account.user, name, **kwargs).token


def events(database, action: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


# --- the list ---------------------------------------------------------------------------------


def test_the_page_lists_the_viewers_keys_without_secrets(client, console, alice):
    permanent = mint_via_api(client, alice, 0, "archive")
    temporary = mint_via_api(client, alice, 900, "scratch")
    console(alice.user)
    page = client.get("/access-keys")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    for created in (permanent, temporary):
        assert created["accessKeyId"] in page.text and created["secretKey"] not in page.text
    assert "archive" in page.text and "scratch" in page.text and "Permanent" in page.text
    assert "alice&#39;s token" in page.text  # the token that minted them, escaped


def test_the_nav_links_to_the_access_keys_page(client, console, alice):
    console(alice.user)
    assert 'href="/access-keys" aria-current="page"' in client.get("/access-keys").text
    assert 'href="/access-keys"' in client.get("/tokens").text


def test_an_expired_temporary_key_shows_an_expired_badge(client, console, alice, clock):
    mint_via_api(client, alice, 900, "short")
    clock.advance(timedelta(seconds=901))
    console(alice.user)
    assert "Expired" in client.get("/access-keys").text


def test_other_peoples_keys_are_not_listed(client, console, alice, bob, mallory):
    theirs = [mint_via_api(client, bob, 0, "bobs key"), mint_via_api(client, mallory, 0, "evil key")]
    console(alice.user)
    page = client.get("/access-keys").text
    assert all(k["accessKeyId"] not in page for k in theirs)
    assert "No access keys yet" in page


def test_without_a_session_the_page_goes_to_sign_in(client):
    response = client.get("/access-keys", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/sign-in"


# --- creating and the one-time reveal ---------------------------------------------------------


def test_creating_a_temporary_key_reveals_the_secret_once(client, console, alice, database, clock):
    console(alice.user)
    created = create_key(client, csrf_of(client), name="nightly backup", lifetime=str(12 * 3600))
    assert created.status_code == 303 and created.headers["location"] == "/access-keys"
    [key] = live_keys(database)
    assert key.access_key_id.startswith("TSMT") and key.expires_at == clock.now() + timedelta(hours=12)

    reveal = client.get("/access-keys")
    assert reveal.headers["cache-control"] == "no-store"
    secret = re.search(r'id="secret" readonly value="([0-9A-Za-z]{40})"', reveal.text).group(1)
    assert f"[nightly-backup]\naws_access_key_id = {key.access_key_id}\naws_secret_access_key = {secret}" \
        in reveal.text
    assert f"export AWS_ACCESS_KEY_ID={key.access_key_id}\nexport AWS_SECRET_ACCESS_KEY={secret}" in reveal.text

    again = client.get("/access-keys")
    assert secret not in again.text and 'id="reveal-dialog"' not in again.text
    assert key.access_key_id in again.text


def test_creating_a_permanent_key(client, console, alice, database):
    console(alice.user)
    assert create_key(client, csrf_of(client), kind="permanent", lifetime="").status_code == 303
    [key] = live_keys(database)
    assert key.access_key_id.startswith("TSMP") and key.expires_at is None
    assert "Permanent: never expires" in client.get("/access-keys").text


def test_the_key_records_the_chosen_token_default_the_newest_active_one(client, console, alice, database, clock):
    older = alice.token_id
    clock.advance(timedelta(minutes=1))
    newest = another_token(database, clock, alice, "newest").public_id
    console(alice.user)
    page = client.get("/access-keys").text
    assert re.search(rf'<option value="{newest}" selected>', page)
    create_key(client, csrf_of(client), token=older, kind="permanent")
    with database.session() as session:
        [key] = session.scalars(select(AccessKey)).all()
        assert key.token.public_id == older


def test_expired_revoked_and_unscoped_tokens_cannot_mint(client, console, alice, database, clock):
    expiring = another_token(database, clock, alice, "expiring", expiration="1h").public_id
    unscoped = another_token(database, clock, alice, "read only", scopes=["tokens:read"]).public_id
    clock.advance(timedelta(hours=2))
    console(alice.user)
    page = client.get("/access-keys").text
    assert f'value="{alice.token_id}"' in page
    assert f'value="{expiring}"' not in page and f'value="{unscoped}"' not in page
    for token in (expiring, unscoped, "tok_doesnotexist"):
        refused = create_key(client, csrf_of(client), token=token)
        assert refused.status_code == 422 and 'id="token-error"' in refused.text
    assert live_keys(database) == []


def test_someone_elses_token_cannot_mint_for_me(client, console, alice, bob, admin, database):
    console(admin.user)  # even an admin mints only with their own tokens
    for token in (alice.token_id, bob.token_id):
        assert create_key(client, csrf_of(client), token=token).status_code == 422
    assert live_keys(database) == []


def test_without_an_active_token_the_page_says_so_and_links_to_create_one(client, console, alice, database, clock):
    with database.session() as session:
        TokenService(session, clock, SECRET_KEY).revoke(Owner(alice.user.id, alice.user.org_id, False), alice.token_id)
    console(alice.user)
    page = client.get("/access-keys").text
    assert 'id="no-minting-token"' in page and 'href="/tokens">Create a token</a>' in page
    assert re.search(r'id="create-key-submit"[^>]*disabled', page)


def test_validation_errors_show_inline_and_keep_what_was_typed(client, console, alice, database):
    console(alice.user)
    refused = create_key(client, csrf_of(client), name="   ", lifetime=str(8 * DAY))
    assert refused.status_code == 422
    assert 'id="name-error"' in refused.text and "Name must not be empty" in refused.text
    assert 'id="lifetime-error"' in refused.text
    assert "Choose a lifetime from 15 minutes to 7 days (your organization&#39;s limit)." in refused.text
    assert "data-autoopen" in refused.text

    typed = create_key(client, csrf_of(client), name="keep <this>", lifetime="12")
    assert typed.status_code == 422 and 'value="keep &lt;this&gt;"' in typed.text
    bad_kind = create_key(client, csrf_of(client), kind="forever")
    assert bad_kind.status_code == 422 and "Choose Temporary or Permanent" in bad_kind.text
    assert live_keys(database) == []


def test_lifetimes_beyond_seven_days_are_offered_when_the_organization_allows_them(client, console, admin,
                                                                                    alice, database, clock):
    console(alice.user)
    assert f'value="{30 * DAY}"' not in client.get("/access-keys").text
    client.put("/v1/org/policy", json={"max_access_key_seconds": 30 * DAY}, headers=admin.headers)
    page = client.get("/access-keys").text
    assert f'value="{30 * DAY}"' in page and "up to 30 days" in page
    assert create_key(client, csrf_of(client), lifetime=str(30 * DAY)).status_code == 303
    [key] = live_keys(database)
    assert key.expires_at == clock.now() + timedelta(days=30)


# --- CSRF, isolation, escaping ----------------------------------------------------------------


def test_posts_without_a_valid_csrf_token_are_refused(client, console, alice, database):
    key = mint_via_api(client, alice, 0)["accessKeyId"]
    console(alice.user)
    assert create_key(client, "").status_code == 403
    assert create_key(client, "forged").status_code == 403
    assert client.post(f"/access-keys/{key}/delete", data={}, follow_redirects=False).status_code == 403
    assert len(live_keys(database)) == 1


def test_another_organizations_key_cannot_be_deleted_404(client, console, alice, mallory, database):
    evil = mint_via_api(client, mallory, 0)["accessKeyId"]
    console(alice.user)
    response = client.post(f"/access-keys/{evil}/delete", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert response.status_code == 404
    assert [k.access_key_id for k in live_keys(database)] == [evil]


def test_a_colleagues_key_cannot_be_deleted_by_a_member_404(client, console, alice, bob, database):
    bobs = mint_via_api(client, bob, 0)["accessKeyId"]
    console(alice.user)
    response = client.post(f"/access-keys/{bobs}/delete", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert response.status_code == 404 and len(live_keys(database)) == 1


def test_malformed_key_ids_are_404_not_500(client, console, alice):
    console(alice.user)
    csrf = csrf_of(client)
    for key in ("nope", "TSMP" + "0" * 16, "x" * 300):
        assert client.post(f"/access-keys/{key}/delete", data={"csrf": csrf}).status_code == 404


def test_names_are_escaped(client, console, alice):
    console(alice.user)
    create_key(client, csrf_of(client), name="<script>alert(1)</script>", kind="permanent")
    revealed = client.get("/access-keys").text
    listed = client.get("/access-keys").text
    for page in (revealed, listed):
        assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- deleting and auditing ------------------------------------------------------------------------


def test_deleting_a_key_revokes_it_and_says_so(client, console, alice, database):
    key = mint_via_api(client, alice, 0, "old")["accessKeyId"]
    console(alice.user)
    response = client.post(f"/access-keys/{key}/delete", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/access-keys"
    assert live_keys(database) == []
    assert "was deleted" in client.get("/access-keys").text
    assert client.get(f"{KEYS}/{key}", headers=alice.headers).status_code == 404


def test_console_create_and_delete_are_audited_with_actor_ip_and_minting_token(client, console, alice, database):
    console(alice.user)
    create_key(client, csrf_of(client), name="audited")
    [key] = live_keys(database)
    client.post(f"/access-keys/{key.access_key_id}/delete", data={"csrf": csrf_of(client)})
    [made] = events(database, "access_key.created")
    [gone] = events(database, "access_key.deleted")
    for event in (made, gone):
        assert (event.actor_user, event.target, event.client_ip) == ("alice", key.access_key_id, "testclient")
        assert event.org_id == alice.user.org_id
    assert alice.token_id in made.details and "console" in made.details


# --- the token-delete dialog --------------------------------------------------------------------


def test_the_token_delete_dialog_counts_the_permanent_keys_that_survive(client, console, alice):
    for name in ("one", "two"):
        mint_via_api(client, alice, 0, name)
    mint_via_api(client, alice, 900, "temporary")
    console(alice.user)
    page = client.get("/tokens").text
    assert "2 permanent access keys minted with this token keep working after the delete." in page
    assert "Temporary S3 access keys minted with this token are revoked with it." in page
    assert 'name="revoke_access_keys"' in page


def test_a_token_without_permanent_keys_gets_no_checkbox(client, console, alice):
    mint_via_api(client, alice, 900)
    console(alice.user)
    assert 'name="revoke_access_keys"' not in client.get("/tokens").text


@pytest.mark.parametrize("revoke", [False, True], ids=["keep-permanent", "revoke-permanent"])
def test_deleting_a_token_in_the_console_follows_the_api_rule(client, console, alice, database, clock, revoke):
    permanent = mint_via_api(client, alice, 0, "perm")["accessKeyId"]
    mint_via_api(client, alice, 900, "temp")
    console(alice.user)
    data = {"csrf": csrf_of(client, "/tokens"), **({"revoke_access_keys": "1"} if revoke else {})}
    response = client.post(f"/tokens/{alice.token_id}/delete", data=data, follow_redirects=False)
    assert response.status_code == 303
    assert [k.access_key_id for k in live_keys(database)] == ([] if revoke else [permanent])
    notice = client.get("/tokens").text
    assert ("Permanent access keys it minted that keep working: 1." in notice) is not revoke
    [event] = events(database, "token.deleted")
    assert (event.actor_user, event.target, event.client_ip) == ("alice", alice.token_id, "testclient")
    assert f'"access_keys_revoked": {2 if revoke else 1}' in event.details
