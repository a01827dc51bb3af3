"""The console's token lifecycle over HTTP: rotate, "expires soon", scopes, the audit log page and
webhook credential reveals for clusters (issue 7's console part)."""

from __future__ import annotations

import html
import json
import re
from datetime import timedelta

import pytest
import yaml
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.pki import CA_PEM
from tests.test_console_http import create_token, csrf_of, live_tokens, user_with_password
from tokensmith import audit
from tokensmith.clusters.service import ClusterService
from tokensmith.db.models import AuditEvent, Token, WebhookCredential
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.tokens.service import TokenService

SECRET_FIELD = re.compile(r'id="secret" readonly value="([^"]+)"')


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def revealed_secret(page: str) -> str:
    return SECRET_FIELD.search(page).group(1)


def rotate(client, token_id: str, grace: str = "1h", csrf: str | None = None, **fields):
    data = {"csrf": csrf if csrf is not None else csrf_of(client), "grace": grace, **fields}
    return client.post(f"/tokens/{token_id}/rotate", data=data, follow_redirects=False)


def add_cluster(client, name: str = "prod"):
    return client.post("/clusters", data={"csrf": csrf_of(client, "/clusters"), "name": name,
                                          "server": f"https://{name}.example:6443", "certificate_authority": CA_PEM,
                                          "region": "eu-1"}, follow_redirects=False)


def events(database, action: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.query(AuditEvent).filter(AuditEvent.action == action).order_by(AuditEvent.id))


def make_token(database, clock, user, name: str, **kwargs) -> str:
    with database.session() as session:
        return TokenService(session, clock, SECRET_KEY).create(user, name, **kwargs).token.public_id


def review(client, cluster_id: str, credential: str, token: str):
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}
    return client.post(f"/v1/clusters/{cluster_id}/tokenreview", json=body, headers=bearer(credential))


# --- rotate ---------------------------------------------------------------------------------------


def test_rotate_reveals_the_new_secret_once_and_the_old_one_works_during_grace(client, console, alice, clock):
    console(alice.user)
    response = rotate(client, alice.token_id, "1h")
    assert response.status_code == 303 and response.headers["location"] == "/tokens"
    reveal = client.get("/tokens")
    assert reveal.headers["cache-control"] == "no-store"
    new = revealed_secret(reveal.text)
    assert new != alice.secret and "New secret for token" in reveal.text
    assert "The old secret keeps working until" in reveal.text and "in 1 hour" in reveal.text
    old_me, new_me = client.get("/v1/whoami", headers=alice.headers), client.get("/v1/whoami", headers=bearer(new))
    assert old_me.status_code == new_me.status_code == 200
    assert old_me.json()["token"]["id"] == new_me.json()["token"]["id"] == alice.token_id
    clock.advance(timedelta(hours=1))
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401
    assert client.get("/v1/whoami", headers=bearer(new)).status_code == 200


def test_rotate_with_no_grace_refuses_the_old_secret_at_once(client, console, alice):
    console(alice.user)
    rotate(client, alice.token_id, "0s")
    page = client.get("/tokens").text
    assert "The old secret stopped working at once." in page
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 401
    assert client.get("/v1/whoami", headers=bearer(revealed_secret(page))).status_code == 200


def test_rotate_dialog_offers_the_grace_periods_and_explains_them(client, console, alice):
    console(alice.user)
    page = client.get("/tokens").text
    dialog = page[page.index(f'id="rotate-{alice.token_id}"'):]
    dialog = dialog[:dialog.index("</dialog>")]
    assert re.findall(r'name="grace" value="([^"]+)"', dialog) == ["0s", "1h", "1d", "7d"]
    assert 'value="1h" checked' in dialog and "keeps running while you switch it over" in dialog
    assert f'action="/tokens/{alice.token_id}/rotate"' in dialog and 'name="csrf"' in dialog


