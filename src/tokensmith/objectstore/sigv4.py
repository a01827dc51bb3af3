"""AWS Signature Version 4 for S3, rebuilt from what a gateway saw: header-signed and presigned.

Only the standard library: the canonical request, string to sign and signing key follow the AWS
SigV4 specification (S3 flavour: the path is not normalized or double-encoded, and presigned URLs
sign ``UNSIGNED-PAYLOAD``). Structural problems raise MalformedRequest (a 422 for the gateway);
whether a well-formed request is genuine is decided by the caller with ``signature_matches``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import quote, unquote

from tokensmith.errors import InvalidInput

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# aws-chunked bodies whose every chunk carries its own signature, chained from the seed signature
# (the request's own). Verifying them needs the body, which only the gateway has: on success the
# verify endpoint hands the gateway the date-scoped signing key (see chunk_signature below).
STREAMING_SIGNED_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
SIGNED_CHUNK_PAYLOADS = frozenset({STREAMING_SIGNED_PAYLOAD, STREAMING_SIGNED_PAYLOAD_TRAILER})
CHUNK_ALGORITHM = "AWS4-HMAC-SHA256-PAYLOAD"
TRAILER_ALGORITHM = "AWS4-HMAC-SHA256-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# Where to turn SigV4 on in the tools whose defaults still make SigV2 presigned URLs.
SIGV2_HINT = (
    "this is AWS Signature Version 2, which tokensmith does not accept; sign with Signature Version 4 "
    "(s3v4): AWS CLI `aws configure set default.s3.signature_version s3v4` (aws s3 presign uses SigV2 by "
    "default), boto3 `Config(signature_version='s3v4')` for generate_presigned_url; s3cmd signurl "
    "always makes SigV2 URLs"
)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # AWS's own limit for X-Amz-Expires

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*"
)
_METHOD = re.compile(r"[A-Z]{1,20}")
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
_SIGNED_HEADERS = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+(?:;[a-z0-9!#$%&'*+.^_`|~-]+)*")  # _HEADER_NAME;...
_PERCENT_SPLIT = re.compile(r"(%[0-9A-Fa-f]{2})")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~/]*")  # nothing for _canonical_uri to change
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]*")  # what quote(..., safe="-_.~") leaves as it is
# quote(text, safe="-_.~") of ASCII text as one str.translate (quote calls a function per character);
# every ASCII character is in the table, so translate never looks one up in vain.
_QUOTE_ASCII = [chr(c) if _UNRESERVED.fullmatch(chr(c)) else f"%{c:02X}" for c in range(128)]
_DATE = re.compile(r"\d{8}")
# A query parameter of unreserved characters only, name[=value]: its own decoding and encoding.
_PLAIN_PARAM = re.compile(r"[A-Za-z0-9\-._~]*(?:=[A-Za-z0-9\-._~]*)?")
# "%XX" -> the character, for every escape of an ASCII byte (hex digits of either case, as unquote reads them).
_ASCII_ESCAPES = {f"{a}{b}": chr(byte) for byte in range(128) for a in {f"{byte:02x}"[0], f"{byte:02X}"[0]}
                  for b in {f"{byte:02x}"[1], f"{byte:02X}"[1]}}
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
# Header names as sent -> their checked lower-case form. A gateway sends the same few names with
# every request; remembering them saves a strip, a lower and a pattern match per header (hot path).
# Bounded: past it, names are checked each time, as before.
_KNOWN_NAMES: dict[str, str] = {}
_KNOWN_NAMES_MAX = 512


class MalformedRequest(InvalidInput):
    """The verify request itself is not a SigV4 request we can check (422)."""


# Tuples rather than frozen dataclasses: as immutable, built several times cheaper (once per request).
class Credential(NamedTuple):
    access_key_id: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


class SignedRequest(NamedTuple):
    """A parsed SigV4 request, ready to be checked against a secret key."""

    credential: Credential
    signature: str
    amz_date: datetime
    amz_date_text: str
    presigned: bool
    expires_seconds: int | None  # presigned only
    payload_hash: str
    canonical_request: str
    # x-amz-* headers the request carried but did not sign: anyone on the path could have added them.
    unsigned_amz_headers: tuple[str, ...] = ()

    @property
    def signs_chunks(self) -> bool:
        """True for aws-chunked uploads whose chunks are signed (the gateway checks each chunk)."""
        return self.payload_hash in SIGNED_CHUNK_PAYLOADS

    def string_to_sign(self) -> str:
        digest = hashlib.sha256(self.canonical_request.encode()).hexdigest()
        return f"{ALGORITHM}\n{self.amz_date_text}\n{self.credential.scope}\n{digest}"


def parse(method: str, path: str, query: str, headers: Mapping[str, str]) -> SignedRequest:
    """Parse and canonicalize a request as the gateway saw it. Raises MalformedRequest."""
    if not _METHOD.fullmatch(method):
        raise MalformedRequest("method must be an HTTP method in upper case, e.g. GET", "method")
    if not path.startswith("/"):
        raise MalformedRequest("path must start with '/' (the request path as sent, percent-encoded)", "path")
    lowered = _lower_headers(headers)
    params = _parse_query(query)
    names = {param[0] for param in params}
    if "authorization" in lowered:
        if "X-Amz-Signature" in names:
            raise MalformedRequest("a request carries either an Authorization header or X-Amz-Signature, not both")
        return _parse_header_signed(method, path, params, lowered)
    if "X-Amz-Signature" in names or "X-Amz-Algorithm" in names:
        return _parse_presigned(method, path, params, lowered)
    if {"AWSAccessKeyId", "Signature"} <= names:
        raise MalformedRequest(f"presigned URL: {SIGV2_HINT}", "query")
    raise MalformedRequest(
        "no AWS Signature Version 4: send the Authorization header, or the X-Amz-* query parameters of a "
        "presigned URL", "headers",
    )


def signing_key(secret_key: str, credential: Credential) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), credential.date)
    for part in (credential.region, credential.service, "aws4_request"):
        key = _hmac(key, part)
    return key


def signature(key: bytes, request: SignedRequest) -> str:
    """The request's signature from its scope's signing key (``signing_key(secret, request.credential)``).

    Verification works from the derived key, not the secret: objectstore/keycache.py keeps the
    derived keys of the keys in use, so a cached check never needs the secret key.
    """
    # hmac.digest: the one-shot C path, the same value as hmac.new(...).hexdigest().
    return hmac.digest(key, request.string_to_sign().encode(), "sha256").hex()


def signature_matches(key: bytes, request: SignedRequest) -> bool:
    """Whether ``request`` carries the signature its scope's signing key ``key`` makes (constant time)."""
    return hmac.compare_digest(signature(key, request), request.signature)


