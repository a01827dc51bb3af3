"""Domain errors. Services raise them; the API turns them into RFC 9457 problems.

Each message is a sentence a person can act on, and never contains a secret.
"""

from __future__ import annotations


class TokensmithError(Exception):
    status: int = 400
    title: str = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(TokensmithError):
    status = 422
    title = "Invalid input"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(TokensmithError):
    """Also used for resources that exist but belong to someone the caller may not see."""

    status = 404
    title = "Not found"


class Conflict(TokensmithError):
    status = 409
    title = "Conflict"


class Forbidden(TokensmithError):
    status = 403
    title = "Forbidden"


class AuthenticationFailed(TokensmithError):
    """A credential was missing, malformed, unknown, expired or revoked."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str = "invalid token", error: str | None = "invalid_token") -> None:
        super().__init__(detail)
        self.error = error
