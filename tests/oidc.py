"""A test-local OpenID Connect issuer: keys made here, discovery and JWKS served on loopback.

    with OidcIssuer() as issuer:
        token = issuer.token(sub="repo:octo/app:ref:refs/heads/main", aud="tokensmith")
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def public_jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    public = private_key.public_key()
    if alg.startswith(("RS", "PS")):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif alg.startswith("ES"):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


def new_key(alg: str = "RS256") -> Any:
    if alg.startswith(("RS", "PS")):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "ES384":
        return ec.generate_private_key(ec.SECP384R1())
    return ed25519.Ed25519PrivateKey.generate()


class OidcIssuer:
    """Signs tokens with its current key; serves /.well-known/openid-configuration and /jwks."""

    def __init__(self, alg: str = "RS256") -> None:
        self.alg = alg
        self.kid = f"k-{uuid.uuid4().hex[:8]}"
        self.key = new_key(alg)
        self.requests: list[str] = []
        self.advertised_issuer: str | None = None  # what discovery claims to be; None: the real URL
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.requests.append(self.path)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.advertised_issuer or issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                            "id_token_signing_alg_values_supported": [issuer.alg]}
                elif self.path == "/jwks":
                    body = issuer.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OidcIssuer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.key, self.kid, self.alg)]}

    def rotate(self) -> None:
        """A new signing key with a new kid; the old one is no longer published."""
        self.kid = f"k-{uuid.uuid4().hex[:8]}"
        self.key = new_key(self.alg)

    def claims(self, now: float | None = None, **claims: Any) -> dict[str, Any]:
        issued = int(now if now is not None else time.time())
        return {"iss": self.url, "sub": "system:serviceaccount:ci:deployer", "aud": "tokensmith",
                "iat": issued, "nbf": issued, "exp": issued + 600, **claims}

    def token(self, now: float | None = None, *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        return jwt.encode(self.claims(now, **claims), self.key, algorithm=self.alg,
                          headers={"kid": self.kid, **(headers or {})})
