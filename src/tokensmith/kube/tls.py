"""TLS on tokensmith itself: the serving files, and the CA an API server must trust to call it.

A Kubernetes API server sends the webhook kubeconfig's credential only over ``https``: with an
``http://`` URL it calls without one and every token is refused. So the webhook kubeconfigs
tokensmith prints are https-only, and embed the CA that signed tokensmith's certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tokensmith.errors import InvalidInput

HTTP_REFUSED = (
    "the webhook URL must be https: the Kubernetes API server sends the webhook credential only over "
    "https, so over http every TokenReview arrives without one and every kubectl gets Unauthorized. "
    "Serve tokensmith over TLS (tokensmith serve --tls-cert FILE --tls-key FILE, or a TLS proxy in front) "
    "and give its https:// URL"
)


@dataclass(frozen=True)
class ServingFiles:
    cert: Path
    key: Path


def serving_files(cert: Path | None, key: Path | None) -> ServingFiles | None:
    """Both files, checked to be readable PEM; None when neither is given. ValueError saying what is wrong."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both a certificate and a key: --tls-cert FILE --tls-key FILE "
                         "(or TOKENSMITH_TLS_CERT and TOKENSMITH_TLS_KEY)")
    for path in (cert, key):
        if not path.is_file():
            raise ValueError(f"TLS file {path} does not exist or is not a file")
    certificates(cert.read_text())  # fails here, clearly, rather than deep inside the server
    return ServingFiles(cert, key)


def certificates(pem: str) -> list[x509.Certificate]:
    try:
        found = x509.load_pem_x509_certificates(pem.encode())
    except ValueError:
        raise ValueError("the TLS certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)") from None
    return found


def ca_from_chain(chain_pem: str) -> str | None:
    """The CA to trust for a serving chain: its last certificate when the file holds the chain (leaf
    first, then its issuers), or the certificate itself when it is self-signed; None when the file
    holds only a leaf signed by someone else (pass --certificate-authority then)."""
    chain = certificates(chain_pem)
    if len(chain) > 1:
        return chain[-1].public_bytes(Encoding.PEM).decode()
    leaf = chain[0]
    if leaf.issuer == leaf.subject:
        return leaf.public_bytes(Encoding.PEM).decode()
    return None


def require_https(url: str, field: str = "url") -> str:
    """``url`` if it is https with a host; InvalidInput saying why http cannot work otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme == "http":
        raise InvalidInput(HTTP_REFUSED, field)
    if parts.scheme != "https" or not parts.hostname:
        raise InvalidInput("the webhook URL must be tokensmith's https:// URL, e.g. https://tokensmith.example.com",
                           field)
    return url.strip()
