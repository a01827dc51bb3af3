"""A small httpx client for the REST API that turns problems into one-line errors."""

from __future__ import annotations

from typing import Any

import httpx

from tokensmith.cli.config import ClientConfig


class CliError(Exception):
    """An error to print as one line; ``exit_code`` follows the documented convention."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


NOT_LOGGED_IN = 3


class ApiClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 15.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @classmethod
    def from_config(cls) -> ApiClient:
        config = ClientConfig.load()
        if not config.url or not config.token:
            raise CliError("not logged in: run 'tokensmith login --url URL' first", NOT_LOGGED_IN)
        return cls(config.url, config.token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise CliError(_problem_message(response), NOT_LOGGED_IN if response.status_code == 401 else 1)
        return response.json() if response.content else None

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

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def post_list(self, path: str, body: list[Any]) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _problem_message(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return f"{response.status_code}: {detail or response.reason_phrase}"
