"""The console's expiry story and usage charts in a real headless Chromium, against tokensmith served
over HTTP by uvicorn in this process, so the test owns the server's clock (a FrozenClock): tokens are
used over several hours without waiting for them, and "expires soon" needs no sleeping.

Each test signs in a user of an organization of its own (the policy is per organization).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from tests.conftest import SECRET_KEY
from tests.servers import free_port
from tests.test_console_browser import ARTIFACTS, new_page, shot
from tokensmith.accounts.service import AccountService
from tokensmith.api.app import create_app
from tokensmith.clock import FrozenClock
from tokensmith.config import Settings
from tokensmith.console.sessions import SessionService
from tokensmith.db.database import Database
from tokensmith.db.models import Token, User
from tokensmith.policy import ExpiryPolicy, PolicyService
from tokensmith.tokens.service import TokenService

pytestmark = pytest.mark.browser


@dataclass
class InProcessServer:
    url: str
    app: object
    database: Database
    clock: FrozenClock


@pytest.fixture(scope="module")
def server(tmp_path_factory, sqlite_template, browser) -> Iterator[InProcessServer]:
    import uvicorn

    root = tmp_path_factory.mktemp("expiry-browser")
    shutil.copy(sqlite_template, root / "tokensmith.db")
    database = Database(f"sqlite:///{root / 'tokensmith.db'}")
    clock = FrozenClock()
    app = create_app(Settings(data_dir=root / "data", database_url=database.url), database, SECRET_KEY, clock)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield InProcessServer(f"http://127.0.0.1:{port}", app, database, clock)
    uv.should_exit = True
    thread.join(30)
    database.dispose()


def make_user(server: InProcessServer, org: str, **policy) -> User:
    with server.database.session() as session:
        accounts = AccountService(session, server.clock)
        user = accounts.create_user(accounts.get_or_create_org(org), f"{org}-user", None, is_admin=True)
        if policy:
            PolicyService(session, server.clock).set(user.org_id, ExpiryPolicy(**policy))
        return user


def make_token(server: InProcessServer, user: User, name: str, expiration: str = "30d"):
    with server.database.session() as session:
        return TokenService(session, server.clock, SECRET_KEY).create(user, name, expiration=expiration)


def signed_in_page(browser, server: InProcessServer, user: User):
    with server.database.session() as session:
        session_id = SessionService(session, server.clock, SECRET_KEY).start(user)
    page = new_page(browser, server)
    page.context.add_cookies([{"name": "tsm_session", "value": session_id, "url": server.url}])
    page.goto("/tokens")
    return page


def expiry_of(server: InProcessServer, public_id: str):
    with server.database.session() as session:
        return session.scalar(select(Token.expires_at).where(Token.public_id == public_id))


def option_labels(select) -> list[str]:
    return [label.strip() for label in select.locator("option").all_inner_texts()]


def test_a_90_day_policy_hides_one_year_and_never_in_the_new_token_dialog(browser, server):
    page = signed_in_page(browser, server, make_user(server, "ninety", max_lifetime_days=90))
    page.locator("#create-token").click()
    picker = page.locator("#create-dialog").get_by_label("Expiration")
    assert option_labels(picker) == ["1 hour", "8 hours", "1 month", "90 days", "Custom date…"]
    assert picker.input_value() == "30d"
    picker.select_option("custom")
    date_field = page.locator("#token-expires-on")
    assert date_field.is_visible()
    assert date_field.get_attribute("max") == (server.clock.now() + timedelta(days=90)).date().isoformat()
    shot(page, "create-dialog-90-day-policy")
    page.context.close()


def test_without_a_policy_the_dialog_offers_every_choice(browser, server):
    page = signed_in_page(browser, server, make_user(server, "open"))
    page.locator("#create-token").click()
    picker = page.locator("#create-dialog").get_by_label("Expiration")
    assert option_labels(picker) == ["1 hour", "8 hours", "1 month", "90 days", "1 year", "Never", "Custom date…"]
    page.context.close()


def test_extend_from_the_expires_soon_banner(browser, server):
    user = make_user(server, "banner", max_lifetime_days=90)
    soon = make_token(server, user, "nightly", expiration="2d").token.public_id
    page = signed_in_page(browser, server, user)
    banner = page.locator("#expiring-banner")
    assert banner.get_by_text("One of your tokens expires soon").is_visible()
    banner.get_by_role("button", name="Extend nightly before it expires").click()
    dialog = page.get_by_role("dialog", name="Extend token “nightly”")
    assert dialog.is_visible()
    assert option_labels(dialog.get_by_label("Expiration")) == ["1 hour", "8 hours", "1 month", "90 days",
                                                                "Custom date…"]
    dialog.get_by_label("Expiration").select_option(label="90 days")
    shot(page, "extend-dialog-desktop")
    dialog.get_by_role("button", name="Extend token").click()
    page.get_by_text("Token “nightly” now works until").wait_for()
    assert page.locator("#expiring-banner").count() == 0
    assert expiry_of(server, soon) == server.clock.now() + timedelta(days=90)
    page.context.close()


def test_rotate_dialog_sets_a_new_expiry(browser, server):
    user = make_user(server, "rotator")
    token = make_token(server, user, "rotate me", expiration="8h").token.public_id
    page = signed_in_page(browser, server, user)
    page.locator("#tokens").get_by_role("button", name="Rotate token rotate me").click()
    dialog = page.get_by_role("dialog", name="Rotate token “rotate me”?")
    assert dialog.get_by_label("Expiry").input_value() == "keep"
    dialog.get_by_label("Expiry").select_option(label="1 year")
    dialog.get_by_role("button", name="Rotate token").click()
    page.locator("#reveal-dialog").wait_for()
    assert expiry_of(server, token) == server.clock.now() + timedelta(days=365)
    page.context.close()


def test_the_usage_chart_shows_a_token_used_over_several_hours(browser, server):
    user = make_user(server, "usage")
    created = make_token(server, user, "busy")
    headers = {"Authorization": f"Bearer {created.secret}"}
    made = [3, 0, 5, 2]
    for uses in made:  # four hours of traffic, over real HTTP, on the server's clock
        for _ in range(uses):
            assert httpx.get(f"{server.url}/v1/whoami", headers=headers).status_code == 200
        server.clock.advance(timedelta(hours=1))
    server.clock.advance(timedelta(minutes=-30))
    server.app.state.context.verifier.usage.flush(force=True)
    page = signed_in_page(browser, server, user)
    chart = page.locator(f"#usage-{created.token.public_id}")
    assert chart.is_visible()
    assert chart.get_attribute("aria-label") == "10 uses in the last 24 hours"
    box = chart.bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 10
    bars = chart.locator("rect.bar")
    assert [int(bars.nth(i).get_attribute("data-count")) for i in range(bars.count())] == [3, 5, 2]
    heights = [bars.nth(i).bounding_box()["height"] for i in range(bars.count())]
    assert heights[1] > heights[0] > heights[2] > 0  # drawn to scale: 5 is the tallest
    page.locator(f"tr[data-token='{created.token.public_id}']").screenshot(path=str(ARTIFACTS / "usage-chart-row.png"))
    page.context.close()


def test_a_token_nobody_used_for_weeks_says_so(browser, server):
    user = make_user(server, "idle")
    idle = make_token(server, user, "forgotten", expiration="1y").token.public_id
    server.clock.advance(timedelta(days=21))
    page = signed_in_page(browser, server, user)
    assert page.locator(f"#unused-{idle}").inner_text() == "Unused for 21 days"
    page.context.close()
