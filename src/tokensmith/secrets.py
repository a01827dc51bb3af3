"""The one place that knows what a tokensmith secret looks like.

A secret is ``tsm_`` + 32 random base62 characters + a 6-character base62
CRC32 of everything before it (the scheme GitHub uses for its tokens).  The
checksum lets a leaked secret be recognised offline, and lets a mistyped or
forged one be refused before anything touches the database.

Only an HMAC-SHA256 digest of a secret, under a server key, is ever stored.
"""

from __future__ import annotations

import hmac
import os
import re
import zlib
from typing import Final

PREFIX: Final = "tsm_"
# Other credentials tokensmith mints share the format under their own prefix, so scanners
# and logs can tell them apart: webhook credentials of cluster API servers, leak reporters.
WEBHOOK_PREFIX: Final = "tsw_"
REPORTER_PREFIX: Final = "tsr_"
# The device code of a browser sign-in (RFC 8628), held by the CLI while a person approves it.
DEVICE_CODE_PREFIX: Final = "tsd_"
# Like AWS's AKIA/ASIA, the first four characters of an S3 access key id say what kind it is.
ACCESS_KEY_PERMANENT_PREFIX: Final = "TSMP"
ACCESS_KEY_TEMPORARY_PREFIX: Final = "TSMT"
# Every bearer credential kind tokensmith mints; the one list the guard, logs and masking read.
CREDENTIAL_PREFIXES: Final = (PREFIX, WEBHOOK_PREFIX, REPORTER_PREFIX, DEVICE_CODE_PREFIX)
BODY_LENGTH: Final = 32
CHECKSUM_LENGTH: Final = 6
SECRET_LENGTH: Final = len(PREFIX) + BODY_LENGTH + CHECKSUM_LENGTH
HINT_LENGTH: Final = 4

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Finds candidates inside arbitrary text (for scanners); the checksum decides.
SECRET_PATTERN: Final = re.compile(
    rf"(?<![A-Za-z0-9_]){PREFIX}[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}(?![A-Za-z0-9])"
)
# Anything shaped like a credential tokensmith mints (tsm_, tsw_, tsr_), checksum or not:
# scrubbed from audit text and logs, refused in names and notes.
CREDENTIAL_SHAPE: Final = re.compile(
    "(?:" + "|".join(re.escape(p) for p in CREDENTIAL_PREFIXES) + r")[0-9A-Za-z]{20,}"
)
_BODY: Final = re.compile(rf"[0-9A-Za-z]{{{BODY_LENGTH + CHECKSUM_LENGTH}}}")


def base62(number: int, width: int) -> str:
    """Encode a non-negative integer as exactly ``width`` base62 digits."""
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    if number:
        raise ValueError("number does not fit in the requested width")
    return "".join(reversed(digits))


def random_base62(length: int) -> str:
    """Return ``length`` characters from the OS CSPRNG, uniformly over base62."""
    return _uniform(BASE62, length)


def _uniform(alphabet: str, length: int) -> str:
    """``length`` characters of ``alphabet``, uniformly, from as few CSPRNG reads as possible.

    ``SystemRandom.choice`` reads the OS once per character (a syscall each: 5 % of a token
    exchange's CPU). Here bytes are read in one go and kept only below the largest multiple of the
    alphabet's size (rejection sampling), so ``byte % size`` stays exactly uniform.
    """
    size = len(alphabet)
    limit = 256 - 256 % size
    chosen: list[str] = []
    while len(chosen) < length:
        for byte in os.urandom(2 * length):  # base62 keeps 97 % of bytes: one read nearly always suffices
            if byte < limit:
                chosen.append(alphabet[byte % size])
                if len(chosen) == length:
                    break
    return "".join(chosen)


def checksum(text: str) -> str:
    """The 6-character base62 CRC32 of ``text``."""
    return base62(zlib.crc32(text.encode("ascii")), CHECKSUM_LENGTH)


