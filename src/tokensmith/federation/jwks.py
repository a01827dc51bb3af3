"""The signing keys of external OIDC issuers: discovered and cached, or given inline.

Discovery follows OpenID Connect: ``<issuer>/.well-known/openid-configuration`` names the
``jwks_uri``; the document's own ``issuer`` must be the issuer asked for. Both requests go through
the outbound address rules webhooks use (``tokensmith.net.outbound``): HTTPS only, public
addresses only unless the operator allowed a range. Plain HTTP is accepted only for an issuer on
127.0.0.0/8 and only with ``TOKENSMITH_ALLOW_LOOPBACK_HTTP_ISSUERS=1`` (tests, local issuers).

Keys are cached per issuer for ``ttl`` seconds; a token signed with a key id the cache does not
know makes one refetch (at most once per ``min_refresh`` seconds per issuer, so a stream of
forged key ids cannot turn tokensmith into a request amplifier), which is how a key rotation is
picked up without a restart.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from tokensmith.errors import InvalidInput
from tokensmith.net.outbound import OutboundError, OutboundPolicy, fetch, parse_url

# Asymmetric algorithms only: "none" and the HMAC family (HS*) are never accepted, so a public key
# can never be used as a shared secret.
ALLOWED_ALGORITHMS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                                       "EdDSA"})
MAX_DOCUMENT_BYTES: Final = 256 * 1024
MAX_KEYS: Final = 100
LOOPBACK: Final = ipaddress.ip_network("127.0.0.0/8")
FETCH_TIMEOUT: Final = 5.0


class KeysUnavailable(Exception):
    """The issuer's keys could not be had; the message names the step, never a token."""


@dataclass(frozen=True)
class KeySet:
    """An issuer's usable signing keys."""

    keys: tuple[PyJWK, ...]
    fetched_at: float = 0.0

    def candidates(self, kid: str | None, alg: str) -> list[PyJWK]:
        """The keys that may have signed a token with this ``kid`` and ``alg``."""
        found = []
        for key in self.keys:
            if kid is not None and key.key_id != kid:
                continue
            declared = key._jwk_data.get("alg")
            if declared is not None and declared != alg:
                continue
            found.append(key)
        return found

    def has_kid(self, kid: str | None) -> bool:
        return kid is None or any(key.key_id == kid for key in self.keys)


def parse_jwks(document: Any, *, source: str = "jwks") -> KeySet:
    """A JWKS (``{"keys": [...]}``, as text or parsed) → the signing keys; InvalidInput if none is usable.

    Symmetric keys (``kty: oct``) and keys not for signatures are left out.
    """
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError:
            raise InvalidInput(f"{source} is not JSON", source) from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidInput(f'{source} must be a JSON Web Key Set: {{"keys": [...]}}', source)
    keys = []
    for entry in document["keys"][:MAX_KEYS]:
        if not isinstance(entry, dict) or entry.get("kty") == "oct" or entry.get("use", "sig") != "sig":
            continue
        if entry.get("alg") is not None and entry.get("alg") not in ALLOWED_ALGORITHMS:
            continue
        try:
            keys.append(PyJWK(entry))
        except (PyJWKError, ValueError, TypeError, KeyError):
            continue  # a key type this library cannot use: not a key we could verify with
    if not keys:
        raise InvalidInput(f"{source} holds no usable public signing key (RSA, EC P-256/P-384 or Ed25519)", source)
    return KeySet(tuple(keys), time.monotonic())


def check_issuer_url(url: str, *, allow_loopback_http: bool, field: str = "issuer") -> str:
    """An issuer (or JWKS) URL tokensmith may fetch from: https, or http on 127.0.0.0/8 when allowed."""
    try:
        target = parse_url(url)
    except Exception as exc:  # OutboundRefused: the message says what is wrong with the URL
        raise InvalidInput(f"{field}: {exc}", field) from None
    if target.scheme == "https":
        return url
    if allow_loopback_http and target.literal is not None and target.literal in LOOPBACK:
        return url
    raise InvalidInput(f"{field} must be an https URL (plain http only for 127.0.0.0/8 issuers when "
                       "TOKENSMITH_ALLOW_LOOPBACK_HTTP_ISSUERS=1)", field)


class JwksCache:
    """Discovered key sets per issuer, shared by every request of the process."""

    def __init__(self, outbound: OutboundPolicy, *, allow_loopback_http: bool = False, ttl: float = 3600.0,
                 min_refresh: float = 10.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        if allow_loopback_http:  # the local issuers this mode exists for listen on loopback
            outbound = dataclasses.replace(outbound, allowed_networks=(*outbound.allowed_networks, LOOPBACK))
        self.outbound = outbound
        self.allow_loopback_http = allow_loopback_http
        self.ttl = ttl
        self.min_refresh = min_refresh
        self.monotonic = monotonic
        self._sets: dict[str, KeySet] = {}
        self._lock = threading.Lock()

    def keys_for(self, issuer: str, kid: str | None) -> KeySet:
        """The issuer's keys, fetched when missing, stale, or lacking ``kid`` (rate limited); KeysUnavailable."""
        now = self.monotonic()
        cached = self._sets.get(issuer)
        if cached is not None and now - cached.fetched_at < self.ttl and cached.has_kid(kid):
            return cached
        with self._lock:  # one fetch per issuer at a time; the others then find it cached
            cached = self._sets.get(issuer)
            now = self.monotonic()
            if cached is not None and (now - cached.fetched_at < self.min_refresh or
                                       (now - cached.fetched_at < self.ttl and cached.has_kid(kid))):
                return cached
            try:
                fresh = self._discover(issuer)
            except KeysUnavailable:
                if cached is not None and now - cached.fetched_at < self.ttl:
                    return cached  # the issuer is down: the keys we had still hold for known kids
                raise
            self._sets[issuer] = dataclasses.replace(fresh, fetched_at=self.monotonic())
            return self._sets[issuer]

    def _get_json(self, url: str, what: str) -> Any:
        try:
            check_issuer_url(url, allow_loopback_http=self.allow_loopback_http, field=what)
        except InvalidInput as exc:
            raise KeysUnavailable(exc.detail) from None
        try:
            answer = fetch(self.outbound, "GET", url, headers={"Accept": "application/json"},
                           timeout=FETCH_TIMEOUT, max_bytes=MAX_DOCUMENT_BYTES)
        except OutboundError as exc:
            raise KeysUnavailable(f"{what} could not be fetched: {exc}") from None
        if answer.status != 200:
            raise KeysUnavailable(f"{what} answered HTTP {answer.status}")
        if not answer.complete:
            raise KeysUnavailable(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
        try:
            return json.loads(answer.body)
        except ValueError:
            raise KeysUnavailable(f"{what} is not JSON") from None

    def _discover(self, issuer: str) -> KeySet:
        config = self._get_json(issuer.rstrip("/") + "/.well-known/openid-configuration", "the discovery document")
        if not isinstance(config, dict) or config.get("issuer") != issuer:
            raise KeysUnavailable("the discovery document names another issuer")
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise KeysUnavailable("the discovery document has no jwks_uri")
        try:
            return parse_jwks(self._get_json(jwks_uri, "the JWKS"), source="the issuer's JWKS")
        except InvalidInput as exc:
            raise KeysUnavailable(exc.detail) from None
