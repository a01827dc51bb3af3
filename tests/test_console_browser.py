"""The console in a real headless Chromium (Playwright) against a real ``tokensmith serve``.

One server for the module and the worker's Chromium (tests/conftest.py's ``browser``); tests share the
admin, whose first password is changed once, and do not depend on each other's data. Screenshots land
in test-artifacts/console/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require
from tests.pki import make_pki
from tests.servers import ServerProcess, free_port, server_env, wait_for_http

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
ADMIN_PASSWORD = "a-new-admin-password"
MOBILE = {"width": 375, "height": 812}


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("console") / "data"
    proc = ServerProcess(data, free_port(), server_env(data))
    try:
        proc.start()
    except TimeoutError:  # a heavily loaded machine: give a still-running server more time
        wait_for_http(proc.ready_url, timeout=120, process=proc.process)
    yield proc
    proc.stop()


def new_page(browser, server, **options):
    context = browser.new_context(accept_downloads=True, base_url=server.url, **options)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.set_default_timeout(30_000)  # a loaded 2-core CI box is slow
    return context.new_page()


def sign_in(page, username: str, password: str) -> None:
    page.goto("/sign-in")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def change_password(page, current: str, new: str) -> None:
    page.get_by_label("Current password").fill(current)
    page.get_by_label("New password", exact=False).first.fill(new)
    page.get_by_label("New password again").fill(new)
    page.get_by_role("button", name="Change password").click()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


@pytest.fixture(scope="module")
def admin_password(browser, server) -> str:
    """The initial admin signs in with the password ``serve`` printed and is made to change it."""
    initial = (server.data_dir / "initial-admin-password").read_text().strip()
    page = new_page(browser, server)
    sign_in(page, "admin", initial)
    page.wait_for_url("**/account/password")
    assert page.get_by_text("choose a password of your own").is_visible()
    change_password(page, initial, ADMIN_PASSWORD)
    page.wait_for_url("**/tokens")
    page.context.close()
    return ADMIN_PASSWORD


@pytest.fixture(scope="module")
def admin_context(browser, server, admin_password):
    """One signed-in admin browser context for the module (argon2 sign-ins are slow on purpose)."""
    page = new_page(browser, server)
    sign_in(page, "admin", admin_password)
    page.wait_for_url("**/tokens")
    page.close()
    yield page.context
    page.context.close()


@pytest.fixture
def admin_page(admin_context):
    page = admin_context.new_page()
    page.goto("/tokens")
    yield page
    page.close()


def create_token(page, name: str, *, note: str = "", expiration: str | None = None,
                 kubeconfig_clusters: list[str] | None = None) -> None:
    page.locator("#create-token").click()
    dialog = page.locator("#create-dialog")
    dialog.get_by_label("Name").fill(name)
    if expiration:
        dialog.get_by_label("Expiration").select_option(expiration)
    if note:
        dialog.get_by_label("Note").fill(note)
    if kubeconfig_clusters is not None:
        dialog.get_by_label("Kubeconfig").check()
        for choice in kubeconfig_clusters:  # "NAME" or "NAME=LEVEL"
            cluster, _, level = choice.partition("=")
            dialog.get_by_role("checkbox", name=cluster).check()
            if level:
                dialog.get_by_label(f"Access level on {cluster}").select_option(label=level)
    dialog.get_by_role("button", name="Create token").click()


def whoami(server, secret: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/whoami", headers={"Authorization": f"Bearer {secret}"})


def test_whole_path_secret_kubeconfig_reload_delete(admin_page, server, tmp_path):
    page = admin_page
    assert page.get_by_text("No tokens yet").is_visible()

    # Create Token (Token Secret): the dialog, then the one-time reveal.
    page.locator("#create-token").click()
    dialog = page.locator("#create-dialog")
    assert dialog.is_visible()
    assert page.evaluate("document.activeElement.id") == "token-name"
    shot(page, "create-dialog-desktop")
    page.keyboard.press("Escape")
    create_token(page, "deploy bot", note="used by CI <b>nightly</b>", expiration="90d")
    reveal = page.locator("#reveal-dialog")
    reveal.wait_for()  # the console opens it once the API has answered
    assert reveal.is_visible()
    assert reveal.get_by_text("never shown again").is_visible()
    shot(page, "reveal-secret-desktop")

    # Copy the secret from the page, as a person would, and use it.
    page.locator("#copy-secret").click()
    page.get_by_role("button", name="Copied").wait_for()
    secret = page.evaluate("navigator.clipboard.readText()")
    assert secret.startswith("tsm_") and secret == page.locator("#secret").input_value()
    me = whoami(server, secret)
    assert me.status_code == 200 and me.json()["user"]["username"] == "admin"

    # Two clusters, registered through the API with the new token.
    ca = make_pki().ca_pem
    for name, port in (("alpha", 6443), ("beta", 6444)):
        created = httpx.post(f"{server.url}/v1/clusters", headers={"Authorization": f"Bearer {secret}"},
                             json={"name": name, "server": f"https://127.0.0.1:{port}",
                                   "certificate_authority": ca, "region": "local"})
        assert created.status_code == 201, created.text
    reveal.get_by_role("button", name="I have saved it").click()
    assert not reveal.is_visible()

    # A Kubeconfig token for both clusters: download it and check it with kubectl.
    page.goto("/tokens")
    row = page.locator("#tokens tr", has_text="deploy bot")
    assert row.get_by_text("used by CI <b>nightly</b>").is_visible()  # shown as text
    shot(page, "dashboard-desktop")
    create_token(page, "kube both", kubeconfig_clusters=["alpha=edit", "beta"])
    reveal.wait_for()
    assert reveal.is_visible()
    page.locator("#kubeconfig-preview").evaluate("el => el.closest('details').open = true")
    shot(page, "reveal-kubeconfig-desktop")
    kube_secret = page.locator("#secret").input_value()
    assert kube_secret in page.locator("#kubeconfig-preview").inner_text()
    with page.expect_download() as download_info:
        page.locator("#download-kubeconfig").click()
    download = download_info.value
    assert re.fullmatch(r"kubeconfig-tok_[A-Za-z0-9]+-kube-both\.yaml", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    check_with_kubectl(path, kube_secret, tmp_path)
    assert whoami(server, kube_secret).status_code == 200

    # Reload (and back): the secret is gone for good.
    page.reload()
    assert page.locator("#reveal-dialog").count() == 0
    assert kube_secret not in page.content() and secret not in page.content()
    page.go_back()
    assert kube_secret not in page.content()
    page.goto("/tokens")
    kube_row = page.locator("#tokens tr", has_text="kube both")
    assert kube_row.get_by_text("alpha · edit").is_visible() and kube_row.get_by_text("beta · view").is_visible()

    # Delete, confirming in a dialog that names the token; the secret is refused at once.
    kube_row.get_by_role("button", name="Delete token kube both").click()
    confirm = page.get_by_role("dialog", name="Delete token “kube both”?")
    assert confirm.is_visible()
    confirm.get_by_role("button", name="Delete token").click()
    page.get_by_text("was deleted").wait_for()
    assert page.locator("#tokens tr", has_text="kube both").count() == 0
    assert whoami(server, kube_secret).status_code == 401
    assert whoami(server, secret).status_code == 200


def check_with_kubectl(path: Path, secret: str, tmp_path: Path) -> None:
    require(shutil.which("kubectl") is not None, "kubectl is needed to check the downloaded kubeconfig")
    env = {**os.environ, "KUBECACHEDIR": str(tmp_path / "kube-cache"), "HOME": str(tmp_path)}

    def kubectl(*args: str) -> str:
        result = subprocess.run(["kubectl", "--kubeconfig", str(path), *args], capture_output=True, text=True,
                                env=env, timeout=60, check=True)
        return result.stdout

    assert kubectl("config", "view", "--raw", "-o", "jsonpath={.users[0].user.token}") == secret
    contexts = kubectl("config", "get-contexts", "-o", "name").split()
    assert sorted(contexts) == ["tokensmith-default-alpha", "tokensmith-default-beta"]


def test_validation_errors_show_inline_and_keep_input(admin_page):
    page = admin_page
    page.locator("#create-token").click()
    dialog = page.locator("#create-dialog")
    dialog.get_by_label("Note").fill("keep this note")
    dialog.get_by_label("Expiration").select_option("custom")
    dialog.get_by_label("Expires on").fill("2001-02-03")
    dialog.get_by_label("Kubeconfig").check()
    dialog.get_by_role("button", name="Create token").click()
    dialog = page.locator("#create-dialog")
    assert dialog.is_visible()
    assert dialog.locator("#name-error").inner_text() == "Name must not be empty"
    assert dialog.locator("#expiration-error").inner_text() == "The expiry date must be in the future"
    assert "at least one cluster" in dialog.locator("#clusters-error").inner_text()
    assert dialog.get_by_label("Note").input_value() == "keep this note"
    assert dialog.get_by_label("Expires on").input_value() == "2001-02-03"
    assert dialog.get_by_label("Kubeconfig").is_checked()
    assert page.evaluate("document.activeElement.id") == "token-name"  # the first wrong field
    shot(page, "create-dialog-errors-desktop")


def test_dialogs_are_keyboard_reachable_and_return_focus(admin_page):
    page = admin_page
    page.locator("#create-token").focus()
    page.keyboard.press("Enter")
    assert page.locator("#create-dialog").is_visible()
    assert page.evaluate("document.activeElement.id") == "token-name"
    page.keyboard.press("Escape")
    assert not page.locator("#create-dialog").is_visible()
    assert page.evaluate("document.activeElement.id") == "create-token"


def test_mobile_screens_at_375_px(browser, server, admin_password):
    page = new_page(browser, server, viewport=MOBILE)
    sign_in(page, "admin", admin_password)
    page.wait_for_url("**/tokens")
    assert page.evaluate("document.documentElement.scrollWidth") <= MOBILE["width"]
    shot(page, "dashboard-mobile")
    page.locator("#create-token").click()
    assert page.locator("#create-dialog").is_visible()
    shot(page, "create-dialog-mobile")
    page.keyboard.press("Escape")
    create_token(page, "phone token")
    page.locator("#reveal-dialog").wait_for()
    assert page.locator("#reveal-dialog").is_visible()
    box = page.locator("#copy-secret").bounding_box()
    assert box is not None and box["x"] + box["width"] <= MOBILE["width"]
    shot(page, "reveal-secret-mobile")
    page.context.close()


def test_admin_adds_a_cluster(admin_page):
    page = admin_page
    page.goto("/clusters")
    page.locator("#add-cluster").click()
    dialog = page.locator("#cluster-dialog")
    dialog.get_by_label("Name").fill("gamma")
    dialog.get_by_label("API server URL").fill("https://10.1.2.3:6443")
    dialog.get_by_label("Certificate authority").fill(make_pki().ca_pem)
    dialog.get_by_label("Region").fill("eu-west")
    dialog.get_by_role("button", name="Add cluster").click()
    page.get_by_text("Cluster “gamma” was added.").wait_for()
    assert page.locator("#clusters tr", has_text="gamma").get_by_text("https://10.1.2.3:6443").is_visible()


def test_non_admin_sees_no_admin_controls_and_is_refused_posting(browser, server, admin_page):
    # The admin creates a member on the Users page.
    admin = admin_page
    admin.goto("/users")
    admin.locator("#add-user").click()
    admin.locator("#user-dialog").get_by_label("User name").fill("member")
    admin.locator("#user-dialog").get_by_label("First password").fill("first-password")
    admin.locator("#user-dialog").get_by_role("button", name="Add user").click()
    admin.locator("#users tr", has_text="member").wait_for()

    page = new_page(browser, server)
    sign_in(page, "member", "first-password")
    page.wait_for_url("**/account/password")
    change_password(page, "first-password", "member-password")
    page.wait_for_url("**/tokens")
    assert page.get_by_role("link", name="Users").count() == 0
    assert page.get_by_role("link", name="Whole organization").count() == 0
    page.goto("/clusters")
    assert page.get_by_role("heading", name="Clusters").is_visible()
    assert page.locator("#add-cluster").count() == 0 and page.get_by_role("button", name="Remove").count() == 0
    page.goto("/vpcs")
    assert page.locator("#add-vpc").count() == 0

    # Posting the admin forms anyway, with the member's own valid CSRF token, is refused.
    csrf = page.locator("input[name=csrf]").first.input_value()
    for path, form in (("/clusters", {"name": "sneaky", "server": "https://1.2.3.4", "certificate_authority": "",
                                      "region": "x"}),
                       ("/vpcs", {"name": "sneaky", "region": "x", "cidr": "10.9.0.0/16"}),
                       ("/users", {"username": "sneaky", "password": "long-password"})):
        response = page.request.post(path, form={"csrf": csrf, **form}, max_redirects=0)
        assert response.status == 403, path
    assert page.goto("/users").status == 403
    page.context.close()
    admin.goto("/clusters")
    assert admin.locator("#clusters").get_by_text("sneaky").count() == 0