def chunk_signature(key: bytes, amz_date: str, scope: str, previous_signature: str, chunk: bytes) -> str:
    """The signature of one aws-chunked chunk (AWS's "signature calculations for streaming uploads").

    ``key`` is the request's date-scoped signing key, ``previous_signature`` the seed signature for
    the first chunk and the previous chunk's signature after that; the last chunk is empty.
    """
    string_to_sign = "\n".join([CHUNK_ALGORITHM, amz_date, scope, previous_signature, EMPTY_SHA256,
                                 hashlib.sha256(chunk).hexdigest()])
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def trailer_signature(key: bytes, amz_date: str, scope: str, previous_signature: str, trailer: bytes) -> str:
    """The signature of the trailing headers of a ``...-PAYLOAD-TRAILER`` upload.

    ``trailer`` is the trailing header lines as sent (``name:value\n`` each), ``previous_signature``
    the last (empty) chunk's signature.
    """
    string_to_sign = "\n".join([TRAILER_ALGORITHM, amz_date, scope, previous_signature,
                                 hashlib.sha256(trailer).hexdigest()])
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


class ChunkError(ValueError):
    """An aws-chunked body that is malformed or whose chunk or trailer signature does not match."""


_CHUNK_HEADER = re.compile(rb"([0-9a-fA-F]{1,16});chunk-signature=([0-9a-f]{64})")


