"""The console's token lifecycle in a real headless Chromium against a real ``tokensmith serve``:
rotate with a grace period, the "expires soon" banner, the scope picker, the audit log page and a
cluster's webhook credential. Same fixtures and screenshots folder as test_console_browser.py.
"""

from __future__ import annotations

import re

import httpx
import pytest

from tests import test_console_browser as shared
from tests.pki import make_pki

pytestmark = pytest.mark.browser

# The module-scoped server and signed-in admin of test_console_browser, one set per module (the browser is
# the worker's Chromium, tests/conftest.py's ``browser``).
server = shared.server
admin_password = shared.admin_password
admin_context = shared.admin_context
admin_page = shared.admin_page
shot = shared.shot
MOBILE = shared.MOBILE


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def create_and_read_secret(page, name: str, **options) -> str:
    """Create a token in the dialog, read the revealed secret and close the reveal."""
    shared.create_token(page, name, **options)
    reveal = page.locator("#reveal-dialog")
    reveal.wait_for()
    secret = page.locator("#secret").input_value()
    reveal.get_by_role("button", name="I have saved it").click()
    return secret


def rotate_in_dialog(page, name: str, grace_label: str) -> str:
    page.goto("/tokens")
    page.locator("#tokens").get_by_role("button", name=f"Rotate token {name}").click()
    dialog = page.get_by_role("dialog", name=f"Rotate token “{name}”?")
    assert dialog.is_visible()
    dialog.get_by_label(grace_label).check()
    shot(page, f"rotate-dialog-{grace_label.split(':')[0].lower().replace(' ', '-')}-desktop")
    dialog.get_by_role("button", name="Rotate token").click()
    reveal = page.locator("#reveal-dialog")
    reveal.wait_for()
    assert reveal.get_by_role("heading", name=f"New secret for token “{name}”").is_visible()
    return page.locator("#secret").input_value()