def test_rotated_secret_is_gone_on_reload(client, console, alice):
    console(alice.user)
    rotate(client, alice.token_id)
    new = revealed_secret(client.get("/tokens").text)
    again = client.get("/tokens")
    assert new not in again.text and 'id="reveal-dialog"' not in again.text


def test_rotating_a_token_that_grants_clusters_reissues_its_kubeconfig(client, console, admin, database, clock):
    console(admin.user)
    add_cluster(client, "prod")
    with database.session() as session:
        cluster = ClusterService(session, clock).get(admin.user, "prod")
        token = TokenService(session, clock, SECRET_KEY).create(
            session.merge(admin.user), "kube", clusters=[cluster]).token.public_id
    client.get("/clusters")  # the cluster's own reveal
    rotate(client, token, "1d")
    page = client.get("/tokens").text
    new = revealed_secret(page)
    assert f'download="kubeconfig-{token}-kube.yaml"' in page
    preview = html.unescape(re.search(r'<pre id="kubeconfig-preview" tabindex="0">(.*?)</pre>', page, re.S).group(1))
    assert yaml.safe_load(preview)["users"][0]["user"]["token"] == new
    # One operation, one event: the re-issued kubeconfig is part of the rotation's record.
    rotated = events(database, "token.rotated")
    assert rotated[-1].target == token and rotated[-1].actor_user == "admin"
    assert json.loads(rotated[-1].details)["kubeconfig"] is True


def test_rotate_is_audited_like_the_api(client, console, alice, database):
    console(alice.user)
    rotate(client, alice.token_id, "1d")
    [event] = events(database, "token.rotated")
    assert (event.actor_user, event.target, event.outcome) == ("alice", alice.token_id, audit.SUCCESS)
    assert json.loads(event.details) == {"grace": "1d", "name": "alice's token", "via": "console"}
    assert event.client_ip and event.org_id == alice.user.org_id


def test_rotate_refused_by_the_expiry_policy_shows_the_policy_in_the_dialog(client, console, alice, database, clock):
    never = make_token(database, clock, alice.user, "forever", expiration="never")
    with database.session() as session:
        PolicyService(session, clock).set(alice.user.org_id, ExpiryPolicy(max_lifetime_days=30, allow_never=False))
    console(alice.user)
    response = rotate(client, never)
    assert response.status_code == 422
    dialog = response.text[response.text.index(f'id="rotate-{never}"'):]
    assert dialog.startswith(f'id="rotate-{never}" aria-labelledby="rotate-{never}-title" data-autoopen')
    assert f'id="rotate-{never}-error"' in dialog and "organization policy: at most 30 days" in dialog
    with database.session() as session:
        assert session.query(Token).filter_by(public_id=never).one().previous_secret_digest is None
    assert events(database, "token.rotated") == []


def test_rotate_with_a_grace_beyond_seven_days_is_refused_inline(client, console, alice):
    console(alice.user)
    response = rotate(client, alice.token_id, "30d")
    assert response.status_code == 422 and "at most 7d" in response.text
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


def test_rotate_without_csrf_is_refused_and_changes_nothing(client, console, alice):
    console(alice.user)
    assert rotate(client, alice.token_id, "0s", csrf="").status_code == 403
    assert rotate(client, alice.token_id, "0s", csrf="forged").status_code == 403
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


def test_rotating_another_organizations_token_is_not_found(client, console, alice, mallory):
    console(mallory.user)
    response = rotate(client, alice.token_id, "0s")
    assert response.status_code == 404
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


def test_member_cannot_rotate_a_colleagues_token(client, console, alice, bob):
    console(bob.user)
    assert rotate(client, alice.token_id, "0s").status_code == 404
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200


# --- expires soon ----------------------------------------------------------------------------------