def decode_signed_chunks(body: bytes, key: bytes, amz_date: str, scope: str, seed_signature: str, *,
                         trailer: bool = False) -> bytes:
    """The payload of a signed aws-chunked body, every chunk (and the trailer) verified; ChunkError otherwise.

    A reference for gateways: ``key``, ``amz_date``, ``scope`` and ``seed_signature`` are what
    ``POST /v1/object-storage/verify`` returns in ``streaming`` for the request. Each chunk is
    ``<hex size>;chunk-signature=<sig>\r\n<data>\r\n``; the last has size 0. With ``trailer``
    (``...-PAYLOAD-TRAILER``) trailing header lines and ``x-amz-trailer-signature:<sig>`` follow it.
    """
    previous, out, pos = seed_signature, bytearray(), 0
    while True:
        end = body.find(b"\r\n", pos)
        match = _CHUNK_HEADER.fullmatch(body, pos, end) if end >= 0 else None
        if match is None:
            raise ChunkError("malformed chunk header")
        size, pos = int(match.group(1), 16), end + 2
        data = body[pos : pos + size]
        if len(data) != size:
            raise ChunkError("truncated chunk")
        given = match.group(2).decode()
        if not hmac.compare_digest(chunk_signature(key, amz_date, scope, previous, data), given):
            raise ChunkError("chunk signature mismatch")
        previous, pos = given, pos + size
        if size == 0:
            break
        if body[pos : pos + 2] != b"\r\n":
            raise ChunkError("chunk data longer than its declared size")
        pos += 2
        out += data
    rest = body[pos:]
    if not trailer:
        if rest != b"\r\n":
            raise ChunkError("data after the final chunk")
        return bytes(out)
    lines = rest.split(b"\r\n")
    if len(lines) < 3 or lines[-2:] != [b"", b""] or not lines[-3].startswith(b"x-amz-trailer-signature:"):
        raise ChunkError("malformed trailer")
    headers = b"".join(line + b"\n" for line in lines[:-3])
    given = lines[-3].removeprefix(b"x-amz-trailer-signature:").decode(errors="replace")
    if not hmac.compare_digest(trailer_signature(key, amz_date, scope, previous, headers), given):
        raise ChunkError("trailer signature mismatch")
    return bytes(out)


def _unsigned_amz(signed: list[str], headers: Mapping[str, str]) -> tuple[str, ...]:
    # AWS refuses these too ("There were headers present in the request which were not signed"):
    # an unsigned x-amz-acl or x-amz-copy-source would change what a genuine signature authorizes.
    return tuple(sorted(n for n in headers if n.startswith("x-amz-") and n not in signed))


# --- parsing -----------------------------------------------------------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered: dict[str, str] = {}
    for name, value in headers.items():
        key = _KNOWN_NAMES.get(name)
        if key is None:
            key = name.strip().lower()
            if not _HEADER_NAME.fullmatch(key):
                raise MalformedRequest(f"header name {name[:40]!r} is not a valid HTTP header name", "headers")
            if len(_KNOWN_NAMES) < _KNOWN_NAMES_MAX:
                _KNOWN_NAMES[name] = key
        if "\n" in value or "\r" in value or "\0" in value:
            raise MalformedRequest(f"header {key} contains a line break or NUL", "headers")
        # Repeated names (differing in case in the JSON object) combine as HTTP does: comma-separated.
        combined = lowered.get(key)
        lowered[key] = value if combined is None else f"{combined},{value}"
    return lowered


