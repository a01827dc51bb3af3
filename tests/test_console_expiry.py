"""The console's expiry story over HTTP: only the choices the policy allows, Extend (row and banner),
a new expiry on rotation, and each token's usage chart with "Unused for N days"."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.test_console_http import csrf_of
from tokensmith.db.models import AuditEvent, Token
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.tokens.service import TokenService
from tokensmith.verify.core import Verifier

OPTION = re.compile(r'<option value="([^"]+)"')


def select_options(page: str, select_id: str) -> list[str]:
    start = page.index(f'id="{select_id}"')
    return OPTION.findall(page[start:page.index("</select>", start)])


def set_policy(database, clock, org_id: int, **policy) -> None:
    with database.session() as session:
        PolicyService(session, clock).set(org_id, ExpiryPolicy(**policy))


def make_token(database, clock, user, name: str, **kwargs) -> str:
    with database.session() as session:
        return TokenService(session, clock, SECRET_KEY).create(user, name, **kwargs).token.public_id


def expiry_of(database, public_id: str) -> datetime | None:
    with database.session() as session:
        return session.scalar(select(Token.expires_at).where(Token.public_id == public_id))


def extend(client, token_id: str, expiration: str, **fields):
    data = {"csrf": csrf_of(client), "expiration": expiration, **fields}
    return client.post(f"/tokens/{token_id}/extend", data=data, follow_redirects=False)


# --- the choices ------------------------------------------------------------------------------


def test_without_a_policy_every_choice_is_offered_and_one_month_is_the_default(client, console, alice):
    console(alice.user)
    page = client.get("/tokens").text
    assert select_options(page, "token-expiration") == ["1h", "8h", "30d", "90d", "1y", "never", "custom"]
    assert '<option value="30d" selected>1 month</option>' in page


def test_under_a_90_day_policy_neither_one_year_nor_never_is_offered(client, console, alice, database, clock):
    set_policy(database, clock, alice.user.org_id, max_lifetime_days=90)
    console(alice.user)
    page = client.get("/tokens").text
    assert select_options(page, "token-expiration") == ["1h", "8h", "30d", "90d", "custom"]
    latest = (clock.now() + timedelta(days=90)).date().isoformat()
    picker = page[page.index('id="token-expires-on"'):]
    assert picker[:picker.index(">")].endswith(f'max="{latest}"')
    # The rotate and extend dialogs offer the same, rotate first offering to keep the expiry.
    assert select_options(page, f"rotate-{alice.token_id}-expiration") == ["keep", "1h", "8h", "30d", "90d", "custom"]
    assert select_options(page, f"extend-{alice.token_id}-expiration") == ["1h", "8h", "30d", "90d", "custom"]


def test_a_policy_default_outside_the_choices_is_offered_and_preselected(client, console, alice, database, clock):
    set_policy(database, clock, alice.user.org_id, max_lifetime_days=30, default_expiration="7d")
    console(alice.user)
    page = client.get("/tokens").text
    assert select_options(page, "token-expiration") == ["7d", "1h", "8h", "30d", "custom"]
    assert '<option value="7d" selected>' in page


def test_a_choice_the_policy_refuses_is_refused_on_submit_too(client, console, alice, database, clock):
    set_policy(database, clock, alice.user.org_id, max_lifetime_days=90)
    console(alice.user)
    response = client.post("/tokens", data={"csrf": csrf_of(client), "name": "long", "expiration": "1y"})
    assert response.status_code == 422 and "at most 90 days" in response.text


# --- extend -----------------------------------------------------------------------------------


def test_extend_sets_the_new_expiry_audits_it_and_says_so(client, console, alice, database, clock):
    console(alice.user)
    response = extend(client, alice.token_id, "90d")
    assert response.status_code == 303
    assert expiry_of(database, alice.token_id) == clock.now() + timedelta(days=90)
    assert "now works until" in client.get("/tokens").text
    with database.session() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "token.extended"))
        assert event.actor_user == "alice" and event.target == alice.token_id
        assert json.loads(event.details)["via"] == "console"
    assert client.get("/v1/whoami", headers=alice.headers).status_code == 200  # same secret


def test_extend_to_a_custom_date(client, console, alice, database, clock):
    console(alice.user)
    day = (clock.now() + timedelta(days=45)).date()
    assert extend(client, alice.token_id, "custom", expires_on=day.isoformat()).status_code == 303
    assert expiry_of(database, alice.token_id) == datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_extend_beyond_the_policy_reopens_the_dialog_with_the_policy(client, console, alice, database, clock):
    set_policy(database, clock, alice.user.org_id, max_lifetime_days=90)
    console(alice.user)
    before = expiry_of(database, alice.token_id)
    response = extend(client, alice.token_id, "1y")
    assert response.status_code == 422
    dialog = response.text[response.text.index(f'id="extend-{alice.token_id}"'):]
    assert dialog.startswith(f'id="extend-{alice.token_id}" aria-labelledby="extend-{alice.token_id}-title" '
                             "data-autoopen")
    assert f'id="extend-{alice.token_id}-error"' in dialog and "at most 90 days" in dialog
    assert expiry_of(database, alice.token_id) == before


def test_an_expired_token_has_no_extend_and_is_refused(client, console, make_account, database, clock):
    carol = make_account("carol")
    short = make_token(database, clock, carol.user, "short", expiration="1h")
    clock.advance(timedelta(hours=2))
    console(carol.user)
    assert f'data-open="extend-{short}"' not in client.get("/tokens").text
    response = extend(client, short, "30d")
    assert response.status_code == 409 and "expired" in response.text


def test_extend_of_someone_elses_token_is_not_found(client, console, alice, bob):
    console(bob.user)
    assert extend(client, alice.token_id, "30d").status_code == 404


def test_extend_without_csrf_changes_nothing(client, console, alice, database):
    console(alice.user)
    before = expiry_of(database, alice.token_id)
    response = client.post(f"/tokens/{alice.token_id}/extend", data={"expiration": "90d"}, follow_redirects=False)
    assert response.status_code == 403 and expiry_of(database, alice.token_id) == before


def test_the_expires_soon_banner_offers_extend(client, console, alice, database, clock):
    soon = make_token(database, clock, alice.user, "nightly", expiration="2d")
    console(alice.user)
    page = client.get("/tokens").text
    banner = page[page.index('id="expiring-banner"'):page.index("</section>", page.index('id="expiring-banner"'))]
    assert f'data-open="extend-{soon}" aria-label="Extend nightly before it expires"' in banner
    assert "rotating keeps the expiry" not in page.lower()


# --- rotate with a new expiry ------------------------------------------------------------------


def test_rotate_can_set_a_new_expiry(client, console, alice, database, clock):
    console(alice.user)
    data = {"csrf": csrf_of(client), "grace": "0s", "expiration": "90d"}
    assert client.post(f"/tokens/{alice.token_id}/rotate", data=data, follow_redirects=False).status_code == 303
    assert expiry_of(database, alice.token_id) == clock.now() + timedelta(days=90)


def test_rotate_keeps_the_expiry_by_default(client, console, alice, database):
    console(alice.user)
    before = expiry_of(database, alice.token_id)
    data = {"csrf": csrf_of(client), "grace": "0s", "expiration": "keep"}
    assert client.post(f"/tokens/{alice.token_id}/rotate", data=data, follow_redirects=False).status_code == 303
    assert expiry_of(database, alice.token_id) == before


# --- usage ------------------------------------------------------------------------------------


@pytest.fixture
def verifier(database, clock):
    verifier = Verifier(database, SECRET_KEY, clock)
    yield verifier
    verifier.close()


def test_each_row_charts_its_uses_per_hour(client, console, alice, verifier, clock):
    for uses in (2, 5):
        for _ in range(uses):
            verifier.verify(alice.secret)
        clock.advance(timedelta(hours=1))
    verifier.usage.flush(force=True)
    console(alice.user)
    page = client.get("/tokens").text
    start = page.index(f'id="usage-{alice.token_id}"')
    chart = page[start:page.index("</svg>", start)]
    assert 'data-total="7"' in chart and "7 uses in the last 24 hours" in chart
    assert re.findall(r'data-count="(\d+)"', chart) == ["2", "5"]
    assert "<script" not in chart


def test_a_token_unused_for_a_week_says_so(client, console, alice, clock):
    clock.advance(timedelta(days=9))
    console(alice.user)
    page = client.get("/tokens").text
    assert f'id="unused-{alice.token_id}">Unused for 9 days<' in page


def test_a_recently_used_token_has_no_unused_callout(client, console, alice, verifier, clock):
    verifier.verify(alice.secret)
    verifier.usage.flush(force=True)
    console(alice.user)
    assert f'id="unused-{alice.token_id}"' not in client.get("/tokens").text