def test_banner_names_own_tokens_expiring_within_seven_days(client, console, alice, database, clock):
    make_token(database, clock, alice.user, "nightly <b>job</b>", expiration="2d")
    make_token(database, clock, alice.user, "later", expiration="10d")
    console(alice.user)
    page = client.get("/tokens").text
    banner = page[page.index('id="expiring-banner"'):page.index("</section>", page.index('id="expiring-banner"'))]
    assert 'role="status"' in banner and "One of your tokens expires soon" in banner
    assert "nightly &lt;b&gt;job&lt;/b&gt;" in banner and "in 2 days" in banner and "later" not in banner
    assert 'data-open="rotate-' in banner
    assert page.count('class="badge soon"') == 1
    assert "<script" not in page.split("</head>")[1]  # no inline script


def test_no_banner_for_expired_tokens_or_ones_far_from_expiry(client, console, make_account, clock):
    carol = make_account("carol", expiration="1d")
    clock.advance(timedelta(days=2))
    console(carol.user)
    page = client.get("/tokens").text
    assert 'id="expiring-banner"' not in page and "Expired" in page and 'class="badge soon"' not in page
    assert f'id="rotate-{carol.token_id}"' not in page  # a rotated secret would be expired as well


def test_banner_shows_only_the_viewers_own_tokens(client, console, admin, alice, database, clock):
    make_token(database, clock, alice.user, "alices soon", expiration="1d")
    console(admin.user)
    page = client.get("/tokens?all=1").text
    assert 'id="expiring-banner"' not in page
    assert page.count('class="badge soon"') == 1  # alice's row in the whole-organization list


def test_banner_rotate_opens_the_rows_dialog_without_a_duplicate(client, console, admin, database, clock):
    soon = make_token(database, clock, admin.user, "soon", expiration="3d")
    console(admin.user)
    page = client.get("/tokens?all=1").text
    assert page.count(f'id="rotate-{soon}"') == 1 and page.count(f'data-open="rotate-{soon}"') == 2


# --- scopes ------------------------------------------------------------------------------------------


def test_create_with_picked_scopes_limits_the_token(client, console, alice, database):
    console(alice.user)
    response = create_token(client, csrf_of(client), name="read only", scope_mode="some",
                            scopes=["tokens:read", "clusters:read"])
    assert response.status_code == 303
    secret = revealed_secret(client.get("/tokens").text)
    me = client.get("/v1/whoami", headers=bearer(secret)).json()
    assert me["token"]["scopes"] == ["clusters:read", "tokens:read"]
    refused = client.post("/v1/tokens", headers=bearer(secret), json={"name": "x"})
    assert refused.status_code == 403 and "tokens:write" in refused.json()["detail"]
    page = client.get("/tokens").text
    row = page[page.index("read only"):]
    row = row[:row.index("</tr>")]
    assert '<span class="chip scope">clusters:read</span><span class="chip scope">tokens:read</span>' in row


def test_default_is_all_of_the_owners_permissions(client, console, alice, database):
    console(alice.user)
    page = client.get("/tokens").text
    assert 'id="scope-mode-all" name="scope_mode" value="all" checked' in page
    create_token(client, csrf_of(client), name="everything")
    secret = revealed_secret(client.get("/tokens").text)
    with database.session() as session:
        assert session.query(Token).filter_by(name="everything").one().scopes is None
    page = client.get("/tokens").text
    assert 'title="All of its owner\'s permissions">all</span>' in page
    assert client.post("/v1/tokens", headers=bearer(secret), json={"name": "x"}).status_code == 201


def test_admin_only_scopes_are_offered_only_to_admins(client, console, alice, admin):
    console(alice.user)
    member_page = client.get("/tokens").text
    offered = re.findall(r'name="scopes" value="([^"]+)"', member_page)
    assert "tokens:write" in offered and "clusters:write" not in offered and "metrics:read" not in offered
    assert "introspect" not in offered
    client.cookies.clear()
    console(admin.user)
    offered = re.findall(r'name="scopes" value="([^"]+)"', client.get("/tokens").text)
    assert {"clusters:write", "vpcs:write", "metrics:read"} <= set(offered)


