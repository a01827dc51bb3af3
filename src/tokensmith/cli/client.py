"""A small httpx client for the REST API that turns problems into one-line errors.

httpx is imported by what talks HTTP, not with this module: it costs every CLI process ~0.17 s of CPU
(kubectl's ``kube-credential`` calls answered from the cache, ``--help`` and bad usage included), and
``CliError`` is imported by every command.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from tokensmith.cli.config import ClientConfig

if TYPE_CHECKING:
    import ssl

    import httpx


class CliError(Exception):
    """An error to print as one line; ``exit_code`` follows the documented convention."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


NOT_LOGGED_IN = 3
LOGIN_AGAIN = "run 'tokensmith login' again"


def tls_for(url: str) -> ssl.SSLContext:
    """What every HTTP client of the CLI passes as ``verify=`` for a request to ``url``.

    httpx's default (``verify=True``) loads the CA bundle for each client it makes, ~60 ms of CPU, and
    ``tokensmith login`` makes up to three. An https URL gets httpx's own default context (certifi, or
    SSL_CERT_FILE/SSL_CERT_DIR), made once per process. A plain-http URL never uses TLS (the CLI follows no
    redirects); it gets a context that verifies and trusts nothing, so it could never accept a certificate.
    """
    return _tls_context(urlsplit(url).scheme.lower() == "https")


@functools.cache
def _tls_context(https: bool) -> ssl.SSLContext:
    import ssl

    if not https:
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname, with no CA loaded
    import httpx

    return httpx.create_ssl_context()


def unreachable(url: str, exc: httpx.HTTPError) -> str:
    """Why ``url`` could not be reached, in words (never a bare exception class name)."""
    import httpx

    if isinstance(exc, httpx.UnsupportedProtocol):
        return f"{url} is not an http:// or https:// URL; give the server's address, e.g. http://127.0.0.1:8000"
    if isinstance(exc, httpx.ConnectTimeout | httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout):
        return f"{url} did not answer in time; is tokensmith running there?"
    if isinstance(exc, httpx.ConnectError):
        reason = str(exc).lower()
        if "name or service not known" in reason or "nodename nor servname" in reason or "name resolution" in reason:
            return f"cannot reach {url}: its host name does not resolve"
        if "ssl" in reason or "certificate" in reason:
            return f"cannot reach {url}: TLS failed ({exc})"
        return f"cannot reach {url}: nothing answers there (connection refused); is tokensmith running?"
    return f"cannot reach {url}: {exc or 'the connection failed'}"


def check_server(url: str, timeout: float = 10.0) -> str:
    """The normalised root URL of a tokensmith server at ``url``; CliError (exit 2) saying what is wrong.

    Checked before anything is sent that matters (a password), so a typo costs nothing.
    """
    root = url.strip().rstrip("/")
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"{url!r} is not an http:// or https:// URL; e.g. http://127.0.0.1:8000", 2)
    if "/v1" in parts.path:
        base = root[: root.index("/v1", len(parts.scheme) + 3)]
        raise CliError(f"{url} is an API path; give the server's root URL instead: {base}", 2)
    import httpx

    try:
        response = httpx.get(f"{root}/openapi.json", timeout=timeout, verify=tls_for(root))
    except httpx.HTTPError as exc:
        raise CliError(unreachable(root, exc), 1) from None
    try:
        title = response.json().get("info", {}).get("title") if response.status_code == 200 else None
    except ValueError:
        title = None
    if title != "tokensmith":
        if parts.path not in ("", "/"):
            raise CliError(f"{url} answers but is not tokensmith's root URL (a wrong path?); give the server's "
                           f"root, e.g. {parts.scheme}://{parts.netloc}", 2)
        raise CliError(f"{url} answers but is not a tokensmith server (HTTP {response.status_code})", 2)
    return root


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 15.0, *, own: bool = False) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        # ``own``: the token is the CLI's login, so a 401 means "log in again", not "that token is bad".
        self.own = own
        import httpx

        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=tls_for(self.url))

    @classmethod
    def from_config(cls) -> ApiClient:
        config = ClientConfig.load()
        if not config.url or not config.token:
            raise CliError("not logged in: run 'tokensmith login --url URL' first", NOT_LOGGED_IN)
        return cls(config.url, config.token, own=True)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(unreachable(self.url, exc)) from None
        if response.status_code >= 400:
            message = _problem_message(response)
            if response.status_code == 401 and self.own:
                detail = _detail(response) or ""
                why = "your login has expired" if "expired" in detail else "your login is no longer valid"
                message = f"{message} ({why}: {LOGIN_AGAIN})"
            raise CliError(message, NOT_LOGGED_IN if response.status_code in (401, 403) else 1)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise CliError(f"{self.url}{path} did not answer with JSON; is this a tokensmith server?") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def get_all(self, path: str, **params: Any) -> list[Any]:
        """Every item of a cursor-paginated list, following ``next_cursor`` to the end."""
        items: list[Any] = []
        cursor = None
        while True:
            page = self.get(path, **params, cursor=cursor, limit=200)
            items.extend(page["items"])
            cursor = page["next_cursor"]
            if not cursor:
                return items

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body)

    def post_list(self, path: str, body: list[Any]) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _detail(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("detail") if isinstance(body, dict) else None


def _problem_message(response: httpx.Response) -> str:
    return f"{response.status_code}: {_detail(response) or response.reason_phrase}"
