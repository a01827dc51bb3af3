"""An external JWT, checked: the JOSE work is PyJWT's, the rules are here.

* The header's ``alg`` must be an asymmetric algorithm (``jwks.ALLOWED_ALGORITHMS``): ``none`` and
  HS256/384/512 are refused before any key is looked at, so a token "signed" with an issuer's
  public key as an HMAC secret never verifies.
* The signature must verify with one of the issuer's keys (by ``kid``, and the key's own ``alg``
  when it declares one).
* The token is decoded once (``parse``: PyJWS reads and checks the segments and the header) and its
  signature then checked over those same bytes with the header's algorithm (PyJWT's ``Algorithm``
  objects). Decoding it a second time to verify cost about as much again as the RSA check itself:
  PyJWT checks every base64 character in Python (docs/performance.md, "Workload identity
  federation").
* ``exp`` and ``iat`` are required; ``exp``, ``nbf`` and ``iat`` are checked against tokensmith's
  clock with at most ``LEEWAY`` seconds of skew; the token may be at most the policy's maximum
  age old, counted from ``iat``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt import api_jws
from jwt.exceptions import PyJWTError

from tokensmith.federation.jwks import ALLOWED_ALGORITHMS, KeySet

LEEWAY: Final = 60
MAX_TOKEN_CHARS: Final = 16 * 1024


class TokenRejected(Exception):
    """Why an external token is refused, in words that never echo the token.

    ``kind`` sorts the reason for the STS door's error codes: malformed, signature, expired,
    audience, condition, issuer, keys, account.
    """

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        # The organization whose policies refused it, when they were all one organization's: the
        # refusal then shows in that organization's audit log.
        self.org_id: int | None = None


@dataclass(frozen=True)
class Unverified:
    """What a token says about itself before its signature is checked: enough to find its keys.

    ``signing_input`` and ``signature`` are what ``verify_signature`` checks (RFC 7515, section 5.2).
    """

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def issuer(self) -> str:
        iss = self.claims.get("iss")
        if not isinstance(iss, str) or not iss:
            raise TokenRejected("the token has no iss claim", "malformed")
        return iss

    @property
    def subject(self) -> str | None:
        sub = self.claims.get("sub")
        return sub[:300] if isinstance(sub, str) else None

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def alg(self) -> str:
        return str(self.header.get("alg"))


def parse(token: str) -> Unverified:
    """The header and claims of a compact JWS, with the algorithm checked; TokenRejected otherwise."""
    malformed = TokenRejected("the subject token is not a JWT (a compact JWS: header.payload.signature)",
                              "malformed")
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
        raise malformed
    try:
        decoded = api_jws.decode_complete(token, options={"verify_signature": False})
        claims = json.loads(decoded["payload"])
        signing_input = token.encode("ascii").rpartition(b".")[0]  # ASCII: PyJWS checked every character
    except (PyJWTError, ValueError):  # ValueError: not JSON, or not ASCII (UnicodeError included)
        raise malformed from None
    header = decoded["header"]
    # A JWT's payload is always base64url-encoded (RFC 7519, section 7.2): an unencoded payload
    # (RFC 7797, b64=false) would make the signing input differ from the token's first two segments.
    if not isinstance(claims, dict) or header.get("b64", True) is not True:
        raise malformed
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        shown = alg if isinstance(alg, str) and len(alg) <= 20 else "this algorithm"
        raise TokenRejected(f"alg {shown!r} is not accepted: only RS*, PS*, ES256, ES384 and EdDSA signatures",
                            "malformed")
    return Unverified(header, claims, signing_input, decoded["signature"])


def verify_signature(unverified: Unverified, keys: KeySet) -> dict[str, Any]:
    """The claims, once the signature verifies with one of ``keys``; TokenRejected otherwise.

    The algorithm is the header's, already one of ``ALLOWED_ALGORITHMS`` (``parse``); a key of
    another type (an EC key for RS256) does not verify.
    """
    algorithm = jwt.get_algorithm_by_name(unverified.alg)
    for key in keys.candidates(unverified.kid, unverified.alg):
        try:
            if algorithm.verify(unverified.signing_input, algorithm.prepare_key(key.key), unverified.signature):
                return dict(unverified.claims)
        except (PyJWTError, TypeError, ValueError):  # the key does not suit this algorithm
            continue
    if not keys.has_kid(unverified.kid):
        raise TokenRejected("the token's key id (kid) is not among the issuer's keys", "signature")
    raise TokenRejected("the token's signature does not verify with the issuer's keys", "signature")


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"the token's {name} claim is {'missing' if value is None else 'not a number'}",
                            "malformed")
    return float(value)


def check_times(claims: Mapping[str, Any], now: float, max_age_seconds: int) -> None:
    """exp, nbf and iat against ``now`` (with ``LEEWAY``), and the token's age against the policy."""
    exp = _number(claims, "exp", True)
    iat = _number(claims, "iat", True)
    nbf = _number(claims, "nbf", False)
    assert exp is not None and iat is not None
    if now > exp + LEEWAY:
        raise TokenRejected("the token has expired", "expired")
    if (nbf is not None and now + LEEWAY < nbf) or now + LEEWAY < iat:
        raise TokenRejected("the token is not valid yet (nbf or iat in the future)", "expired")
    if now - iat > max_age_seconds + LEEWAY:
        raise TokenRejected(f"the token is too old: this trust policy accepts tokens issued at most "
                            f"{max_age_seconds} seconds ago", "expired")


def has_audience(claims: Mapping[str, Any], audience: str) -> bool:
    aud = claims.get("aud")
    return aud == audience or (isinstance(aud, list) and audience in aud)
