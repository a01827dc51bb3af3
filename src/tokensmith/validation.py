"""Text rules shared by every name and note a person types."""

from __future__ import annotations

import unicodedata

from tokensmith.errors import InvalidInput
from tokensmith.secrets import contains_credential

# Line/paragraph separators break single-line displays just like control characters.
_FORBIDDEN_IN_NAMES = {"Cc", "Cs", "Zl", "Zp"}
_ALLOWED_IN_NOTES = {"\n", "\t"}
# Invisible characters that reorder or hide text ("Trojan Source"): bidirectional embeddings,
# overrides, isolates and marks, and zero-width characters. A name shown in a list or an audit
# event must read as what it is.
_INVISIBLE = frozenset(
    "\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\ufeff"
)


def _bad_characters(text: str, allowed: set[str]) -> bool:
    if text.isprintable():  # no Cc, Cs, Zl or Zp character (nor any other unprintable one): checked in C
        return False
    return any(unicodedata.category(c) in _FORBIDDEN_IN_NAMES and c not in allowed for c in text)


def clean_name(value: str, field: str = "name", max_length: int = 100) -> str:
    """Trim and check a display name: 1..max_length characters, any language, no control characters."""
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        raise InvalidInput(f"{field} must not be empty", field)
    if len(name) > max_length:
        raise InvalidInput(f"{field} must be at most {max_length} characters (got {len(name)})", field)
    if _bad_characters(name, set()):
        raise InvalidInput(f"{field} must not contain control characters", field)
    _refuse_invisible(name, field)
    _refuse_credentials(name, field)
    return name


def clean_note(value: str | None, field: str = "note", max_length: int = 1000) -> str:
    """A free-text note: 0..max_length characters; newlines and tabs allowed, other control characters not."""
    note = unicodedata.normalize("NFC", value or "").strip()
    if len(note) > max_length:
        raise InvalidInput(f"{field} must be at most {max_length} characters (got {len(note)})", field)
    if _bad_characters(note, _ALLOWED_IN_NOTES):
        raise InvalidInput(f"{field} must not contain control characters other than newline and tab", field)
    _refuse_invisible(note, field)
    _refuse_credentials(note, field)
    return note


def _refuse_invisible(text: str, field: str) -> None:
    if any(c in _INVISIBLE for c in text):
        raise InvalidInput(f"{field} must not contain bidirectional-override or zero-width characters", field)


def _refuse_credentials(text: str, field: str) -> None:
    # Names and notes are stored and shown in clear; a pasted secret would outlive its revocation there.
    # NFKC first: a secret typed in fullwidth or other compatibility forms reads the same to a person.
    if contains_credential(text) or contains_credential(unicodedata.normalize("NFKC", text)):
        raise InvalidInput(f"{field} must not contain a token secret or other credential", field)


def clean_identifier(value: str, field: str) -> str:
    """Names used as identifiers (usernames, cluster and VPC names): letters, digits, ``-._``."""
    name = value.strip()
    if not 1 <= len(name) <= 63:
        raise InvalidInput(f"{field} must be 1 to 63 characters", field)
    if not all(c.isascii() and (c.isalnum() or c in "-._") for c in name) or not name[0].isalnum():
        raise InvalidInput(
            f"{field} may contain only ASCII letters, digits, '-', '.' and '_', and must start with a letter or digit",
            field,
        )
    return name
