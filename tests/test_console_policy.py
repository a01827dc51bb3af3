"""The console's Policy page over HTTP: everyone reads it, admins change it (CSRF, inline errors that
keep what was typed, audited as policy.updated like the API), and it is per organization."""

from __future__ import annotations

import re

from sqlalchemy import select

from tokensmith.db.models import AuditEvent

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
DAY = 86400


def csrf_of(client) -> str:
    page = client.get("/policy")
    assert page.status_code == 200, page.text
    return CSRF.search(page.text).group(1)


def save(client, csrf: str, **fields):
    data = {"csrf": csrf, "max_lifetime_days": "", "allow_never": "1", "default_expiration": "30d",
            "max_access_key_seconds": str(7 * DAY), **fields}
    return client.post("/policy", data=data, follow_redirects=False)


def policy(client, account) -> dict:
    return client.get("/v1/org/policy", headers=account.headers).json()


def test_an_admin_sees_the_policy_form_and_a_nav_entry(client, console, admin):
    console(admin.user)
    page = client.get("/policy")
    assert page.status_code == 200 and 'id="save-policy"' in page.text
    assert 'href="/policy" aria-current="page"' in page.text
    assert "7 days" in page.text  # the access key allowance in force


def test_a_member_reads_the_policy_without_a_form_or_nav_entry(client, console, alice):
    console(alice.user)
    page = client.get("/policy")
    assert page.status_code == 200 and 'id="read-only"' in page.text and 'id="save-policy"' not in page.text
    assert 'href="/policy"' not in client.get("/tokens").text


def test_a_member_posting_the_form_anyway_is_refused(client, console, admin, alice):
    console(alice.user)
    assert save(client, csrf_of(client), max_access_key_seconds=str(365 * DAY)).status_code == 403
    assert policy(client, admin)["max_access_key_seconds"] == 7 * DAY


def test_saving_changes_the_policy_the_api_reports(client, console, admin):
    console(admin.user)
    saved = save(client, csrf_of(client), max_lifetime_days="90", allow_never="", default_expiration="7d",
                 max_access_key_seconds=str(30 * DAY))
    assert saved.status_code == 303 and saved.headers["location"] == "/policy"
    assert policy(client, admin) | {"description": ""} == {
        "max_lifetime_days": 90, "allow_never": False, "default_expiration": "7d",
        "max_access_key_seconds": 30 * DAY, "description": ""}
    page = client.get("/policy").text
    assert "The policy was saved" in page and "30 days" in page


def test_saving_is_audited_like_the_api(client, console, admin, database):
    console(admin.user)
    save(client, csrf_of(client), max_access_key_seconds=str(90 * DAY))
    with database.session() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "policy.updated")).all()
    assert (event.actor_user, event.client_ip, event.org_id) == ("admin", "testclient", admin.user.org_id)
    assert "at most 7 days" in event.details and "at most 90 days" in event.details


def test_without_a_valid_csrf_token_nothing_changes(client, console, admin):
    console(admin.user)
    assert save(client, "forged", max_access_key_seconds=str(30 * DAY)).status_code == 403
    assert save(client, "", max_access_key_seconds=str(30 * DAY)).status_code == 403
    assert policy(client, admin)["max_access_key_seconds"] == 7 * DAY


def test_errors_show_inline_and_keep_what_was_typed(client, console, admin):
    console(admin.user)
    wrong = save(client, csrf_of(client), max_lifetime_days="ninety", max_access_key_seconds="lots")
    assert wrong.status_code == 422
    assert 'id="max_lifetime_days-error"' in wrong.text and 'value="ninety"' in wrong.text
    assert 'id="max_access_key_seconds-error"' in wrong.text

    contradicting = save(client, csrf_of(client), max_lifetime_days="7", default_expiration="30d")
    assert contradicting.status_code == 422
    assert "longer than the maximum lifetime" in contradicting.text and 'value="7"' in contradicting.text

    beyond = save(client, csrf_of(client), max_access_key_seconds=str(366 * DAY))
    assert beyond.status_code == 422 and "365 days" in beyond.text
    assert policy(client, admin)["max_lifetime_days"] is None


def test_the_policy_is_per_organization(client, console, admin, mallory):
    console(mallory.user)
    assert save(client, csrf_of(client), max_access_key_seconds=str(365 * DAY)).status_code == 303
    assert policy(client, admin)["max_access_key_seconds"] == 7 * DAY
    assert policy(client, mallory)["max_access_key_seconds"] == 365 * DAY


def test_a_value_set_over_the_api_is_offered_and_kept(client, console, admin):
    client.put("/v1/org/policy", json={"max_access_key_seconds": 10 * DAY, "default_expiration": "45d"},
               headers=admin.headers)
    console(admin.user)
    page = client.get("/policy").text
    assert f'<option value="{10 * DAY}" selected>10 days</option>' in page
    assert '<option value="45d" selected>45d</option>' in page
