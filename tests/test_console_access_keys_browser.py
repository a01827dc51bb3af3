"""The Access Keys page and the token-delete dialog in a real headless Chromium against ``tokensmith serve``.

The path a person takes: create a temporary key, copy the revealed secret, see it gone on reload, use
it (a request signed by botocore verifies at POST /v1/object-storage/verify), delete it (the same
request is refused); then delete a token and decide about the permanent key it minted.
Screenshots land in test-artifacts/console/.
"""

from __future__ import annotations

import httpx
import pytest

from tests import hygiene
from tests import test_console_browser as ui
from tests.s3sign import signed

pytestmark = pytest.mark.browser
# The console browser tests' fixtures, so this module gets its own server and signed-in admin (and contexts
# of its own in the worker's Chromium, tests/conftest.py's ``browser``).
server, admin_password, admin_context, admin_page = ui.server, ui.admin_password, ui.admin_context, ui.admin_page
create_token, shot = ui.create_token, ui.shot


def verify(server, gateway_secret: str, key_id: str, secret_key: str) -> dict:
    payload = signed("PUT", "/bucket/from-the-console.txt", key_id, secret_key, body=b"hello")
    answer = httpx.post(f"{server.url}/v1/object-storage/verify", json=payload,
                        headers={"Authorization": f"Bearer {gateway_secret}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def new_token_secret(page, name: str) -> str:
    page.goto("/tokens")
    create_token(page, name)
    secret = page.locator("#secret").input_value()
    page.locator("#reveal-dialog").get_by_role("button", name="I have saved it").click()
    return secret


def create_access_key(page, name: str, *, permanent: bool = False, lifetime: str | None = None) -> None:
    page.goto("/access-keys")
    page.locator("#create-access-key").click()
    dialog = page.locator("#create-key-dialog")
    dialog.locator("#key-name").fill(name)
    if permanent:
        dialog.locator("#key-kind-permanent").check()
    elif lifetime:
        dialog.locator("#key-lifetime").select_option(label=lifetime)
    dialog.get_by_role("button", name="Create access key").click()


def test_access_key_path_create_reveal_copy_reload_verify_delete(admin_page, server):
    page = admin_page
    page.goto("/access-keys")
    assert page.get_by_text("No access keys yet").is_visible()
    page.locator("#create-access-key").click()
    assert page.locator("#no-minting-token").is_visible()  # the admin has no token yet
    shot(page, "access-keys-no-token-desktop")
    page.locator("#no-minting-token").get_by_role("link", name="Create a token").click()
    page.wait_for_url("**/tokens")
    gateway = new_token_secret(page, "gateway")

    # A temporary key, minted with the token just made (the preselected one).
    page.goto("/access-keys")
    page.locator("#create-access-key").click()
    dialog = page.locator("#create-key-dialog")
    assert dialog.locator("#key-token option:checked").inner_text().startswith("gateway")
    assert page.evaluate("document.activeElement.id") == "key-name"
    shot(page, "access-key-create-dialog-desktop")
    page.keyboard.press("Escape")
    create_access_key(page, "nightly backup", lifetime="1 hour")

    reveal = page.locator("#reveal-dialog")
    reveal.wait_for()  # the console opens it once the API has answered
    assert reveal.is_visible() and reveal.get_by_text("never shown again").is_visible()
    key_id = page.locator("#access-key-id").input_value()
    assert key_id.startswith("TSMT")
    shot(page, "access-key-reveal-desktop")
    page.locator("#copy-secret").click()
    reveal.get_by_role("button", name="Copied").wait_for()
    secret_key = page.evaluate("navigator.clipboard.readText()")
    hygiene.register(secret_key)  # minted in the server's process: from here on it is looked for everywhere
    assert len(secret_key) == 40 and secret_key == page.locator("#secret").input_value()
    profile = page.locator("#aws-profile").input_value()
    assert profile == f"[nightly-backup]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret_key}"
    page.locator("#copy-aws-env").click()
    assert page.evaluate("navigator.clipboard.readText()") == \
        f"export AWS_ACCESS_KEY_ID={key_id}\nexport AWS_SECRET_ACCESS_KEY={secret_key}"

    # Reload: the secret is gone for good; the key is listed without it.
    page.reload()
    assert page.locator("#reveal-dialog").count() == 0 and secret_key not in page.content()
    row = page.locator("#access-keys tr", has_text=key_id)
    assert row.get_by_text("nightly backup", exact=True).is_visible() \
        and row.get_by_text("gateway", exact=True).is_visible()
    shot(page, "access-keys-list-desktop")

    # The revealed key signs requests that verify; after deleting it they do not.
    assert verify(server, gateway, key_id, secret_key) == {"valid": True, "accessKeyId": key_id, "user": "admin",
                                                           "org": "default"}
    row.get_by_role("button", name="Delete access key nightly backup").click()
    confirm = page.get_by_role("dialog", name="Delete access key “nightly backup”?")
    assert confirm.is_visible()
    shot(page, "access-key-delete-dialog-desktop")
    confirm.get_by_role("button", name="Delete access key").click()
    page.get_by_text("was deleted").wait_for()
    assert page.locator("#access-keys tr", has_text=key_id).count() == 0
    assert verify(server, gateway, key_id, secret_key) == {"valid": False, "reason": "access key revoked"}


def test_token_delete_dialog_counts_surviving_permanent_keys_and_can_revoke_them(admin_page, server):
    page = admin_page
    gateway = new_token_secret(page, "verifier")
    new_token_secret(page, "minter")  # the newest: preselected for minting
    create_access_key(page, "archive", permanent=True)
    key_id = page.locator("#access-key-id").input_value()
    secret_key = page.locator("#secret").input_value()
    hygiene.register(secret_key)
    page.locator("#reveal-dialog").get_by_role("button", name="I have saved it").click()
    create_access_key(page, "scratch", lifetime="15 minutes")
    page.locator("#reveal-dialog").get_by_role("button", name="I have saved it").click()
    assert verify(server, gateway, key_id, secret_key)["valid"] is True

    page.goto("/tokens")
    page.locator("#tokens tr", has_text="minter").get_by_role("button", name="Delete token minter").click()
    confirm = page.get_by_role("dialog", name="Delete token “minter”?")
    assert confirm.get_by_text("1 permanent access key minted with this token keeps working").is_visible()
    assert confirm.get_by_text("Temporary S3 access keys minted with this token are revoked with it").is_visible()
    confirm.get_by_label("Also revoke this 1 permanent access key").check()
    shot(page, "token-delete-surviving-keys-desktop")
    confirm.get_by_role("button", name="Delete token").click()
    page.get_by_text("Access keys revoked with it: 2.").wait_for()
    assert verify(server, gateway, key_id, secret_key) == {"valid": False, "reason": "access key revoked"}
    page.goto("/access-keys")
    assert page.locator("#access-keys tr", has_text=key_id).count() == 0


def test_admin_raises_the_access_key_allowance_on_the_policy_page(admin_page):
    page = admin_page
    page.get_by_role("link", name="Policy").click()
    page.wait_for_url("**/policy")
    page.get_by_label("Longest temporary access key").select_option(label="30 days")
    shot(page, "policy-desktop")
    page.get_by_role("button", name="Save policy").click()
    page.get_by_text("The policy was saved").wait_for()
    assert page.locator("#policy-summary").get_by_text("30 days").is_visible()
    page.goto("/access-keys")
    page.locator("#create-access-key").click()
    assert page.locator("#key-lifetime option", has_text="30 days").count() == 1
    assert page.get_by_text("up to 30 days, your organization's limit").is_visible()


def test_access_keys_page_fits_a_375_px_phone(browser, server, admin_password):
    page = ui.new_page(browser, server, viewport=ui.MOBILE)
    ui.sign_in(page, "admin", admin_password)
    page.wait_for_url("**/tokens")
    page.goto("/access-keys")
    assert page.evaluate("document.documentElement.scrollWidth") <= ui.MOBILE["width"]
    page.locator("#create-access-key").click()
    assert page.locator("#create-key-dialog").is_visible()
    shot(page, "access-key-create-dialog-mobile")
    page.context.close()
