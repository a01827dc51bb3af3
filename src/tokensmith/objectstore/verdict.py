"""The answer to an S3 gateway, and the checks that decide it once the key is known to be live.

One set of checks for both ways of knowing the key: read from the database and decrypted
(``AccessKeyService.verify_signature`` on a miss) or remembered (``AccessKeyCache.answer``). Both
call ``judge`` with the request's derived signing key, so a cached answer is the uncached one by
construction, check for check and reason for reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from tokensmith.objectstore import sigv4

CLOCK_SKEW: Final = timedelta(minutes=15)
UNSIGNED_AMZ_HEADER: Final = "x-amz-* header not signed"
DATE_MISMATCH: Final = "credential scope date does not match X-Amz-Date"
NOT_S3: Final = "credential scope service is not s3"


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Whose key signed: what a valid answer names (ids and names, never key material).

    One per cached key (objectstore/keycache.py), so ``wire`` can hold a door's encoded answer for
    it (api/fastpath.py), reused while the key stays cached, like ``Identity.wire``.
    """

    access_key_id: str
    username: str
    org_name: str
    wire: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


@dataclass(frozen=True, slots=True)
class StreamingSigning:
    """The chain a gateway verifies an aws-chunked body with.

    ``signing_key`` is derived for one day, region and service (``scope``): it signs only requests
    of that key on that day, and the secret key cannot be computed back from it.
    """

    signing_key: bytes = field(repr=False)
    seed_signature: str
    amz_date: str
    scope: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to an S3 gateway: valid with whose key, or invalid naming the failed check."""

    valid: bool
    reason: str | None = None
    owner: KeyOwner | None = None
    # For a genuine STREAMING-AWS4-HMAC-SHA256-PAYLOAD(-TRAILER) request: what the gateway needs to
    # check each chunk itself (sigv4.chunk_signature). None for every other request.
    streaming: StreamingSigning | None = None


def refuse_unsignable(request: sigv4.SignedRequest) -> Verdict | None:
    """The refusal of a request no signature can make valid (checked before any key material is used)."""
    if request.unsigned_amz_headers:
        return Verdict(False, UNSIGNED_AMZ_HEADER)
    if request.credential.date != request.amz_date_text[:8]:
        return Verdict(False, DATE_MISMATCH)
    if request.credential.service != "s3":
        return Verdict(False, NOT_S3)
    return None


def judge(owner: KeyOwner, signing_key: bytes, request: sigv4.SignedRequest, body_sha256: str | None,
          now: datetime) -> Verdict:
    """The verdict on a request by a live key whose ``signing_key`` for the request's scope is known."""
    if not sigv4.signature_matches(signing_key, request):
        return Verdict(False, "signature mismatch")
    if request.amz_date > now + CLOCK_SKEW:
        return Verdict(False, "request time is too far in the future")
    if request.presigned:
        assert request.expires_seconds is not None
        if now > request.amz_date + timedelta(seconds=request.expires_seconds):
            return Verdict(False, "presigned URL expired")
    elif request.amz_date < now - CLOCK_SKEW:
        return Verdict(False, "request too old")
    if body_sha256 is not None and request.payload_hash != sigv4.UNSIGNED_PAYLOAD \
            and not request.payload_hash.startswith("STREAMING-") \
            and body_sha256.lower() != request.payload_hash.lower():
        return Verdict(False, "payload hash mismatch")
    streaming = None
    if request.signs_chunks:
        streaming = StreamingSigning(signing_key, request.signature, request.amz_date_text, request.credential.scope)
    return Verdict(True, owner=owner, streaming=streaming)