def whoami(server, secret: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/whoami", headers=bearer(secret))


def test_rotate_keeps_the_old_secret_during_grace_and_none_refuses_it_at_once(admin_page, server):
    page = admin_page
    old = create_and_read_secret(page, "rotate me")

    new = rotate_in_dialog(page, "rotate me", "1 hour")
    assert new != old
    assert page.locator("#old-secret-note").get_by_text("keeps working until").is_visible()
    shot(page, "rotate-reveal-desktop")
    old_me, new_me = whoami(server, old), whoami(server, new)
    assert old_me.status_code == new_me.status_code == 200
    assert old_me.json()["token"]["id"] == new_me.json()["token"]["id"]
    introspected = httpx.post(f"{server.url}/v1/oauth2/introspect", data={"token": old}, headers=bearer(new))
    assert introspected.status_code == 200 and introspected.json()["active"] is True  # admins may introspect
    page.reload()
    assert page.locator("#reveal-dialog").count() == 0 and new not in page.content()

    newest = rotate_in_dialog(page, "rotate me", "None: the old secret stops working at once")
    assert page.locator("#old-secret-note").get_by_text("stopped working at once").is_visible()
    assert whoami(server, new).status_code == 401
    assert whoami(server, newest).status_code == 200
    assert whoami(server, newest).json()["token"]["id"] == new_me.json()["token"]["id"]


def test_banner_names_a_token_expiring_in_two_days_and_offers_rotate(admin_page, server):
    page = admin_page
    secret = create_and_read_secret(page, "banner api")
    created = httpx.post(f"{server.url}/v1/tokens", headers=bearer(secret),
                         json={"name": "short lived", "expiration": "2d"})
    assert created.status_code == 201, created.text
    page.goto("/tokens")
    banner = page.get_by_role("status").filter(has_text="expire")
    assert banner.is_visible()
    assert re.search(r"short lived expires in (1 day|2 days)", banner.inner_text())
    assert page.locator("#tokens tr", has_text="short lived").get_by_text("Expires soon").is_visible()
    shot(page, "expires-soon-banner-desktop")
    banner.get_by_role("button", name="Rotate short lived before it expires").click()
    assert page.get_by_role("dialog", name="Rotate token “short lived”?").is_visible()
    page.keyboard.press("Escape")

    mobile = shared.new_page(page.context.browser, server, viewport=MOBILE)
    mobile.context.add_cookies(page.context.cookies())
    mobile.goto("/tokens")
    assert mobile.locator("#expiring-banner").is_visible()
    assert mobile.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    shot(mobile, "expires-soon-banner-mobile")
    mobile.context.close()


def test_scope_picker_makes_a_token_the_api_refuses_naming_the_scope(admin_page, server):
    page = admin_page
    page.locator("#create-token").click()
    dialog = page.locator("#create-dialog")
    assert dialog.get_by_label("All my permissions").is_checked()
    assert not dialog.locator("input[name=scopes][value='tokens:write']").is_visible()
    dialog.get_by_label("Name").fill("no writes")
    dialog.get_by_label("Only the permissions I pick").check()
    write = dialog.locator("input[name=scopes][value='tokens:write']")
    assert write.is_visible() and write.is_checked()
    write.uncheck()
    shot(page, "scope-picker-desktop")
    dialog.get_by_role("button", name="Create token").click()
    page.locator("#reveal-dialog").wait_for()
    secret = page.locator("#secret").input_value()
    refused = httpx.post(f"{server.url}/v1/tokens", headers=bearer(secret), json={"name": "nope"})
    assert refused.status_code == 403 and "tokens:write" in refused.json()["detail"]
    assert httpx.get(f"{server.url}/v1/tokens", headers=bearer(secret)).status_code == 200
    page.goto("/tokens")
    scopes = page.locator("#tokens tr", has_text="no writes").locator("td[data-label=Scopes]").inner_text()
    assert "tokens:read" in scopes and "tokens:write" not in scopes


def test_audit_page_lists_sign_in_and_token_created_and_filters_by_action(admin_page):
    page = admin_page
    create_and_read_secret(page, "audited in browser")
    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url("**/audit")
    events = page.locator("#audit-events")
    assert events.locator("code.action", has_text="auth.sign_in").count() >= 1
    assert events.locator("code.action", has_text="token.created").count() >= 1
    shot(page, "audit-log-desktop")
    page.get_by_label("Action").fill("token.created")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/audit?action=token.created*")
    actions = set(page.locator("#audit-events code.action").all_inner_texts())
    assert actions == {"token.created"}
    assert page.locator("#audit-events tr", has_text="audited in browser").count() == 1


def test_adding_a_cluster_reveals_a_webhook_credential_that_authenticates_token_reviews(admin_page, server, tmp_path):
    page = admin_page
    secret = create_and_read_secret(page, "kube reviewer")
    page.goto("/clusters")
    # This console is reached over http: it warns that no webhook kubeconfig can be built from it.
    assert page.locator("#clusters-http-warning").is_visible()
    page.locator("#add-cluster").click()
    dialog = page.locator("#cluster-dialog")
    dialog.get_by_label("Name").fill("webhooked")
    dialog.get_by_label("API server URL").fill("https://10.9.8.7:6443")
    dialog.get_by_label("Certificate authority").fill(make_pki().ca_pem)
    dialog.get_by_label("Region").fill("eu-north")
    dialog.get_by_role("button", name="Add cluster").click()
    reveal = page.locator("#reveal-dialog")
    reveal.wait_for()
    assert reveal.get_by_text("never shown again").is_visible()
    shot(page, "webhook-credential-reveal-desktop")
    credential = page.locator("#secret").input_value()
    # Over http the API server would call without the credential: the reveal says so instead of
    # offering a kubeconfig that cannot work (tests/test_kube_real.py covers the https path for real).
    assert page.locator("#webhook-http-refused").is_visible()
    assert "only over https" in page.locator("#webhook-http-refused").inner_text()
    assert page.locator("#webhook-kubeconfig").count() == 0
    assert "--authentication-token-webhook-config-file=" in page.locator("#apiserver-flags").input_value()
    cluster_id = httpx.get(f"{server.url}/v1/clusters/webhooked", headers=bearer(secret)).json()["id"]
    review_url = f"{server.url}/v1/clusters/{cluster_id}/tokenreview"

    kube = httpx.post(f"{server.url}/v1/tokens", headers=bearer(secret),
                      json={"name": "kube user", "clusters": ["webhooked"]})
    assert kube.status_code == 201, kube.text
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": kube.json()["secret"]}}
    answer = httpx.post(review_url, json=body, headers=bearer(credential))
    assert answer.status_code == 200 and answer.json()["status"]["authenticated"] is True
    assert httpx.post(review_url, json=body, headers=bearer("tsw_" + "x" * 38)).status_code == 401

    reveal.get_by_role("button", name="I have saved it").click()
    page.reload()
    assert page.locator("#reveal-dialog").count() == 0 and credential not in page.content()
    page.locator("#clusters").get_by_role("button", name="New webhook credential for webhooked").click()
    page.get_by_role("dialog", name="New webhook credential for “webhooked”?").get_by_role(
        "button", name="Create credential").click()
    reveal.wait_for()
    another = page.locator("#secret").input_value()
    assert another != credential
    assert httpx.post(review_url, json=body, headers=bearer(another)).json()["status"]["authenticated"] is True
