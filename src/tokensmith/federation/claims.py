"""The conditions a trust policy puts on an external token's claims.

* ``sub`` and any other claim are matched by a glob: ``*`` matches within one ``/``-separated
  segment, ``**`` across segments, anything else literally (no ``?``, no ranges). A pattern without
  a ``*`` is plain equality.
* Other claims are addressed by a JSON pointer (RFC 6901), so a key with dots or slashes stays
  unambiguous: ``/repository``, ``/kubernetes.io/namespace`` (the key ``kubernetes.io``, then
  ``namespace``), ``/a~1b`` for the key ``a/b``.
* A claim that is a list matches when any element matches; numbers and booleans are compared in
  their JSON spelling (``true``, ``42``). A missing claim never matches.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

from tokensmith.errors import InvalidInput

MAX_CONDITIONS: Final = 20
MAX_PATTERN: Final = 1000
_MISSING: Final = object()


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", pattern)
    regex = "".join(".*" if p == "**" else "[^/]*" if p == "*" else re.escape(p) for p in parts)
    return re.compile(regex, re.DOTALL)


def glob_match(pattern: str, value: str) -> bool:
    """``value`` matches ``pattern`` whole (``*`` within a ``/`` segment, ``**`` across)."""
    if "*" not in pattern:
        return value == pattern
    return _compile(pattern).fullmatch(value) is not None


def check_pattern(pattern: object, field: str) -> str:
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise InvalidInput(f"{field} must be a non-empty string of at most {MAX_PATTERN} characters", field)
    if "***" in pattern:
        raise InvalidInput(f"{field}: use * (one segment) or ** (any number of segments), not ***", field)
    if any(ord(c) < 32 for c in pattern):
        raise InvalidInput(f"{field} must not contain control characters", field)
    return pattern


def check_pointer(pointer: object) -> str:
    """A JSON pointer naming a claim: ``/name`` or ``/outer/inner``; InvalidInput otherwise."""
    if not isinstance(pointer, str) or not pointer.startswith("/") or len(pointer) > 300 or pointer == "/":
        raise InvalidInput(f"condition {pointer!r} must be a JSON pointer to a claim, e.g. /repository or "
                           "/kubernetes.io/namespace", "conditions")
    if re.search(r"~[^01]|~$", pointer):
        raise InvalidInput(f"condition {pointer!r}: '~' must be written ~0 and '/' inside a key ~1", "conditions")
    if pointer in ("/aud", "/iss", "/exp", "/nbf", "/iat"):
        raise InvalidInput(f"condition {pointer!r}: the issuer, audience and times have their own fields",
                           "conditions")
    return pointer


def check_conditions(conditions: object) -> dict[str, str]:
    """``{"/json/pointer": "glob"}``, validated; InvalidInput naming the bad entry."""
    if conditions is None:
        return {}
    if not isinstance(conditions, Mapping):
        raise InvalidInput('conditions must be an object such as {"/repository": "octo-org/*"}', "conditions")
    if len(conditions) > MAX_CONDITIONS:
        raise InvalidInput(f"at most {MAX_CONDITIONS} conditions", "conditions")
    return {check_pointer(k): check_pattern(v, f"conditions {k}") for k, v in conditions.items()}


def resolve(claims: Mapping[str, Any], pointer: str) -> Any:
    """The claim a JSON pointer names, or ``_MISSING``."""
    node: Any = claims
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return _MISSING
    return node


def _spelled(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def claim_matches(value: Any, pattern: str) -> bool:
    """A claim value (a string, a scalar, or a list of them) matches the glob."""
    if value is _MISSING or value is None:
        return False
    values = value if isinstance(value, list) else [value]
    return any((s := _spelled(v)) is not None and glob_match(pattern, s) for v in values)


def first_mismatch(claims: Mapping[str, Any], subject: str | None, conditions: Mapping[str, str]) -> str | None:
    """None when every condition holds; else the name of the first that does not (never its value)."""
    if subject is not None and not claim_matches(claims.get("sub", _MISSING), subject):
        return "condition sub"
    for pointer, pattern in conditions.items():
        if not claim_matches(resolve(claims, pointer), pattern):
            return f"condition {pointer}"
    return None