def test_member_posting_an_admin_only_scope_is_refused_inline(client, console, alice, database):
    console(alice.user)
    response = create_token(client, csrf_of(client), name="sneaky", scope_mode="some", scopes=["clusters:write"])
    assert response.status_code == 422 and 'id="scopes-error"' in response.text
    assert "not permitted" in response.text
    assert 'id="scope-mode-some" name="scope_mode" value="some" checked' in response.text
    assert "sneaky" not in [t.name for t in live_tokens(database)]


def test_picking_no_scope_at_all_is_refused_inline(client, console, alice):
    console(alice.user)
    response = create_token(client, csrf_of(client), name="nothing", scope_mode="some")
    assert response.status_code == 422 and "Pick at least one permission" in response.text


def test_kubeconfig_token_needs_the_kubernetes_scope(client, console, admin, database):
    console(admin.user)
    add_cluster(client, "prod")
    page = client.get("/clusters")  # the cluster's reveal
    cluster_id = re.search(r'name="clusters" value="([^"]+)"', client.get("/tokens").text).group(1)
    assert page.status_code == 200
    response = create_token(client, csrf_of(client), name="kube", kind="kubeconfig", clusters=[cluster_id],
                            scope_mode="some", scopes=["tokens:read"])
    assert response.status_code == 422 and "needs the &#39;kubernetes&#39; scope" in response.text


# --- console actions are audited ------------------------------------------------------------------


def test_console_sign_in_and_token_creation_are_audited(client, database, clock):
    carol = user_with_password(database, clock, "carol", "correct horse")
    csrf = csrf_of(client, "/sign-in")
    client.post("/sign-in", data={"csrf": csrf, "username": "carol", "password": "wrong"})
    client.post("/sign-in", data={"csrf": csrf_of(client, "/sign-in"), "username": "carol",
                                  "password": "correct horse"})
    create_token(client, csrf_of(client), name="from the console")
    sign_ins = events(database, "auth.sign_in")
    assert [(e.actor_user, e.outcome, e.org_id) for e in sign_ins] == [
        ("carol", audit.FAILURE, carol.org_id), ("carol", audit.SUCCESS, carol.org_id)]
    [created] = events(database, "token.created")
    assert created.actor_user == "carol"
    assert json.loads(created.details) == {"name": "from the console", "via": "console"}


# --- audit log page ---------------------------------------------------------------------------------


def audit_page(client, **params):
    return client.get("/audit", params=params)


def test_audit_page_lists_events_with_actor_client_action_target_and_outcome(client, console, admin, alice):
    console(admin.user)
    create_token(client, csrf_of(client), name="audited")
    page = audit_page(client)
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    row = next(r for r in page.text.split("<tr>") if '<code class="action">token.created</code>' in r)
    assert "admin" in row and "testclient" in row and '<code class="target">tok_' in row and "success" in row
    assert 'href="/audit" aria-current="page">Audit log</a>' in page.text