# (name, value) decoded, and as the canonical query encodes them.
Param = tuple[str, str, str, str]


def _parse_query(query: str) -> list[Param]:
    """The parameters of a raw query string: each decoded, and encoded for the canonical query."""
    params = []
    for part in query.lstrip("?").split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if _PLAIN_PARAM.fullmatch(part):  # nothing to decode or encode (most parameters)
            params.append((name, value, name, value))
            continue
        try:
            decoded_name = _unquote(name) if "%" in name else name
            decoded_value = _unquote(value) if "%" in value else value
        except UnicodeDecodeError:
            raise MalformedRequest("query string is not valid percent-encoded UTF-8", "query") from None
        params.append((decoded_name, decoded_value, _encode(decoded_name), _encode(decoded_value)))
    return params


def _unquote(text: str) -> str:
    """``unquote(text, errors="strict")``; a split and a lookup per escape when they are all of ASCII bytes
    (a presigned URL's: unquote's general way costs as much as the rest of the parse)."""
    if text.isascii():
        parts = text.split("%")
        decoded = [parts[0]]
        for part in parts[1:]:
            char = _ASCII_ESCAPES.get(part[:2])
            if char is None:
                break  # an escape that is not a whole one, or of a byte >= 0x80: unquote's
            decoded += (char, part[2:])
        else:
            return "".join(decoded)
    return unquote(text, errors="strict")


def _canonical_uri(path: str) -> str:
    # S3 signs the path as sent: keep valid %XX triples (upper-cased), encode anything else unreserved-unsafe.
    # Verification is hot (once per S3 request): most paths need no encoding at all, and the rest is
    # encoded a run of characters at a time (quote encodes each character on its own either way).
    if _PLAIN_PATH.fullmatch(path):
        return path
    parts = _PERCENT_SPLIT.split(path)  # odd indexes are the %XX triples
    return "".join(part.upper() if i % 2 else quote(part, safe="/~") for i, part in enumerate(parts))


def _encode(text: str) -> str:
    """quote(text, safe="-_.~"): ASCII text as one translate."""
    return text.translate(_QUOTE_ASCII) if text.isascii() else quote(text, safe="-_.~")


def _canonical_query(params: list[Param], exclude: str | None = None) -> str:
    """The encoded parameters sorted by name, then value (but the one named ``exclude``)."""
    encoded = sorted([(param[2], param[3]) for param in params if param[0] != exclude])
    return "&".join([f"{name}={value}" for name, value in encoded])


def _canonical_headers(signed: list[str], headers: Mapping[str, str]) -> str:
    lines = []
    for name in signed:
        if name not in headers:
            raise MalformedRequest(f"signed header {name!r} is missing from headers", "headers")
        # Trimmed, each inner run of whitespace made one space: str.split's whitespace is exactly
        # the \s of a str pattern, so this is re.sub(r"\s+", " ", value.strip()) without a pattern run.
        lines.append(f"{name}:{' '.join(headers[name].split())}\n")
    return "".join(lines)


def _parse_signed_headers(text: str) -> list[str]:
    if not _SIGNED_HEADERS.fullmatch(text):
        raise MalformedRequest("SignedHeaders must be lower-case header names separated by ';'", "headers")
    signed = text.split(";")
    if "host" not in signed:
        raise MalformedRequest("SignedHeaders must include host", "headers")
    return signed


def _parse_credential(text: str) -> Credential:
    parts = text.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not _DATE.fullmatch(parts[1]) \
            or not all(parts[:4]):
        raise MalformedRequest(
            "Credential must be <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request", "headers"
        )
    return Credential(parts[0], parts[1], parts[2], parts[3])


# The signing time parsed last: a gateway under load asks about many requests signed in the same second.
_last_amz_date: tuple[str, datetime] = ("", datetime.min.replace(tzinfo=UTC))


