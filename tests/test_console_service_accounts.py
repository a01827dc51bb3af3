"""The console's Service accounts page: the same operations as the API, for admins only."""

from __future__ import annotations

import re

from sqlalchemy import select

from tokensmith.db.models import AuditEvent

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(client) -> str:
    match = CSRF.search(client.get("/service-accounts").text)
    assert match is not None
    return match.group(1)


def test_an_admin_adds_a_service_account_and_mints_its_token_shown_once(client, console, admin, database):
    console(admin.user)
    csrf = csrf_of(client)
    assert client.post("/service-accounts", data={"csrf": csrf, "name": "grafana"},
                       follow_redirects=False).status_code == 303
    page = client.get("/service-accounts").text
    [account_id] = re.findall(r'data-account="(svc_[^"]+)"', page)
    response = client.post(f"/service-accounts/{account_id}/tokens",
                           data={"csrf": csrf, "name": "dashboards", "expiration": "30d"})
    assert response.status_code == 200 and 'id="reveal-dialog"' in response.text
    secret = re.search(r'id="secret" readonly value="([^"]+)"', response.text).group(1)
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()["user"]["kind"] == "service"
    assert 'id="reveal-dialog"' not in client.get("/service-accounts").text  # shown once
    with database.session() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.details.contains("console")))]
    assert "service_account.created" in actions and "token.created" in actions


def test_the_org_token_view_shows_the_service_account_as_owner(client, console, admin):
    console(admin.user)
    csrf = csrf_of(client)
    client.post("/service-accounts", data={"csrf": csrf, "name": "grafana"})
    account_id = re.findall(r'data-account="(svc_[^"]+)"', client.get("/service-accounts").text)[0]
    client.post(f"/service-accounts/{account_id}/tokens", data={"csrf": csrf, "name": "dashboards"})
    page = client.get("/tokens", params={"all": "true"}).text
    assert "grafana" in page and "service account" in page


def test_disabling_from_the_console_stops_the_accounts_tokens(client, console, admin):
    console(admin.user)
    created = client.post("/v1/service-accounts", json={"name": "grafana"}, headers=admin.headers).json()
    secret = client.post("/v1/service-accounts/grafana/tokens", json={"name": "t"}, headers=admin.headers).json()
    csrf = csrf_of(client)
    client.post(f"/service-accounts/{created['id']}/disable", data={"csrf": csrf})
    assert client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret['secret']}"}).status_code == 401


def test_members_cannot_open_the_page(client, console, alice):
    console(alice.user)
    assert client.get("/service-accounts").status_code == 403
