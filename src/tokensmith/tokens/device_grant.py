"""The OAuth 2.0 device authorization grant (RFC 8628): how ``tokensmith login --web`` signs in.

1. The CLI asks for a request (``POST /v1/oauth2/device_authorization``) and gets a *device code*
   (a secret it keeps) and a short *user code* (``BCDF-GHJK``) it shows the person.
2. The person, signed in to the console, enters the user code at ``/device``, sees which machine
   (its name and address) asks for which scopes, and approves or denies.
3. The CLI polls ``POST /v1/oauth2/token`` with the device code; once approved it receives a new
   token of the approving person's, minted then (no secret ever rests in this table).

Both codes are stored as HMAC digests only. A request expires (10 minutes by default), is redeemed
at most once, and a device that polls faster than its interval is told to slow down (RFC 8628
§3.5: the interval grows by 5 seconds each time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from tokensmith import scopes as scope_rules
from tokensmith import secrets
from tokensmith.clock import Clock
from tokensmith.db.models import DeviceAuthorization, Token, User
from tokensmith.errors import InvalidInput, NotFound, TokensmithError
from tokensmith.tokens.service import TokenService

DEVICE_CODE_PREFIX: Final = secrets.DEVICE_CODE_PREFIX
# RFC 8628 §6.1: base-20 consonants, no vowels (no words) and nothing that reads like a digit.
USER_CODE_ALPHABET: Final = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH: Final = 8  # 20^8 ≈ 2.6e10 codes; guessing is also rate limited at the console
DEFAULT_LIFETIME: Final = timedelta(minutes=10)
DEFAULT_INTERVAL: Final = 5  # seconds between polls
SLOW_DOWN_STEP: Final = 5  # RFC 8628 §3.5
MAX_CLIENT_NAME: Final = 100
# Finished requests are kept a day for whoever reads the table, then purged by the next request.
KEEP_FINISHED: Final = timedelta(days=1)

PENDING: Final = "pending"
APPROVED: Final = "approved"
DENIED: Final = "denied"
REDEEMED: Final = "redeemed"


class DeviceGrantError(TokensmithError):
    """An RFC 8628 / RFC 6749 token-endpoint error: ``error`` is the code the client reads."""

    status = 400
    title = "Bad request"

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error


@dataclass(frozen=True)
class DeviceRequest:
    """A new device authorization request, with its codes: the only time the device code exists in clear."""

    authorization: DeviceAuthorization
    device_code: str
    user_code: str  # formatted, e.g. BCDF-GHJK
    expires_in: int
    interval: int


def new_user_code() -> str:
    import secrets as random

    return "".join(random.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    half = len(code) // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_user_code(text: str) -> str | None:
    """The code a person typed, as stored (upper case, no dashes or spaces); None if it cannot be one."""
    code = re.sub(r"[\s-]+", "", text or "").upper()
    if len(code) != USER_CODE_LENGTH or any(c not in USER_CODE_ALPHABET for c in code):
        return None
    return code


def clean_client_name(name: str | None) -> str:
    """What the device calls itself (shown to the approver): printable, at most 100 characters."""
    text = "".join(ch for ch in (name or "") if ch.isprintable()).strip()[:MAX_CLIENT_NAME]
    if secrets.contains_credential(text):
        raise InvalidInput("the device name must not contain a secret", "device_name")
    return text or "unnamed device"


class DeviceGrantService:
    def __init__(self, session: Session, clock: Clock, secret_key: bytes) -> None:
        self.session = session
        self.clock = clock
        self.secret_key = secret_key

    def _user_digest(self, code: str) -> str:
        # Namespaced, so a user code can never collide with a device code's digest.
        return secrets.digest("user-code:" + code, self.secret_key)

    def request(
        self, client_name: str | None, client_ip: str | None, scopes: list[str] | None,
        lifetime: timedelta = DEFAULT_LIFETIME,
    ) -> DeviceRequest:
        """A new pending request. Raises InvalidInput for an unknown scope or a secret in the name."""
        stored = None if scopes is None else scope_rules.serialize(scope_rules.parse(scopes))
        now = self.clock.now()
        self.session.execute(delete(DeviceAuthorization).where(DeviceAuthorization.expires_at < now - KEEP_FINISHED))
        device_code = secrets.generate(DEVICE_CODE_PREFIX)
        user_code = new_user_code()
        while self.session.scalar(select(DeviceAuthorization.id).where(
                DeviceAuthorization.user_code_digest == self._user_digest(user_code))) is not None:
            user_code = new_user_code()  # an old row holds it; codes are unique for good
        authorization = DeviceAuthorization(
            public_id=secrets.public_id("dev"), device_code_digest=secrets.digest(device_code, self.secret_key),
            user_code_digest=self._user_digest(user_code), client_name=clean_client_name(client_name),
            client_ip=client_ip, scopes=stored, status=PENDING, created_at=now, expires_at=now + lifetime,
            interval_seconds=DEFAULT_INTERVAL,
        )
        self.session.add(authorization)
        self.session.flush()
        return DeviceRequest(authorization, device_code, format_user_code(user_code),
                             int(lifetime.total_seconds()), DEFAULT_INTERVAL)

    def pending(self, user_code: str) -> DeviceAuthorization:
        """The pending, unexpired request with this user code; NotFound otherwise (typos included)."""
        code = normalize_user_code(user_code)
        found = None if code is None else self.session.scalar(select(DeviceAuthorization).where(
            DeviceAuthorization.user_code_digest == self._user_digest(code)))
        if found is None or found.status != PENDING or self.clock.now() >= found.expires_at:
            raise NotFound("no pending sign-in request has that code; check it, or start again on the device")
        return found

    def decide(self, authorization: DeviceAuthorization, user: User, *, approve: bool) -> None:
        """Approve (the device will receive a token of ``user``'s) or deny a pending request.

        Approving checks that ``user`` may hold the scopes asked for (InvalidInput otherwise).
        """
        if approve and authorization.scopes is not None:
            TokenService.check_scopes(user, sorted(scope_rules.deserialize(authorization.scopes) or ()), False)
        authorization.status = APPROVED if approve else DENIED
        authorization.user_id = user.id
        authorization.decided_at = self.clock.now()
        self.session.flush()

    def _by_device_code(self, device_code: str) -> DeviceAuthorization:
        if not secrets.is_well_formed(device_code, DEVICE_CODE_PREFIX):
            raise DeviceGrantError("invalid_grant", "the device code is not valid")
        found = self.session.scalar(select(DeviceAuthorization).where(
            DeviceAuthorization.device_code_digest == secrets.digest(device_code, self.secret_key)))
        if found is None:
            raise DeviceGrantError("invalid_grant", "the device code is not valid")
        return found

    def poll(self, device_code: str) -> DeviceAuthorization:
        """Note a poll; the request if it is approved, else DeviceGrantError with the RFC 8628 code.

        authorization_pending (keep polling), slow_down (polled sooner than the interval; the
        interval grows by 5 s), access_denied, expired_token, invalid_grant (unknown or redeemed).
        """
        found = self._by_device_code(device_code)
        now = self.clock.now()
        if found.status == REDEEMED:
            raise DeviceGrantError("invalid_grant", "the device code was already used")
        if now >= found.expires_at:
            raise DeviceGrantError("expired_token", "the device code expired; start the sign-in again")
        if found.status == DENIED:
            raise DeviceGrantError("access_denied", "the sign-in request was denied")
        too_soon = found.last_polled_at is not None and \
            now < found.last_polled_at + timedelta(seconds=found.interval_seconds)
        found.last_polled_at = now
        if too_soon:
            found.interval_seconds += SLOW_DOWN_STEP
            self.session.flush()
            raise DeviceGrantError("slow_down", f"poll at most every {found.interval_seconds} seconds")
        self.session.flush()
        if found.status == PENDING:
            raise DeviceGrantError("authorization_pending", "waiting for a person to approve the request")
        return found

    def claim(self, device_code: str) -> DeviceAuthorization:
        """Mark an approved, unexpired request redeemed, once: a second redeemer gets invalid_grant."""
        found = self._by_device_code(device_code)
        if self.clock.now() >= found.expires_at:
            raise DeviceGrantError("expired_token", "the device code expired; start the sign-in again")
        # One UPDATE decides between concurrent redeemers (replicas included): only one changes the row.
        result: CursorResult[Any] = self.session.execute(  # type: ignore[assignment]
            update(DeviceAuthorization)
            .where(DeviceAuthorization.id == found.id, DeviceAuthorization.status == APPROVED)
            .values(status=REDEEMED)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise DeviceGrantError("invalid_grant", "the device code was already used or is not approved")
        self.session.refresh(found)
        return found

    def attach(self, authorization: DeviceAuthorization, token: Token) -> None:
        authorization.token_id = token.id
        self.session.flush()

    def requested_scopes(self, authorization: DeviceAuthorization) -> list[str] | None:
        parsed = scope_rules.deserialize(authorization.scopes)
        return None if parsed is None else sorted(parsed)
