"""The JWT checks of federation/verification.py on their own: one decode, then the signature over
the same bytes. The exchange's own tests (test_federation.py) cover them through the API."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest

from tests.oidc import new_key, public_jwk
from tokensmith.federation.jwks import parse_jwks
from tokensmith.federation.verification import TokenRejected, parse, verify_signature


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keys(*pairs: tuple[Any, str]) -> Any:
    """A KeySet of these (private key, alg) pairs' public halves, kid = alg."""
    return parse_jwks({"keys": [public_jwk(key, alg, alg) for key, alg in pairs]})


def _claims() -> dict[str, Any]:
    now = int(time.time())
    return {"iss": "https://issuer.example", "sub": "ci", "aud": "tokensmith", "iat": now, "exp": now + 300}


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return new_key("RS256")


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_a_token_verifies_with_its_issuers_key_and_yields_its_claims(alg):
    key = new_key(alg)
    token = jwt.encode(_claims(), key, algorithm=alg, headers={"kid": alg})
    assert verify_signature(parse(token), _keys((key, alg))) == jwt.decode(token, options={"verify_signature": False})


def test_a_token_signed_by_another_key_does_not_verify(rsa_key):
    token = jwt.encode(_claims(), new_key("RS256"), algorithm="RS256", headers={"kid": "RS256"})
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verify_signature(parse(token), _keys((rsa_key, "RS256")))


def test_a_changed_payload_does_not_verify(rsa_key):
    header, _payload, signature = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "RS256"}).split(".")
    forged = f"{header}.{_b64(json.dumps({**_claims(), 'sub': 'admin'}).encode())}.{signature}"
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verify_signature(parse(forged), _keys((rsa_key, "RS256")))


def test_a_key_of_another_type_than_the_algorithm_does_not_verify(rsa_key):
    ec_key = new_key("ES256")
    token = jwt.encode(_claims(), rsa_key, algorithm="RS256", headers={"kid": "k"})
    keys = parse_jwks({"keys": [{**public_jwk(ec_key, "k", "ES256"), "alg": None}]})  # no alg: any algorithm may try it
    with pytest.raises(TokenRejected, match="signature does not verify"):
        verify_signature(parse(token), keys)


def test_an_unencoded_payload_token_is_not_a_jwt(rsa_key):
    header = _b64(json.dumps({"alg": "RS256", "b64": False, "crit": ["b64"]}).encode())
    token = f"{header}.{_b64(json.dumps(_claims()).encode())}.{_b64(b'x' * 256)}"
    with pytest.raises(TokenRejected, match="not a JWT"):
        parse(token)


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"not json", b"\xff\xfe"])
def test_a_payload_that_is_not_a_json_object_is_not_a_jwt(payload):
    header = _b64(json.dumps({"alg": "RS256"}).encode())
    with pytest.raises(TokenRejected, match="not a JWT"):
        parse(f"{header}.{_b64(payload)}.{_b64(b'x' * 256)}")


def test_a_token_with_characters_outside_base64url_is_not_a_jwt(rsa_key):
    header, payload, signature = jwt.encode(_claims(), rsa_key, algorithm="RS256").split(".")
    with pytest.raises(TokenRejected, match="not a JWT"):
        parse(f"{header}.{payload}é.{signature}")
