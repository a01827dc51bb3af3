"""``tokensmith login --web``: sign the CLI in through the browser (RFC 8628 device authorization grant).

The CLI asks tokensmith for a sign-in request, prints the console's URL and a short code, and
polls until a signed-in person approves (or denies) it at ``/device``; the token it then receives is
stored like a password login's (``~/.config/tokensmith/config.toml``, 0600). No password is typed
into the terminal, and the person sees which machine asks before approving.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any, Final

import httpx

from tokensmith.cli.client import NOT_LOGGED_IN, ApiClient, CliError, tls_for
from tokensmith.cli.config import ClientConfig
from tokensmith.cli.output import err, out

DEVICE_CODE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
CLIENT_ID: Final = "tokensmith-cli"
SLOW_DOWN_STEP: Final = 5  # RFC 8628 §3.5


def _post(http: httpx.Client, path: str, data: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        response = http.post(path, data=data)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {http.base_url}: {type(exc).__name__}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def login_with_browser(url: str, *, scopes: list[str] | None = None, device_name: str | None = None,
                       sleep: Callable[[float], None] = time.sleep) -> str:
    """Run the device flow against ``url``; store and return the token on approval, CliError otherwise."""
    http = httpx.Client(base_url=url.rstrip("/"), timeout=15.0, verify=tls_for(url))
    request = {"client_id": CLIENT_ID, "device_name": device_name or f"tokensmith CLI on {socket.gethostname()}"}
    if scopes:
        request["scope"] = " ".join(scopes)
    status, started = _post(http, "/v1/oauth2/device_authorization", request)
    if status != 200:
        raise CliError(f"{status}: {started.get('error_description') or started.get('error') or 'request refused'}")
    err.print(f"To sign in, open {started['verification_uri']} and enter the code {started['user_code']}")
    err.print(f"(or open {started['verification_uri_complete']}); waiting for approval...")
    interval = float(started.get("interval") or 5)
    deadline = time.monotonic() + float(started["expires_in"]) + interval
    poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": started["device_code"], "client_id": CLIENT_ID}
    while time.monotonic() < deadline:
        sleep(interval)
        status, answer = _post(http, "/v1/oauth2/token", poll)
        if status == 200 and answer.get("access_token"):
            token = str(answer["access_token"])
            path = ClientConfig(url=url, token=token).save()
            me = ApiClient(url, token).get("/v1/whoami")
            out.print(f"logged in as {me['user']['username']}; token {me['token']['id']} stored in {path}")
            return token
        error = answer.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
            continue
        if error == "access_denied":
            raise CliError("the sign-in was denied in the browser", NOT_LOGGED_IN)
        if error == "expired_token":
            raise CliError("the code expired before it was approved; run 'tokensmith login --web' again",
                           NOT_LOGGED_IN)
        raise CliError(f"{status}: {answer.get('error_description') or error or 'sign-in failed'}")
    raise CliError("the code expired before it was approved; run 'tokensmith login --web' again", NOT_LOGGED_IN)