def test_audit_page_filters_by_action_prefix_actor_outcome_and_time(client, console, admin, database, clock):
    with database.session() as session:
        for i, (action, actor, outcome) in enumerate((("token.created", "admin", "success"),
                                                      ("token.deleted", "bob", "success"),
                                                      ("auth.sign_in", "bob", "failure"))):
            audit.record(session, action, at=clock.now() + timedelta(hours=i), org_id=admin.user.org_id,
                         actor_user=actor, outcome=outcome, target=f"target-{i}")
    console(admin.user)

    def targets(**params):
        return re.findall(r'<code class="target">(target-\d)</code>', audit_page(client, **params).text)

    assert targets() == ["target-2", "target-1", "target-0"]
    assert targets(action="token.") == ["target-1", "target-0"]
    assert targets(action="token.created") == ["target-0"]
    assert targets(actor="bob") == ["target-2", "target-1"]
    assert targets(outcome="failure") == ["target-2"]
    since = (clock.now() + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    until = (clock.now() + timedelta(minutes=90)).strftime("%Y-%m-%dT%H:%M")
    assert targets(since=since, until=until) == ["target-1"]
    empty = audit_page(client, action="nothing.")
    assert "No events match these filters" in empty.text


def test_audit_page_reads_through_the_same_query_as_the_api(client, console, admin, database, clock):
    with database.session() as session:
        for i in range(7):
            audit.record(session, "token.created" if i % 2 else "auth.sign_in", at=clock.now(),
                         org_id=admin.user.org_id, target=f"target-{i}")
    console(admin.user)
    api = client.get("/v1/audit-events", params={"action": "token."}, headers=admin.headers).json()
    page = audit_page(client, action="token.").text
    assert re.findall(r'<code class="target">([^<]+)</code>', page) == [e["target"] for e in api["items"]]
    assert len(api["items"]) >= 3


def test_older_events_follow_the_cursor(client, console, admin, database, clock):
    with database.session() as session:
        for i in range(60):
            audit.record(session, "token.created", at=clock.now(), org_id=admin.user.org_id, target=f"t-{i:02d}")
    console(admin.user)
    first = audit_page(client, action="token.created").text
    assert first.count('<code class="target">') == 50
    older = html.unescape(re.search(r'href="([^"]+)" id="older-events"', first).group(1))
    assert "action=token.created" in older and "cursor=" in older
    second = client.get(older).text
    assert re.findall(r'<code class="target">(t-\d\d)</code>', second) == [f"t-{i:02d}" for i in range(9, -1, -1)]
    assert 'id="older-events"' not in second


def test_bad_time_or_cursor_is_a_clear_422(client, console, admin):
    console(admin.user)
    bad_time = audit_page(client, since="yesterday")
    assert bad_time.status_code == 422 and 'id="since-error"' in bad_time.text
    assert 'value="yesterday"' in bad_time.text
    bad_cursor = audit_page(client, cursor="garbage")
    assert bad_cursor.status_code == 422 and "cursor is not valid" in bad_cursor.text.lower()


def test_audit_page_shows_event_text_escaped(client, console, admin, database, clock):
    console(admin.user)
    create_token(client, csrf_of(client), name="<script>alert(1)</script>")
    with database.session() as session:
        audit.record(session, "auth.sign_in", at=clock.now(), org_id=admin.user.org_id, outcome=audit.FAILURE,
                     actor_user='<img src=x onerror="alert(2)">', user_agent="<b>agent</b>")
    page = audit_page(client).text
    assert "<script>alert(1)" not in page and "<img src=x" not in page and "<b>agent" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&#34;alert(2)&#34;&gt;" in page


def test_audit_export_is_json_lines_of_the_filtered_events(client, console, admin, database, clock):
    with database.session() as session:
        for action in ("token.created", "auth.sign_in", "token.deleted"):
            audit.record(session, action, at=clock.now(), org_id=admin.user.org_id, details={"k": action})
    console(admin.user)
    assert 'href="/audit/export.jsonl?action=token."' in audit_page(client, action="token.").text
    response = client.get("/audit/export.jsonl", params={"action": "token."})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    assert "attachment" in response.headers["content-disposition"]
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [(r["action"], r["organization"], r["details"]) for r in lines] == [
        ("token.deleted", "default", {"k": "token.deleted"}), ("token.created", "default", {"k": "token.created"})]


def test_non_admins_are_refused_the_audit_pages_and_see_no_link(client, console, alice):
    console(alice.user)
    assert 'href="/audit"' not in client.get("/tokens").text
    for path in ("/audit", "/audit/export.jsonl"):
        response = client.get(path)
        assert response.status_code == 403 and "Only organization admins" in response.text, path


def test_another_organizations_admin_sees_none_of_these_events(client, console, admin, mallory):
    console(admin.user)
    create_token(client, csrf_of(client), name="ours-only")
    client.cookies.clear()
    console(mallory.user)
    assert "ours-only" not in audit_page(client).text
    assert "ours-only" not in client.get("/audit/export.jsonl").text


def test_audit_pages_without_a_session_go_to_sign_in(client):
    for path in ("/audit", "/audit/export.jsonl"):
        assert client.get(path, follow_redirects=False).headers["location"] == "/sign-in"


# --- webhook credentials of clusters --------------------------------------------------------------


@pytest.fixture
def over_https(client):
    """The console reached at an https address, as an operator minting webhook credentials must."""
    client.base_url = "https://testserver"
    return client


def webhook_reveal(page: str) -> dict[str, str]:
    kubeconfig = html.unescape(re.search(r'<textarea id="webhook-kubeconfig"[^>]*>(.*?)</textarea>', page, re.S)[1])
    flags = html.unescape(re.search(r'<textarea id="apiserver-flags"[^>]*>(.*?)</textarea>', page, re.S)[1])
    return {"secret": revealed_secret(page), "kubeconfig": kubeconfig, "flags": flags}


def test_adding_a_cluster_reveals_its_first_webhook_credential_once(over_https, client, console, admin, database,
                                                                   clock):
    console(admin.user)
    assert add_cluster(client, "prod").status_code == 303
    page = client.get("/clusters")
    assert page.headers["cache-control"] == "no-store" and "Cluster “prod” was added" in page.text
    shown = webhook_reveal(page.text)
    assert shown["secret"].startswith("tsw_")
    config = yaml.safe_load(shown["kubeconfig"])
    assert config["users"][0]["user"]["token"] == shown["secret"]
    with database.session() as session:
        cluster = ClusterService(session, clock).get(admin.user, "prod")
        cluster_id, audience = cluster.public_id, cluster.token_audience
        assert session.query(WebhookCredential).filter_by(cluster_id=cluster.id).count() == 1
    assert config["clusters"][0]["cluster"]["server"] == f"https://testserver/v1/clusters/{cluster_id}/tokenreview"
    assert "--authentication-token-webhook-config-file=/etc/kubernetes/tokensmith-webhook.yaml" in shown["flags"]
    assert f"--api-audiences=<your service-account issuer>,{audience}" in shown["flags"]
    assert 'download="tokensmith-webhook-prod.yaml"' in page.text
    again = client.get("/clusters").text
    assert shown["secret"] not in again and 'id="reveal-dialog"' not in again


def test_adding_and_deleting_a_cluster_in_the_console_is_audited(client, console, admin, database, clock):
    console(admin.user)
    assert add_cluster(client, "prod").status_code == 303
    with database.session() as session:
        cluster_id = ClusterService(session, clock).get(admin.user, "prod").public_id
    client.post(f"/clusters/{cluster_id}/delete", data={"csrf": csrf_of(client, "/clusters")})
    with database.session() as session:
        recorded = [(e.action, e.actor_user) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                    if e.action.startswith(("cluster.", "webhook_credential."))]
    assert recorded == [("cluster.created", "admin"), ("webhook_credential.created", "admin"),
                        ("cluster.deleted", "admin")]


def test_new_credential_flags_name_the_clusters_own_audience(over_https, client, console, admin, database, clock):
    with database.session() as session:
        cluster = ClusterService(session, clock).create(admin.user, "prod", "https://p:6443", CA_PEM, "eu-1")
        cluster.audience = "https://kubernetes.default.svc"
        cluster_id = cluster.public_id
    console(admin.user)
    reveal = client.post(f"/clusters/{cluster_id}/webhook-credentials", data={"csrf": csrf_of(client, "/clusters")})
    flags = webhook_reveal(reveal.text)["flags"]  # the redirect was followed to the one-time reveal
    assert "--api-audiences=<your service-account issuer>,https://kubernetes.default.svc" in flags


def test_revealed_webhook_credential_authenticates_token_reviews(over_https, client, console, admin, database, clock):
    console(admin.user)
    add_cluster(client, "prod")
    shown = webhook_reveal(client.get("/clusters").text)
    with database.session() as session:
        cluster = ClusterService(session, clock).get(admin.user, "prod")
        cluster_id = cluster.public_id
        secret = TokenService(session, clock, SECRET_KEY).create(session.merge(admin.user), "k",
                                                                 clusters=[cluster]).secret
    answer = review(client, cluster_id, shown["secret"], secret)
    assert answer.status_code == 200 and answer.json()["status"]["authenticated"] is True


def test_new_webhook_credential_keeps_the_old_one_working(over_https, client, console, admin, database, clock):
    console(admin.user)
    add_cluster(client, "prod")
    first = webhook_reveal(client.get("/clusters").text)["secret"]
    with database.session() as session:
        cluster_id = ClusterService(session, clock).get(admin.user, "prod").public_id
    page = client.get("/clusters").text
    assert f'action="/clusters/{cluster_id}/webhook-credentials"' in page
    response = client.post(f"/clusters/{cluster_id}/webhook-credentials", data={"csrf": csrf_of(client, "/clusters")},
                           follow_redirects=False)
    assert response.status_code == 303
    reveal = client.get("/clusters").text
    assert "New webhook credential for “prod”" in reveal
    second = webhook_reveal(reveal)["secret"]
    assert second != first
    for credential in (first, second):
        assert review(client, cluster_id, credential, "tsm_nope").status_code == 200  # authenticated as the server


def test_over_http_the_reveal_refuses_the_webhook_kubeconfig_and_says_why(client, console, admin):
    console(admin.user)
    add_cluster(client, "prod")
    page = client.get("/clusters").text
    assert 'id="webhook-kubeconfig"' not in page and 'id="webhook-http-refused"' in page
    assert "sends the webhook credential only over https" in html.unescape(page)
    assert "tokensmith admin cluster webhook-config CLUSTER --url https://" in html.unescape(page)
    assert 'id="clusters-http-warning"' in page


def test_the_clusters_page_shows_each_clusters_user_name_prefix(over_https, client, console, admin):
    console(admin.user)
    add_cluster(client, "prod")
    row = re.search(r'<table class="list" id="clusters">.*?</table>', client.get("/clusters").text, re.S)[0]
    assert "<code>tokensmith:&lt;user&gt;</code>" in row and "edit" in row


def test_new_webhook_credential_needs_csrf_and_an_admin(client, console, admin, alice, database, clock):
    with database.session() as session:
        cluster = ClusterService(session, clock).create(admin.user, "prod", "https://p:6443", CA_PEM, "eu-1")
        cluster_id = cluster.public_id
    console(admin.user)
    assert client.post(f"/clusters/{cluster_id}/webhook-credentials", data={},
                       follow_redirects=False).status_code == 403
    client.cookies.clear()
    console(alice.user)
    assert 'webhook-credentials' not in client.get("/clusters").text
    refused = client.post(f"/clusters/{cluster_id}/webhook-credentials", data={"csrf": csrf_of(client, "/clusters")},
                          follow_redirects=False)
    assert refused.status_code == 403 and "Only organization admins" in refused.text
    with database.session() as session:
        assert session.query(WebhookCredential).count() == 0


def test_new_webhook_credential_for_another_organizations_cluster_is_not_found(client, console, admin, mallory,
                                                                               database, clock):
    with database.session() as session:
        cluster_id = ClusterService(session, clock).create(admin.user, "prod", "https://p:6443", CA_PEM,
                                                           "eu-1").public_id
    console(mallory.user)
    response = client.post(f"/clusters/{cluster_id}/webhook-credentials", data={"csrf": csrf_of(client, "/clusters")},
                           follow_redirects=False)
    assert response.status_code == 404
    with database.session() as session:
        assert session.query(WebhookCredential).count() == 0


@pytest.mark.parametrize("path", ["/tokens", "/audit", "/clusters"], ids=["tokens", "audit", "clusters"])
def test_new_pages_keep_the_strict_csp(client, console, admin, path):
    console(admin.user)
    response = client.get(path)
    assert response.status_code == 200
    assert "unsafe-inline" not in response.headers["content-security-policy"]
    assert "<script>" not in response.text and " onclick=" not in response.text
