"""Logging set-up: text or JSON lines, and a filter that redacts anything shaped like a secret.

Redaction is defence in depth: no code path should log a secret in the first place (the test
suite's secret-hygiene check proves that with redaction off).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from tokensmith import secrets

REDACTED = "[REDACTED]"
_PATTERNS: list[re.Pattern[str]] = [
    secrets.SECRET_PATTERN,
    # Every tokensmith prefix, checksum or not: a mistyped secret is still mostly a secret.
    secrets.CREDENTIAL_SHAPE,
    # Bearer credentials in anything that quotes a header.
    re.compile(r"(?i)(?<=bearer )[^\s\"',;]{8,}"),
]


def redact(text: str) -> str:
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (with its arguments and traceback) with secrets redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record still must not leak its arguments
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and exception text)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def configure(log_format: str = "text", level: str = "INFO") -> logging.Handler:
    """Send every log record (tokensmith, uvicorn, access logs) through one redacting handler on stderr."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactSecrets())
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # uvicorn's own handlers are off (log_config=None): its records reach the root handler.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    return handler