def generate(prefix: str = PREFIX) -> str:
    """Return a new random secret with a valid checksum."""
    head = prefix + random_base62(BODY_LENGTH)
    return head + checksum(head)


def is_well_formed(candidate: str, prefix: str = PREFIX) -> bool:
    """True when ``candidate`` has the secret's shape, ``prefix`` and a correct checksum.

    This is cheap and offline: it is checked before any database lookup.
    """
    if len(candidate) != len(prefix) + BODY_LENGTH + CHECKSUM_LENGTH or not candidate.startswith(prefix):
        return False
    if not _BODY.fullmatch(candidate, len(prefix)):
        return False
    head, tail = candidate[:-CHECKSUM_LENGTH], candidate[-CHECKSUM_LENGTH:]
    return hmac.compare_digest(checksum(head), tail)


def is_credential(candidate: str) -> bool:
    """True when ``candidate`` is a well-formed credential of any kind tokensmith mints."""
    return any(is_well_formed(candidate, prefix) for prefix in CREDENTIAL_PREFIXES)


def find_in_text(text: str) -> list[tuple[int, str]]:
    """Return ``(offset, secret)`` for every well-formed secret inside ``text``."""
    return [(m.start(), m.group()) for m in SECRET_PATTERN.finditer(text) if is_well_formed(m.group())]


def contains_credential(text: str) -> bool:
    """True when ``text`` holds something shaped like a tokensmith credential."""
    return CREDENTIAL_SHAPE.search(text) is not None


def hint(secret: str) -> str:
    """The last characters of a secret, shown so people can tell tokens apart."""
    return secret[-HINT_LENGTH:]


def kind_prefix(secret: str) -> str:
    """The prefix that says which kind of credential ``secret`` is, or "" for none tokensmith mints."""
    kinds = (*CREDENTIAL_PREFIXES, ACCESS_KEY_PERMANENT_PREFIX, ACCESS_KEY_TEMPORARY_PREFIX)
    return next((prefix for prefix in kinds if secret.startswith(prefix)), "")


def mask(secret: str) -> str:
    """A display form that identifies a secret, and its kind, without revealing it."""
    return f"{kind_prefix(secret)}…{hint(secret)}"


def digest(secret: str, key: bytes) -> str:
    """HMAC-SHA256 of the secret under the server key, hex-encoded: what is stored."""
    # hmac.digest is the one-shot C path: same value as hmac.new(...).hexdigest(), a third cheaper.
    return hmac.digest(key, secret.encode("ascii"), "sha256").hex()


def digests_match(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode("ascii"), b.encode("ascii"))


def public_id(prefix: str, length: int = 16) -> str:
    """A random identifier that is safe to show and log, e.g. ``tok_3kT...``."""
    return f"{prefix}_{random_base62(length)}"


# --- S3 access keys ----------------------------------------------------------------------------
ACCESS_KEY_ID_LENGTH: Final = 20
ACCESS_KEY_SECRET_LENGTH: Final = 40
_UPPER_ALNUM: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ACCESS_KEY_ID_PATTERN: Final = re.compile(
    f"(?:{ACCESS_KEY_PERMANENT_PREFIX}|{ACCESS_KEY_TEMPORARY_PREFIX})[0-9A-Z]{{{ACCESS_KEY_ID_LENGTH - 4}}}"
)


def access_key_id(permanent: bool) -> str:
    """A new 20-character uppercase alphanumeric access key id; the prefix tells permanent from temporary."""
    prefix = ACCESS_KEY_PERMANENT_PREFIX if permanent else ACCESS_KEY_TEMPORARY_PREFIX
    return prefix + _uniform(_UPPER_ALNUM, ACCESS_KEY_ID_LENGTH - len(prefix))


def access_key_secret() -> str:
    """A new 40-character base62 S3 secret key (safe in env vars, config files and URLs)."""
    return random_base62(ACCESS_KEY_SECRET_LENGTH)


def is_access_key_id(candidate: str) -> bool:
    return ACCESS_KEY_ID_PATTERN.fullmatch(candidate) is not None