def _parse_amz_date(text: str | None, where: str) -> datetime:
    global _last_amz_date
    last = _last_amz_date  # one read: another thread may replace it meanwhile
    if text == last[0]:
        return last[1]
    if text is None:
        raise MalformedRequest(f"{where} is required (the signing time, e.g. 20261123T200000Z)", "headers")
    try:
        if not _AMZ_DATE.fullmatch(text):
            raise ValueError
        # strptime(text, "%Y%m%dT%H%M%SZ") without its per-call pattern machinery (a hot path)
        parsed = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]),
                          int(text[13:15]), tzinfo=UTC)
    except ValueError:
        raise MalformedRequest(f"{where} must look like 20261123T200000Z", "headers") from None
    _last_amz_date = (text, parsed)
    return parsed


def _parse_header_signed(
    method: str, path: str, params: list[Param], headers: dict[str, str]
) -> SignedRequest:
    match = _AUTHORIZATION.fullmatch(headers["authorization"].strip())
    if match is None and re.match(r"AWS\s+[^\s:]+:", headers["authorization"].strip()):
        raise MalformedRequest(f"Authorization: {SIGV2_HINT}", "headers")
    if match is None:
        raise MalformedRequest(
            "Authorization must be 'AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=<64 hex>'",
            "headers",
        )
    credential = _parse_credential(match.group(1))
    signed = _parse_signed_headers(match.group(2))
    amz_date_text = headers.get("x-amz-date")
    amz_date = _parse_amz_date(amz_date_text, "the X-Amz-Date header")
    payload_hash = headers.get("x-amz-content-sha256")
    if payload_hash is None:
        raise MalformedRequest("the X-Amz-Content-Sha256 header is required for S3 requests", "headers")
    canonical = "\n".join([
        method, _canonical_uri(path), _canonical_query(params), _canonical_headers(signed, headers),
        ";".join(signed), payload_hash,
    ])
    return SignedRequest(credential, match.group(3), amz_date, str(amz_date_text), False, None, payload_hash,
                         canonical, _unsigned_amz(signed, headers))


def _parse_presigned(
    method: str, path: str, params: list[Param], headers: dict[str, str]
) -> SignedRequest:
    values: dict[str, str] = {}
    for name, value, _, _ in params:
        if name.startswith("X-Amz-"):
            if name in values:
                raise MalformedRequest(f"query parameter {name} is repeated", "query")
            values[name] = value
    missing = [n for n in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                           "X-Amz-SignedHeaders", "X-Amz-Signature") if n not in values]
    if missing:
        raise MalformedRequest(f"presigned URL lacks {', '.join(missing)}", "query")
    if values["X-Amz-Algorithm"] != ALGORITHM:
        raise MalformedRequest(f"X-Amz-Algorithm must be {ALGORITHM}", "query")
    if not _SIGNATURE.fullmatch(values["X-Amz-Signature"]):
        raise MalformedRequest("X-Amz-Signature must be 64 lower-case hex digits", "query")
    expires_text = values["X-Amz-Expires"]
    if not expires_text.isascii() or not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_PRESIGN_SECONDS:
        raise MalformedRequest(f"X-Amz-Expires must be an integer from 1 to {MAX_PRESIGN_SECONDS}", "query")
    credential = _parse_credential(values["X-Amz-Credential"])
    signed = _parse_signed_headers(values["X-Amz-SignedHeaders"])
    amz_date = _parse_amz_date(values["X-Amz-Date"], "X-Amz-Date")
    payload_hash = values.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    canonical = "\n".join([
        method, _canonical_uri(path), _canonical_query(params, exclude="X-Amz-Signature"),
        _canonical_headers(signed, headers), ";".join(signed), payload_hash,
    ])
    return SignedRequest(credential, values["X-Amz-Signature"], amz_date, values["X-Amz-Date"], True,
                         int(expires_text), payload_hash, canonical, _unsigned_amz(signed, headers))
