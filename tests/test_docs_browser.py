"""/docs and /redoc work offline: a real Chromium whose network is closed to everything but loopback
loads them from a real ``tokensmith serve`` and sees the API's operations; nothing was asked of
another host. Unknown console URLs get the console's HTML 404 page, unknown /v1 URLs a problem."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import httpx
import pytest

from tests import test_console_browser as shared

pytestmark = pytest.mark.browser

server = shared.server


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def offline_page(browser, server):
    """A page whose every request to a non-loopback address is aborted (and remembered)."""
    page = shared.new_page(browser, server)
    blocked: list[str] = []

    def guard(route) -> None:
        url = route.request.url
        if url.startswith(("http:", "https:", "ws:", "wss:")) and not is_loopback(url):
            blocked.append(url)
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.context.route("**/*", guard)
    page.blocked = blocked
    yield page
    page.context.close()


def test_swagger_ui_lists_the_operations_with_the_network_closed(offline_page):
    page = offline_page
    page.goto("/docs")
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock-summary-path", has_text="/v1/whoami").count() >= 1
    assert page.locator(".opblock-summary-path", has_text="/v1/tokens/{token_id}/usage").count() == 1
    assert page.locator(".opblock-patch .opblock-summary-path", has_text="/v1/tokens/{token_id}").count() == 1
    shared.shot(page, "docs-offline")
    assert page.blocked == []


def test_redoc_lists_the_operations_with_the_network_closed(offline_page):
    page = offline_page
    page.goto("/redoc")
    page.get_by_text("/v1/tokens/{token_id}/usage").first.wait_for(state="attached")
    assert page.get_by_role("heading", name="tokensmith").first.is_visible()
    assert page.blocked == []


def test_the_docs_page_names_no_other_host(server):
    for path in ("/docs", "/redoc"):
        page = httpx.get(f"{server.url}{path}")
        assert page.status_code == 200
        assert "http://" not in page.text.replace(server.url, "") and "https://" not in page.text
        assert "https:" not in page.headers["Content-Security-Policy"]


def test_an_unknown_console_url_gets_the_consoles_404_page(browser, server):
    page = shared.new_page(browser, server)
    response = page.goto("/no/such/page")
    assert response.status == 404 and response.headers["content-type"].startswith("text/html")
    assert page.get_by_role("heading", name="Page not found").is_visible()
    assert page.get_by_role("link", name="Go to your tokens").is_visible()
    page.context.close()


def test_an_unknown_api_url_keeps_its_problem_json(server):
    response = httpx.get(f"{server.url}/v1/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404
