"""/docs and /redoc reference only tokensmith's own assets, which it serves; unknown console URLs get
the console's HTML 404 page while the API keeps problem+json (Chromium: tests/test_docs_browser.py)."""

import re

import pytest

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_assets_tokensmith_serves(client, page):
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assets = ASSET.findall(response.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset


def test_swagger_ui_is_version_5_which_reads_openapi_3_1(client):
    assert client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = client.get("/docs/assets/swagger-ui-bundle.js").text
    assert re.search(r'PACKAGE_VERSION:"5\.\d+\.\d+"', bundle)


def test_an_unknown_console_url_is_the_consoles_html_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404 and response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text and 'href="/sign-in"' in response.text


def test_a_signed_in_viewer_gets_the_404_page_with_the_console_around_it(client, console, alice):
    console(alice.user)
    response = client.get("/tokens/not-a-page/at-all")
    assert response.status_code == 404 and "Page not found" in response.text and 'action="/sign-out"' in response.text


@pytest.mark.parametrize("path", ["/v1/no-such-thing", "/v1/tokens/tok_x/nothing", "/static/missing.css",
                                  "/docs/assets/missing.js"])
def test_unknown_api_and_asset_urls_keep_problem_json(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_a_wrong_method_on_a_console_page_stays_a_problem_not_a_404_page(client):
    response = client.delete("/tokens")
    assert response.status_code == 405 and response.headers["content-type"] == "application/problem+json"
