"""The web console over HTTP (TestClient): sessions, CSRF, isolation, escaping, one-time reveal."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from tests.pki import make_pki
from tokensmith.accounts.service import AccountService
from tokensmith.api.middleware import CONSOLE_CSP
from tokensmith.db.models import ConsoleSession, Token

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(client, path: str = "/tokens") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def user_with_password(database, clock, username: str, password: str, **kwargs):
    with database.session() as session:
        accounts = AccountService(session, clock)
        return accounts.create_user(accounts.get_or_create_org(kwargs.pop("org", "default")), username, password,
                                    **kwargs)


def live_tokens(database) -> list[Token]:
    with database.session() as session:
        return list(session.query(Token).filter(Token.revoked_at.is_(None)))


def create_token(client, csrf: str, **fields):
    data = {"csrf": csrf, "name": "ci", "expiration": "30d", "note": "", "kind": "secret", **fields}
    return client.post("/tokens", data=data, follow_redirects=False)


# --- sign-in and sessions ---------------------------------------------------------------------


def test_sign_in_with_password_sets_an_httponly_samesite_session_cookie(client, database, clock):
    user_with_password(database, clock, "carol", "correct horse")
    csrf = csrf_of(client, "/sign-in")
    response = client.post("/sign-in", data={"csrf": csrf, "username": "carol", "password": "correct horse"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/tokens"
    cookie = response.headers["set-cookie"]
    assert "tsm_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain http here; Secure is set over TLS
    with database.session() as session:
        stored = session.query(ConsoleSession).one()
    session_id = client.cookies.get("tsm_session")
    assert session_id not in stored.digest and len(stored.digest) == 64
    assert client.get("/tokens").status_code == 200


def test_session_cookie_is_secure_over_tls(app, database, clock):
    from fastapi.testclient import TestClient

    user_with_password(database, clock, "carol", "correct horse")
    with TestClient(app, base_url="https://testserver") as tls:
        csrf = csrf_of(tls, "/sign-in")
        response = tls.post("/sign-in", data={"csrf": csrf, "username": "carol", "password": "correct horse"},
                            follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]


def test_wrong_password_is_refused_with_the_same_message(client, database, clock):
    user_with_password(database, clock, "carol", "correct horse")
    csrf = csrf_of(client, "/sign-in")
    wrong = client.post("/sign-in", data={"csrf": csrf, "username": "carol", "password": "nope"})
    unknown = client.post("/sign-in", data={"csrf": csrf, "username": "nobody", "password": "nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert "do not match" in wrong.text and "do not match" in unknown.text
    assert "tsm_session" not in client.cookies


def test_sign_in_form_without_csrf_is_refused(client, database, clock):
    user_with_password(database, clock, "carol", "correct horse")
    client.get("/sign-in")
    response = client.post("/sign-in", data={"username": "carol", "password": "correct horse"},
                           follow_redirects=False)
    assert response.status_code == 403
    assert "tsm_session" not in client.cookies


def test_initial_admin_is_asked_to_change_the_password_first(client, database, clock):
    user_with_password(database, clock, "admin", "initial-pass", is_admin=True, must_change_password=True)
    csrf = csrf_of(client, "/sign-in")
    response = client.post("/sign-in", data={"csrf": csrf, "username": "admin", "password": "initial-pass"},
                           follow_redirects=False)
    assert response.headers["location"] == "/account/password"
    assert client.get("/tokens", follow_redirects=False).headers["location"] == "/account/password"
    csrf = csrf_of(client, "/account/password")
    mismatch = client.post("/account/password", data={"csrf": csrf, "current": "initial-pass", "new": "new-password-1",
                                                      "confirm": "other"})
    assert mismatch.status_code == 422 and "not the same" in mismatch.text
    done = client.post("/account/password", data={"csrf": csrf, "current": "initial-pass", "new": "new-password-1",
                                                  "confirm": "new-password-1"}, follow_redirects=False)
    assert done.status_code == 303
    assert client.get("/tokens").status_code == 200
    with database.session() as session:
        AccountService(session, clock).authenticate("admin", "new-password-1")


def test_session_expires_after_inactivity(client, console, alice, clock):
    console(alice.user)
    clock.advance(timedelta(minutes=29))
    assert client.get("/tokens", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=29))  # active 29 minutes ago: still fine
    assert client.get("/tokens", follow_redirects=False).status_code == 200
    clock.advance(timedelta(minutes=31))
    response = client.get("/tokens", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/sign-in"


def test_sessions_that_ran_out_are_swept_when_someone_signs_in(console, alice, bob, clock, database):
    console(alice.user)
    clock.advance(timedelta(minutes=31))
    console(bob.user)
    with database.session() as session:
        assert [row.user_id for row in session.query(ConsoleSession)] == [bob.user.id]


def test_sign_out_ends_the_session(client, console, alice):
    console(alice.user)
    session_id = client.cookies.get("tsm_session")
    response = client.post("/sign-out", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert response.status_code == 303
    client.cookies.set("tsm_session", session_id)  # a copied cookie is worthless now
    assert client.get("/tokens", follow_redirects=False).headers["location"] == "/sign-in"


def test_pages_without_a_session_go_to_sign_in(client):
    for path in ("/", "/tokens", "/clusters", "/vpcs", "/users"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/sign-in", path


# --- CSRF ---------------------------------------------------------------------------------------


def test_form_post_without_valid_csrf_is_refused(client, console, alice, bob, database):
    console(alice.user)
    before = len(live_tokens(database))
    assert create_token(client, "").status_code == 403
    assert create_token(client, "forged-token").status_code == 403
    refused = client.post(f"/tokens/{alice.token_id}/delete", data={}, follow_redirects=False)
    assert refused.status_code == 403
    assert len(live_tokens(database)) == before


def test_csrf_token_of_another_session_is_refused(client, console, alice, app, database):
    from fastapi.testclient import TestClient

    with TestClient(app) as other:
        console(alice.user, other)
        other_csrf = csrf_of(other)
    console(alice.user)
    assert csrf_of(client) != other_csrf
    assert client.post(f"/tokens/{alice.token_id}/delete", data={"csrf": other_csrf},
                       follow_redirects=False).status_code == 403


# --- tokens ---------------------------------------------------------------------------------------


def test_created_secret_is_shown_once_with_no_store(client, console, alice):
    console(alice.user)
    response = create_token(client, csrf_of(client), name="deploy bot", note="for CI")
    assert response.status_code == 303 and response.headers["location"] == "/tokens"
    reveal = client.get("/tokens")
    assert reveal.headers["cache-control"] == "no-store"
    secret = re.search(r'id="secret" readonly value="([^"]+)"', reveal.text).group(1)
    assert secret.startswith("tsm_")
    assert "never shown again" in reveal.text
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    again = client.get("/tokens")
    assert secret not in again.text and "deploy bot" in again.text


def test_flash_is_stored_encrypted_not_as_the_secret(client, console, alice, database):
    console(alice.user)
    create_token(client, csrf_of(client))
    with database.session() as session:
        flash = session.query(ConsoleSession).one().flash
    assert flash and "tsm_" not in flash
    secret = re.search(r'id="secret" readonly value="([^"]+)"', client.get("/tokens").text).group(1)
    assert secret not in flash


def test_inline_validation_errors_keep_what_was_typed(client, console, alice):
    console(alice.user)
    response = create_token(client, csrf_of(client), name="   ", note="keep me", expiration="custom",
                            expires_on="2001-01-01")
    assert response.status_code == 422
    assert 'id="name-error"' in response.text and "must not be empty" in response.text
    assert 'id="expiration-error"' in response.text and "future" in response.text
    assert ">keep me</textarea>" in response.text
    assert 'value="2001-01-01"' in response.text
    assert "data-autoopen" in response.text


def test_kubeconfig_needs_at_least_one_cluster(client, console, alice, database):
    console(alice.user)
    response = create_token(client, csrf_of(client), name="kube", kind="kubeconfig")
    assert response.status_code == 422
    assert 'id="clusters-error"' in response.text and "at least one cluster" in response.text
    assert 'id="kind-kubeconfig" name="kind" value="kubeconfig" checked' in response.text
    assert [t.name for t in live_tokens(database)] == ["alice's token"]


def test_kubeconfig_token_reveal_offers_the_file(client, console, admin, database):
    console(admin.user)
    csrf = csrf_of(client, "/clusters")
    ca = make_pki().ca_pem
    for name in ("east", "west"):
        client.post("/clusters", data={"csrf": csrf, "name": name, "server": f"https://{name}.example:6443",
                                       "certificate_authority": ca, "region": "eu-1"}, follow_redirects=False)
    page = client.get("/tokens").text
    ids = re.findall(r'name="clusters" value="([^"]+)"', page)
    assert len(ids) == 2
    create_token(client, csrf, name="kube", kind="kubeconfig", clusters=[*ids, ids[0]])  # a repeat is harmless
    reveal = client.get("/tokens").text
    assert 'id="download-kubeconfig" download="kubeconfig-tok_' in reveal
    assert "tokensmith-default-east" in reveal and "tokensmith-default-west" in reveal
    assert reveal.count("- name: tokensmith-default-east") == 2  # one cluster entry, one context


def test_the_create_dialog_offers_a_level_per_cluster_up_to_what_a_member_may_grant(client, console, admin, alice,
                                                                                   database, clock):
    from tokensmith.clusters.service import ClusterService

    with database.session() as session:
        cluster_id = ClusterService(session, clock).create(admin.user, "prod", "https://prod.example:6443",
                                                           make_pki().ca_pem, "eu-1").public_id
    console(alice.user)
    options = re.findall(rf'<option value="{cluster_id}=([a-z-]+)"', client.get("/tokens").text)
    assert options == ["view", "edit"]


def test_a_token_made_with_a_level_shows_it_in_its_row(client, console, admin, database, clock):
    from tokensmith.clusters.service import ClusterService

    with database.session() as session:
        cluster_id = ClusterService(session, clock).create(admin.user, "prod", "https://prod.example:6443",
                                                           make_pki().ca_pem, "eu-1").public_id
    console(admin.user)
    response = create_token(client, csrf_of(client), name="deployer", kind="kubeconfig", clusters=[cluster_id],
                            levels=[f"{cluster_id}=admin"])
    assert response.status_code == 303
    assert '<span class="chip" title="access level admin">prod · admin</span>' in client.get("/tokens").text


def test_a_level_above_the_members_ceiling_is_refused_in_the_dialog(client, console, admin, alice, database,
                                                                   clock):
    from tokensmith.clusters.service import ClusterService

    with database.session() as session:
        cluster_id = ClusterService(session, clock).create(admin.user, "prod", "https://prod.example:6443",
                                                           make_pki().ca_pem, "eu-1").public_id
    console(alice.user)
    response = create_token(client, csrf_of(client), name="greedy", kind="kubeconfig", clusters=[cluster_id],
                            levels=[f"{cluster_id}=cluster-admin"])
    assert response.status_code == 422 and "above the most you may grant there" in response.text
    assert "greedy" not in [t.name for t in live_tokens(database)]


def test_kubeconfig_for_another_organizations_cluster_is_refused(client, console, alice, mallory, database, clock):
    from tokensmith.clusters.service import ClusterService

    with database.session() as session:
        foreign = ClusterService(session, clock).create(mallory.user, "theirs", "https://10.9.9.9:6443",
                                                        make_pki().ca_pem, "eu-1")
        foreign_id = foreign.public_id
    console(alice.user)
    response = create_token(client, csrf_of(client), name="sneaky", kind="kubeconfig", clusters=[foreign_id])
    assert response.status_code == 404 and 'id="clusters-error"' in response.text
    assert "sneaky" not in [t.name for t in live_tokens(database)]


def test_delete_asks_naming_the_token_and_the_secret_is_refused(client, console, alice):
    console(alice.user)
    page = client.get("/tokens").text
    assert "Delete token “alice&#39;s token”?" in page
    response = client.post(f"/tokens/{alice.token_id}/delete", data={"csrf": csrf_of(client)},
                           follow_redirects=False)
    assert response.status_code == 303
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401
    assert "was deleted" in client.get("/tokens").text


def test_empty_state_and_expired_badge(client, console, make_account, clock, database):
    carol = make_account("carol", expiration="1h")
    clock.advance(timedelta(hours=2))
    console(carol.user)
    assert "Expired" in client.get("/tokens").text
    client.post(f"/tokens/{carol.token_id}/delete", data={"csrf": csrf_of(client)})
    assert "No tokens yet" in client.get("/tokens").text


def test_html_in_name_and_note_is_shown_as_text(client, console, alice):
    console(alice.user)
    create_token(client, csrf_of(client), name="<script>alert(1)</script>", note='<img src=x onerror="alert(2)">')
    client.get("/tokens")  # the reveal
    page = client.get("/tokens").text
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in page


def test_admin_can_switch_to_the_whole_organization(client, console, admin, alice):
    console(admin.user)
    assert "alice&#39;s token" not in client.get("/tokens").text
    whole = client.get("/tokens?all=1").text
    assert "alice&#39;s token" in whole and "admin&#39;s token" in whole


def test_member_asking_for_the_whole_organization_sees_only_their_own(client, console, admin, alice):
    console(alice.user)
    page = client.get("/tokens?all=1").text
    assert "alice&#39;s token" in page and "admin&#39;s token" not in page
    assert "Whole organization" not in page


# --- isolation and admin controls --------------------------------------------------------------


def test_another_organizations_session_sees_nothing_of_this_one(client, console, admin, alice, mallory):
    console(admin.user)
    csrf = csrf_of(client, "/clusters")
    client.post("/clusters", data={"csrf": csrf, "name": "prod-cluster", "server": "https://10.0.0.1:6443",
                                   "certificate_authority": make_pki().ca_pem, "region": "eu-1"})
    client.post("/vpcs", data={"csrf": csrf, "name": "prod-vpc", "region": "eu-1", "cidr": "10.0.0.0/16"})
    client.cookies.clear()
    console(mallory.user)
    for path in ("/tokens?all=1", "/clusters", "/vpcs", "/users"):
        text = client.get(path).text
        for secret_thing in ("alice", "admin&#39;s", "prod-cluster", "prod-vpc"):
            assert secret_thing not in text, (path, secret_thing)
    csrf = csrf_of(client)
    assert client.post(f"/tokens/{alice.token_id}/delete", data={"csrf": csrf}).status_code == 404
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


def test_non_admin_sees_no_admin_controls_and_is_refused_posting(client, console, alice, database):
    console(alice.user)
    for path, control in (("/clusters", 'id="add-cluster"'), ("/vpcs", 'id="add-vpc"')):
        page = client.get(path)
        assert page.status_code == 200 and control not in page.text
    assert 'href="/users"' not in client.get("/tokens").text
    assert client.get("/users").status_code == 403
    csrf = csrf_of(client)
    for path, data in (("/clusters", {"name": "x", "server": "https://x:6443", "certificate_authority": "",
                                      "region": "r"}),
                       ("/vpcs", {"name": "x", "region": "r", "cidr": "10.0.0.0/8"}),
                       ("/users", {"username": "x", "password": "long-enough"})):
        response = client.post(path, data={"csrf": csrf, **data}, follow_redirects=False)
        assert response.status_code == 403, path
        assert "Only organization admins" in response.text


def test_cluster_form_errors_are_shown_next_to_the_field(client, console, admin):
    console(admin.user)
    response = client.post("/clusters", data={"csrf": csrf_of(client), "name": "c1", "server": "http://plain",
                                              "certificate_authority": make_pki().ca_pem, "region": "eu-1"})
    assert response.status_code == 422
    assert 'id="server-error"' in response.text and 'value="http://plain"' in response.text


def test_admin_manages_users(client, console, admin, alice, app, database, clock):
    from fastapi.testclient import TestClient

    console(admin.user)
    csrf = csrf_of(client, "/users")
    created = client.post("/users", data={"csrf": csrf, "username": "dave", "password": "first-pass-1"},
                          follow_redirects=False)
    assert created.status_code == 303 and "dave" in client.get("/users").text
    with TestClient(app) as alice_browser:
        console(alice.user, alice_browser)
        client.post(f"/users/{alice.user.public_id}/disable", data={"csrf": csrf})
        assert alice_browser.get("/tokens", follow_redirects=False).headers["location"] == "/sign-in"
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401
    client.post(f"/users/{alice.user.public_id}/disable", data={"csrf": csrf, "enable": "1"})
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200
    page = client.post("/users/dave/reset-password", data={"csrf": csrf}).text  # followed to GET /users
    password = re.search(r'id="secret" readonly value="([^"]+)"', page).group(1)
    assert password not in client.get("/users").text
    with database.session() as session:
        assert AccountService(session, clock).authenticate("dave", password).must_change_password


def test_admin_cannot_disable_themselves(client, console, admin):
    console(admin.user)
    response = client.post(f"/users/{admin.user.public_id}/disable", data={"csrf": csrf_of(client)})
    assert response.status_code == 422
    assert client.get("/tokens").status_code == 200


# --- headers and assets ---------------------------------------------------------------------------


def test_console_pages_carry_strict_security_headers(client, console, alice):
    console(alice.user)
    for path in ("/sign-in", "/tokens"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("path", ["/sign-in", "/tokens", "/static/console.css", "/no-such-page"])
def test_console_responses_carry_exactly_the_console_csp(client, console, alice, path):
    console(alice.user)
    assert client.get(path).headers["content-security-policy"] == CONSOLE_CSP


def test_pages_have_no_inline_script_or_style(client, console, alice):
    console(alice.user)
    page = client.get("/tokens").text
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/console.js" defer>']
    assert "<style" not in page and " style=" not in page and " onclick=" not in page


def test_assets_are_served_by_tokensmith_and_the_api_still_works(client, alice):
    assert client.get("/static/console.css").headers["content-type"].startswith("text/css")
    assert "javascript" in client.get("/static/console.js").headers["content-type"]
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200
    assert "/tokens" not in client.get("/openapi.json").json()["paths"]
